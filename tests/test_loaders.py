"""Tests of ragroute.loaders: every corpus format, the bad-line policy and auto-detection."""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import pytest

from ragroute.errors import CorpusFormatError
from ragroute.loaders import (
    CorpusWarning,
    LoadReport,
    detect_format,
    load_beir,
    load_beir_corpus,
    load_beir_queries,
    load_corpus,
    load_hipporag_corpus,
    load_qrels,
    load_table_file,
    load_text_folder,
    read_jsonl,
)
from ragroute.loaders.folder import READ_SUFFIXES
from ragroute.types import Document


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_qrels(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def beir_folder(tmp_path: Path) -> Path:
    root = tmp_path / "mini"
    write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Cats", "text": "Cats purr.", "metadata": {"lang": "en"}},
            {"_id": "d2", "title": "", "text": "Dogs bark."},
            {"_id": "d3", "title": "Fish", "text": "Fish swim."},
        ],
    )
    write_jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q1", "text": "what purrs", "metadata": {"split": "dev"}},
            {"_id": "q2", "text": "what barks"},
            {"_id": "q3", "text": "what swims (test split only)"},
        ],
    )
    write_qrels(root / "qrels" / "dev.tsv", [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d3", 1)])
    write_qrels(root / "qrels" / "test.tsv", [("q3", "d3", 1)])
    return root


def bad_jsonl(tmp_path: Path) -> Path:
    """Five lines: good, invalid UTF-8, blank, broken JSON, good."""
    path = tmp_path / "corpus.jsonl"
    good1 = json.dumps({"_id": "a", "text": "alpha"}).encode()
    bad_utf8 = b'{"_id": "b", "text": "caf\xe9 \xff"}'
    broken = b'{"_id": "c", "text": "gamma"'
    good2 = json.dumps({"_id": "d", "text": "delta"}).encode()
    path.write_bytes(b"\n".join([good1, bad_utf8, b"", broken, good2]) + b"\n")
    return path


# --- read_jsonl and the bad-line policy ---------------------------------------------------------


def test_read_jsonl_skips_bad_lines_with_one_counted_warning(tmp_path: Path) -> None:
    path = bad_jsonl(tmp_path)
    report = LoadReport()
    with pytest.warns(CorpusWarning) as caught:
        rows = list(read_jsonl(path, report=report))
    assert [(n, r["_id"]) for n, r in rows] == [(1, "a"), (5, "d")]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 2 bad lines" in message and "lines 2, 4" in message and "corpus.jsonl" in message
    assert report.n_skipped == 2
    assert [s.where for s in report.skipped] == ["line 2", "line 4"]
    assert "invalid UTF-8" in report.skipped[0].reason
    assert "invalid JSON" in report.skipped[1].reason


def test_read_jsonl_raise_names_file_and_line_for_invalid_utf8(tmp_path: Path) -> None:
    path = bad_jsonl(tmp_path)
    with pytest.raises(CorpusFormatError, match=r"corpus\.jsonl line 2: invalid UTF-8") as info:
        list(read_jsonl(path, on_error="raise"))
    assert "\n" not in str(info.value)


def test_read_jsonl_raise_on_broken_json(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"a": 1}\n{"a": 2,,}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"c\.jsonl line 2: invalid JSON \(Expecting"):
        list(read_jsonl(path, on_error="raise"))


def test_read_jsonl_broken_json_position_is_on_its_own_line(tmp_path: Path) -> None:
    """A line cut short is reported at its own column (not "column 1" of the next line), and a
    message that already ends in "at" is not given a second one."""
    path = tmp_path / "c.jsonl"
    path.write_text('{"a": 1}\n{"a": "cut\n{"a": \n', encoding="utf-8")
    report = LoadReport()
    with pytest.warns(CorpusWarning):
        assert [r["a"] for _, r in read_jsonl(path, report=report)] == [1]
    reasons = " | ".join(str(skipped) for skipped in report.skipped)
    assert "Unterminated string starting at column 7" in reasons and "at at" not in reasons
    assert "Expecting value at column 7" in reasons


def test_beir_rows_keep_their_other_fields_as_metadata(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "corpus.jsonl",
        [{"_id": "d1", "text": "t", "year": 2019, "lang": "fr", "metadata": {"lang": "en", "k": 1}}],
    )
    (doc,) = load_beir_corpus(path)
    assert doc.metadata == {"year": 2019, "lang": "en", "k": 1}  # the metadata object wins a clash


def test_read_jsonl_clean_file_gives_no_warning_and_handles_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["a"] for _, r in read_jsonl(path)] == [1, 2]


def test_read_jsonl_rejects_bad_on_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_error"):
        read_jsonl(tmp_path / "x.jsonl", on_error="ignore")
    with pytest.raises(CorpusFormatError, match="no such file"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


# --- BEIR ---------------------------------------------------------------------------------------------


def test_load_beir_round_trip(beir_folder: Path) -> None:
    ds = load_beir(beir_folder)
    assert ds.name == "mini" and ds.split == "dev"
    assert [d.id for d in ds.corpus] == ["d1", "d2", "d3"]
    assert ds.corpus[0] == Document(id="d1", text="Cats purr.", title="Cats", metadata={"lang": "en"})
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 1}}
    assert all(isinstance(s, int) for rels in ds.qrels.values() for s in rels.values())
    assert [q.id for q in ds.queries] == ["q1", "q2"]
    assert ds.queries[0].metadata == {"split": "dev"}
    assert "docs=3" in repr(ds)


def test_load_beir_split_filters_queries(beir_folder: Path) -> None:
    ds = load_beir(beir_folder, split="test")
    assert [q.id for q in ds.queries] == ["q3"]
    assert ds.qrels == {"q3": {"d3": 1}}
    everything = load_beir(beir_folder, split=None)
    assert len(everything.queries) == 3 and everything.qrels == {}


def test_load_beir_missing_split_lists_available(beir_folder: Path) -> None:
    with pytest.raises(CorpusFormatError, match=r"no qrels/train\.tsv \(available splits: dev, test\)"):
        load_beir(beir_folder, split="train")


def test_load_beir_several_corpus_files_and_table_modality(tmp_path: Path) -> None:
    root = tmp_path / "hybrid"
    write_jsonl(root / "corpus_tables.jsonl", [{"_id": "t1", "title": "", "text": "a | b\n1 | 2"}])
    write_jsonl(root / "corpus_paragraphs.jsonl", [{"_id": "p1", "title": "", "text": "Some prose."}])
    write_jsonl(root / "queries.jsonl", [{"_id": "q", "text": "x"}])
    write_qrels(root / "qrels" / "dev.tsv", [("q", "t1", 1), ("q", "p1", 1)])
    ds = load_beir(root)
    assert {d.id: d.modality for d in ds.corpus} == {"p1": "text", "t1": "table"}


def test_load_beir_duplicate_id_across_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "corpus_a.jsonl", [{"_id": "x", "text": "one"}])
    write_jsonl(tmp_path / "corpus_b.jsonl", [{"_id": "x", "text": "two"}])
    with pytest.raises(CorpusFormatError, match=r"duplicate document id 'x' \(corpus_a\.jsonl line 1"):
        load_beir_corpus(tmp_path)


def test_load_beir_skips_bad_corpus_line_and_reports(beir_folder: Path) -> None:
    with (beir_folder / "corpus.jsonl").open("ab") as fh:
        fh.write(b'{"_id": "d4", "text": "\xff"}\n{"title": "no id", "text": "x"}\n')
    with pytest.warns(CorpusWarning, match=r"skipped 2 bad lines in .*corpus\.jsonl \(lines 4, 5"):
        ds = load_beir(beir_folder)
    assert len(ds.corpus) == 3 and ds.report.n_skipped == 2
    with pytest.raises(CorpusFormatError, match=r"corpus\.jsonl line 4: invalid UTF-8"):
        load_beir(beir_folder, on_error="raise")


def test_load_qrels_bad_line_names_line(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\thigh\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"dev\.tsv line 3: score must be an integer"):
        load_qrels(path)
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"dev\.tsv line 2: expected 3"):
        load_qrels(path)


