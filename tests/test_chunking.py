"""Tests of ragroute.chunking at the three granularities."""

from __future__ import annotations

import warnings

import pytest

from ragroute.chunking import (
    DEFAULT_MAX_WORDS,
    ChunkStats,
    chunk_document,
    chunk_documents,
    split_long,
    word_count,
)
from ragroute.errors import CorpusFormatError
from ragroute.loaders import CorpusWarning
from ragroute.types import Document


def words(n: int, word: str = "word") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


MARKDOWN = (
    "Preamble before any heading with enough words to stand on its own here.\n\n"
    "# Install\n\nRun the installer.\n\nThen restart.\n\n"
    "## Empty heading\n\n"
    "## Configure\n\n```\n# not a heading inside a fence\n```\nSet the options.\n"
)


@pytest.fixture
def docs() -> list[Document]:
    prose = f"{words(30, 'a')}\n\nShort one.\n\n{words(30, 'b')}"
    table = Document(id="t", text="a | b\n" + "\n\n".join("1 | 2" for _ in range(50)), modality="table")
    return [
        Document(id="prose", text=prose, title="Prose", metadata={"src": "x"}),
        Document(id="md", text=MARKDOWN, title="Manual"),
        table,
        Document(id="titled", text="", title="Title only"),
        Document(id="void", text="   ", title=""),
    ]


def test_document_granularity_returns_docs_unchanged(docs: list[Document]) -> None:
    stats = ChunkStats()
    out = chunk_documents(docs, "document", stats=stats)
    assert out == docs[:4]
    assert all(d.parent_id is None for d in out)
    assert stats.empty == 1 and stats.documents == 5


