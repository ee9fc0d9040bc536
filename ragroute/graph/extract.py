"""Offline phrase and fact extraction: no LLM, no model download.

:class:`RuleExtractor` reads each passage sentence by sentence and keeps, as
phrases, the spans a knowledge graph links on:

* entity-like spans: runs of capitalised words, allowing short lower-case
  connectors inside (``University of Copenhagen``, ``Bank of the West``), without
  a possessive ending (``Ada Brennan's`` -> ``ada brennan``); a sentence-initial
  capitalised word alone counts only if it is not a common English function word;
* numbers and years (``1842``, ``1.355``);
* quoted titles (``"Fist Power"``);
* the passage title, which counts as present in every sentence of its passage.

Facts are the phrase pairs that co-occur in one sentence (the title pairs with
every phrase of every sentence). Phrases are normalised (case-folded, inner
whitespace collapsed, surrounding punctuation stripped) so the same entity in
two passages becomes one node. Everything is deterministic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol, runtime_checkable

from ragroute.errors import RagrouteError
from ragroute.registry import EXTRACTORS
from ragroute.types import Document

EXTRACTOR_VERSION = 7  # 2 (session 36): a name never runs across punctuation ("Paris; London");
# 3 (session 39): a phrase's leading "the" is not part of its key ("The Beatles" = "Beatles"), and a
# blank line or a Markdown heading line ends a sentence; 4 (session 41): text is read in Unicode NFC
# (decomposed accents split "Café" into "Cafe" and "e") and names in any cased script (Cyrillic and
# Greek names gave no phrase); 5 (session 48): a possessive ending a name is not part of its key
# ("Ada Brennan's painting" gave a node apart from "Ada Brennan"); 6 (session 49): keys are case-folded,
# not lowered ("Straße" and "STRASSE" were two nodes); 7 (session 50): a key is its own key (normalise
# is idempotent: "The The Straße" keyed "the strasse", which a GraphML export imported back as "strasse"),
# and a Markdown table row is a sentence of its own (a table was one sentence, whose first 64 pairs held
# the title's and the header's: no row's cells were linked)

# a sentence ends before a capital (Latin, Latin-1, Greek or Cyrillic since version 4), digit or quote
_SENTENCE = re.compile(
    r"(?<!\b[A-Z]\.)(?<!\b(?:Mr|Dr|St|Mt|Jr|Sr)\.)(?<=[.!?])\s+(?=[A-Z0-9\"'(\u00c0-\u00de\u0391-\u03a9\u0400-\u042f])"
)
# a word starts with a letter of any script (until version 4: Latin only) and may hold combining marks
_TOKEN = re.compile(r"[^\W\d_][\w\u0300-\u036f'’\-.&]*|\d[\d,.:/\-]*\d|\d")
_HEADING = re.compile(r"\s{0,3}#{1,6}\s+((?:.*?(?<![\s#]))??)[\s#]*$")
_TABLE_ROW = re.compile(r"\s{0,3}(\|.*\|)\s*$")  # a Markdown table row: | cell | cell |
_QUOTED = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
_CONNECTORS = frozenset({"of", "the", "de", "da", "di", "del", "la", "le", "von", "van"})
_FUNCTION_WORDS_TEXT = """a an the this that these those it its he she they we you i his her their our your
    in on at by for from with as of to into onto over under after before during since until
    and or but if when while where which who whom whose what why how there here
    is are was were be been being has have had do does did not no yes also however although
    then than thus so such some many most more other another each every all any both either neither
    one two three first second third new old later early many several"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_MAX_SPAN_WORDS = 8


@dataclass(frozen=True)
class Fact:
    """Two phrases that co-occur in one sentence of one passage.

    ``relation`` is the relation text when the extractor reads one (the LLM
    extractor's triples); co-occurrence extractors leave it empty.
    """

    subject: str
    object: str
    passage: str
    sentence: int
    relation: str = ""