def test_load_qrels_without_header_and_trec_format(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t2\n\nq1 0 d2 1\n", encoding="utf-8")
    assert load_qrels(path) == {"q1": {"d1": 2, "d2": 1}}


def test_load_beir_warns_on_dangling_qrels(beir_folder: Path) -> None:
    write_qrels(beir_folder / "qrels" / "dev.tsv", [("q1", "d1", 1), ("q9", "d9", 1)])
    with pytest.warns(CorpusWarning, match="judged query id not in queries.jsonl"):
        ds = load_beir(beir_folder)
    assert "q9" in ds.qrels


def test_load_beir_raise_refuses_dangling_qrels_and_an_empty_split(beir_folder: Path) -> None:
    # the benchmarks load with on_error="raise": a qrels id naming no query or document, or an empty
    # split, was only a warning, and the judged query then scored 0 (or was dropped) silently
    write_qrels(beir_folder / "qrels" / "dev.tsv", [("q1", "d1", 1), ("q9", "d1", 1)])
    with pytest.raises(
        CorpusFormatError, match=r"dev\.tsv: 1 judged query id not in queries\.jsonl \(e\.g\. 'q9'\)"
    ):
        load_beir(beir_folder, on_error="raise")
    write_qrels(beir_folder / "qrels" / "dev.tsv", [("q1", "d9", 1)])
    with pytest.raises(CorpusFormatError, match=r"1 judged doc id not in the corpus \(e\.g\. 'd9'\)"):
        load_beir(beir_folder, on_error="raise")
    write_qrels(beir_folder / "qrels" / "dev.tsv", [])
    with pytest.raises(CorpusFormatError, match=r"dev\.tsv: no judged pairs \(split 'dev' is empty\)"):
        load_beir(beir_folder, on_error="raise")
    assert load_beir(beir_folder).queries == []  # the library default still loads it


def test_load_beir_accepts_every_valid_variant(tmp_path: Path) -> None:
    # CRLF, a BOM, a trailing blank line, ids that look numeric, graded and zero scores, several
    # splits in one queries.jsonl, no metadata / no title, unknown fields: read as written
    root = tmp_path / "set"
    corpus = [{"_id": "7", "text": "seven"}, {"_id": "007", "title": "", "text": "agent", "x": 1}]
    queries = [{"_id": "1", "text": "lucky", "extra": True}, {"_id": "01", "text": "spy"}]
    crlf = "\r\n"
    (root / "qrels").mkdir(parents=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        text = crlf.join(json.dumps(r) for r in rows) + crlf + crlf
        (root / name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (root / "qrels" / "test.tsv").write_bytes(
        b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\n01\t007\t4\r\n01\t7\t0\r\n\r\n"
    )
    (root / "qrels" / "dev.tsv").write_text("1\t7\t1\n", encoding="utf-8")  # no header line
    test = load_beir(root, split="test", on_error="raise")
    assert [d.id for d in test.corpus] == ["7", "007"] and test.corpus[0].title == ""
    assert [q.id for q in test.queries] == ["01"] and test.qrels == {"01": {"007": 4, "7": 0}}
    dev = load_beir(root, split="dev", on_error="raise")
    assert [q.id for q in dev.queries] == ["1"] and dev.qrels == {"1": {"7": 1}}


def test_load_beir_queries_duplicate_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "a"}, {"_id": "q", "text": "b"}])
    with pytest.raises(CorpusFormatError, match="duplicate query id 'q'"):
        load_beir_queries(path)


def test_load_beir_not_a_beir_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusFormatError, match="no corpus"):
        load_beir(tmp_path)
    with pytest.raises(CorpusFormatError, match="no such folder"):
        load_beir(tmp_path / "nope")


# --- HippoRAG JSON ---------------------------------------------------------------------------------


def test_hipporag_positional_ids_and_duplicates(tmp_path: Path) -> None:
    items = [{"title": "A", "text": "alpha"}, {"title": "B", "text": "beta"}, {"title": "A", "text": "alpha"}]
    path = tmp_path / "train_corpus.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    docs = load_hipporag_corpus(path)
    assert [d.id for d in docs] == ["train_corpus-0", "train_corpus-1", "train_corpus-2"]
    assert docs[2].title == "A" and docs[2].text == "alpha"
    assert [d.id for d in load_hipporag_corpus(path, id_prefix="mq")] == ["mq-0", "mq-1", "mq-2"]


def test_hipporag_bad_item_skipped_without_shifting_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"title": "A", "text": "a"}, {"title": "no text"}, {"text": "c"}]), "utf-8")
    with pytest.warns(CorpusWarning, match=r"skipped 1 bad item .*item 1: missing 'text'"):
        docs = load_hipporag_corpus(path)
    assert [d.id for d in docs] == ["c-0", "c-2"]


