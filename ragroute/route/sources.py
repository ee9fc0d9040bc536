"""Sources: named retrievers with a description, modality and granularity.

A source is what a router chooses between: an index from :mod:`ragroute.index`
(later a graph or a skill catalogue) plus what a router needs to know about it.
One corpus can be exposed at several granularities (:func:`granularity_views`):
each view indexes chunks of the same documents, and its hits keep ``parent_id``
so results map back to the documents they came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ragroute.errors import InvalidArgumentError, RagrouteError, check_batch
from ragroute.index.base import Retriever, metadata_keys_of, search_contexts
from ragroute.integrations.targets import SEARCHABLE, check_target
from ragroute.scopes import access_labels, is_public, readable, visible
from ragroute.types import Decision, Document, Hit

if TYPE_CHECKING:
    from ragroute.chunking import Granularity


@dataclass
class Source:
    """A named retriever and what routers may know about it.

    ``documents`` (optional) lets training-free routers build a prototype of the
    source from its own content; indexes built by ragroute provide it. ``name``: a non-empty
    string; ``retriever``: anything with ``search_contexts`` or ``search_many`` (an index, a
    :class:`~ragroute.pipeline.Pipeline`, a framework adapter), else :class:`InvalidArgumentError`
    (a folder path says to load it with :func:`~ragroute.index.io.load_index`). ``access``: the
    source's access labels (none: public; see :mod:`ragroute.scopes`): a query whose caller's
    scopes share none of them never routes to it.
    """

    name: str
    retriever: Retriever
    description: str = ""
    modality: str = "text"
    granularity: str = "document"
    parent: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    access: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # checked here, not at the first query: an int name reached every hit's source, and a path
        # given as the retriever failed later as a source with "neither documents nor a description"
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgumentError(f"a source's name must be a non-empty string, got {self.name!r}")
        self.access = access_labels(self.access or None, f"source {self.name!r}")
        check_target(self.retriever, "retriever", SEARCHABLE, f"source {self.name!r}")

    def visible_to(self, scopes: Iterable[str]) -> bool:
        """Whether a caller holding ``scopes`` may read this source."""
        return visible(self.access, scopes)

    @property
    def documents(self) -> Sequence[Document]:
        """Its retriever's documents (none where the retriever does not list them)."""
        return getattr(self.retriever, "documents", ())

    def metadata_keys(self, scopes: Sequence[str] | None = None) -> frozenset[str] | None:
        """The metadata keys its documents carry (with ``scopes``: those a caller holding them may
        read), or ``None`` when its retriever cannot tell (:func:`~ragroute.index.base.metadata_keys_of`).
        A caller the source's own access labels keep out reads none of its keys, as it reads none
        of its hits (until session 51 a filter's error listed the keys of a hidden source searched
        directly, a step-wise controller's)."""
        if scopes is not None and not self.visible_to(scopes):
            return frozenset()
        return metadata_keys_of(self.retriever, scopes)

    @property
    def collection(self) -> str:
        """The documents this source searches: its ``corpus`` metadata (set for an expert set's
        experts and for config sources naming one index or ``corpus:``), else its own name.
        Sources of one collection hold the same documents: fusion merges their hits of one
        document, and an exposure budget counts them once."""
        return str(self.metadata.get("corpus") or self.name)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Its retriever's hits for each query, each hit naming this source."""
        queries = check_batch(queries)
        results = self.retriever.search_many(queries, k)
        return [hits for hits, _ in self._stamped([(hits, None) for hits in results], len(queries))]

    def search_contexts(self, contexts: Sequence[Any], k: int) -> list[tuple[list[Hit], Decision | None]]:
        """Hits for each query context, with the decision of a nested pipeline (``None`` otherwise).

        Indexes with ``search_contexts`` reuse the contexts' cached vectors; any
        other retriever is asked with the texts (per distinct filter set).
        """
        retriever = self.retriever
        if hasattr(retriever, "retrieve_contexts"):
            results = retriever.retrieve_contexts(list(contexts), k)
            return self._stamped([(r.hits, r.decision) for r in results], len(contexts), nested=True)
        results = search_contexts(retriever, contexts, k)
        return self._stamped([(hits, None) for hits in results], len(contexts))

    def start_contexts(
        self, contexts: Sequence[Any], k: int, submit: Callable[..., Any]
    ) -> Callable[[], list[tuple[list[Hit], Decision | None]]] | None:
        """Phase one of :meth:`search_contexts` when the retriever searches in two phases (a
        hybrid index: its dense scans handed to ``submit`` now, the rest when the returned function
        is called); ``None`` for any other retriever."""
        start = getattr(self.retriever, "start_contexts", None)
        if start is None or hasattr(self.retriever, "retrieve_contexts"):
            return None
        finish = start(list(contexts), k, submit)
        return lambda: self._stamped([(hits, None) for hits in finish()], len(contexts))

    def _stamped(
        self, pairs: Sequence[tuple[list[Hit], Decision | None]], expected: int, nested: bool = False
    ) -> list[tuple[list[Hit], Decision | None]]:
        """The results as this source's own copies of the hits, each with this source's name, once
        checked: one list of hits per query, each hit a :class:`Hit` with a finite number as its
        score (a missing text read as empty). Anything else is this source's failure, in one line
        (the retrieve stage keeps the other sources' hits and records it), never hits shifted onto
        other queries or a NaN ranked first.

        Copies (shallow: metadata is shared, never written), because the later stages stamp them
        (route probability, ranks, a reranker's explain) and a retriever may hand out hits it
        keeps (a cache), the same hits to two queries of a batch, or to two sources over it: until
        session 50 the name was written onto the retriever's own hits, and of two sources over one
        retriever that keeps them, the first one's hits read as the second's. ``nested``: the hits
        of a nested pipeline, whose ``inner_source`` becomes the path of sources that found them
        inside this one ("mid/leaf" when nested twice), what an exposure ledger counts them under,
        and whose ``collection`` is this source's group then the inner one's (``GROUP/INNER``).
        """
        if len(pairs) != expected:
            raise RagrouteError(
                f"source {self.name!r} returned {len(pairs)} result lists for {expected} queries"
            )
        # the documents' own group, where it is not this source alone (a granularity view's parent
        # source, a shared corpus): a parents reranker keeps one hit per document within it
        group = str(self.metadata.get("corpus") or self.parent or self.name)
        stamped: list[tuple[list[Hit], Decision | None]] = []
        for hits, decision in pairs:
            if not isinstance(hits, list):
                kind = type(hits).__name__
                raise RagrouteError(f"source {self.name!r} returned a {kind}, not a list of hits")
            own = []
            for hit in hits:
                if isinstance(hit, Hit):
                    hit = copied_hit(hit)
                check_hit(hit, self.name)
                if nested:
                    inner = hit.explain.get("inner_source")
                    path = f"{hit.source}/{inner}" if inner else hit.source
                    # its documents are those of the inner source that found them (of its own
                    # collection there), within this source's: until session 52 a parents reranker
                    # kept one of two inner sources' documents sharing an id
                    within = hit.explain.get("collection") or hit.source
                    hit.explain = {**hit.explain, "inner_source": path, "collection": f"{group}/{within}"}
                elif group != self.name:
                    hit.explain = {**hit.explain, "collection": group}
                hit.source = self.name
                own.append(hit)
            stamped.append((own, decision))
        return stamped


