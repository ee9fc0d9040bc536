"""OpenIE with an LLM, in the HippoRAG manner, through any llama-index LLM.

:class:`LLMExtractor` asks the LLM two questions per passage (``llm.complete(prompt).text``):
its named entities, then its ``(subject, relation, object)`` triples given those
entities, both as JSON. Phrases are the entities and the triples' ends (normalised
with :func:`~ragroute.graph.extract.normalise`) plus the passage title; facts are the
triples' (subject, object) pairs, keeping the relation text on
:attr:`Fact.relation <ragroute.graph.extract.Fact.relation>`, plus the title linked to
every phrase (the title counts as present throughout its passage, as in the other
extractors).

The LLM's raw answers are cached on disk (sqlite, ``openie.sqlite`` under
``cache_dir``; by default ``llm-openie`` in the per-user cache folder: ``$RAGROUTE_CACHE``, else
``$XDG_CACHE_HOME/ragroute``, else ``~/.cache/ragroute``), keyed by the sha256 of the model identity, the
prompt version and the passage (title and text): a rebuild makes no LLM call, and
gives the same graph. Answers are parsed leniently (code fences, text around the
JSON, single quotes, trailing commas). A passage whose answer still cannot be parsed,
or whose call raised, is recorded in :attr:`LLMExtractor.failures` (passage id and a
short reason), keeps only its title as a phrase, and extraction goes on; the build
warns how many failed. Failed calls are not cached (a rebuild asks again); unparseable
answers are (a rebuild records the same failure without asking).

The extractor holds an LLM, so it cannot be rebuilt from a name or a stored
description: pass the object (``build_index(docs, "graph", extractor=LLMExtractor(llm))``,
``index.add(docs, extractor=LLMExtractor(llm))``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.encode.cache import SQLITE_FAILURES, CacheFileError, CacheWarning, cache_file_error
from ragroute.encode.resolve import default_cache_dir
from ragroute.errors import RagrouteError
from ragroute.graph.extract import Extraction, Fact, check_extractor_settings, normalise
from ragroute.pyast import literal_eval
from ragroute.types import Document

LLM_EXTRACTOR_VERSION = 6  # 2 (session 39): keys without a leading "the" (the rule extractor's version 3);
# 3 (session 41): keys in Unicode NFC, "İ" lowered to "i" (the rule extractor's version 4); 4 (session
# 49): keys case-folded, not lowered (the rule extractor's version 6), and entities written as objects
# ({"name": "Paris"}) read (a cached answer of them gave no entity); 5 (session 50): a key is its own
# key (normalise idempotent: the rule extractor's version 7); 6 (session 55): "null", "true" and "false"
# inside a string of an answer read leniently kept as written (they were read as None, True, False)
#: Changes whenever the prompts or their parsing change (it is part of the cache key).
PROMPT_VERSION = "hipporag-openie-v1"
CACHE_FILE = "openie.sqlite"
NEEDS_OBJECT = (
    "the 'llm' graph extractor needs its LLM: pass the extractor as an object, "
    "e.g. extractor=LLMExtractor(llm) (ragroute.graph.extract_llm), not by name or stored description"
)

_EXAMPLE_PASSAGE = """Radio City
Radio City is India's first private FM radio station and was started on 3 July 2001.
It plays Hindi, English and regional songs.
Radio City recently forayed into New Media in May 2008 with the launch of a music portal - \
PlanetRadiocity.com that offers music related news, videos, songs, and other music-related features."""
_EXAMPLE_ENTITIES = {
    "named_entities": [
        "Radio City",
        "India",
        "3 July 2001",
        "Hindi",
        "English",
        "May 2008",
        "PlanetRadiocity.com",
    ]
}
_EXAMPLE_TRIPLES = {
    "triples": [
        ["Radio City", "located in", "India"],
        ["Radio City", "is", "private FM radio station"],
        ["Radio City", "started on", "3 July 2001"],
        ["Radio City", "plays songs in", "Hindi"],
        ["Radio City", "plays songs in", "English"],
        ["Radio City", "forayed into", "New Media"],
        ["Radio City", "launched", "PlanetRadiocity.com"],
        ["PlanetRadiocity.com", "launched in", "May 2008"],
        ["PlanetRadiocity.com", "is", "music portal"],
        ["PlanetRadiocity.com", "offers", "news"],
        ["PlanetRadiocity.com", "offers", "videos"],
        ["PlanetRadiocity.com", "offers", "songs"],
    ]
}

NER_PROMPT = """Your task is to extract named entities from the given paragraph.
Respond with a JSON object {{"named_entities": [...]}} and nothing else.