def test_hipporag_broken_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('[\n  {"title": "A", "text": "a"},\n  {"title": \n]\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"c\.json line 4: invalid JSON"):
        load_hipporag_corpus(path)
    path.write_text('{"title": "A"}', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match="expected a JSON array"):
        load_hipporag_corpus(path)
    path.write_bytes(b'\xef\xbb\xbf[\n  {"title": "A", "text": "caf\xe9"}\n]\n')  # BOM, then latin-1
    with pytest.raises(CorpusFormatError, match=r"c\.json: invalid UTF-8 on line 2 \(byte 0xe9\)"):
        load_hipporag_corpus(path)
    path.write_bytes(b'\xef\xbb\xbf[{"title": "A", "text": "a"}]')  # a BOM alone is fine
    assert [d.id for d in load_hipporag_corpus(path)] == ["c-0"]


# --- folders of files ------------------------------------------------------------------------------


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "setup.md").write_text("Intro line\n\n# Setup Guide\n\nInstall it.\n", "utf-8")
    (root / "notes.txt").write_text("# not a heading in txt\nplain notes", "utf-8")
    (root / "prices.csv").write_text("item,price\napple,1\npear,2\n", "utf-8")
    (root / "empty.md").write_text("  \n", "utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("hidden", "utf-8")
    return root


def test_load_text_folder(text_folder: Path) -> None:
    docs = load_text_folder(text_folder)
    assert [d.id for d in docs] == ["guides/setup", "notes", "prices"]
    setup, notes, prices = docs
    assert setup.title == "Setup Guide" and setup.metadata == {"path": "guides/setup.md"}
    assert "Install it." in setup.text
    assert notes.title == "notes"
    assert prices.modality == "table" and prices.title == "prices"
    assert prices.text == "item | price\napple | 1\npear | 2"
    assert prices.metadata == {
        "columns": ["item", "price"],
        "rows": [["apple", "1"], ["pear", "2"]],
        "path": "prices.csv",
    }


def test_load_text_folder_invalid_utf8_file(text_folder: Path) -> None:
    (text_folder / "broken.txt").write_bytes(b"fine\nbad \xff byte\n")
    report = LoadReport()
    with pytest.warns(
        CorpusWarning, match=r"skipped 1 bad file in .*docs \(broken\.txt; broken\.txt: invalid"
    ):
        docs = load_text_folder(text_folder, report=report)
    assert "broken" not in [d.id for d in docs] and report.n_skipped == 1
    with pytest.raises(CorpusFormatError, match=r"broken\.txt: invalid UTF-8 on line 2"):
        load_text_folder(text_folder, on_error="raise")


def test_empty_files_of_a_folder_are_left_out_with_one_warning_naming_them(tmp_path: Path) -> None:
    """An empty .txt in a folder gave ``loaded 0 documents`` and no word of it (a user audit)."""
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n", "utf-8")
    (tmp_path / "empty.txt").write_text("", "utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "blank notes.md").write_text("  \n\n", "utf-8")
    (tmp_path / "sub" / "none.csv").write_text("", "utf-8")
    # a header and no row: indexed as a table of its header alone until session 43
    (tmp_path / "sub" / "only header.csv").write_text("sku,price\n", "utf-8")
    for on_error in ("skip", "raise"):  # empty is not bad: never raised
        report = LoadReport()
        with pytest.warns(CorpusWarning) as caught:
            docs = load_text_folder(tmp_path, on_error=on_error, report=report)
        assert [d.id for d in docs] == ["a"]
        messages = [str(w.message) for w in caught if issubclass(w.category, CorpusWarning)]
        assert messages == [
            f"skipped 4 empty files in {tmp_path} (empty.txt, sub/blank notes.md, sub/none.csv and 1 more)"
        ]
        ignored = ["empty.txt", "sub/blank notes.md", "sub/none.csv", "sub/only header.csv"]
        assert [s.where for s in report.ignored] == ignored
        assert report.n_skipped == 0 and report.n_ignored == 4
    with pytest.warns(CorpusWarning, match=r"skipped 1 empty file in .* \(empty\.txt\)"):
        assert load_corpus(tmp_path / "empty.txt") == []


def test_a_folder_file_with_no_visible_character_is_left_out_as_empty(tmp_path: Path) -> None:
    """Until session 56 a file of NUL bytes or zero-width spaces was no empty file (``str.strip``
    keeps them): it was indexed as a document of its file name alone, which a dense index returns
    for any query. It is left out as empty, as chunking and a BEIR corpus read such a text."""
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n", "utf-8")
    (tmp_path / "nul.txt").write_bytes(b"\x00\x00\x00")
    (tmp_path / "zw.md").write_text("\ufeff\u200b\n\u200d\n", "utf-8")
    (tmp_path / "ansi.txt").write_text("\x1b[0m\n", "utf-8")  # "[0m" is visible: a document
    report = LoadReport()
    with pytest.warns(CorpusWarning, match=r"skipped 2 empty files in .* \(nul\.txt, zw\.md\)"):
        docs = load_text_folder(tmp_path, report=report)
    assert [d.id for d in docs] == ["a", "ansi"]
    assert [(s.where, s.reason) for s in report.ignored] == [("nul.txt", "empty"), ("zw.md", "empty")]
    with pytest.warns(CorpusWarning, match=r"skipped 1 empty file .*\(nul\.txt\)"):
        assert load_corpus(tmp_path / "nul.txt") == []


def test_a_folder_csv_whose_quote_is_never_closed_is_a_bad_file_not_the_end_of_the_load(
    tmp_path: Path,
) -> None:
    """Until session 56 one CSV of a folder with a quoted field never closed stopped the load of the
    whole folder (``ragroute build`` built nothing) under the default ``on_error="skip"``, while a CSV
    with a bad row (invalid UTF-8, text after a closing quote) was skipped as a bad file."""
    (tmp_path / "notes.md").write_text("# Notes\n\nSome text.\n", "utf-8")
    (tmp_path / "broken.csv").write_text('item,price\nlamp,"12\ndesk,80\n', "utf-8")
    (tmp_path / "prices.csv").write_text("item,price\nchair,40\n", "utf-8")
    report = LoadReport()
    with pytest.warns(CorpusWarning) as caught:
        docs = load_text_folder(tmp_path, report=report)
    assert [d.id for d in docs] == ["notes", "prices"]
    messages = [str(w.message) for w in caught if issubclass(w.category, CorpusWarning)]
    assert messages == [
        f"skipped 1 bad file in {tmp_path} (broken.csv; broken.csv: line 2: a quoted field opened on "
        'this line is never closed (it would take in the line after it); close it with ", and write '
        'a " inside a quoted field as "")'
    ]
    assert report.n_skipped == 1
    with pytest.raises(CorpusFormatError) as info:
        load_text_folder(tmp_path, on_error="raise")
    assert str(info.value).startswith(f"{tmp_path}/broken.csv: line 2: a quoted field opened on this")
    with pytest.raises(CorpusFormatError, match=r"broken\.csv line 2: a quoted field"):
        load_corpus(tmp_path / "broken.csv", text_column="item")  # the corpus itself: refused whole


def test_files_a_folder_corpus_does_not_read_are_counted_by_suffix_in_one_warning(tmp_path: Path) -> None:
    """A folder of two .md files and tickets.jsonl loaded 2 documents and never said that the
    tickets had been passed over (a user audit); images, compiled and hidden files stay unsaid."""
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n", "utf-8")
    (tmp_path / "tickets.jsonl").write_text('{"id": "T1", "text": "printer jams"}\n', "utf-8")
    for name in ("page.html", "doc.rst", "sub/more.html", "sub/third.html", "LICENSE"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("words", "utf-8")
    for name in ("logo.png", "__pycache__/m.pyc", ".git/notes.jsonl", "sub/.draft.html"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"\x89")
    report = LoadReport()
    with pytest.warns(CorpusWarning) as caught:
        docs = load_corpus(tmp_path, on_error="raise", report=report)
    assert [d.id for d in docs] == ["a"]
    assert [str(w.message) for w in caught] == [
        f"{tmp_path}: 6 files not read (3 .html: page.html, sub/more.html and 1 more; "
        "1 (no extension): LICENSE; 1 .jsonl: tickets.jsonl; 1 .rst: doc.rst): a folder corpus reads "
        ".txt, .md, .markdown, .csv, .tsv files; a .jsonl or .json file is a corpus of its own "
        f"(e.g. {tmp_path / 'tickets.jsonl'})"
    ]
    assert [(s.where, s.reason) for s in report.ignored][:2] == [
        ("LICENSE", "not read"),
        ("doc.rst", "not read"),
    ]
    assert report.n_ignored == 6 and report.n_skipped == 0


def test_a_folder_of_readable_and_plainly_binary_files_loads_without_a_word(text_folder: Path) -> None:
    (text_folder / "empty.md").unlink()
    (text_folder / "photo.JPG").write_bytes(b"\xff\xd8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_text_folder(text_folder)) == 3


def test_a_folder_holding_only_a_jsonl_corpus_names_the_file_to_give(tmp_path: Path) -> None:
    # corpora/it_support holds tickets.jsonl only: as a folder corpus it loaded 0 documents and the
    # build failed with "no documents to index", never saying the file had been passed over
    (tmp_path / "tickets.jsonl").write_text('{"_id": "t1", "text": "printer jams"}\n')
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "more.json").write_text("[]")
    with pytest.raises(CorpusFormatError) as info:
        load_corpus(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "it holds notes/more.json, tickets.jsonl" in message
    assert message.endswith(f"give that file as the corpus (e.g. {tmp_path / 'notes/more.json'})")
    assert [d.id for d in load_corpus(tmp_path / "tickets.jsonl")] == ["t1"]  # as the message says
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_text_folder(empty) == []  # an empty folder is still an empty corpus
    (tmp_path / "readme.md").write_text("# Tickets\nSee tickets.jsonl.")
    with pytest.warns(CorpusWarning, match=r"2 files not read \(1 \.json: notes/more\.json; 1 \.jsonl"):
        assert [d.id for d in load_corpus(tmp_path)] == ["readme"]  # text files present: those are read


def test_load_text_folder_same_id_twice(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("one", "utf-8")
    (tmp_path / "a.txt").write_text("two", "utf-8")
    with pytest.raises(CorpusFormatError, match="duplicate document id 'a'"):
        load_text_folder(tmp_path)


# --- table files -----------------------------------------------------------------------------------


def test_load_table_file_csv(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text(
        'q,answer,topic\n"What, exactly?","It is\nmultiline",billing\nWhy,Because,misc\n', "utf-8"
    )
    docs = load_table_file(path, text_column="answer", title_column="q")
    assert [d.id for d in docs] == ["faq-1", "faq-2"]
    assert docs[0].text == "It is\nmultiline" and docs[0].title == "What, exactly?"
    assert docs[0].metadata == {"topic": "billing"}
    docs = load_table_file(path, text_column="answer", id_column="q", metadata_columns=[])
    assert docs[1].id == "Why" and docs[1].metadata == {}


def test_load_table_file_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"body": "one", "k": 1}, {"body": "two", "k": 2}])
    docs = load_table_file(path, text_column="body")
    assert [(d.id, d.text, d.metadata) for d in docs] == [
        ("rows-1", "one", {"k": 1}),
        ("rows-2", "two", {"k": 2}),
    ]


def test_a_column_named_id_gives_the_ids_unless_another_is_named(tmp_path: Path) -> None:
    """A JSONL or CSV corpus with an ``id`` field is judged by those ids (qrels name them): before,
    it got row numbers and every metric of its qrels was silently 0."""
    jsonl = write_jsonl(tmp_path / "kb.jsonl", [{"id": "a-7", "text": "one"}, {"id": 12, "text": "two"}])
    assert [(d.id, d.metadata) for d in load_corpus(jsonl)] == [("a-7", {}), ("12", {})]
    csv_path = tmp_path / "kb.csv"
    csv_path.write_text("id,text,sku\nx1,hello,S1\nx2,world,S2\n", "utf-8")
    ids = [(d.id, d.metadata) for d in load_corpus(csv_path)]
    assert ids == [("x1", {"sku": "S1"}), ("x2", {"sku": "S2"})]
    named = load_corpus(csv_path, id_column="sku")
    assert [(d.id, d.metadata) for d in named] == [("S1", {"id": "x1"}), ("S2", {"id": "x2"})]
    as_text = load_table_file(csv_path, text_column="id")  # the id column is the text: row numbers
    assert [d.id for d in as_text] == ["kb-1", "kb-2"]
    csv_path.write_text("id,text\nx1,hello\nx1,again\n", "utf-8")
    with pytest.raises(CorpusFormatError, match="duplicate document id 'x1'"):
        load_corpus(csv_path)


def test_load_table_file_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,body\n1,hello\n", "utf-8")
    with pytest.raises(CorpusFormatError, match=r"no text column 'text' \(available columns: id, body\)"):
        load_table_file(path)
    jpath = write_jsonl(tmp_path / "t.jsonl", [{"id": 1, "body": "x"}])
    with pytest.raises(CorpusFormatError, match=r"no id column 'uid' \(available columns: id, body\)"):
        load_table_file(jpath, text_column="body", id_column="uid")


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    """``id,text,text`` kept only the second text cell of every row, silently (a user audit)."""
    path = tmp_path / "dupcol.csv"
    path.write_text("id,text,text\n1,first text col,second text col\n", "utf-8")
    with pytest.raises(CorpusFormatError) as info:
        load_corpus(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: the header names a column twice")
    assert "'text' in columns 2, 3" in message
    tsv = tmp_path / "two.tsv"
    tsv.write_text("a\ttext\ta\tb\tb\n1\tx\t2\t3\t4\n", "utf-8")
    with pytest.raises(CorpusFormatError, match=r"'a' in columns 1, 3; 'b' in columns 4, 5"):
        load_table_file(tsv, on_error="skip")


def test_load_table_file_bad_rows_and_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,text\n1,good\n2,bad \xff\n3,a,b\n4,fine\n")
    with pytest.warns(CorpusWarning, match=r"skipped 2 bad lines in .*t\.csv \(lines 3, 4"):
        docs = load_table_file(path, id_column="id")
    assert [d.id for d in docs] == ["1", "4"]
    path.write_text("id,text\n1,a\n1,b\n", "utf-8")
    with pytest.raises(
        CorpusFormatError, match=r"duplicate document id '1' \(t\.csv line 2 and t\.csv line 3\)"
    ):
        load_table_file(path, id_column="id")


def test_a_quote_never_closed_is_refused_naming_the_line_it_opened(tmp_path: Path) -> None:
    """Until session 41 a CSV row whose quote is never closed took in every row after it as its
    text, silently ("loaded 1 document"); a quoted field over several lines still loads."""
    path = tmp_path / "corpus.csv"
    path.write_text(
        'id,text\na,"unterminated quote\nb,small apples\nc,more pears text\nd,last row\n', "utf-8"
    )
    expected = (
        f"{path} line 2: a quoted field opened on this line is never closed (it would take in all 3 "
        'lines after it); close it with ", and write a " inside a quoted field as ""'
    )
    for on_error in ("raise", "skip"):
        with pytest.raises(CorpusFormatError) as info:
            load_corpus(path, on_error=on_error)
        assert str(info.value) == expected
    tsv = tmp_path / "t.tsv"  # opened on a later line of a row, in a file without a last line break
    tsv.write_bytes(b'id\ttext\r\nx\t"two\r\nlines"\ty\t"open\r\nmore')
    with pytest.raises(CorpusFormatError) as info:
        load_table_file(tsv)
    assert str(info.value).startswith(f"{tsv} line 3: a quoted field opened on this line is never closed (")
    assert "(it would take in the line after it);" in str(info.value)
    last = tmp_path / "last.csv"
    last.write_text('id,text\na,"open at the end', "utf-8")
    with pytest.raises(
        CorpusFormatError, match=r"last\.csv line 2: a quoted field .* never closed; close it"
    ):
        load_corpus(last)
    good = tmp_path / "good.csv"
    good.write_text('id,text\na,"two\nlines with ""quotes"""\nb,"last\nrow"', "utf-8")
    assert [(d.id, d.text) for d in load_corpus(good)] == [
        ("a", 'two\nlines with "quotes"'),
        ("b", "last\nrow"),
    ]


# --- auto-detection -------------------------------------------------------------------------------


def test_load_corpus_detects_every_format(beir_folder: Path, text_folder: Path, tmp_path: Path) -> None:
    assert detect_format(beir_folder) == "beir"
    assert [d.id for d in load_corpus(beir_folder)] == ["d1", "d2", "d3"]
    assert detect_format(text_folder) == "folder"
    assert len(load_corpus(text_folder)) == 3
    hippo = tmp_path / "h.json"
    hippo.write_text(json.dumps([{"title": "T", "text": "x"}]), "utf-8")
    assert [d.id for d in load_corpus(hippo, id_prefix="h")] == ["h-0"]
    assert detect_format(beir_folder / "corpus.jsonl") == "beir"
    assert load_corpus(beir_folder / "corpus.jsonl")[0].title == "Cats"
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "plain"}])
    assert detect_format(rows) == "table" and load_corpus(rows)[0].id == "rows-1"
    csv_path = tmp_path / "r.csv"
    csv_path.write_text("body\nhello\n", "utf-8")
    assert load_corpus(csv_path, text_column="body")[0].text == "hello"
    md = tmp_path / "single.md"
    md.write_text("# Title\n\nBody", "utf-8")
    assert load_corpus(md)[0].title == "Title"


def test_load_corpus_errors(tmp_path: Path, beir_folder: Path) -> None:
    with pytest.raises(CorpusFormatError, match="no such file or folder"):
        load_corpus(tmp_path / "missing")
    odd = tmp_path / "data.pdf"
    odd.write_bytes(b"%PDF")
    with pytest.raises(CorpusFormatError, match=r"unknown corpus format '\.pdf'") as info:
        load_corpus(odd)
    # every suffix read names itself in the list (until session 56 .markdown was read, not named)
    assert all(suffix in str(info.value) for suffix in (".json", ".jsonl", *READ_SUFFIXES))
    with pytest.raises(CorpusFormatError, match="corpus: unknown option"):
        load_corpus(beir_folder, text_column="body")
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"_id": "x", "text": "a"}, {"_id": "x", "text": "b"}])
    with pytest.raises(CorpusFormatError, match="duplicate document id 'x'"):
        load_corpus(dup)


