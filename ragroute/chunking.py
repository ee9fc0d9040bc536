"""Cut documents into retrieval units at one granularity: paragraph, section or whole document.

Rules (all deterministic; a word is a whitespace-separated token, and each Chinese or Japanese
character counts as one word, as these scripts put no spaces between words and subword encoders
such as MiniLM read them about a character a token):

* ``"document"``: documents are returned unchanged (``parent_id`` stays ``None``).
* ``"paragraph"``: text is split on blank lines; a paragraph longer than
  ``max_words`` (default 200) is split at sentence ends (``.``, ``!``, ``?`` before a space;
  ``。``, ``！``, ``？``) (or, for one huge sentence, into word windows) into pieces of at most
  ``max_words``; a piece
  shorter than ``min_words`` (default 20, e.g. a heading line or a caption) is
  merged into the next one (the last into the previous one) as long as the
  merge stays within ``max_words``. A markdown table (a header row, a ``|---|`` delimiter row,
  then rows with a ``|``) is cut between its rows instead, every piece starting with the header
  and delimiter rows (a single row longer than ``max_words`` stays whole).
* ``"section"``: text is split at markdown headings (``#`` to ``######``,
  outside fenced code blocks); each section's heading becomes the chunk title
  (text before the first heading keeps the document title) and heading-only
  sections are dropped. A section longer than ``max_words`` (default 400) is
  cut into groups of whole paragraphs of at most ``max_words``, all with the
  section title. Without any heading the text is cut into such groups.

Every chunk has id ``f"{doc.id}#p{i}"`` (paragraph) or ``f"{doc.id}#s{i}"``
(section), ``parent_id = doc.id``, the parent's modality, and the parent's
metadata plus ``{"chunk_index": i, "granularity": ...}``. Tables and other
non-text modalities are never split: they become one chunk holding the whole
document, and so does a title-only document (empty text but a title, like
half of CACM). A document with neither text nor title (none with a visible character: zero-width
spaces and control characters only count as none) yields nothing at any
granularity, and neither does one whose text is only headings at ``"section"``
granularity: :func:`chunk_documents` says so in one
:class:`~ragroute.loaders.common.CorpusWarning` naming a few of their ids
(pass a :class:`ChunkStats` to count them).
"""

from __future__ import annotations

import bisect
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ragroute.errors import has_visible_text
from ragroute.loaders.common import CorpusWarning, IdRegistry, name_a_few
from ragroute.markdown import markdown_lines
from ragroute.types import Document

Granularity = Literal["paragraph", "section", "document"]
GRANULARITIES = ("paragraph", "section", "document")
DEFAULT_MAX_WORDS = {"paragraph": 200, "section": 400}
DEFAULT_MIN_WORDS = 20
ID_MARKERS = {"paragraph": "p", "section": "s"}

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*")
# Han (with extensions and compatibility ideographs), kana, and CJK punctuation and full-width forms:
# one word each (a Chinese paragraph was one "word" until session 38, so it was never split, and the
# merge of tiny pieces joined up to 200 such paragraphs into one chunk); the ideographic space
# U+3000 is a space, not a word (counted as one until session 51)
_CJK = (
    "\u3001-\u303f\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uff00-\uffef\U00020000-\U0003134f"
)
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
# a markdown (GFM) table's delimiter row, under its header row: | --- | :---: |, outer pipes optional
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")
_HAS_CJK = re.compile(rf"[{_CJK}]")
# a closing run of # ends a heading only after a space (CommonMark): "# Intro to C#" is about C#


@dataclass
class ChunkStats:
    """Counts from :func:`chunk_documents` (pass an instance as ``stats=``; counts accumulate).

    ``empty``: documents that gave no chunk (neither text nor title); ``kept_whole``:
    tables and other non-text documents emitted as one unsplit chunk.
    """

    documents: int = 0
    chunks: int = 0
    empty: int = 0
    kept_whole: int = 0


@dataclass(frozen=True)
class Section:
    """A markdown section: its heading (``None`` for text before the first heading) and body."""

    title: str | None
    level: int
    body: str


def _has_cjk(text: str) -> bool:
    """Whether ``text`` holds a Chinese or Japanese character (ASCII text, most text, is read fast)."""
    return not text.isascii() and _HAS_CJK.search(text) is not None


