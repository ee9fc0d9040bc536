"""Graphs from user triples (CSV, JSONL) and from networkx graphs, through the extractors' code path.

User knowledge becomes the same :class:`~ragroute.graph.extract.Extraction` and
:class:`~ragroute.graph.extract.Fact` objects an extractor produces, and
:func:`ragroute.graph.build.extend_graph` builds the tables from them, so a graph
from triples is stored, walked, explained and grown (``GraphIndex.add``) exactly
like one extracted from a corpus.

**Triple files** (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``; see ``docs/graph.md``).
A CSV/TSV file has a header row; a JSONL file has one object per line. Field names
(case-insensitive):

====================  ========  ==========================================================
field                 needed    meaning
====================  ========  ==========================================================
``subject``           yes       a phrase (normalised like extracted phrases: lower case,
                                collapsed whitespace, no surrounding punctuation)
``object``            yes       a phrase
``predicate``         no        the relation (alias ``relation``); kept in passage text
``passage``           no        id of the passage that states the triple (alias ``passage_id``)
``text``              no        that passage's text (alias ``passage_text``)
``title``             no        that passage's title
``access``            no        that passage's access labels (a label, ``"hr,legal"``, or a
                                JSON list): who may read it (see ``docs/config.md``, scopes)
====================  ========  ==========================================================

What becomes a passage (the walk ranks passages, so every fact lives in one):

* a triple whose ``passage`` is a document of the corpus given alongside is added to
  that document's extraction (the corpus itself is extracted by the graph's extractor);
  of a corpus cut into paragraphs or sections, to the extraction of the document's first
  unit naming its subject and object (else either, else its first unit);
* a triple whose ``passage`` is no corpus document makes (or joins) a passage with
  that id; its text is the ``text`` field given on any of its lines, else its
  triples' sentences joined ("Ada Brennan born in Kellow. ...");
* a triple without ``passage`` becomes a passage of its own, id ``triple-<line>``
  and text ``"subject predicate object."`` (identical triples share one passage).

A row repeating an earlier one (the same subject, predicate and object, up to case and
normalisation, and the same ``passage``) is the same statement and adds nothing: a fact's
weight counts the sentences stating it, and the passage states it once. (A GraphML fact edge's
``sentences`` is how an import gives a fact stated by several sentences of one passage.)

Passages that come with the triples are *not* run through an extractor: their
phrases and facts are exactly their triples' (a triple whose subject and object
are the same phrase adds the phrase, no fact). Facts are phrase pairs, as the
extractors make them; the predicate is kept as the fact's ``relation`` and in the
text of the passages made from triples.

A passage that is a document of the corpus keeps the corpus's text, title and metadata:
``text``, ``title`` or ``access`` given for it in the triples are left out, with one warning
naming the passages.

Rows with a missing or empty ``subject``/``object``, invalid JSON, more CSV cells than the
header names, or a passage text or access that contradicts an earlier line are all reported in one
:class:`~ragroute.errors.CorpusFormatError` with their line numbers (up to
:data:`MAX_REPORTED`); an empty file is an error too.

**networkx graphs** (:func:`triples_from_networkx`, or a ``.graphml`` file): a node
whose ``type`` attribute is ``"passage"``, or that has a ``text`` attribute, is a
passage node (id: its ``passage`` attribute, else its name; text, as written, and title from its
attributes, metadata from a ``metadata`` attribute holding a JSON object, as
:func:`~ragroute.graph.views.write_graphml` writes it, and access labels from an ``access``
attribute); every other node is a phrase named by its ``name`` attribute, else the
node itself. An edge between a passage and a phrase says the passage mentions the
phrase; an edge between two phrases is a triple (predicate from ``relation``,
``predicate`` or ``label``) stated by the passages its ``passages`` attribute lists (a
JSON list of ids; ``sentences`` triples in all, as :func:`~ragroute.graph.views.to_networkx`
writes a fact), else by the passage its ``passage`` attribute names, else by every passage
node linked to both phrases, else by a passage of its own. Edges typed ``synonym`` are
skipped (the build finds synonyms itself), so a graph exported with ``write_graphml``
imports again into the same facts and weights.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, RagrouteError
from ragroute.graph.build import GraphParams, GraphTables, extend_graph, extract_passages
from ragroute.graph.extract import Extraction, Fact, normalise, resolve_extractor
from ragroute.loaders.common import (
    BadRecord,
    CorpusWarning,
    check_unicode,
    decode_utf8_file,
    json_error,
    not_text_reason,
    parse_json,
)
from ragroute.scopes import ACCESS_KEY, labels_of
from ragroute.types import Document

MAX_REPORTED = 50
"""At most this many bad line numbers are listed in one error (the count is always given)."""

FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "subject": ("subject",),
    "object": ("object",),
    "predicate": ("predicate", "relation"),
    "passage": ("passage", "passage_id"),
    "text": ("text", "passage_text"),
    "title": ("title",),
    "access": ("access",),
}
"""Accepted field names (case-insensitive) of a triple row, by field."""
_FIELD_KEYS = frozenset(key for keys in FIELD_NAMES.values() for key in keys)
"""Every key a field is read under (lower case)."""

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
GRAPHML_SUFFIXES = {".graphml"}
_FACT_HAS_RELATION = "relation" in getattr(Fact, "__dataclass_fields__", {})


@dataclass(frozen=True)
class Triple:
    """One user fact: ``subject`` -- ``predicate`` -> ``object``, optionally stated by ``passage``."""

    subject: str
    object: str
    predicate: str = ""
    passage: str = ""
    line: int = 0  # where it came from (file line, record or edge number), for messages and ids

    def sentence(self) -> str:
        """The triple as a sentence: ``"subject predicate object."``."""
        return " ".join(p for p in (self.subject, self.predicate, self.object) if p) + "."


@dataclass
class TripleSet:
    """Triples plus what came with them: passages with text, and passage-phrase mentions."""

    triples: list[Triple] = field(default_factory=list)
    passages: dict[str, Document] = field(default_factory=dict)  # passages whose text was given
    mentions: list[tuple[str, str]] = field(default_factory=list)  # (passage id, phrase) without a fact
    source: str = "triples"
    #: metadata given for passages (access labels from an ``access`` field, a GraphML node's
    #: ``metadata``), whether or not their text was given
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: passage ids in the order their source lists them (a networkx graph's passage nodes): the
    #: passages made from the triples keep it (else: the order their first triple or mention names them)
    passage_order: list[str] = field(default_factory=list)
    #: titles given for passages, whether or not their text was given (until session 55 a title
    #: given without the passage's text, or on another line than it, was dropped silently)
    titles: dict[str, str] = field(default_factory=dict)


class _Problems:
    """Bad rows collected over a whole input, raised as one error."""

    def __init__(self, source: str, unit: str = "line") -> None:
        self.source, self.unit = source, unit
        self.items: list[tuple[int, str]] = []

    def add(self, where: int, reason: str) -> None:
        self.items.append((where, reason))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        wheres = sorted({w for w, _ in self.items})
        shown = ", ".join(map(str, wheres[:MAX_REPORTED]))
        more = f" and {len(wheres) - MAX_REPORTED} more" if len(wheres) > MAX_REPORTED else ""
        details = "; ".join(f"{self.unit} {w}: {r}" for w, r in self.items[:3])
        if len(self.items) > 3:  # the reasons left unsaid are marked (until session 55 not)
            details += "; ..."
        plural = "s" if len(wheres) > 1 else ""
        raise CorpusFormatError(
            f"{self.source}: {len(wheres)} bad triple{plural} at {self.unit}{plural} {shown}{more} "
            f"({details})"
        )


# ---------------------------------------------------------------------------------------------- reading


def read_triples(path: str | Path) -> TripleSet:
    """Triples from a ``.csv``/``.tsv``, ``.jsonl``/``.ndjson`` or ``.graphml`` file (see the module doc)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise CorpusFormatError(f"{path}: no such triples file")
    if suffix in GRAPHML_SUFFIXES:
        import networkx as nx

        try:
            graph = nx.read_graphml(path)
        except Exception as exc:  # networkx raises XML and value errors of several kinds
            raise CorpusFormatError(
                f"{path}: not a readable GraphML file ({type(exc).__name__}: {exc})"
            ) from None
        return triples_from_networkx(graph, source=path.name)
    if suffix not in CSV_SUFFIXES and suffix not in JSONL_SUFFIXES:
        raise CorpusFormatError(
            f"{path}: unknown triples format {suffix or '(no suffix)'}; "
            "use .csv, .tsv, .jsonl, .ndjson or .graphml"
        )
    try:  # as every file a user gives is read: until session 51 a UTF-16 file was "not UTF-8 text
        # (byte 0)", one without a byte order mark read as letters with NULs between them
        text = decode_utf8_file(path.read_bytes())
    except BadRecord as exc:
        raise CorpusFormatError(f"{path}: {exc}") from None
    if suffix in CSV_SUFFIXES:
        records = _csv_records(text, CSV_SUFFIXES[suffix], path.name)
        return triples_from_records(records, source=path.name)
    return triples_from_records(_jsonl_records(text), source=path.name)