# --- LABELS --------------------------------------------------------------------------------------


def test_load_labels_variants_and_refusals(tmp_path: Path) -> None:
    from ragroute.loaders.labels import load_labels

    rows = [
        {"_id": "1", "text": "hi\u2028there", "label": "no"},  # U+2028 is valid inside a JSON string
        {"_id": "01", "text": "find it", "label": ["paragraph", "image"], "x": 1},
    ]
    path = tmp_path / "dev.jsonl"
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    records = load_labels(path)
    assert [(r.id, r.text, r.labels, r.label) for r in records] == [
        ("1", "hi\u2028there", ("no",), "no"),
        ("01", "find it", ("paragraph", "image"), "paragraph"),
    ]
    broken = {
        '{"_id": "2", "text": "x", "label": no}': r"dev\.jsonl line 3: invalid JSON",
        '{"text": "x", "label": "no"}': r"dev\.jsonl line 3: missing or invalid '_id'",
        '{"_id": "2", "label": "no"}': r"dev\.jsonl line 3: missing or empty 'text'",
        '{"_id": "2", "text": "x", "label": []}': r"dev\.jsonl line 3: 'label' must be a non-empty string",
        '{"_id": "1", "text": "x", "label": "no"}': r"duplicate record id '1' \(dev\.jsonl line 1 and",
    }
    for line, message in broken.items():
        path.write_text("\n".join([json.dumps(r) for r in rows] + [line]) + "\n", encoding="utf-8")
        with pytest.raises(CorpusFormatError, match=message):
            load_labels(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match="no records"):
        load_labels(path)


def test_the_skip_summary_gives_the_reason_of_the_first_bad_line(tmp_path: Path) -> None:
    path = bad_jsonl(tmp_path)
    with pytest.warns(CorpusWarning) as caught:
        list(read_jsonl(path))
    message = str(caught[0].message)
    assert message.startswith(f"skipped 2 bad lines in {path} (lines 2, 4; line 2: invalid UTF-8")
    assert "invalid JSON" not in message


def test_a_pair_judged_twice_keeps_the_last_score_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    lines = ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q1\td2\t1", "q1\td1\t0", "q2\td3\t1"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(CorpusWarning) as caught:
        qrels = load_qrels(path)
    assert qrels == {"q1": {"d1": 0, "d2": 1}, "q2": {"d3": 1}}
    assert [str(w.message) for w in caught] == [
        f"{path}: 1 (query-id, corpus-id) pair judged on more than one line (q1 d1: 2 then 0): "
        "the last line's score is kept"
    ]
    with pytest.raises(CorpusFormatError, match="judge each pair once"):
        load_qrels(path, on_error="raise")


# ------------------------------------------------------------------ a key written twice in one object

REPEATED = '{"_id": "b", "text": "kept?", "title": "t", "label": "x", "name": "n", "_id": "c"}'


def _second_line_repeats(path: Path, first: dict) -> Path:
    path.write_text(json.dumps(first) + "\n" + REPEATED + "\n", encoding="utf-8")
    return path


def _read_with(reader: str, tmp_path: Path):
    """Each JSONL reader users feed, over a file whose line 2 writes `_id` twice."""
    from ragroute.cli.skills import read_tasks
    from ragroute.graph.triples import read_triples
    from ragroute.loaders.labels import load_labels
    from ragroute.route.labels import read_labelled_queries
    from ragroute.skills.load_skills_jsonl import load_skills_jsonl

    first = {"_id": "a", "text": "fine", "title": "t", "label": "x", "name": "m", "description": "d"}
    path = _second_line_repeats(tmp_path / "data.jsonl", first)
    readers = {
        "beir corpus": lambda: load_beir_corpus(path, on_error="raise"),
        "beir queries": lambda: load_beir_queries(path, on_error="raise"),
        "table": lambda: load_table_file(path, on_error="raise"),
        "read_jsonl": lambda: list(read_jsonl(path, on_error="raise")),
        "labels": lambda: load_labels(path),
        "route labels": lambda: read_labelled_queries(path),
        "skills": lambda: load_skills_jsonl(path, on_error="raise"),
        "tasks": lambda: read_tasks(path),
    }
    if reader == "triples":
        first = {"subject": "a", "object": "b"}
        path.write_text(json.dumps(first) + '\n{"subject": "x", "object": "y", "subject": "z"}\n')
        return read_triples(path)
    return readers[reader]()