def test_documents_with_no_text_are_dropped_with_a_warning_naming_them() -> None:
    """A JSONL record with ``"text": ""`` disappeared between loading and indexing, unsaid."""
    # zero-width and control characters only count as no text (they were indexed, then returned as hits)
    docs = [Document(id=f"e{i}", text=[" \n", "\u200b\u200d", "\x00\x01"][i % 3], title="") for i in range(5)]
    docs.insert(2, Document(id="kept", text="", title="Title only"))
    with pytest.warns(CorpusWarning) as caught:
        out = chunk_documents(docs, "paragraph")
    assert [c.parent_id for c in out] == ["kept"]
    assert [str(w.message) for w in caught] == [
        "dropped 5 documents with no text to index: e0, e1, e2 and 2 more"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped, nothing said
        chunk_documents(docs[2:3], "document")


def test_paragraph_chunks(docs: list[Document]) -> None:
    stats = ChunkStats()
    out = chunk_documents(docs, "paragraph", stats=stats)
    prose = [c for c in out if c.parent_id == "prose"]
    assert [c.id for c in prose] == ["prose#p0", "prose#p1"]
    assert prose[1].text.startswith("Short one.\n\nb0")  # tiny paragraph merged into the next
    assert prose[0].metadata == {"src": "x", "chunk_index": 0, "granularity": "paragraph"}
    assert all(c.title == "Prose" for c in prose)
    assert len({c.id for c in out}) == len(out)
    assert stats.empty == 1 and stats.kept_whole == 1 and stats.chunks == len(out)


def test_tables_and_title_only_docs_are_kept_whole(docs: list[Document]) -> None:
    for granularity, marker in (("paragraph", "p"), ("section", "s")):
        out = chunk_documents(docs, granularity, max_words=5)
        table = [c for c in out if c.parent_id == "t"]
        assert len(table) == 1 and table[0].text == docs[2].text and table[0].modality == "table"
        assert table[0].id == f"t#{marker}0"
        titled = [c for c in out if c.parent_id == "titled"]
        assert [(c.title, c.text) for c in titled] == [("Title only", "")]
        assert not [c for c in out if c.parent_id == "void"]


def test_long_paragraph_split_by_sentences_within_max_words() -> None:
    sentence = "This sentence has exactly seven words here."
    doc = Document(id="long", text=" ".join([sentence] * 10))
    out = chunk_documents([doc], "paragraph", max_words=20, min_words=0)
    assert len(out) == 5  # two 7-word sentences per chunk
    assert all(len(c.text.split()) <= 20 for c in out)
    assert " ".join(c.text for c in out) == doc.text
    windows = split_long(words(25), 10)  # one huge sentence: cut into word windows
    assert [len(w.split()) for w in windows] == [10, 10, 5] and " ".join(windows) == words(25)


def test_section_chunks_use_headings_as_titles(docs: list[Document]) -> None:
    out = [c for c in chunk_documents(docs, "section") if c.parent_id == "md"]
    assert [c.id for c in out] == ["md#s0", "md#s1", "md#s2"]
    assert [c.title for c in out] == ["Manual", "Install", "Configure"]
    assert out[1].text == "Run the installer.\n\nThen restart."
    assert "# not a heading inside a fence" in out[2].text
    assert all(c.metadata["granularity"] == "section" for c in out)
    assert [c.metadata["chunk_index"] for c in out] == [0, 1, 2]


def test_section_fallback_groups_paragraphs_without_headings() -> None:
    text = "\n\n".join(words(30, f"p{i}x") for i in range(5))
    out = chunk_documents([Document(id="plain", text=text, title="T")], "section", max_words=70)
    assert [len(c.text.split()) for c in out] == [60, 60, 30]
    assert all(c.title == "T" and c.parent_id == "plain" for c in out)


def test_chunking_is_deterministic_and_rejects_bad_args(docs: list[Document]) -> None:
    assert chunk_documents(docs, "paragraph") == chunk_documents(docs, "paragraph")
    with pytest.raises(ValueError, match="granularity"):
        chunk_documents(docs, "sentence")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_words"):
        chunk_documents(docs, "paragraph", max_words=0)


def test_duplicate_input_ids_raise() -> None:
    twice = [Document(id="a", text="same"), Document(id="a", text="again")]
    with pytest.raises(CorpusFormatError, match="duplicate chunk id 'a#p0'"):
        chunk_documents(twice, "paragraph")


def test_pack_fills_a_group_up_to_exactly_max_words() -> None:
    from ragroute.chunking import pack

    assert pack(["a b", "c d"], 4, " ") == ["a b c d"]
    assert pack(["a b", "c d"], 3, " ") == ["a b", "c d"]
    assert pack(["a b c d e", "f"], 4, "|") == ["a b c d e", "f"]  # an oversized piece stands alone


def test_a_piece_of_exactly_min_words_is_not_tiny() -> None:
    from ragroute.chunking import merge_tiny

    assert merge_tiny(["a b", "c d e"], 2, 100) == ["a b", "c d e"]
    assert merge_tiny(["a", "c d e"], 2, 100) == ["a\n\nc d e"]  # under min_words: into the next


def test_a_last_tiny_piece_joins_the_previous_chunk_when_it_fits() -> None:
    from ragroute.chunking import merge_tiny

    assert merge_tiny(["a b c", "d"], 2, 100) == ["a b c\n\nd"]
    assert merge_tiny(["a b c", "d"], 2, 4) == ["a b c\n\nd"]  # exactly max_words
    assert merge_tiny(["a b c", "d"], 2, 3) == ["a b c", "d"]  # would not fit: kept apart


def test_min_words_zero_keeps_every_paragraph_its_own_chunk() -> None:
    doc = Document(id="d", text="One two.\n\nThree four.\n\nFive six.", title="T")
    apart = chunk_documents([doc], "paragraph", min_words=0)
    assert [c.text for c in apart] == ["One two.", "Three four.", "Five six."]
    together = chunk_documents([doc], "paragraph")
    assert [c.text for c in together] == ["One two.\n\nThree four.\n\nFive six."]


def test_a_heading_after_a_closed_code_fence_still_starts_a_section() -> None:
    text = "# Usage\n\nRun it.\n\n```\n# a comment, not a heading\n```\n\n# Options\n\nSet them."
    out = chunk_documents([Document(id="m", text=text, title="Doc")], "section")
    assert [(c.title, c.text) for c in out] == [
        ("Usage", "Run it.\n\n```\n# a comment, not a heading\n```"),
        ("Options", "Set them."),
    ]


def test_chunk_metadata_names_the_chunk_over_the_documents_own_keys() -> None:
    doc = Document(id="d", text="One two.\n\nThree.", metadata={"chunk_index": 7, "granularity": "x", "k": 1})
    out = chunk_documents([doc], "paragraph", min_words=0)
    assert [c.metadata for c in out] == [
        {"chunk_index": 0, "granularity": "paragraph", "k": 1},
        {"chunk_index": 1, "granularity": "paragraph", "k": 1},
    ]


def test_a_hash_inside_a_heading_and_bare_carriage_returns() -> None:
    """ "# Intro to C#" was the section "Intro to C" (a closing run of # needs a space before it), and
    a document with bare \\r line endings was one heading line with no body, dropped at section
    granularity (until session 37)."""
    from ragroute.chunking import split_sections

    titles = [s.title for s in split_sections("# Intro to C#\nbody\n## F#\nx\n# Title ##\ny")]
    assert titles == ["Intro to C#", "F#", "Title"]
    sections = split_sections("# Setup\rInstall the VPN client\r## Next\rmore")
    assert [(s.title, s.body) for s in sections] == [("Setup", "Install the VPN client"), ("Next", "more")]


def test_chunk_document_checks_its_arguments_as_chunk_documents_does() -> None:
    """max_words 0 raised "range() arg 3 must not be zero", -1 returned no chunk (the text lost), a
    granularity typo a bare KeyError, and 2.5 a TypeError (until session 37)."""
    from ragroute.chunking import chunk_document

    doc = Document(id="d", text="one two three\n\nfour five six")
    for kwargs, message in (
        ({"max_words": 0}, "max_words must be >= 1"),
        ({"max_words": -1}, "max_words must be >= 1"),
        ({"max_words": 2.5}, "max_words must be a whole number"),
    ):
        with pytest.raises(ValueError, match=message):
            chunk_document(doc, "paragraph", **kwargs)
    with pytest.raises(ValueError, match="granularity must be one of"):
        chunk_document(doc, "sentence")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_words must be a whole number"):
        chunk_documents([doc], "paragraph", max_words=2.5)  # type: ignore[arg-type]


def test_chinese_and_japanese_text_is_split_into_paragraph_chunks_of_at_most_max_words() -> None:
    """A Chinese paragraph was one "word" (no spaces) until session 38: it was never split, and the
    merge of tiny pieces joined up to 200 paragraphs into one chunk. Each Han or kana character now
    counts as a word; pieces are cut at 。！？ from the text as written (no space added)."""
    from ragroute.chunking import word_count

    assert word_count("东京是日本的首都。") == 9 and word_count("日本語 text here") == 5
    # the ideographic space U+3000 is a space (counted as a word until session 51)
    assert word_count("日本\u3000語") == 3 and word_count("\u3000") == 0
    tokyo, osaka = "东京是日本的首都。" * 60, "大阪は日本の都市です！" * 30
    chunks = chunk_documents([Document(id="zh", text=f"{tokyo}\n\n{osaka}")], "paragraph")
    assert len(chunks) >= 4 and all(word_count(c.text) <= 200 for c in chunks)
    assert all(c.text.endswith(("。", "！")) and " " not in c.text for c in chunks)
    assert "".join(c.text for c in chunks) == tokyo + osaka  # nothing lost, nothing added
    assert not any("首都" in c.text and "大阪" in c.text for c in chunks)  # paragraphs stay apart
    # one sentence longer than max_words: windows of max_words characters
    assert [
        word_count(c.text) for c in chunk_documents([Document(id="w", text="字" * 450)], "paragraph")
    ] == [
        200,
        200,
        50,
    ]
    # mixed text: whole sentences while they fit, English words and CJK characters counted together
    mixed = "日本語のテキスト is mixed with English words. " * 30
    pieces = split_long(mixed.strip(), 50)
    assert [word_count(p) for p in pieces] == [39] * 10 and " ".join(pieces) == mixed.strip()


def test_english_paragraphs_are_split_as_before() -> None:
    """The word count and sentence splitting of text without Chinese or Japanese did not change."""
    text = "Hello world.  Again here! " * 120
    pieces = split_long(text.strip(), 100)
    assert [len(p.split()) for p in pieces] == [100, 100, 100, 100, 80]
    assert pieces[0].startswith("Hello world. Again")


@pytest.mark.parametrize(
    "text",
    [
        "````markdown\n```python\n# comment\n```\n````\n# Real title\n\nBody.\n",  # a block showing a block
        "```\n~~~\n# comment\n```\n# Real title\n\nBody.\n",  # a tilde line inside a backtick block
        "``` inline ```\n# Real title\n\nBody.\n",  # backticks in the info string: no fence opens
    ],
)
def test_a_code_block_closes_only_at_a_fence_of_its_own_kind(text: str) -> None:
    """CommonMark: a fenced block closes at a fence of its character, at least as long, with no info
    string; any fence line used to toggle, and '# comment' inside the block was a heading."""
    from ragroute.loaders.folder import first_heading

    assert first_heading(text) == "Real title"
    chunks = chunk_documents([Document(id="d", text=text, title="T")], "section")
    assert [c.title for c in chunks if "comment" in c.text or "Body" in c.text][-1] == "Real title"
    assert all(c.title != "comment" for c in chunks)


def test_markdown_headings_follow_commonmark_fences() -> None:
    """A derandomized property: the headings read agree with markdown-it's CommonMark parser."""
    markdown_it = pytest.importorskip("markdown_it")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ragroute.markdown import markdown_lines

    parser = markdown_it.MarkdownIt("commonmark")
    lines = st.sampled_from(
        [
            "# Title",
            "## Intro to C#",
            "### x ##",
            "```",
            "````",
            "~~~",
            "~~~~",
            "```py",
            "``` a ```",
            "text",
            "",
        ]
    )

    def reference(text: str) -> list[tuple[int, str]]:
        tokens = parser.parse(text)
        return [
            (len(t.markup), tokens[i + 1].content)
            for i, t in enumerate(tokens)
            if t.type == "heading_open" and t.markup.startswith("#")
        ]

    @settings(max_examples=50, derandomize=True, deadline=None)
    @given(st.lists(lines, max_size=10))
    def check(parts: list[str]) -> None:
        text = "\n".join(parts)
        read = [(len(m.group(1)), m.group(2).strip()) for _, m in markdown_lines(text) if m is not None]
        assert read == reference(text)

    check()


def test_a_heading_indented_by_up_to_three_spaces_is_a_heading_and_four_are_code() -> None:
    """CommonMark: an ATX heading may be indented by one to three spaces; "  ## Usage" was body text
    of the section above it (until session 43). Four spaces make indented code, not a heading."""
    from ragroute.chunking import split_sections
    from ragroute.loaders.folder import first_heading

    text = " # Tool\nintro\n   ## Usage\nrun it\n    # not a heading\nmore"
    sections = split_sections(text)
    assert [(s.title, s.body) for s in sections] == [
        ("Tool", "intro"),
        ("Usage", "run it\n    # not a heading\nmore"),
    ]
    assert first_heading(text) == "Tool"


@pytest.mark.parametrize("granularity", ["paragraph", "section"])
def test_a_long_markdown_table_is_cut_between_rows_under_its_header(granularity: str) -> None:
    """A markdown table longer than max_words was cut into word windows: its rows joined on one
    line, cut mid-row, and every piece after the first without the header."""
    header = "| item | price | region |\n|---|:---:|---|"
    rows = [f"| item{i} | {i * 3} | region{i % 4} |" for i in range(60)]
    text = "# Prices\n\nThe table below lists prices.\n\n" + header + "\n" + "\n".join(rows) + "\n\nAfter it."
    chunks = chunk_document(Document(id="p", text=text, title="Prices"), granularity)  # type: ignore[arg-type]
    pieces = [c.text[c.text.index(header) :] for c in chunks if "| item" in c.text]
    assert len(pieces) > 1
    kept = []
    for piece in pieces:
        assert piece.startswith(header + "\n")
        body = piece[len(header) + 1 :].split("\n\n")[0].split("\n")
        assert all(line in rows for line in body)  # whole rows, one a line
        kept += body
    assert kept == rows  # every row once, in order
    limit = DEFAULT_MAX_WORDS[granularity]
    assert all(word_count(c.text) <= limit for c in chunks)


def test_a_line_of_hash_marks_and_blanks_is_no_heading() -> None:
    """``#`` followed by two spaces was a heading with an empty title (``#`` and one space was not):
    the file's title fell back to its name though a real heading followed, and the line left the
    text of its section."""
    from ragroute.chunking import split_sections
    from ragroute.loaders.folder import first_heading

    for blank in ("#  ", "##\t ", "# \t"):
        text = f"{blank}\nintro\n# Real\nbody"
        assert first_heading(text) == "Real"
        assert [(s.title, s.body) for s in split_sections(text)] == [
            (None, f"{blank}\nintro"),
            ("Real", "body"),
        ]


@pytest.mark.parametrize("granularity", ["paragraph", "section"])
def test_a_paragraph_of_many_tables_is_cut_in_one_pass(granularity: str) -> None:
    """Table after table with no blank line between them (a spreadsheet's sheets exported one after
    another) was cut by one recursive call per table, each reading the rest of the text again:
    quadratic, and RecursionError past about 1,000 tables, so the build failed."""
    import re

    block = "| id | value |\n|---|---|\n| row{i} | {i} |\nnote{i} after it"
    text = "\n".join(block.format(i=i) for i in range(3000))
    chunks = chunk_document(Document(id="t", text=text, title="T"), granularity)  # type: ignore[arg-type]
    joined = "\n".join(c.text for c in chunks)
    assert [int(i) for i in re.findall(r"\| row(\d+) \|", joined)] == list(range(3000))  # each once
    assert [int(i) for i in re.findall(r"note(\d+) after", joined)] == list(range(3000))
    assert all(word_count(c.text) <= DEFAULT_MAX_WORDS[granularity] for c in chunks)