_NEWLINE = re.compile("\n")  # where io.StringIO ends a line


def _csv_records(text: str, delimiter: str, source: str) -> list[tuple[int, Any]]:
    from ragroute.loaders.tabular import END_MARK, check_quotes_closed, check_unique_header, with_end_mark

    lines = io.StringIO(text).readlines()
    reader = csv.reader(with_end_mark(lines), delimiter=delimiter)
    header: list[str] | None = None
    records: list[tuple[int, Any]] = []
    for row in reader:
        if row == [END_MARK]:
            break
        # a quote never closed took in every line after it, silently, until session 41
        check_quotes_closed(row, source, len(lines), _NEWLINE)
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            known = {name for names in FIELD_NAMES.values() for name in names}
            if "subject" not in header or "object" not in header:
                raise CorpusFormatError(
                    f"{source}: the header row must name 'subject' and 'object' columns "
                    f"(found: {', '.join(header)}; known: {', '.join(sorted(known))})"
                )
            # a column named twice (case-insensitively): until session 54 a row kept only the last
            # of its cells, silently (the corpus loaders refuse such a header too)
            check_unique_header([name or f"(unnamed {i})" for i, name in enumerate(header, 1)], source)
            continue
        if any(cell.strip() for cell in row[len(header) :]):
            # until session 54 the cells past the header's were dropped silently: an unquoted comma
            # in a predicate ("born in, 1901") shifted the object, and the real one was lost
            records.append((reader.line_num, _Invalid(f"{len(row)} fields, the header names {len(header)}")))
            continue
        record = {name: (row[i] if i < len(row) else "") for i, name in enumerate(header) if name}
        records.append((reader.line_num, record))
    return records