class ExtractionWarning(UserWarning):
    """Some passages could not be extracted (they kept title-only phrases)."""


@dataclass
class Extraction:
    """What one passage contributes to the graph."""

    passage: str
    phrases: list[str] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)


@runtime_checkable
class Extractor(Protocol):
    """What builds a graph's phrases and facts (registered in :data:`ragroute.registry.EXTRACTORS`).

    ``describe()`` is stored in the graph's manifest; adding passages later needs an
    extractor whose description is equal, so one graph never mixes two extractors.

    Optional: ``extract_many(documents)`` (the build then passes batches, so a model
    can pipe them), and a ``failures`` list of records with a ``passage`` (after
    extracting, the build warns with :class:`ExtractionWarning` how many were added).
    See ``docs/extractors.md``.
    """

    name: str

    def describe(self) -> dict[str, Any]: ...

    def extract(self, document: Document) -> Extraction: ...


def resolve_extractor(spec: Any = None) -> Any:
    """An extractor from ``spec``: ``None`` (the rule extractor), a registered name, a stored
    description (``{"name": ..., ...}``, rebuilt by the class's ``from_description``), or an
    extractor object (returned as is)."""
    if spec is None:
        return RuleExtractor()
    if isinstance(spec, str):
        return EXTRACTORS.get(spec, "graph extractor")()
    if isinstance(spec, Mapping):
        name = str(spec.get("name", ""))
        cls = EXTRACTORS.get(name, "graph extractor")
        if not hasattr(cls, "from_description"):
            raise RagrouteError(
                f"graph extractor {name!r} cannot be rebuilt from its description; pass the extractor object"
            )
        return cls.from_description(spec)
    if not callable(getattr(spec, "extract", None)) or not callable(getattr(spec, "describe", None)):
        raise RagrouteError(f"not a graph extractor (needs extract() and describe()): {spec!r}")
    return spec


#: facts kept per sentence (the first pairs of its phrases) unless an extractor is told otherwise
DEFAULT_MAX_FACTS = 64


def facts_cap(max_facts_per_sentence: int) -> dict[str, int]:
    """``max_facts_per_sentence`` for an extractor's ``describe()`` when it is not the default: it
    changes the facts, so a graph records it (and ``add`` refuses another) while graphs built with
    the default keep their description (until session 38 it was left out: a graph built with 2 grew
    by 64 a sentence after a reload)."""
    if max_facts_per_sentence == DEFAULT_MAX_FACTS:
        return {}
    return {"max_facts_per_sentence": int(max_facts_per_sentence)}


def check_extractor_settings(extractor: Any, minimums: Mapping[str, int]) -> None:
    """Each named setting of ``extractor`` a whole number of at least its minimum, else one
    :class:`~ragroute.errors.InvalidArgumentError` line naming the class and setting (until session
    55 none was checked: ``max_facts_per_sentence=-1`` or ``2.5`` failed the build at its first
    passage with islice()'s ``ValueError``, and ``min_chars="2"`` with a ``TypeError``)."""
    from ragroute.errors import InvalidArgumentError, check_setting

    for key, least in minimums.items():
        try:
            check_setting(getattr(extractor, key), "integer", type(extractor).__name__, key, minimum=least)
        except RagrouteError as exc:
            raise InvalidArgumentError(str(exc)) from None


_PUNCTUATION = " .,;:!?\"'()[]{}“”’‘-"