@pytest.mark.parametrize(
    "reader",
    [
        "beir corpus",
        "beir queries",
        "table",
        "read_jsonl",
        "labels",
        "route labels",
        "skills",
        "tasks",
        "triples",
    ],
)
def test_every_jsonl_reader_refuses_a_record_that_writes_a_key_twice(reader, tmp_path):
    """JSON keeps the last of two values silently (`_id` "c" here, with the text of "b"); every
    reader refuses the record in one line naming the file, the line and the key."""
    from ragroute.errors import RagrouteError

    with pytest.raises(RagrouteError) as info:
        _read_with(reader, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "data.jsonl" in message, message
    assert "line 2" in message or "lines 2" in message, message
    key = "subject" if reader == "triples" else "_id"
    assert f"duplicate key {key!r}" in message, message


def test_a_skipped_record_with_a_repeated_key_is_counted_and_named(tmp_path):
    path = _second_line_repeats(tmp_path / "corpus.jsonl", {"_id": "a", "text": "fine"})
    report = LoadReport()
    with pytest.warns(CorpusWarning, match=r"corpus.jsonl \(line 2; line 2: duplicate key '_id'"):
        docs = load_beir_corpus(path, report=report)
    assert [d.id for d in docs] == ["a"] and report.n_skipped == 1


def test_a_json_array_corpus_refuses_the_item_that_writes_a_key_twice(tmp_path):
    path = tmp_path / "corpus.json"
    path.write_text('[{"title": "A", "text": "a"}, {"title": "B", "text": "b", "text": "c"}, {"text": "d"}]')
    with pytest.raises(CorpusFormatError, match=r"corpus.json item 1: duplicate key 'text'"):
        load_hipporag_corpus(path, on_error="raise")
    with pytest.warns(CorpusWarning, match="duplicate key 'text'"):
        docs = load_hipporag_corpus(path)
    assert [d.text for d in docs] == ["a", "d"] and [d.id for d in docs] == ["corpus-0", "corpus-2"]
    nested = tmp_path / "nested.json"
    nested.write_text('[{"text": "a", "meta": {"k": 1, "k": 2}}]')
    with pytest.raises(CorpusFormatError, match="item 0: duplicate key 'k'"):
        load_hipporag_corpus(nested, on_error="raise")


def test_graphml_passage_metadata_that_writes_a_key_twice_is_an_error():
    import networkx as nx

    from ragroute.graph.triples import triples_from_networkx

    graph = nx.Graph()
    graph.add_node("p1", type="passage", text="t", metadata='{"access": "staff", "access": "public"}')
    graph.add_node("x")
    graph.add_edge("p1", "x")
    with pytest.raises(CorpusFormatError, match=r"g.graphml: passage 'p1': metadata: duplicate key 'access'"):
        triples_from_networkx(graph, source="g.graphml")


def test_an_mcp_or_openapi_json_file_with_a_repeated_key_loads_with_a_warning(tmp_path):
    """Catalogue specs load as far as they sensibly can, with a warning naming file and key."""
    from ragroute.skills import load_catalogue
    from ragroute.skills.records import SkillWarning

    tools = tmp_path / "tools.json"
    tools.write_text(
        '{"tools": [{"name": "get_weather", "description": "Weather now", "inputSchema": {}, '
        '"name": "get_forecast"}]}'
    )
    with pytest.warns(SkillWarning, match=r"tools.json: duplicate key 'name'") as caught:
        catalogue = load_catalogue(tools)
    assert [s.name for s in catalogue.skills] == ["get_forecast"]
    assert sum("duplicate key" in str(w.message) for w in caught) == 1
    spec = tmp_path / "api.json"
    spec.write_text(
        json.dumps({"openapi": "3.0.0", "info": {"title": "t", "version": "1"}})[:-1]
        + ', "paths": {"/a": {"get": {"summary": "A", "operationId": "x", "operationId": "getA"}}}}'
    )
    with pytest.warns(SkillWarning, match=r"api.json: duplicate key 'operationId'"):
        catalogue = load_catalogue(spec)
    assert len(catalogue.skills) == 1


def test_a_yaml_spec_with_a_repeated_key_warns_and_every_repeat_is_on_the_catalogue(tmp_path):
    """A YAML OpenAPI spec or MCP list that writes a key twice kept the last value silently; now
    as JSON: loaded, with a warning naming file, key and line, kept on Catalogue.warnings too."""
    from ragroute.skills import load_catalogue
    from ragroute.skills.records import SkillWarning

    spec = tmp_path / "api.yaml"
    spec.write_text(
        "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n"
        "  /a:\n    get:\n      operationId: first\n      summary: A\n      operationId: getA\n"
    )
    with pytest.warns(SkillWarning, match=r"api.yaml: duplicate key 'operationId' at line 8"):
        catalogue = load_catalogue(spec)
    assert [s.name for s in catalogue.skills] == ["getA"]
    assert any("duplicate key 'operationId' at line 8" in w for w in catalogue.warnings)
    tools = tmp_path / "tools.json"  # JSON too: on Catalogue.warnings, not only emitted
    tools.write_text('{"tools": [{"name": "a", "description": "d", "inputSchema": {}, "name": "b"}]}')
    with pytest.warns(SkillWarning):
        catalogue = load_catalogue(tools)
    assert [w for w in catalogue.warnings if "duplicate key 'name'" in w]


def test_a_beir_shaped_jsonl_read_as_a_table_keeps_its_ids_and_titles(tmp_path):
    """Giving one column option switched a BEIR-shaped .jsonl to the table reader, which numbered
    its rows (`y-1`, `y-2`) and dropped the titles from the text, silently (a docs audit)."""
    from ragroute.loaders import load_corpus

    path = tmp_path / "y.jsonl"
    path.write_text(
        '{"_id": "a", "title": "Paper jam", "text": "tray two", "year": 2020}\n'
        '{"_id": "b", "title": "VPN drops", "text": "hotel wifi", "year": 2021}\n'
    )
    plain = load_corpus(path)
    for options in ({"metadata_columns": ["year"]}, {"text_column": "text"}):
        docs = load_corpus(path, **options)
        assert [(d.id, d.title, d.text) for d in docs] == [(d.id, d.title, d.text) for d in plain]
        assert [d.id for d in docs] == ["a", "b"] and docs[0].title == "Paper jam"
    assert load_corpus(path, metadata_columns=["year"])[1].metadata == {"year": 2021}
    assert [d.id for d in load_corpus(path, id_column="year")] == ["2020", "2021"]  # named: wins


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "query is empty or whitespace only"),
        ("\u200b", "query has no visible characters"),
        ("x" * 100_001, "query is 100,001 characters long"),
    ],
)
def test_a_labelled_query_no_router_can_take_names_its_file_and_line(tmp_path: Path, text, said) -> None:
    """`gate fit` and `route fit` said "query is empty" without the line, in files of thousands."""
    from ragroute.errors import InvalidQueryError
    from ragroute.route.labels import read_labelled_queries

    path = tmp_path / "labels.jsonl"
    rows = [{"text": "what is BM25?", "label": "search"}, {"text": text, "label": "no"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(InvalidQueryError, match=f"^{re.escape(str(path))} line 2: {said}"):
        read_labelled_queries(path)


def test_a_beir_row_with_neither_text_nor_title_is_left_out_and_its_judgements_still_load(
    beir_folder: Path,
) -> None:
    """Cranfield holds two such rows, one judged relevant: every index refuses a document with
    nothing to index, so the benchmarks and `rerank train` over Glasgow stopped at that error."""
    from ragroute.index.build import build_index

    with (beir_folder / "corpus.jsonl").open("a") as fh:
        fh.write('{"_id": "e1", "title": "", "text": ""}\n{"_id": "e2", "text": "\\u200b"}\n')
    write_qrels(beir_folder / "qrels" / "dev.tsv", [("q1", "d1", 1), ("q1", "e1", 2)])
    for on_error in ("skip", "raise"):
        report = LoadReport()
        with pytest.warns(
            CorpusWarning, match=r"skipped 2 documents with neither text nor title in .*'e1', 'e2'\)$"
        ):
            ds = load_beir(beir_folder, on_error=on_error, report=report)
        assert [d.id for d in ds.corpus] == ["d1", "d2", "d3"]
        assert ds.qrels["q1"] == {"d1": 1, "e1": 2}  # still judged: a miss for every retriever
        assert [(e.where, e.reason) for e in report.ignored] == [("line 4", "empty"), ("line 5", "empty")]
        assert report.n_skipped == 0
        assert len(build_index(ds.corpus, "bm25")) == 3
    with pytest.warns(CorpusWarning, match="neither text nor title"):
        assert len(load_beir_corpus(beir_folder)) == 3
    with (beir_folder / "corpus.jsonl").open("a") as fh:
        fh.write('{"_id": "e1", "text": "again"}\n')
    with pytest.raises(CorpusFormatError, match="e1"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_beir_corpus(beir_folder)  # an empty row's id still counts for duplicates


def test_a_labels_path_that_is_a_folder_is_said_to_be_no_file_not_missing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.loaders.labels import load_labels

    with pytest.raises(CorpusFormatError, match=r"is not a file \(a LABELS \.jsonl file\)$"):
        load_labels(tmp_path)
    with pytest.raises(CorpusFormatError, match=r"nope\.jsonl not found \(a LABELS \.jsonl file\)$"):
        load_labels(tmp_path / "nope.jsonl")
    for args in (["bench", "gate", "--data", str(tmp_path), "--folds", "2"], ["gate", "fit", str(tmp_path)]):
        result = CliRunner().invoke(
            main, args + (["--out", str(tmp_path / "g")] if args[0] == "gate" else [])
        )
        assert result.exit_code != 0
        assert result.output.strip().splitlines() == [
            f"error: data missing: {tmp_path} is not a file (a LABELS .jsonl file)"
        ], result.output
    result = CliRunner().invoke(main, ["bench", "gate", "--data", str(tmp_path)])
    assert "give one of --train TRAIN.jsonl or --folds N" in result.output


def test_column_options_of_the_wrong_type_are_refused(tmp_path):
    """`metadata_columns: notalist` in a corpus definition was read one column per letter (each a
    missing column, or worse) until session 37; `config check` reads the same refusal."""
    table = tmp_path / "t.csv"
    table.write_text("id,text,lang\n1,hello,en\n")
    with pytest.raises(
        CorpusFormatError, match="metadata_columns must be a list of column names, not 'lang'"
    ):
        load_corpus(table, metadata_columns="lang")
    with pytest.raises(CorpusFormatError, match="text_column must be a column name, not 5"):
        load_corpus(table, text_column=5)
    assert load_corpus(table, metadata_columns=["lang"])[0].metadata == {"lang": "en"}


def test_a_corpus_definitions_modality_reaches_its_documents(tmp_path):
    """A single CSV of product rows under `modality: table` loaded as text: a `modality=table` filter
    found none of them, and chunking cut the rows (until session 37)."""
    from ragroute.chunking import chunk_documents
    from ragroute.corpora import load_corpus_specs

    (tmp_path / "products.csv").write_text("sku,body\nA1,Laptop Pro has a 14 inch screen.\n\nB2,Monitor\n")
    (tmp_path / "corpora.yaml").write_text(
        "corpora:\n  products: {path: products.csv, modality: table, granularity: paragraph,"
        " options: {text_column: body, id_column: sku}}\n"
    )
    (spec,) = load_corpus_specs(tmp_path / "corpora.yaml")
    documents = spec.load_documents()
    assert [(d.id, d.modality) for d in documents] == [("A1", "table"), ("B2", "table")]
    assert all(u.modality == "table" for u in chunk_documents(documents, spec.granularity))


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (
            '"../prod"',
            "a corpus name is the name of its index folder, so it may not hold '/' or '\\' (a path)",
        ),
        ('"a/b"', "a corpus name is the name of its index folder, so it may not hold '/' or '\\' (a path)"),
        (
            '"a\\\\b"',
            "a corpus name is the name of its index folder, so it may not hold '/' or '\\' (a path)",
        ),
        (
            '".."',
            "a corpus name is the name of its index folder, so it may not be '.' or '..' (a folder and the "
            "one above it)",
        ),
        (
            '"."',
            "a corpus name is the name of its index folder, so it may not be '.' or '..' (a folder and the "
            "one above it)",
        ),
        ('""', "a corpus name may not be empty"),
        (
            '"a\\tb"',
            "a corpus name is the name of its index folder, so it may not hold control characters ('\\t')",
        ),
        ('" a"', "a corpus name is the name of its index folder, so it may not start or end with a blank"),
        ("no", "YAML read this name as a boolean, not as text: write it in quotes"),
        ("0x10", "YAML read this name as a number, not as text: write it in quotes"),
        ("~", "YAML read this name as null, not as text: write it in quotes"),
    ],
)
def test_a_corpus_name_that_is_not_one_folder_name_is_refused(tmp_path, key, problem):
    """Until session 41 corpus names were not checked: `../prod` built its index outside `build --out`
    (over an unrelated index), `a/b` nested folders and `no:` was the corpus 'False'."""
    from ragroute.corpora import load_corpus_specs
    from ragroute.errors import RagrouteError
    from ragroute.yaml_files import read_yaml

    path = tmp_path / "corpora.yaml"
    path.write_text(f"corpora:\n  {key}: {{path: .}}\n  fine: {{path: .}}\n", encoding="utf-8")
    (name,) = [k for k in read_yaml(path, "corpus definitions")["corpora"] if k != "fine"]
    with pytest.raises(RagrouteError) as info:
        load_corpus_specs(path)
    shown = repr(name) if isinstance(name, str) else name
    assert str(info.value) == f"{path}: corpus {shown}: {problem}"


def test_corpus_names_in_any_script_and_with_inner_blanks_are_kept(tmp_path):
    from ragroute.corpora import load_corpus_specs

    path = tmp_path / "corpora.yaml"
    path.write_text("corpora:\n  Café notes: {path: .}\n  '2024': {path: .}\n  a.b-c_d: {path: .}\n", "utf-8")
    assert [spec.name for spec in load_corpus_specs(path)] == ["Café notes", "2024", "a.b-c_d"]


# --- session 42: messy files a user points `ragroute build` at ---------------------------------


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Intro.\n\n```bash\n# install deps\n```\n\n# Real Title\n\nBody.\n", "Real Title"),  # a code comment
        ("# Title A\rBody one.\r\rBody two.\r", "Title A"),  # bare \r line ends: was the whole text
        ("# Intro to C#\n\nBody.\n", "Intro to C#"),  # was 'Intro to C'
        ("# Closed heading ##\r\n\r\nBody.\r\n", "Closed heading"),
    ],
)
def test_a_markdown_title_is_its_first_heading_as_sections_read_it(
    tmp_path: Path, text: str, title: str
) -> None:
    from ragroute.chunking import chunk_documents

    (tmp_path / "a.md").write_bytes(text.encode("utf-8"))
    (doc,) = load_text_folder(tmp_path)
    assert doc.title == title
    assert chunk_documents([doc], "section")[0].title == title