def copied_hit(hit: Hit) -> Hit:
    """A shallow copy of ``hit`` whose fields may be reassigned without touching the original (its
    metadata and explain are shared: replace them, never write into them)."""
    own = object.__new__(type(hit))  # as copy.copy, at half its cost (every hit of every source)
    own.__dict__.update(hit.__dict__)
    return own


def check_hit(hit: Any, source: str) -> None:
    """Raise a one-line :class:`RagrouteError` unless ``hit`` is a :class:`Hit` whose score is a
    finite number (made a float) and whose metadata and explain are mappings; a ``None`` text or
    title is read as empty, a ``None`` metadata or explain as an empty mapping (no access labels:
    public, as for a hit whose metadata has none). Until now a ``None`` or a list there raised in the
    pipeline's scope check, failing every query of the batch."""
    if (
        type(hit) is Hit
        and type(hit.score) is float
        and math.isfinite(hit.score)
        and type(hit.metadata) is dict
        and type(hit.explain) is dict
        and hit.text is not None
        and hit.title is not None
    ):
        return  # what ragroute's indexes return: the checks below, in one test
    if not isinstance(hit, Hit):
        raise RagrouteError(f"source {source!r} returned a {type(hit).__name__} where a Hit belongs")
    named = _named(hit)
    score = hit.score
    if isinstance(score, bool) or not isinstance(score, (int, float, np.integer, np.floating)):
        shown = repr(score) if named.startswith("hit ") else f"of type {type(score).__name__}"
        raise RagrouteError(f"source {source!r}: {named} has score {shown}, not a number")
    if not math.isfinite(score):
        raise RagrouteError(f"source {source!r}: {named} has score {score}, not a finite number")
    hit.score = float(score)
    if hit.text is None:
        hit.text = ""
    if hit.title is None:
        hit.title = ""
    for field_name in ("metadata", "explain"):
        value = getattr(hit, field_name)
        if value is None:
            setattr(hit, field_name, {})
        elif not isinstance(value, Mapping):
            kind = type(value).__name__
            raise RagrouteError(f"source {source!r}: {named} has {field_name} of type {kind}, not a mapping")