def normalise(phrase: str) -> str:
    """The node key of a phrase: Unicode NFC, lower-case, collapsed whitespace, no surrounding
    punctuation and no leading "the" (version 3 of the rule extractor: the title "The Beatles" and
    the text's "Beatles", read without the sentence's first word, were two phrases until then).
    Since version 4 the same name with composed or decomposed accents is one key, and a Turkish
    capital "İ" lowers to "i" (Python's lower() adds a combining dot: "İstanbul" was not
    "Istanbul"). Since version 6 case is folded (``str.casefold``), not lowered: "Straße" and
    "STRASSE" are one key, as are "ﬁle" and "file"; the folded text is put in NFC again (folding
    may decompose a character: "ǰ"). Since version 7 a key is its own key (``normalise(key) ==
    key``): every leading "the" goes, and folding is repeated until nothing changes (the title "The
    The Straße" was keyed "the strasse", which a GraphML export imported back, normalised again,
    as "strasse")."""
    text = phrase
    for _ in range(8):  # one pass is enough for almost any text, two for the rest
        folded = unicodedata.normalize("NFC", text).casefold().replace("i\u0307", "i")
        lowered = unicodedata.normalize("NFC", folded)
        key = " ".join(lowered.split()).strip(_PUNCTUATION)
        while key.startswith("the ") and key[4:].strip(_PUNCTUATION):
            key = key[4:].strip(_PUNCTUATION)
        if key == text:
            break
        text = key
    return text


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage (a light splitter: end punctuation followed by a capital or digit).
    A blank line ends a paragraph, and a Markdown heading (``# ...``) and a Markdown table row
    (``| Ada Brennan | 1901 |``) are sentences of their own; other line breaks are hard wraps
    inside a sentence (until session 39 a heading ran into the first sentence: "# Mira Okafor" then
    "Mira Okafor was ..." gave the phrase "mira okafor mira okafor"; until session 50 a table was one
    sentence, whose first 64 phrase pairs were the title's and the header's, so no row linked its
    own cells)."""
    out: list[str] = []
    for paragraph in _paragraphs(text):
        out.extend(s.strip() for s in _SENTENCE.split(paragraph) if s.strip())
    return out


def _paragraphs(text: str) -> list[str]:
    """``text`` cut at blank lines and around Markdown heading lines, each piece on one line."""
    pieces: list[str] = []
    lines: list[str] = []
    for line in text.strip().splitlines():
        own = _HEADING.match(line) or _TABLE_ROW.match(line)  # a sentence of its own
        if own or not line.strip():
            pieces.append(" ".join(lines))
            lines = []
            if own:
                pieces.append(own.group(1))
            continue
        lines.append(line.strip())
    pieces.append(" ".join(lines))
    return [piece for piece in pieces if piece.strip()]


class RuleExtractor:
    """Entity-like spans, numbers, quoted titles and the passage title; facts = co-occurring pairs."""

    name = "rules"
    version = EXTRACTOR_VERSION

    def __init__(self, *, min_chars: int = 2, max_facts_per_sentence: int = DEFAULT_MAX_FACTS) -> None:
        self.min_chars = min_chars
        self.max_facts_per_sentence = max_facts_per_sentence
        check_extractor_settings(self, {"min_chars": 0, "max_facts_per_sentence": 0})

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "min_chars": self.min_chars,
            **facts_cap(self.max_facts_per_sentence),
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> RuleExtractor:
        """The extractor a stored description names (its version must be this one)."""
        version = description.get("version", EXTRACTOR_VERSION)
        if version != EXTRACTOR_VERSION:
            raise RagrouteError(
                f"the graph was built by rule extractor version {version}; this library extracts with "
                f"version {EXTRACTOR_VERSION}: rebuild the graph"
            )
        return cls(
            min_chars=int(description.get("min_chars", 2)),
            max_facts_per_sentence=int(description.get("max_facts_per_sentence", DEFAULT_MAX_FACTS)),
        )

    def sentence_phrases(self, sentence: str) -> list[str]:
        """Normalised phrases of one sentence, in order of first appearance."""
        sentence = unicodedata.normalize("NFC", sentence)
        found: list[str] = [normalise(m.group(1)) for m in _QUOTED.finditer(sentence)]
        tokens = [(m.group(0), m.start()) for m in _TOKEN.finditer(sentence)]
        span: list[str] = []
        end = 0
        for position, (token, start) in enumerate(tokens):
            if sentence[end:start].strip():  # punctuation between two words ends a name: "Paris;
                self._close(span, found)  # London", "Kellow (England)", "Microsoft – Apple"
            end = start + len(token)
            word = token.rstrip(".,")
            if word[:1].isdigit():
                self._close(span, found)
                found.append(normalise(word))
                continue
            if word[:1].isupper():
                if not span and position == 0 and (_possessor(word) or word).lower() in _FUNCTION_WORDS:
                    continue
                span.append(word)
                if len(span) >= _MAX_SPAN_WORDS or token.endswith((".", ",")) and not _is_initial(token):
                    self._close(span, found)
                continue
            if span and word.lower() in _CONNECTORS and _next_is_capital(tokens, position):
                span.append(word)
                continue
            self._close(span, found)
        self._close(span, found)
        return [p for p in dict.fromkeys(found) if len(p) >= self.min_chars]

    @staticmethod
    def _close(span: list[str], found: list[str]) -> None:
        """Keep ``span`` as a phrase (without trailing connectors, and without a possessive ending
        its last word: "Ada Brennan's painting" names "ada brennan"; inside a name it stays, as in
        the title "Schindler's List"), and empty it."""
        while span and span[-1].lower() in _CONNECTORS:
            span.pop()
        if span:
            span[-1] = _possessor(span[-1]) or span[-1]
            found.append(normalise(" ".join(span)))
            span.clear()

    def extract(self, document: Document) -> Extraction:
        """Phrases and facts of one passage (its title is present in every sentence)."""
        sentences = (self.sentence_phrases(s) for s in split_sentences(document.text))
        return cooccurrence_extraction(document, sentences, self.max_facts_per_sentence)

    def extract_many(self, documents: Sequence[Document]) -> list[Extraction]:
        return [self.extract(d) for d in documents]


def cooccurrence_extraction(
    document: Document,
    sentences: Iterable[Sequence[str]],
    max_facts_per_sentence: int,
    *,
    key: Callable[[str], str] = normalise,
) -> Extraction:
    """A passage's extraction from the normalised phrases of each of its sentences: the title
    (keyed by ``key``, as the extractor keys the phrases it finds) counts as present in every
    sentence, and facts are the phrase pairs that co-occur in one (at most
    ``max_facts_per_sentence`` per sentence)."""
    title = key(document.title) if document.title else ""
    out = Extraction(document.id)
    phrases: dict[str, None] = {}
    if title:
        phrases[title] = None
    for s, sentence in enumerate(sentences):
        found = [p for p in sentence if p != title]
        present = ([title] if title else []) + found
        phrases.update(dict.fromkeys(found))
        # the first pairs only, made lazily: a sentence of thousands of names (a list without a full
        # stop) built all n^2/2 pairs to keep 64 until session 41
        pairs = (
            (present[i], present[j])
            for i in range(len(present))
            for j in range(i + 1, len(present))
            if present[i] != present[j]
        )
        out.facts.extend(Fact(a, b, document.id, s) for a, b in islice(pairs, max_facts_per_sentence))
    out.phrases = list(phrases)
    return out


def _possessor(word: str) -> str:
    """The owner a possessive names (``Brennan's``, ``Brennan’s``, ``Dickens'`` -> the word
    before the ending), else ``""``."""
    if len(word) > 2 and word.endswith(("'s", "’s")):
        return word[:-2]
    if len(word) > 2 and word.endswith(("s'", "s’")):
        return word[:-1]
    return ""


def _is_initial(token: str) -> bool:
    """``J.`` or ``U.S.``: a capital initial, not the end of a span."""
    return bool(re.fullmatch(r"(?:[A-Z]\.)+", token))


def _next_is_capital(tokens: list[tuple[str, int]], position: int) -> bool:
    for token, _ in tokens[position + 1 : position + 3]:
        if token[:1].isupper():
            return True
        if token.lower() not in _CONNECTORS:
            return False
    return False