def test_text_files_beside_a_corpus_jsonl_are_named_not_dropped_silently(tmp_path: Path) -> None:
    """A folder of markdown holding a `corpus_export.jsonl` loads as BEIR: the markdown was left out
    without a word; qrels are a BEIR folder's own and are not named."""
    (tmp_path / "a.md").write_text("# A\n\nalpha\n", encoding="utf-8")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "b.txt").write_text("beta\n", encoding="utf-8")
    write_jsonl(tmp_path / "corpus_export.jsonl", [{"_id": "1", "text": "one"}])
    write_qrels(tmp_path / "qrels" / "test.tsv", [("q1", "1", 1)])
    report = LoadReport()
    with pytest.warns(CorpusWarning) as caught:
        docs = load_corpus(tmp_path, report=report)
    assert [d.id for d in docs] == ["1"]
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"{tmp_path}: 2 files not read (a.md, notes/b.txt): a folder holding corpus")
    assert [(s.where, s.reason) for s in report.ignored] == [
        ("a.md", "not read"),
        ("notes/b.txt", "not read"),
    ]


def test_links_a_folder_corpus_does_not_follow_are_named(tmp_path: Path) -> None:
    """Links to folders (inside or outside the corpus, or a loop) and broken links were passed over
    without a word: a linked folder of documents was lost silently."""
    root, other = tmp_path / "docs", tmp_path / "other"
    (root / "sub").mkdir(parents=True)
    other.mkdir()
    (root / "a.md").write_text("alpha\n", encoding="utf-8")
    (other / "b.md").write_text("beta\n", encoding="utf-8")
    (root / "linked").symlink_to(other, target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "gone.md").symlink_to(tmp_path / "missing.md")
    with pytest.warns(CorpusWarning, match=r"3 links not followed \(gone.md, linked, sub/loop\)"):
        docs = load_text_folder(root)
    assert [d.id for d in docs] == ["a"]


def test_a_file_name_that_is_not_utf8_is_a_bad_file_of_the_folder(tmp_path: Path) -> None:
    """Its id could not be written: the build stopped at it, naming a document id (caf\\udce9)."""
    (tmp_path / "ok.md").write_text("fine\n", encoding="utf-8")
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.md"), "wb") as fh:
        fh.write(b"cafe\n")
    report = LoadReport()
    with pytest.warns(
        CorpusWarning, match=r"skipped 1 bad file .*caf\\xe9.md: the file name is not valid UTF-8"
    ):
        docs = load_text_folder(tmp_path, report=report)
    assert [d.id for d in docs] == ["ok"] and report.n_skipped == 1
    with pytest.raises(CorpusFormatError, match=r"caf\\xe9.md: the file name is not valid UTF-8"):
        load_text_folder(tmp_path, on_error="raise")


def test_a_file_removed_while_a_folder_is_read_is_a_bad_file(tmp_path: Path, monkeypatch) -> None:
    from ragroute.loaders import folder

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text(name, encoding="utf-8")
    read = folder.file_document

    def remove_then_read(path: Path, rel: Path):  # b.txt goes between the listing and its reading
        if rel.name == "b.txt":
            path.unlink()
        return read(path, rel)

    monkeypatch.setattr(folder, "file_document", remove_then_read)
    with pytest.warns(CorpusWarning, match=r"skipped 1 bad file .*b.txt: no longer a file"):
        docs = load_text_folder(tmp_path)
    assert [d.id for d in docs] == ["a", "c"]


def test_a_folder_corpus_given_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("x\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"a.md: is a file, expected a folder$"):
        load_text_folder(tmp_path / "a.md")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_utf16_or_utf32_file_is_named_so_in_every_format(tmp_path: Path, encoding: str) -> None:
    """Such a file was 'invalid UTF-8' with a Latin-1 hint, and a JSONL one loaded as an empty corpus
    (every line skipped, lines counted inside its characters)."""
    name = encoding.upper()
    said = rf"the file is {name} \(it starts with a {name} byte order mark\), not UTF-8.*iconv -f {encoding}"
    (tmp_path / "c.jsonl").write_text('{"_id": "1", "text": "x"}\n{"_id": "2", "text": "y"}\n', encoding)
    with pytest.raises(CorpusFormatError, match=rf"c.jsonl: {said}"):
        load_corpus(tmp_path / "c.jsonl")
    (tmp_path / "h.json").write_text('[{"title": "a", "text": "x"}]', encoding)
    with pytest.raises(CorpusFormatError, match=rf"h.json: {said}"):
        load_corpus(tmp_path / "h.json")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nx\n", encoding)
    (tmp_path / "docs" / "b.md").write_text("b\n", encoding="utf-8")
    with pytest.warns(CorpusWarning, match=rf"skipped 1 bad file .*a.md: {said}"):
        assert [d.id for d in load_corpus(tmp_path / "docs")] == ["b"]


def test_a_jsonl_file_with_bare_cr_line_ends_says_why_its_one_line_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "x"}\r{"_id": "2", "text": "y"}\r')
    with pytest.raises(CorpusFormatError, match=r"line 1: invalid JSON .*bare \\r line breaks"):
        load_corpus(path, on_error="raise")