#: what ends a JSONL line: ``\n``, ``\r\n`` or ``\r``; not the other line ends ``str.splitlines``
#: knows (U+0085, U+2028, U+2029, ...), which a JSON string may hold as they are
_JSONL_LINE_END = re.compile(r"\r\n|\r|\n")


def _jsonl_records(text: str) -> list[tuple[int, Any]]:
    """The records of a JSONL text, by line number. Until session 44 lines were ``str.splitlines``'s,
    and a triple whose text held U+2028 or U+0085 as written (valid JSON, what ``json.dumps(...,
    ensure_ascii=False)`` writes) was cut into two invalid lines."""
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(_JSONL_LINE_END.split(text), 1):
        if not line.strip():
            continue
        try:
            # a lone surrogate escape ("\ud800"), refused as the loaders refuse it: until session 51
            # it reached the graph, whose phrases file (UTF-8) then failed to be written
            records.append((number, check_unicode(parse_json(line), line)))
        except json.JSONDecodeError as exc:
            records.append((number, _Invalid(f"invalid JSON ({json_error(exc)})")))
        except BadRecord as exc:  # a key written twice, a lone surrogate
            records.append((number, _Invalid(str(exc))))
    return records


@dataclass(frozen=True)
class _Invalid:
    reason: str


def _field(record: Mapping[str, Any], name: str) -> tuple[str, str | None]:
    """``(value, problem)`` of a field under any of its accepted names; a missing field is ``""``
    (``access``: its labels sorted and joined by commas; a JSON list of labels is accepted)."""
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    for key in FIELD_NAMES[name]:
        if key in lowered and lowered[key] is not None:
            value = lowered[key]
            if name == "access":
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    return ",".join(sorted(labels_of(value))), None
                if not isinstance(value, str):
                    return "", f"'{key}' is a {type(value).__name__}, not a label or a list of labels"
                return ",".join(sorted(labels_of(value))), None
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return "", f"'{key}' is a {type(value).__name__}, not text"
            not_text = not_text_reason(key, value)  # NaN was the phrase 'nan' until session 51
            if not_text is not None:
                return "", not_text
            if name == "text":  # as written: its line breaks are its paragraphs and table rows (until
                # session 51 collapsed here, where a GraphML import had kept them since session 50)
                return str(value).strip(), None
            return " ".join(str(value).split()), None
    return "", None