def word_count(text: str) -> int:
    """Number of words: whitespace-separated tokens, each Chinese or Japanese character one word."""
    return len(_WORD.findall(text)) if _has_cjk(text) else len(text.split())


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, stripped, empty ones dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [p.strip() for p in _BLANK_LINE.split(text) if p.strip()]


def pack(pieces: Iterable[str], max_words: int, sep: str) -> list[str]:
    """Greedily join consecutive pieces with ``sep`` while the total stays within ``max_words``."""
    groups: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        n = word_count(piece)
        if current and size + n > max_words:
            groups.append(sep.join(current))
            current, size = [], 0
        current.append(piece)
        size += n
    if current:
        groups.append(sep.join(current))
    return groups


def _word_windows(text: str, max_words: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]


def markdown_table(paragraph: str) -> tuple[str, list[str], list[str], str] | None:
    """The first markdown (GFM) table of ``paragraph``: the text before it, its header lines (the
    header row and the delimiter row ``|---|---|``), its body rows (the lines after them holding a
    ``|``) and the text after it; ``None`` if it holds no table."""
    lines = paragraph.split("\n")
    found = _find_table(lines, 0)
    if found is None:
        return None
    i, end = found
    before, after = "\n".join(lines[:i]).strip(), "\n".join(lines[end:]).strip()
    return before, lines[i : i + 2], lines[i + 2 : end], after


def _find_table(lines: Sequence[str], start: int) -> tuple[int, int] | None:
    """``(first, end)``: the lines of the first markdown table in ``lines[start:]`` (its header row,
    its delimiter row, its body rows: the lines after them holding a ``|``); ``None`` if none."""
    for i in range(start, len(lines) - 1):
        if "|" in lines[i] and "|" in lines[i + 1] and _TABLE_DELIMITER.match(lines[i + 1]):
            end = i + 2
            while end < len(lines) and "|" in lines[end]:
                end += 1
            return i, end
    return None


def _table_pieces(header: list[str], rows: list[str], max_words: int) -> list[str]:
    """A markdown table cut between rows into pieces of at most ``max_words`` words, each starting
    with the table's header lines (a row longer than that is a piece of its own, never cut)."""
    size = word_count("\n".join(header))
    pieces: list[str] = []
    current: list[str] = []
    words = size
    for row in rows:
        n = word_count(row)
        if current and words + n > max_words:
            pieces.append("\n".join([*header, *current]))
            current, words = [], size
        current.append(row)
        words += n
    if current or not pieces:
        pieces.append("\n".join([*header, *current]))
    return pieces


def split_long(paragraph: str, max_words: int) -> list[str]:
    """Split a paragraph longer than ``max_words`` at sentence ends into pieces of at most ``max_words``;
    a markdown table in it is cut between rows, each piece repeating the table's header (it was cut
    into word windows before: its rows joined on one line, cut mid-row, and every piece after the
    first without the header)."""
    if word_count(paragraph) <= max_words:
        return [paragraph]
    # tables one after another, read in one pass over the lines (the same pieces): the text after
    # each table was cut by a recursive call until session 53, which read the rest of the paragraph
    # again per table (quadratic) and raised RecursionError past about 1,000 tables in one paragraph
    lines = paragraph.split("\n")
    words_from = [0] * (len(lines) + 1)  # words in lines[i:]
    for i in range(len(lines) - 1, -1, -1):
        words_from[i] = words_from[i + 1] + word_count(lines[i])
    pieces: list[str] = []
    start = 0
    while (found := _find_table(lines, start)) is not None:
        first, end = found
        before = "\n".join(lines[start:first]).strip()
        pieces += _split_prose(before, max_words) if before else []
        pieces += _table_pieces(lines[first : first + 2], lines[first + 2 : end], max_words)
        start = _strip_from(lines, end)
        if words_from[start] <= max_words:  # the rest fits: one piece, tables in it uncut
            rest = "\n".join(lines[start:]).strip()
            return pieces + ([rest] if rest else [])
    if start == 0:
        return _split_prose(paragraph, max_words)
    return pieces + _split_prose("\n".join(lines[start:]).strip(), max_words)