def test_corpus_definitions_refuse_an_empty_path_and_name_a_misspelt_top_key(tmp_path: Path) -> None:
    """`path: ''` was the definitions file's own folder (every corpus beside it loaded as one);
    `corpra:` was 'expected a top-level corpora: mapping' with no word of the typo."""
    from ragroute.corpora import load_corpus_specs
    from ragroute.errors import RagrouteError

    path = tmp_path / "corpora.yaml"
    path.write_text("corpora:\n  a: {path: ''}\n", encoding="utf-8")
    with pytest.raises(RagrouteError, match=r"corpus 'a': 'path' is empty"):
        load_corpus_specs(path)
    path.write_text("corpra:\n  a: {path: docs}\n", encoding="utf-8")
    with pytest.raises(RagrouteError, match=r"unknown key 'corpra'; did you mean 'corpora'\?"):
        load_corpus_specs(path)


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("modality: []", r"modality \[\] is not one of text"),
        ("modality: ''", r"modality '' is not one of text"),
        ("granularity: 0", r"granularity 0 is not one of document"),
        ("granularity: false", r"granularity False is not one of document"),
        # a misspelt value gets the closest one, as a misspelt key does (until session 50 the list only)
        ("granularity: sectoin", r"granularity 'sectoin' is not one of .*; did you mean 'section'\?$"),
        ("modality: tabel", r"modality 'tabel' is not one of .*; did you mean 'table'\?$"),
    ],
)
def test_an_empty_or_false_modality_or_granularity_is_refused_not_read_as_the_default(
    tmp_path, setting, problem
):
    """Only null means the default: `modality: []` or `granularity: 0` were the defaults, silently
    (until session 48), where a misspelt value is refused."""
    from ragroute.corpora import load_corpus_specs
    from ragroute.errors import RagrouteError

    path = tmp_path / "corpora.yaml"
    path.write_text(f"corpora:\n  a: {{path: docs, {setting}}}\n", encoding="utf-8")
    with pytest.raises(RagrouteError, match=problem):
        load_corpus_specs(path)
    path.write_text("corpora:\n  a: {path: docs, modality: null, granularity: null}\n", encoding="utf-8")
    ((spec),) = load_corpus_specs(path)
    assert (spec.modality, spec.granularity) == ("text", "document")


@pytest.mark.parametrize("option", ["on_error", "report", "path"])
def test_a_corpus_definitions_option_that_loading_takes_itself_is_one_line(tmp_path, option):
    """`options: {on_error: raise}` in a corpus definition (which `config check` refuses as an
    unknown option) was a TypeError traceback from `ragroute build` ("got multiple values for
    keyword argument 'on_error'"), and was obeyed by `load_documents()` without arguments."""
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.corpora import load_corpus_specs

    (tmp_path / "faq.csv").write_text("text\nhello\n", "utf-8")
    definitions = tmp_path / "corpora.yaml"
    definitions.write_text(f"corpora:\n  faq: {{path: faq.csv, options: {{{option}: raise}}}}\n", "utf-8")
    (spec,) = load_corpus_specs(definitions)
    said = f"is a table corpus: unknown option '{option}'"
    for loading in ({}, {"on_error": "skip", "report": LoadReport()}):
        with pytest.raises(CorpusFormatError, match=said):
            spec.load_documents(**loading)
    result = CliRunner().invoke(
        main, ["build", str(definitions), "--out", str(tmp_path / "out"), "--method", "bm25"]
    )
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and said in errors[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("first_line", [b'{"_id": "d1", "text": "cut off\n', b"\xef\xbb\xbf\n", b"[1, 2]\n"])
def test_a_beir_jsonl_whose_first_line_is_bad_keeps_its_ids(tmp_path, first_line):
    """Detection read only the first line of a .jsonl: when it was not a JSON object (a line cut
    off, a line holding only a BOM), a BEIR corpus file was read as a table, every document
    renumbered (`corpus-2`, ...) with its `_id` in the metadata, silently (qrels then matched
    nothing); only the bad line was named in the warning."""
    path = tmp_path / "corpus.jsonl"
    rows = [{"_id": "d2", "title": "Beta", "text": "beta"}, {"_id": "d3", "text": "gamma"}]
    path.write_bytes(first_line + b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    assert detect_format(path) == "beir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        docs = load_corpus(path)
    assert [(d.id, d.title, d.metadata) for d in docs] == [("d2", "Beta", {}), ("d3", "", {})]


def test_a_jsonl_tables_metadata_object_wins_a_clash_whatever_the_key_order(tmp_path):
    """A table .jsonl row with a top-level field and a `metadata` object naming the same key kept
    whichever came last in the line: two rows holding the same data got different metadata. The
    metadata object wins, as in a BEIR row."""
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"text": "one", "lang": "en", "metadata": {"lang": "fr", "k": 1}}\n'
        '{"metadata": {"lang": "fr", "k": 1}, "text": "two", "lang": "en"}\n',
        "utf-8",
    )
    docs = load_table_file(path)
    assert [d.metadata for d in docs] == [{"lang": "fr", "k": 1}, {"lang": "fr", "k": 1}]


def test_text_after_a_closing_quote_is_a_bad_row_not_a_silent_edit(tmp_path):
    """Python's csv reader, not strict, read `1,"Best" phone ever` as the text `Best phone ever`:
    the quotes were dropped without a word. Such a row is a bad row now (skipped with the warning,
    or refused with on_error="raise"); a quote inside a field or a quoted field spanning lines
    still loads."""
    path = tmp_path / "reviews.csv"
    path.write_text('id,text\n1,"Best" phone ever\n2,"ok, fine"\n3,a 5" screen\n4,"two\nlines"\n', "utf-8")
    said = (
        r'text follows the closing " of a quoted field; quote the whole field and write a " inside it as ""'
    )
    with pytest.warns(CorpusWarning, match=rf"line 2: {said}"):
        docs = load_table_file(path)
    assert [(d.id, d.text) for d in docs] == [("2", "ok, fine"), ("3", 'a 5" screen'), ("4", "two\nlines")]
    with pytest.raises(CorpusFormatError, match=rf"reviews\.csv line 2: {said}"):
        load_table_file(path, on_error="raise")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "t.tsv").write_text('a\tb\n"x" y\tz\n', "utf-8")
    (folder / "n.md").write_text("note", "utf-8")
    with pytest.warns(CorpusWarning, match=r"skipped 1 bad file .*t\.tsv: line 2: text follows"):
        assert [d.id for d in load_text_folder(folder)] == ["n"]