def triples_from_records(
    records: Iterable[Mapping[str, Any] | Triple | tuple[int, Any]], *, source: str = "triples"
) -> TripleSet:
    """Triples from rows (mappings with the fields of the module doc, or :class:`Triple` s).

    Rows may come as ``(line number, row)`` pairs; otherwise they are numbered from 1.
    Every bad row is reported at once (see the module doc).
    """
    problems = _Problems(source)
    out = TripleSet(source=source)
    texts: dict[str, tuple[str, int]] = {}
    labels: dict[str, tuple[str, int]] = {}
    stated: set[tuple[str, str, str, str]] = set()  # (subject, predicate, object, passage) kept
    n = 0
    for position, item in enumerate(records, 1):
        line, record = item if isinstance(item, tuple) else (position, item)
        n += 1
        if isinstance(record, Triple):
            record = {
                "subject": record.subject,
                "object": record.object,
                "predicate": record.predicate,
                "passage": record.passage,
            }
        if isinstance(record, _Invalid):
            problems.add(line, record.reason)
            continue
        if not isinstance(record, Mapping):
            problems.add(line, f"not an object but a {type(record).__name__}")
            continue
        values, reasons = {}, []
        keys: dict[str, list[str]] = {}
        for key in record:  # the keys a field is read from (others are not read)
            if (lowered := str(key).strip().lower()) in _FIELD_KEYS:
                keys.setdefault(lowered, []).append(str(key))
        for written in (w for w in keys.values() if len(w) > 1):  # until session 54 the last one was
            # read, silently, as a CSV header naming a column twice was ("subject" and "Subject")
            reasons.append(
                f"a key written twice ({', '.join(map(repr, written))}: names are case-insensitive)"
            )
        for name in FIELD_NAMES:
            values[name], problem = _field(record, name)
            if problem:
                reasons.append(problem)
        for name in ("subject", "object"):
            if not normalise(values[name]) and not any(name in r for r in reasons):
                reasons.append(f"no {name}")
        passage, text, access = values["passage"], values["text"], values["access"]
        for field_name, value, seen, other in (
            ("text", " ".join(text.split()), texts, "another text"),  # the same text however spaced
            ("access", access, labels, "other access labels"),
        ):
            problem = _per_passage(seen, passage, value, int(line), field_name, other)
            if problem:
                reasons.append(problem)
        if reasons:
            problems.add(line, ", ".join(reasons))
            continue
        # a row repeating an earlier one is the same statement: it counts once (until session 44 it
        # was a second sentence, a fact edge of weight 2 from a passage that states it once)
        subject, predicate, obj = values["subject"], values["predicate"], values["object"]
        key = (normalise(subject), predicate.lower(), normalise(obj), passage)  # as passage-less ones share
        if key not in stated:
            stated.add(key)
            out.triples.append(Triple(subject, obj, predicate, passage, line=int(line)))
        if passage and values["title"]:
            out.titles.setdefault(passage, values["title"])
        if passage and text and passage not in out.passages:
            out.passages[passage] = Document(id=passage, text=text)
        if passage and access:
            out.metadata.setdefault(passage, {})[ACCESS_KEY] = access.split(",")
    if n == 0:
        raise CorpusFormatError(f"{source}: no triples (the file is empty)")
    problems.raise_if_any()
    for pid, doc in out.passages.items():
        out.passages[pid] = Document(id=pid, text=doc.text, title=out.titles.get(pid, ""))
    return out