def _strip_from(lines: list[str], start: int) -> int:
    """Where the text ``"\\n".join(lines[start:]).strip()`` begins: ``lines`` are stripped (in
    place) as that text is, its first line on the left and its last on the right, blank lines at
    either end left out (those at the end removed)."""
    while start < len(lines) and not lines[start].strip():
        start += 1
    while len(lines) > start and not lines[-1].strip():
        lines.pop()
    if start < len(lines):
        lines[start] = lines[start].lstrip()
        lines[-1] = lines[-1].rstrip()
    return start


def _split_prose(paragraph: str, max_words: int) -> list[str]:
    """:func:`split_long` for a paragraph holding no markdown table."""
    if word_count(paragraph) <= max_words:
        return [paragraph]
    if _has_cjk(paragraph):
        return _split_long_cjk(paragraph, max_words)
    sentences: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        too_long = word_count(sentence) > max_words
        sentences.extend(_word_windows(sentence, max_words) if too_long else [sentence])
    return pack(sentences, max_words, " ")


def _split_long_cjk(paragraph: str, max_words: int) -> list[str]:
    """:func:`split_long` for text with Chinese or Japanese in it, which puts no space between
    sentences: pieces are cut from the text as written (sentences ending at ``。！？`` or at
    ``.!?`` and a space, one overlong sentence into windows of ``max_words`` words), never joined
    with a space that was not there."""
    starts = [0, *(m.end() for m in _SENTENCE_END.finditer(paragraph))]
    ends = [*starts[1:], len(paragraph)]
    words = [m.start() for m in _WORD.finditer(paragraph)]  # where each word starts
    cuts = [0]  # where pieces start: greedily, as many whole sentences as fit in max_words
    size = 0
    for start, end in zip(starts, ends):
        first, last = bisect.bisect_left(words, start), bisect.bisect_left(words, end)
        n = last - first
        if n > max_words:  # one overlong sentence: its own windows of max_words words
            if size:
                cuts.append(start)
            cuts.extend(words[i] for i in range(first + max_words, last, max_words))
            size = (n - 1) % max_words + 1
        elif size and size + n > max_words:
            cuts.append(start)
            size = n
        else:
            size += n
    cuts = sorted(set(cuts))
    pieces = (paragraph[a:b].strip() for a, b in zip(cuts, [*cuts[1:], len(paragraph)]))
    return [piece for piece in pieces if piece]


def merge_tiny(pieces: Sequence[str], min_words: int, max_words: int) -> list[str]:
    """Merge pieces under ``min_words`` into the next (the last into the previous), within ``max_words``."""
    out: list[str] = []
    pending: str | None = None
    for piece in pieces:
        if pending is not None:
            merged = f"{pending}\n\n{piece}"
            if word_count(merged) <= max_words:
                piece = merged
            else:
                out.append(pending)
            pending = None
        if word_count(piece) < min_words:
            pending = piece
        else:
            out.append(piece)
    if pending is not None:
        if out and word_count(out[-1]) + word_count(pending) <= max_words:
            out[-1] = f"{out[-1]}\n\n{pending}"
        else:
            out.append(pending)
    return out


def paragraph_pieces(text: str, max_words: int, min_words: int = DEFAULT_MIN_WORDS) -> list[str]:
    """The texts of the paragraph chunks of ``text``."""
    pieces = [piece for p in split_paragraphs(text) for piece in split_long(p, max_words)]
    return merge_tiny(pieces, min_words, max_words)


def split_sections(text: str) -> list[Section] | None:
    """Split markdown at headings (outside code fences); ``None`` if the text has no heading."""
    sections: list[Section] = []
    title, level, body = None, 0, []
    for line, match in markdown_lines(text):  # bare \r ends lines too
        if match is None:
            body.append(line)
            continue
        sections.append(Section(title, level, "\n".join(body).strip()))
        title, level, body = match.group(2).strip(), len(match.group(1)), []
    if not sections:
        return None
    sections.append(Section(title, level, "\n".join(body).strip()))
    return [s for s in sections if s.body]


def _groups(text: str, max_words: int) -> list[str]:
    pieces = [piece for p in split_paragraphs(text) for piece in split_long(p, max_words)]
    return pack(pieces, max_words, "\n\n")