def test_nan_infinity_and_unreadable_numbers_are_not_read_as_text(tmp_path: Path) -> None:
    """Python's json reads NaN, Infinity and -Infinity, which are not JSON, and 1e400 as infinity:
    `{"text": NaN}` loaded as the text 'nan' without a word (until session 51), and a whole number
    of more digits than Python reads (10**5000) was a ValueError traceback. Where text is expected
    they are bad records naming line and field; NaN metadata is kept (JSON output writes it null)."""
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"_id": "a", "text": NaN}\n{"_id": "b", "text": "ok", "metadata": {"score": NaN}}\n'
        '{"_id": "c", "text": 1e400}\n{"_id": "d", "text": "x", "title": -Infinity}\n'
        f'{{"_id": {"9" * 5000}, "text": "x"}}\n'
        f'{{"_id": "e", "text": "x", "metadata": {{"ids": [1, {"9" * 5000}]}}}}\n',
        encoding="utf-8",
    )
    report = LoadReport()
    with pytest.warns(
        CorpusWarning, match=r"skipped 5 bad lines .*\(lines 1, 3, 4, 5, 6; line 1: 'text' is NaN"
    ):
        docs = load_corpus(path, report=report)
    assert [(d.id, d.text) for d in docs] == [("b", "ok")] and math.isnan(docs[0].metadata["score"])
    said = "not text (JSON has no NaN or Infinity: write null, or the text as a string)"
    too_long = "is a whole number of more digits than Python reads (4,300); write it as a string"
    assert [s.reason for s in report.skipped] == [
        f"'text' is NaN, {said}",
        f"'text' is infinite (Infinity, or a number beyond a float's range: 1e400), {said}",
        f"'title' is infinite (Infinity, or a number beyond a float's range: 1e400), {said}",
        f"'_id' {too_long}",
        f"'metadata.ids[1]' {too_long}",
    ]
    with pytest.raises(CorpusFormatError, match=r"c\.jsonl line 1: 'text' is NaN, not text"):
        load_corpus(path, on_error="raise")
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": NaN}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"queries\.jsonl line 1: 'text' is NaN, not text"):
        load_beir_queries(queries, on_error="raise")
    array = tmp_path / "h.json"
    array.write_text('[{"title": "t", "text": "x"}, {"title": NaN, "text": "y"}]', "utf-8")
    with pytest.warns(CorpusWarning, match=r"item 1: 'title' is NaN, not text"):
        assert [d.title for d in load_hipporag_corpus(array)] == ["t"]
    table = tmp_path / "t.jsonl"
    table.write_text('{"text": NaN}\n{"text": "fine"}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"t\.jsonl line 1: 'text' is NaN, not text"):
        load_table_file(table, on_error="raise")


def test_a_csv_row_error_names_its_line_once(tmp_path: Path) -> None:
    """`c.csv line 2: invalid UTF-8 (byte 0xe9 at column 6) on line 2` said the line twice (until
    session 51); a row spanning lines still names the line of its bad part, and a folder's table
    file, whose message names no line else, names it."""
    path = tmp_path / "c.csv"
    path.write_bytes(b'id,text\n1,caf\xe9\n2,"two\nlin\xe9s"\n3,fine\n')
    with pytest.raises(CorpusFormatError) as info:
        load_table_file(path, on_error="raise")
    assert str(info.value) == f"{path} line 2: invalid UTF-8 (byte 0xe9 at column 6)"
    report = LoadReport()
    with pytest.warns(CorpusWarning):
        assert [d.id for d in load_table_file(path, report=report)] == ["3"]
    assert [str(s) for s in report.skipped] == [
        f"{path} line 2: invalid UTF-8 (byte 0xe9 at column 6)",
        f"{path} line 3: invalid UTF-8 (byte 0xe9 at column 4) on line 4",
    ]
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "t.csv").write_bytes(b"a,b\nx,caf\xe9\n")
    (folder / "n.md").write_text("note", "utf-8")
    with pytest.raises(CorpusFormatError, match=r"t\.csv: line 2: invalid UTF-8 \(byte 0xe9 at column 6\)$"):
        load_text_folder(folder, on_error="raise")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_a_utf16_file_without_a_byte_order_mark_is_refused_not_read_with_nuls(
    tmp_path: Path, encoding: str
) -> None:
    """Such a file is valid UTF-8: a folder corpus indexed `h\\x00e\\x00l\\x00l\\x00o\\x00`, a CSV
    file had the columns 'i d' and 't e x t', a JSONL one was every line skipped as broken JSON
    (until session 51). It is named as what it looks like, with the command that converts it."""
    name = encoding.upper().replace("-LE", "LE").replace("-BE", "BE")
    said = rf"the file looks like {name} without a byte order mark .*iconv -f {name.lower()} -t utf-8"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_bytes("hello world\n".encode(encoding))
    (folder / "b.md").write_text("b\n", encoding="utf-8")
    with pytest.warns(CorpusWarning, match=rf"skipped 1 bad file .*a\.txt: {said}"):
        assert [(d.id, d.text) for d in load_corpus(folder)] == [("b", "b\n")]
    (tmp_path / "c.jsonl").write_bytes(
        '{"_id": "1", "text": "x"}\n{"_id": "2", "text": "y"}\n'.encode(encoding)
    )
    with pytest.raises(CorpusFormatError, match=rf"c\.jsonl: {said}"):
        load_corpus(tmp_path / "c.jsonl")
    (tmp_path / "t.csv").write_bytes("id,text\n1,hello\n".encode(encoding))
    with pytest.raises(CorpusFormatError, match=rf"t\.csv line 1 \(the header\): {said}"):
        load_corpus(tmp_path / "t.csv")


def test_utf8_text_with_a_stray_nul_is_not_taken_for_utf16(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"some text\x00 with one NUL in it\n")
    assert load_corpus(path)[0].text == "some text\x00 with one NUL in it\n"


def test_format_detection_reads_the_first_record_as_the_loaders_do(tmp_path: Path) -> None:
    """A first line the loaders skip (a key written twice) was the first record detection read,
    a BEIR file then loaded as a table; one holding a whole number of 5,000 digits was a
    ValueError traceback (until session 51)."""
    path = tmp_path / "c.jsonl"
    path.write_text(
        f'{{"text": {"1" * 5000}}}\n{{"text": "a", "text": "b"}}\n'
        '{"_id": "d1", "title": "T", "text": "x"}\n',
        encoding="utf-8",
    )
    assert detect_format(path) == "beir"
    with pytest.warns(CorpusWarning, match=r"skipped 2 bad lines"):
        assert [(d.id, d.title) for d in load_corpus(path)] == [("d1", "T")]


def test_every_json_loader_says_where_its_json_breaks_without_a_doubled_at(tmp_path: Path) -> None:
    """Python ends some JSON messages with "at" (``Invalid control character at``): until session 53
    the MCP and triples loaders wrote "at at" after them and the HippoRAG loader gave no column."""
    from ragroute.graph.triples import read_triples
    from ragroute.loaders.hipporag import load_hipporag_corpus
    from ragroute.skills.load_mcp import load_mcp

    broken = '[{"name": "a\tb"}]'  # a raw tab inside a string: invalid JSON, column 13
    (tmp_path / "tools.json").write_text(broken, encoding="utf-8")
    (tmp_path / "corpus.json").write_text(broken, encoding="utf-8")
    (tmp_path / "triples.jsonl").write_text(
        '{"subject": "a", "predicate": "b", "object": "c"}\n' + broken[1:-1] + "\n", encoding="utf-8"
    )
    messages = []
    for load, name in (
        (load_mcp, "tools.json"),
        (load_hipporag_corpus, "corpus.json"),
        (read_triples, "triples.jsonl"),
    ):
        with pytest.raises(CorpusFormatError) as caught:
            load(tmp_path / name)
        messages.append(str(caught.value))
    assert "Invalid control character at line 1 column 13" in messages[0]
    assert "Invalid control character at column 13" in messages[1]
    assert "Invalid control character at column 12" in messages[2]
    assert not [m for m in messages if "at at" in m]


def test_a_folder_table_row_with_more_or_fewer_cells_than_its_header_is_named(tmp_path: Path) -> None:
    """Until session 54 a folder's CSV row with a cell count other than the header's (an unquoted
    ``1,299.00``) was kept without a word, its cells no longer under their columns; it is kept as
    written and named, with its line, in one warning."""
    (tmp_path / "prices.csv").write_text("item,price\nlamp,1,299.00\ndesk,80\nchair\n", "utf-8")
    with pytest.warns(CorpusWarning) as caught:
        docs = load_text_folder(tmp_path)
    messages = [str(w.message) for w in caught if issubclass(w.category, CorpusWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith(f"{tmp_path / 'prices.csv'}: 2 rows with a number of cells other")
    assert "(line 2: 3 cells, line 4: 1 cell)" in messages[0]
    assert docs[0].metadata["rows"] == [["lamp", "1", "299.00"], ["desk", "80"], ["chair"]]
    (tmp_path / "prices.csv").write_text('item,price\nlamp,"1,299.00"\n', "utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_text_folder(tmp_path)[0].metadata["rows"] == [["lamp", "1,299.00"]]


def test_a_beir_query_with_no_text_to_search_is_a_bad_line_naming_file_and_line(beir_folder: Path) -> None:
    """An empty or invisible query loaded, and `ragroute eval` stopped at it with "query is empty
    or whitespace only", naming neither file nor line, with or without --strict (until session 55)."""
    path = beir_folder / "queries.jsonl"
    with path.open("a") as fh:
        fh.write('{"_id": "q4", "text": ""}\n{"_id": "q5", "text": "\\u200b"}\n{"_id": "q6", "text": null}\n')
    report = LoadReport()
    with pytest.warns(
        CorpusWarning, match=r"skipped 3 bad lines in .* \(lines 4, 5, 6; line 4: 'text' is empty"
    ):
        queries = load_beir_queries(path, report=report)
    assert [q.id for q in queries] == ["q1", "q2", "q3"] and report.n_skipped == 3
    with pytest.raises(
        CorpusFormatError, match=r"queries\.jsonl line 4: 'text' is empty or whitespace only$"
    ):
        load_beir(beir_folder, on_error="raise")


def test_a_labels_text_no_router_can_take_names_its_file_and_line(tmp_path: Path) -> None:
    """An invisible (or over-long) LABELS text loaded, and `bench route-labels` stopped at it naming
    no line (until session 55)."""
    from ragroute.loaders.labels import load_labels

    path = tmp_path / "dev.jsonl"
    path.write_text(
        '{"_id": "1", "text": "hi", "label": "no"}\n{"_id": "2", "text": "\\u200b", "label": "no"}\n'
    )
    with pytest.raises(CorpusFormatError, match=r"dev\.jsonl line 2: 'text' has no visible characters"):
        load_labels(path)


def test_a_hipporag_file_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    """A RecursionError traceback until session 55 (the JSONL loaders said "nested too deeply")."""
    path = tmp_path / "corpus.json"
    path.write_text("[" * 100_000)
    with pytest.raises(CorpusFormatError, match=r"corpus\.json: invalid JSON \(nested too deeply\)$"):
        load_hipporag_corpus(path)