def _per_passage(
    seen: dict[str, tuple[str, int]], passage: str, value: str, line: int, field_name: str, other: str
) -> str | None:
    """What is wrong with a passage's ``field_name`` given on ``line``: given without a passage, or
    ``other`` than on an earlier line of the passage (``seen``: passage -> first value and line)."""
    if not value:
        return None
    if not passage:
        return f"'{field_name}' given without 'passage'"
    earlier = seen.setdefault(passage, (value, line))
    return f"passage {passage!r} has {other} on line {earlier[1]}" if earlier[0] != value else None


def triples_from_networkx(
    graph: Any,
    *,
    text_attribute: str = "text",
    type_attribute: str = "type",
    name_attribute: str = "name",
    passage_attribute: str = "passage",
    relation_attributes: Sequence[str] = ("relation", "predicate", "label"),
    source: str = "networkx graph",
) -> TripleSet:
    """Triples, passages and mentions of a networkx graph (see the module doc for the rules)."""
    problems = _Problems(source, unit="edge")
    out = TripleSet(source=source)
    passage_of: dict[Any, str] = {}
    order: dict[str, None] = {}  # passage ids in node order
    names: dict[Any, str] = {}
    for node, attrs in graph.nodes(data=True):
        is_passage = attrs.get(type_attribute) == "passage" or text_attribute in attrs
        name = " ".join(str(attrs.get(name_attribute, node)).split())
        if is_passage:
            pid = str(attrs.get(passage_attribute) or name)
            passage_of[node] = pid
            if pid not in order:
                order[pid] = None
            # the text as written: its line breaks are its paragraphs, headings and table rows (until
            # session 50 whitespace was collapsed, and a GraphML round trip joined a passage's lines)
            text = str(attrs.get(text_attribute) or "")
            title = str(attrs.get("title") or "")
            if title.strip():
                out.titles.setdefault(pid, title)
            if text.strip():
                out.passages.setdefault(pid, Document(id=pid, text=text, title=title))
            metadata = _node_metadata(attrs, pid, source)
            if metadata:
                out.metadata.setdefault(pid, metadata)
        names[node] = name
    pending: list[tuple[Triple, Any, Any]] = []
    mentioned_by: dict[str, set[str]] = {}
    edges = 0
    for number, (u, v, data) in enumerate(graph.edges(data=True), 1):
        edges += 1
        if data.get(type_attribute) == "synonym":
            continue
        if u in passage_of and v in passage_of:
            continue  # passage-passage links carry nothing a walk uses
        if u in passage_of or v in passage_of:
            pid, phrase = (passage_of[u], names[v]) if u in passage_of else (passage_of[v], names[u])
            if not normalise(phrase):
                problems.add(number, "a phrase node without a name")
                continue
            out.mentions.append((pid, phrase))
            mentioned_by.setdefault(normalise(phrase), set()).add(pid)
            continue
        if not normalise(names[u]) or not normalise(names[v]):
            problems.add(number, "a node without a name")
            continue
        relation = next((str(data[a]) for a in relation_attributes if data.get(a) not in (None, "")), "")
        stated = _stated_by(data, number, problems)
        if stated:  # as write_graphml exports a fact: its passages, and one triple per sentence
            ids, sentences = stated
            for i in range(max(sentences, len(ids))):
                out.triples.append(
                    Triple(names[u], names[v], relation, ids[min(i, len(ids) - 1)], line=number)
                )
            continue
        passage = str(data.get(passage_attribute) or "")
        pending.append((Triple(names[u], names[v], relation, passage, line=number), u, v))
    if not edges and not out.passages:
        raise CorpusFormatError(f"{source}: no triples (the graph has no edges and no passage nodes)")
    out.passage_order = list(order)
    problems.raise_if_any()
    for triple, _u, _v in pending:
        if triple.passage:
            out.triples.append(triple)
            continue
        common = sorted(
            mentioned_by.get(normalise(triple.subject), set())
            & mentioned_by.get(normalise(triple.object), set())
        )
        if not common:
            out.triples.append(triple)
        for pid in common:  # stated by every passage that mentions both phrases
            out.triples.append(Triple(triple.subject, triple.object, triple.predicate, pid, line=triple.line))
    return out