def section_pieces(text: str, default_title: str, max_words: int) -> list[tuple[str, str]]:
    """``(title, text)`` of the section chunks of ``text``."""
    sections = split_sections(text)
    if sections is None:
        return [(default_title, group) for group in _groups(text, max_words)]
    pieces: list[tuple[str, str]] = []
    for section in sections:
        title = section.title if section.title is not None else default_title
        pieces.extend((title, group) for group in _groups(section.body, max_words))
    return pieces


def _chunk(doc: Document, index: int, title: str, text: str, granularity: str) -> Document:
    return Document(
        id=f"{doc.id}#{ID_MARKERS[granularity]}{index}",
        text=text,
        title=title,
        metadata={**doc.metadata, "chunk_index": index, "granularity": granularity},
        parent_id=doc.id,
        modality=doc.modality,
    )


def _pieces(doc: Document, granularity: str, max_words: int, min_words: int) -> list[tuple[str, str]]:
    if granularity == "paragraph":
        return [(doc.title, text) for text in paragraph_pieces(doc.text, max_words, min_words)]
    return section_pieces(doc.text, doc.title, max_words)


def chunk_document(
    doc: Document,
    granularity: Granularity,
    max_words: int | None = None,
    min_words: int = DEFAULT_MIN_WORDS,
) -> list[Document]:
    """The chunks of one document (see the module docstring for the rules); arguments checked as
    :func:`chunk_documents` checks them (max_words 0 raised a range() error and -1 returned no
    chunk, losing the text, until session 37)."""
    _check_args(granularity, max_words, min_words)
    if not has_visible_text(doc.text) and not has_visible_text(doc.title):
        return []
    if granularity == "document":
        return [doc]
    limit = max_words if max_words is not None else DEFAULT_MAX_WORDS[granularity]
    if doc.modality != "text" or not has_visible_text(doc.text):
        return [_chunk(doc, 0, doc.title, doc.text, granularity)]
    pieces = _pieces(doc, granularity, limit, min_words)
    return [_chunk(doc, i, title, text, granularity) for i, (title, text) in enumerate(pieces)]


def _check_args(granularity: str, max_words: int | None, min_words: int) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    for name, value in (("max_words", max_words), ("min_words", min_words)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be a whole number, got {value!r}")  # 2.5 was a TypeError
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if min_words < 0:
        raise ValueError(f"min_words must be >= 0, got {min_words}")


def _count(stats: ChunkStats, doc: Document, chunks: list[Document], granularity: str) -> None:
    stats.documents += 1
    stats.chunks += len(chunks)
    if not chunks:
        stats.empty += 1
    elif granularity != "document" and doc.modality != "text":
        stats.kept_whole += 1


def chunk_documents(
    docs: Iterable[Document],
    granularity: Granularity,
    *,
    max_words: int | None = None,
    min_words: int = DEFAULT_MIN_WORDS,
    stats: ChunkStats | None = None,
) -> list[Document]:
    """Cut ``docs`` into chunks at ``granularity`` ("paragraph", "section" or "document").

    ``max_words`` defaults to 200 for paragraphs and 400 for sections (it is
    ignored for "document"); ``min_words`` is the size under which a paragraph
    is merged into its neighbour. Chunk ids are ``f"{doc.id}#p{i}"`` /
    ``f"{doc.id}#s{i}"`` with ``parent_id = doc.id``; tables are kept whole;
    documents that yield nothing (neither text nor title) are counted in
    ``stats.empty`` and named in one :class:`~ragroute.loaders.common.CorpusWarning`
    (``dropped 1 document with no text to index: tickets-9``). Duplicate output ids
    (from duplicate input ids) raise :class:`~ragroute.errors.CorpusFormatError`.
    """
    _check_args(granularity, max_words, min_words)
    stats = stats if stats is not None else ChunkStats()
    ids = IdRegistry("chunk" if granularity != "document" else "document")
    out: list[Document] = []
    dropped: list[str] = []
    for n, doc in enumerate(docs):
        chunks = chunk_document(doc, granularity, max_words, min_words)
        _count(stats, doc, chunks, granularity)
        if not chunks:
            dropped.append(doc.id)
        for chunk in chunks:
            ids.add(chunk.id, f"input document {n}")
        out.extend(chunks)
    if dropped:
        plural = "" if len(dropped) == 1 else "s"
        message = f"dropped {len(dropped)} document{plural} with no text to index: {name_a_few(dropped)}"
        warnings.warn(message, CorpusWarning, stacklevel=2)
    return out