def _named(hit: Hit) -> str:
    """``hit`` as an error of its source names it: by its id unless it carries access labels (the
    source's error reaches the trace of callers who may not read it: until session 49 it named a
    hidden document's id)."""
    metadata = hit.metadata if isinstance(hit.metadata, Mapping) else None  # None or broken: no labels
    return f"hit {hit.doc_id!r}" if is_public(metadata) else "a hit with access labels"


def hits_of(target: Any, contexts: Sequence[Any], k: int) -> list[list[Hit]]:
    """Each context's top ``k`` hits from ``target``: a :class:`Source` (searched only for callers
    its access lets in; its results' nested decisions dropped) or any retriever
    (:func:`~ragroute.index.base.search_contexts`)."""
    contexts = list(contexts)
    if not isinstance(target, Source):
        found = search_contexts(target, contexts, k)
        return [readable(hits, getattr(c, "scopes", ())) for hits, c in zip(found, contexts)]
    out: list[list[Hit]] = [[] for _ in contexts]
    seen = [i for i, c in enumerate(contexts) if target.visible_to(getattr(c, "scopes", ()))]
    if seen:
        for i, (hits, _nested) in zip(seen, target.search_contexts([contexts[i] for i in seen], k)):
            # a retriever that does not filter by scope returned documents the caller may not read:
            # a gate read their scores until session 37
            out[i] = readable(hits, getattr(contexts[i], "scopes", ()))
    return out


RESERVED_NAMES = ("none",)
"""Names no source may take: ``none`` is the route that retrieves nothing."""


def check_sources(sources: Any) -> list[Source]:
    """``sources`` as a list of :class:`Source` with distinct names, none of them reserved; else one
    :class:`~ragroute.errors.InvalidArgumentError` line (an index passed where a ``Source`` is
    expected; two sources named alike, where one would hide the other; a source named ``none``,
    which the router's no-retrieval route would shadow)."""
    listed = check_batch(sources, "sources")
    seen: set[str] = set()
    for source in listed:
        if not isinstance(source, Source):
            raise InvalidArgumentError(
                f"sources must be Source objects (Source(name, index)), got {type(source).__name__}"
            )
        if source.name in RESERVED_NAMES:
            raise InvalidArgumentError(
                f"a source may not be named {source.name!r}: it is the route that retrieves nothing"
            )
        if source.name in seen:
            raise InvalidArgumentError(f"two sources are named {source.name!r}: one would hide the other")
        seen.add(source.name)
    return listed


@dataclass
class SourceProblem:
    """A source that could not be opened: reported in decisions, never fatal."""

    name: str
    error: str
    access: frozenset[str] = frozenset()  # the source's labels: a caller outside them is not told of it


def granularity_views(
    name: str,
    documents: Sequence[Document],
    granularities: Sequence[Granularity],
    build: Callable[[Sequence[Document], str], Retriever],
    *,
    description: str = "",
    modality: str = "text",
) -> list[Source]:
    """One source per granularity over the same documents, named ``NAME/GRANULARITY``.

    ``build(units, view_name)`` indexes the chunks (e.g. ``lambda units, n:
    build_index(units, "hybrid", encoder=enc, name=n)``).
    """
    from ragroute.chunking import chunk_documents

    views = []
    for granularity in granularities:
        view_name = f"{name}/{granularity}"
        units = chunk_documents(documents, granularity)
        views.append(
            Source(
                name=view_name,
                retriever=build(units, view_name),
                description=description,
                modality=modality,
                granularity=granularity,
                parent=name,
            )
        )
    return views


def collapse_to_parents(hits: Sequence[Hit], k: int) -> list[Hit]:
    """Keep the best hit per parent document (chunks count as their parent) within each collection
    (the sources over the same documents: granularity views of one source, sources naming one
    corpus), re-ranked. Until session 37 the collection was the source name before a ``/``: sources
    ``kb/en`` and ``kb/de`` (two corpora) lost one of their ``faq-1`` hits, and two sources naming
    one ``corpus:`` kept each document twice."""
    seen: set[tuple[str, str]] = set()
    out: list[Hit] = []
    for hit in hits:
        key = (str(hit.explain.get("collection") or hit.source), hit.parent_id or hit.doc_id)
        if key in seen:
            continue
        seen.add(key)
        out.append(hit)
        hit.rank = len(out)
        if len(out) == k:
            break
    return out