def _stated_by(data: Mapping[str, Any], number: int, problems: Any) -> tuple[list[str], int] | None:
    """A fact edge's ``passages`` (a JSON list of passage ids) and ``sentences`` (how many state
    it), as :func:`~ragroute.graph.views.to_networkx` writes them; None when it has none."""
    if data.get("passages") in (None, ""):
        return None
    try:
        ids = json.loads(str(data["passages"]))
    except json.JSONDecodeError:
        ids = None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        problems.add(number, "'passages' is not a JSON list of passage ids")
        return None
    sentences = data.get("sentences", len(ids))
    if isinstance(sentences, bool) or not isinstance(sentences, int) or sentences < 1:
        problems.add(number, f"'sentences' must be a positive whole number, not {sentences!r}")
        return None
    return ids, sentences


def _node_metadata(attrs: Mapping[str, Any], pid: str, source: str) -> dict[str, Any]:
    """A passage node's metadata: its ``metadata`` attribute (a JSON object), and the labels of an
    ``access`` attribute; unreadable metadata is an error (dropping it could make a passage public)."""
    metadata: dict[str, Any] = {}
    raw = attrs.get("metadata")
    if raw not in (None, ""):
        try:
            parsed = parse_json(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            reason = json_error(exc)
            raise CorpusFormatError(f"{source}: passage {pid!r}: metadata is not JSON ({reason})") from None
        except BadRecord as exc:  # a key written twice: which value was meant is unknown
            raise CorpusFormatError(f"{source}: passage {pid!r}: metadata: {exc}") from None
        if not isinstance(parsed, dict):
            raise CorpusFormatError(f"{source}: passage {pid!r}: metadata is not a JSON object")
        metadata.update(parsed)
    if attrs.get(ACCESS_KEY) not in (None, ""):
        metadata[ACCESS_KEY] = sorted(labels_of(attrs[ACCESS_KEY]))
    return metadata


def as_triple_set(triples: Any) -> TripleSet:
    """A :class:`TripleSet` from a path, a networkx graph, rows/:class:`Triple` s, or a TripleSet."""
    if isinstance(triples, TripleSet):
        return triples
    if isinstance(triples, (str, Path)):
        return read_triples(triples)
    if hasattr(triples, "nodes") and hasattr(triples, "edges"):
        return triples_from_networkx(triples)
    if isinstance(triples, Iterable) and not isinstance(triples, (bytes, Mapping)):
        return triples_from_records(list(triples))
    raise RagrouteError(f"cannot read triples from a {type(triples).__name__}")


# ------------------------------------------------------------------------------------------ extractions


def extractions_from_triples(
    triples: Any,
    documents: Sequence[Document] = (),
    *,
    extractor: Any = None,
    show_progress: bool | None = None,
) -> tuple[list[Document], list[Extraction]]:
    """The passages and their extractions: ``documents`` (extracted by ``extractor``, plus the
    triples naming them) first, in order, then the passages made from the triples."""
    triple_set = as_triple_set(triples)
    docs = list(documents)
    extractions = extract_passages(docs, resolve_extractor(extractor), show_progress) if docs else []
    by_id = {e.passage: e for e in extractions}
    chunks = _chunks_by_document(docs)
    new_docs: dict[str, Document] = {}
    sentences: dict[str, list[str]] = {}
    own: dict[tuple[str, str, str], str] = {}  # a passage-less triple's sentence -> its passage
    # passage ids the triples give: a passage-less triple's own id must be none of them (until
    # session 55 "triple-2" joined the passage another line named "triple-2", silently)
    given = {t.passage for t in triple_set.triples} | {pid for pid, _ in triple_set.mentions}
    given |= set(triple_set.passages)
    for triple in triple_set.triples:
        pid = triple.passage
        if pid and pid not in by_id and pid in chunks:
            pid = _chunk_for(chunks[pid], triple)
        if not pid:
            key = (normalise(triple.subject), triple.predicate.lower(), normalise(triple.object))
            pid = own.setdefault(key, f"triple-{triple.line}")
            taken = "a corpus document id" if pid in by_id and pid not in new_docs else ""
            if pid in given:
                taken = "a passage id given in the triples"
            if taken:
                raise CorpusFormatError(
                    f"{triple_set.source}: passage id {pid!r} for the triple on line {triple.line} "
                    f"is {taken} too; give the triple a passage"
                )
        if pid not in by_id:
            by_id[pid] = Extraction(pid)
            new_docs[pid] = triple_set.passages.get(pid) or Document(id=pid, text="")
            sentences[pid] = []
        if pid in sentences and triple.sentence() not in sentences[pid]:
            sentences[pid].append(triple.sentence())
        _add_fact(by_id[pid], triple)
    for pid, phrase in triple_set.mentions:
        if pid not in by_id and pid in chunks:
            pid = _chunk_for(chunks[pid], Triple(phrase, phrase, passage=pid))
        if pid not in by_id:
            by_id[pid] = Extraction(pid)
            new_docs[pid] = triple_set.passages.get(pid) or Document(id=pid, text="")
            sentences[pid] = []
        _add_phrase(by_id[pid], normalise(phrase))
    for pid, doc in triple_set.passages.items():  # passages with text but neither triple nor mention
        if pid not in by_id:
            by_id[pid], new_docs[pid] = Extraction(pid), doc
    # in the order the source lists its passages (a GraphML export: the graph's node order), so an
    # exported graph imports back with the same node ids (until session 50 passages came in the order
    # their first fact or mention named them: a passage linked to no fact moved after those that were)
    rank = {pid: i for i, pid in enumerate(triple_set.passage_order)}
    made = []
    for pid, doc in sorted(new_docs.items(), key=lambda item: rank.get(item[0], len(rank))):
        if not doc.text:
            text = " ".join(sentences.get(pid) or []) or " ".join(by_id[pid].phrases)
            doc = Document(id=pid, text=text, title=doc.title)
        if not doc.title and triple_set.titles.get(pid):
            doc = Document(id=pid, text=doc.text, title=triple_set.titles[pid])
        metadata = {**triple_set.metadata.get(pid, {}), "origin": "triples"}
        made.append(Document(id=doc.id, text=doc.text, title=doc.title, metadata=metadata))
    corpus_ids = {d.id for d in docs} | set(chunks)
    # a title given alone is left out too (until session 55 without the warning)
    described = {*triple_set.passages, *triple_set.metadata, *triple_set.titles}
    overridden = sorted(pid for pid in described if pid in corpus_ids)
    if overridden:
        named = ", ".join(overridden[:5]) + (
            f" and {len(overridden) - 5} more" if len(overridden) > 5 else ""
        )
        warnings.warn(
            f"{triple_set.source}: {counted(len(overridden), 'passage')} given text, title or access in the "
            f"triples {'is a corpus document' if len(overridden) == 1 else 'are corpus documents'} "
            f"({named}): the corpus's text and metadata are kept, their triples added",
            CorpusWarning,
            stacklevel=2,
        )
    passages = docs + made
    return passages, [by_id[d.id] for d in passages]


def _chunks_by_document(docs: Sequence[Document]) -> dict[str, list[Document]]:
    """The units cut from each corpus document (``parent_id``), in order, for documents that are
    not units themselves: a corpus indexed by paragraph or section."""
    ids = {d.id for d in docs}
    out: dict[str, list[Document]] = {}
    for doc in docs:
        if doc.parent_id is not None and doc.parent_id not in ids:
            out.setdefault(doc.parent_id, []).append(doc)
    return out


def _chunk_for(chunks: Sequence[Document], triple: Triple) -> str:
    """The unit of a chunked corpus document a triple naming the document joins: the first that
    names both its subject and its object, else the first naming either, else the first (until
    session 41 the triple made a passage of its own with the document's id beside its chunks)."""
    subject, obj = normalise(triple.subject), normalise(triple.object)

    def names(chunk: Document, phrase: str) -> bool:
        return bool(phrase) and phrase in normalise(chunk.full_text())

    for wanted in (
        lambda c: names(c, subject) and names(c, obj),
        lambda c: names(c, subject) or names(c, obj),
    ):
        for chunk in chunks:
            if wanted(chunk):
                return chunk.id
    return chunks[0].id


def _add_phrase(extraction: Extraction, phrase: str) -> None:
    if phrase and phrase not in extraction.phrases:
        extraction.phrases.append(phrase)


def _add_fact(extraction: Extraction, triple: Triple) -> None:
    subject, obj = normalise(triple.subject), normalise(triple.object)
    _add_phrase(extraction, subject)
    _add_phrase(extraction, obj)
    if subject != obj:
        sentence = 1 + max((f.sentence for f in extraction.facts), default=-1)
        relation = {"relation": triple.predicate} if _FACT_HAS_RELATION and triple.predicate else {}
        extraction.facts.append(Fact(subject, obj, extraction.passage, sentence, **relation))


# ------------------------------------------------------------------------------------------------ build


def build_graph_from_triples(
    triples: Any,
    encoder: Any,
    *,
    documents: Sequence[Document] = (),
    extractor: Any = None,
    graph_params: GraphParams | None = None,
    walk: Any = None,
    name: str = "",
    show_progress: bool | None = None,
) -> Any:
    """A :class:`~ragroute.graph.index.GraphIndex` over ``documents`` plus the passages of ``triples``.

    ``triples``: a file path (CSV, TSV, JSONL, GraphML), a networkx graph, rows or
    :class:`Triple` s, or a :class:`TripleSet`. ``documents`` (optional) are extracted
    by ``extractor`` (a registered name, an object or ``None`` for the rule extractor),
    which the graph records: ``GraphIndex.add`` extracts later documents with it.
    """
    from ragroute.graph.index import GraphIndex
    from ragroute.index.dense import DenseIndex

    extractor = resolve_extractor(extractor)
    passages, extractions = extractions_from_triples(
        triples, documents, extractor=extractor, show_progress=show_progress
    )
    if not passages:
        raise RagrouteError("no passages to build a graph from")
    dense = DenseIndex.build(passages, encoder, name=name, show_progress=show_progress)
    by_id = {e.passage: e for e in extractions}
    ordered = [by_id[d.id] for d in dense.store.documents]
    tables = extend_graph(
        GraphTables.empty(encoder.dim), ordered, encoder, params=graph_params, show_progress=show_progress
    )
    return GraphIndex(
        dense, tables, graph_params=graph_params, walk=walk, extractor=extractor.describe(), name=name
    )