Paragraph:
```
{example}
```
{example_answer}

Paragraph:
```
{passage}
```
"""

TRIPLE_PROMPT = """Your task is to construct an RDF (Resource Description Framework) graph from the given \
paragraph and named entity list.
Respond with a JSON object {{"triples": [[subject, relation, object], ...]}} and nothing else.
Each triple should contain at least one, preferably two, of the named entities in the list for each paragraph.
Resolve pronouns to their specific names to keep the triples clear.

Paragraph:
```
{example}
```
{example_entities}
{example_answer}

Paragraph:
```
{passage}
```
{entities}
"""


@dataclass(frozen=True)
class ExtractionFailure:
    """A passage the LLM extractor could not read a graph from."""

    passage: str
    reason: str


#: settings of common llama-index LLMs that change their answers (read when an LLM does not say
#: its own through ``generation_settings()``)
GENERATION_FIELDS = (
    "temperature",
    "max_tokens",
    "max_new_tokens",
    "top_p",
    "top_k",
    "seed",
    "system_prompt",
    "additional_kwargs",
)


def llm_identity(llm: Any) -> str:
    """``module.Class:model_name@settings`` of a llama-index LLM (what its cache entries are keyed
    by): ``settings`` is a short hash of what changes its answers besides the prompt (its
    ``generation_settings()``, else the :data:`GENERATION_FIELDS` it has), so a rebuild with
    another temperature, token limit or script asks again instead of reusing old answers."""
    cls = type(llm)
    metadata = getattr(llm, "metadata", None)
    model = getattr(metadata, "model_name", None) or getattr(llm, "model", None) or "unknown"
    identity = f"{cls.__module__}.{cls.__qualname__}:{model}"
    own = getattr(llm, "generation_settings", None)
    settings = own() if callable(own) else {f: getattr(llm, f) for f in GENERATION_FIELDS if hasattr(llm, f)}
    if not settings:
        return identity
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode("utf-8")).hexdigest()
    return f"{identity}@{digest[:12]}"


def passage_text(document: Document) -> str:
    """The passage as the prompts show it: title on the first line, then the text."""
    return f"{document.title}\n{document.text}" if document.title else document.text


# --------------------------------------------------------------------------- parsing


#: JSON starts (``{`` or ``[``) an answer is read from at most: a long answer of stray brackets costs
#: one bracket match each
MAX_JSON_STARTS = 64


def parse_json(text: str, accept: Callable[[Any], bool] | None = None) -> Any:
    """The first JSON object or array in an LLM answer (with ``accept``: the first that it accepts,
    else the first one read).

    Every ``{`` or ``[`` is a possible start, in the order of the text (code fences need no special
    reading: the JSON inside is found like any other). Tolerates text before and after, single-quoted
    strings and trailing commas (read as Python literals, never evaluated). Raises ``ValueError``
    with a short reason otherwise. Until session 38 the first closed code fence was read even after
    the JSON answer (the prompt's own one-shot pattern), the first bracket anywhere was the answer
    (``Found [2] entities: {...}`` gave the entity "2"), and nesting a thousand deep raised a
    ``RecursionError`` that stopped the build.
    """
    first: tuple[Any] | None = None
    reason = "no JSON object in the answer"
    read_to = 0  # a bracket inside a value already read starts no other (a list within an object)
    tried = 0
    for match in re.finditer(r"[{\[]", text):
        if match.start() < read_to:
            continue
        if tried == MAX_JSON_STARTS:
            break
        tried += 1
        try:
            value, read_to = _json_at(text, match.start())
        except ValueError as exc:
            if tried == 1:
                reason = str(exc)
            continue
        if accept is None or accept(value):
            return value
        if first is None:
            first = (value,)
    if first is not None:
        return first[0]
    raise ValueError(reason)


def _json_at(text: str, start: int) -> tuple[Any, int]:
    """The JSON value (or Python-literal look-alike) starting at ``start`` and where it ends;
    ``ValueError`` if none."""
    try:
        return json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        pass
    end = _matching_bracket(text, start)
    if end < 0:
        raise ValueError("unterminated JSON (truncated answer?)")
    candidate = text[start : end + 1]
    try:
        # taking turns with other threads' parses: on CPython 3.11 two at once may raise a spurious
        # SystemError, which escaped every caller (a step-wise controller's planner, answering in
        # many threads at once, failed the query) until session 50
        return literal_eval(_json_literals_as_python(candidate)), end + 1
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise ValueError("malformed JSON") from None


def _matching_bracket(text: str, start: int) -> int:
    """The index of the bracket closing the one at ``start`` (strings in either quote skipped), or -1."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in "\"'":
            # an apostrophe inside a word (Bob's) does not open a string
            if char == "'" and i > 0 and text[i - 1].isalnum():
                continue
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i
    return -1


#: a quoted string (left as it is; one left open runs to the end, so each quote is read once), or
#: JSON's ``true``, ``false`` or ``null`` outside one
_STRING_OR_LITERAL = re.compile(
    r""""(?:[^"\\]|\\.)*(?:"|\\?\Z)|'(?:[^'\\]|\\.)*(?:'|\\?\Z)|\b(true|false|null)\b""", re.S
)


def _json_literals_as_python(text: str) -> str:
    """``text`` with JSON's ``true``, ``false`` and ``null`` written as Python's, outside strings
    only: until session 55 they were replaced inside strings too (an answer read leniently, as one
    with a trailing comma is, gave the triple object "None and void" for "null and void")."""
    return _STRING_OR_LITERAL.sub(
        lambda m: {"true": "True", "false": "False", "null": "None"}[m[1]] if m[1] else m[0], text
    )


#: the fields an entity written as an object names itself in (``{"name": "Paris", "type": "LOC"}``),
#: first found first
ENTITY_FIELDS = ("name", "entity", "text")


def parse_entities(text: str) -> list[str]:
    """Named entities from an NER answer (``{"named_entities": [...]}`` or a bare list), each a
    string (or a number), or an object naming it in one of :data:`ENTITY_FIELDS`
    (``[{"name": "Paris"}]``); other items are skipped. A non-empty list with no entity in either
    form raises ``ValueError`` (until session 49 a list of objects, as many models answer, read as no
    entity and no failure: the passage kept its title alone, silently)."""
    data = parse_json(text, _entities_shape)
    if isinstance(data, Mapping):
        data = data.get("named_entities", data.get("entities"))
    if not isinstance(data, list):
        raise ValueError("no 'named_entities' list")
    terms = [term for term in map(_entity_term, data) if term is not None]
    if data and not terms:
        raise ValueError("no well-formed entity")
    return [str(term).strip() for term in terms if str(term).strip()]


def _entity_term(item: Any) -> Any:
    """The entity an item of the NER list names (:func:`_is_term`, or an object's first
    :data:`ENTITY_FIELDS` value that is one), else ``None``."""
    if isinstance(item, Mapping):
        item = next((item[f] for f in ENTITY_FIELDS if _is_term(item.get(f))), None)
    return item if _is_term(item) else None


def _is_term(value: Any) -> bool:
    """A string, or a finite number (an entity or triple part a model wrote as a number, like a
    year): never a boolean (``True``), a NaN or an infinity. An int is always finite (until session
    48 ``math.isfinite`` was asked, whose float conversion of a 400-digit number raised
    ``OverflowError``: the build stopped on such a triples answer)."""
    if isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _entities_shape(data: Any) -> bool:
    if isinstance(data, Mapping):
        return isinstance(data.get("named_entities", data.get("entities")), list)
    return isinstance(data, list) and all(
        isinstance(e, str) or (isinstance(e, Mapping) and _entity_term(e) is not None) for e in data
    )


def _triples_shape(data: Any) -> bool:
    if isinstance(data, Mapping):
        return isinstance(data.get("triples", data.get("triplets")), list)
    return isinstance(data, list) and all(isinstance(t, (list, tuple, Mapping)) for t in data)


def parse_triples(text: str) -> list[tuple[str, str, str]]:
    """``(subject, relation, object)`` triples from an OpenIE answer.

    Accepts ``{"triples": [[s, r, o], ...]}`` or a bare list, triples as lists or as
    ``{"subject", "relation"/"predicate", "object"}`` objects; malformed triples are
    skipped.
    """
    data = parse_json(text, _triples_shape)
    if isinstance(data, Mapping):
        data = data.get("triples", data.get("triplets"))
    if not isinstance(data, list):
        raise ValueError("no 'triples' list")
    out = []
    for item in data:
        if isinstance(item, Mapping):
            item = [item.get("subject"), item.get("relation", item.get("predicate")), item.get("object")]
        if isinstance(item, (list, tuple)) and len(item) == 3 and all(_is_term(x) for x in item):
            subject, relation, obj = (str(x).strip() for x in item)
            if subject and obj:
                out.append((subject, relation, obj))
    if data and not out:
        raise ValueError("no well-formed triple")
    return out


# --------------------------------------------------------------------------- the cache


class OpenIECache:
    """Raw LLM answers per passage in one sqlite file (no pickle). A file SQLite cannot use (no
    database, damaged, unwritable here) is one :class:`~ragroute.encode.cache.CacheFileError` naming
    it (until session 47 a ``sqlite3`` traceback, at the start of a build or in its middle)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connected() as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS openie (key TEXT PRIMARY KEY, model TEXT, prompt_version TEXT, "
                "ner TEXT, triples TEXT, created REAL)"
            )

    @contextmanager
    def _connected(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as db:
                yield db
        except SQLITE_FAILURES as exc:
            raise cache_file_error("LLM answer cache", self.path, exc) from None

    def get(self, key: str) -> tuple[str, str | None] | None:
        """The cached ``(ner, triples)`` answers of ``key``, or None: none cached, or a damaged row
        (an answer that is no text: a :class:`~ragroute.encode.cache.CacheWarning`, and the passage
        is asked again and its row replaced; until session 51 a ``TypeError`` stopped the build)."""
        with self._connected() as db:
            row = db.execute("SELECT ner, triples FROM openie WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        ner, triples = row
        if not isinstance(ner, str) or not isinstance(triples, (str, type(None))):
            warnings.warn(
                f"LLM answer cache {self.path}: a damaged entry (answers of type "
                f"{type(ner).__name__}, {type(triples).__name__}, not text); asked again",
                CacheWarning,
                stacklevel=2,
            )
            return None
        return ner, triples

    def put(self, key: str, model: str, ner: str, triples: str | None) -> None:
        with self._connected() as db, db:
            db.execute(
                "INSERT OR REPLACE INTO openie VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, PROMPT_VERSION, ner, triples, time.time()),
            )

    def __len__(self) -> int:
        with self._connected() as db:
            return int(db.execute("SELECT COUNT(*) FROM openie").fetchone()[0])


# --------------------------------------------------------------------------- the extractor


class LLMExtractor:
    """Named entities and triples from an LLM (HippoRAG's OpenIE), cached on disk."""

    name = "llm"
    version = LLM_EXTRACTOR_VERSION

    def __init__(
        self,
        llm: Any = None,
        *,
        cache_dir: str | Path | None = None,
        model_id: str | None = None,
        min_chars: int = 1,
    ) -> None:
        if llm is None:
            raise RagrouteError(NEEDS_OBJECT)
        if not callable(getattr(llm, "complete", None)):
            raise RagrouteError(
                f"the 'llm' graph extractor needs a llama-index LLM with complete(), not {llm!r}"
            )
        self.min_chars = min_chars
        check_extractor_settings(self, {"min_chars": 0})  # before a cache file is made
        self.llm = llm
        self.model_id = model_id or llm_identity(llm)
        if cache_dir is None:  # the per-user cache folder (made, and said on stderr, when missing)
            cache_dir = default_cache_dir(create=True) / "llm-openie"
        self.cache_dir = Path(cache_dir)
        self.cache = OpenIECache(self.cache_dir / CACHE_FILE)
        self.failures: list[ExtractionFailure] = []
        self.calls = 0  # LLM calls made by this extractor
        self.cache_hits = 0  # passages answered from the cache

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "prompt_version": PROMPT_VERSION,
            "model": self.model_id,
            "min_chars": self.min_chars,
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> LLMExtractor:
        raise RagrouteError(f"{NEEDS_OBJECT} (graph built with model {description.get('model')!r})")

    def cache_key(self, document: Document) -> str:
        """sha256 of the model identity, the prompt version and the passage (title and text)."""
        payload = json.dumps([self.model_id, PROMPT_VERSION, document.title or "", document.text])
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def ner_prompt(self, document: Document) -> str:
        return NER_PROMPT.format(
            example=_EXAMPLE_PASSAGE,
            example_answer=json.dumps(_EXAMPLE_ENTITIES),
            passage=passage_text(document),
        )

    def triple_prompt(self, document: Document, entities: Sequence[str]) -> str:
        return TRIPLE_PROMPT.format(
            example=_EXAMPLE_PASSAGE,
            example_entities=json.dumps(_EXAMPLE_ENTITIES),
            example_answer=json.dumps(_EXAMPLE_TRIPLES),
            passage=passage_text(document),
            entities=json.dumps({"named_entities": list(entities)}),
        )

    def _complete(self, prompt: str) -> str:
        self.calls += 1
        return str(self.llm.complete(prompt).text)

    def answers(self, document: Document) -> tuple[str, str | None]:
        """The raw ``(ner, triples)`` answers for a passage: from the cache, else from the LLM
        (and then cached). ``triples`` is ``None`` when the NER answer was unparseable (not asked)."""
        key = self.cache_key(document)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        ner = self._complete(self.ner_prompt(document))
        try:
            entities = parse_entities(ner)
        except ValueError:
            triples = None
        else:
            triples = self._complete(self.triple_prompt(document, entities))
        self.cache.put(key, self.model_id, ner, triples)
        return ner, triples

    def extract(self, document: Document) -> Extraction:
        """Phrases and facts of one passage; on failure, the title alone (and a failure record)."""
        title = normalise(document.title) if document.title else ""
        try:
            ner, triples_text = self.answers(document)
        except CacheFileError:
            raise  # the cache's own errors are not the passage's
        except Exception as exc:  # the LLM client's errors: record the passage and go on
            return self._failed(document, title, f"LLM call failed: {type(exc).__name__}: {exc}")
        try:
            entities = parse_entities(ner)
        except ValueError as exc:
            return self._failed(document, title, f"named entities: {exc}")
        try:
            triples = parse_triples(triples_text or "")
        except ValueError as exc:
            return self._failed(document, title, f"triples: {exc}")
        return self._extraction(document, title, entities, triples)

    def extract_many(self, documents: Sequence[Document]) -> list[Extraction]:
        return [self.extract(d) for d in documents]

    def _keep(self, phrase: str) -> str:
        key = normalise(phrase)
        return key if len(key) >= self.min_chars else ""

    def _extraction(
        self, document: Document, title: str, entities: list[str], triples: list[tuple[str, str, str]]
    ) -> Extraction:
        out = Extraction(document.id)
        phrases: dict[str, int] = {}  # phrase -> position of the first triple naming it (0 if none)
        if title:
            phrases[title] = 0
        for entity in entities:
            if key := self._keep(entity):
                phrases.setdefault(key, 0)
        pairs: set[tuple[str, str]] = set()
        stated: set[tuple[str, str, str]] = set()
        for position, (subject, relation, obj) in enumerate(triples):
            a, b = self._keep(subject), self._keep(obj)
            for key in (a, b):
                if key:
                    phrases.setdefault(key, position)
            relation = " ".join(relation.split())
            # a triple the answer repeats is one statement (until session 44 each copy was a fact,
            # and the edge's weight counted it again)
            if a and b and a != b and (a, relation.lower(), b) not in stated:
                stated.add((a, relation.lower(), b))
                out.facts.append(Fact(a, b, document.id, position, relation=relation))
                pairs.update({(a, b), (b, a)})
        if title:
            out.facts.extend(
                Fact(title, phrase, document.id, position)
                for phrase, position in phrases.items()
                if phrase != title and (title, phrase) not in pairs
            )
        out.phrases = list(phrases)
        return out

    def _failed(self, document: Document, title: str, reason: str) -> Extraction:
        self.failures.append(ExtractionFailure(document.id, reason[:200]))
        return Extraction(document.id, phrases=[title] if title else [])
