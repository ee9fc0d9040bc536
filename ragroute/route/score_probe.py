"""What the confidence router reads from each source: the best few scores a query gets there.

The confidence router needs only the top ``n`` scores of every source for every query, never
the hits. Searching a flat dense source for them scans every one of its vectors: on the eight
Glasgow collections (25k vectors, 38 MB), with the hits built, the confidence router's route
stage took 3.1 ms per query (`ragroute bench corpus-routing`, one core), reading scores only
1.4 ms. So a :class:`SourceProbe` reads scores only, and for a flat dense source of at least
:data:`GRAPH_MIN_DOCUMENTS` documents it keeps an HNSW graph over the source's vectors stored as
float16 (half the vectors' memory again, plus 256 bytes of links per document) and reads the top
scores from it: 0.74 ms, with the same routing accuracy on those queries (0.852) and nDCG@10 within
0.0003 of the exact scan (``probe: exact`` keeps the scan). A graph misses a true neighbour now
and then, mostly for queries far from a source (on 317 Glasgow queries the top-3 mean of LISA and
NPL moved by 0.002-0.003 on average at the default ``ef_search`` of 64, 0.004-0.008 at 32).
The graph is built once (~1 s per 25k documents), on one thread so that every machine builds the
same graph and routes alike; documents added to the index later are scanned exactly until enough
of them are inserted in one batch (:class:`ProbeGraph`), deleted ones left out of its searches until
they are a quarter of it, when it is built again.

A query restricted by metadata filters or by its caller's scope is scored by the index's own
search over the documents it may see (the graph holds every document, and reading scores of
documents a caller may not see would leak them into the routing decision). Retrievers other than
ragroute's dense index (BM25, external stores, pipelines) are searched as before and their hits'
scores read.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from ragroute.context import encoder_key, query_vectors
from ragroute.errors import RagrouteError
from ragroute.exposure import internal_searches
from ragroute.index.base import filter_groups, search_contexts
from ragroute.index.dense import DenseIndex, omp_threads_for
from ragroute.scopes import readable

#: The probe kinds a confidence router may be configured with.
PROBES = ("auto", "exact")
#: Flat dense sources with fewer documents are scanned exactly: their scan costs no more than a
#: graph search (0.03 ms for 1,400 vectors here).
GRAPH_MIN_DOCUMENTS = 2000
#: Links per document of the probe's HNSW graph, and the candidates kept while building it.
GRAPH_M = 32
GRAPH_EF_CONSTRUCTION = 80
#: Deleted documents stay in the graph, left out of its searches, until they are this share of it.
REBUILD_DEAD_SHARE = 0.25


def check_probe(probe: str, ef_search: int) -> None:
    """One-line errors for a probe kind or graph search width the router cannot use."""
    if probe not in PROBES:
        raise RagrouteError(f"unknown confidence probe {probe!r}; choose one of: {', '.join(PROBES)}")
    if isinstance(ef_search, bool) or not isinstance(ef_search, int) or ef_search < 1:
        raise RagrouteError(f"probe_ef_search must be a positive integer, got {ef_search!r}")


class ProbeQueries:
    """The query contexts of one routing call, grouped by filters and caller scope once, with each
    group's query vectors stacked once per encoder: every source's probe reads them."""

    def __init__(self, contexts: Sequence[Any]) -> None:
        self.contexts = list(contexts)
        self.groups = filter_groups(self.contexts, scoped=True)
        self._vectors: dict[tuple[int, str], np.ndarray] = {}

    def vectors(self, group: int, encoder: Any) -> np.ndarray:
        """The query vectors of group ``group`` (an index into :attr:`groups`) for ``encoder``."""
        key = (group, encoder_key(encoder))
        if key not in self._vectors:
            contexts = self.groups[group][1]
            self._vectors[key] = np.ascontiguousarray(query_vectors(contexts, encoder), dtype=np.float32)
        return self._vectors[key]


class SourceProbe:
    """The top-``n`` scores of one retriever for query contexts (see the module docstring).

    ``k`` is how many hits a retriever searched for its hits' scores is asked for (the top ``n``
    of them are read); ``probe`` ``auto`` lets a large flat dense index be read through a graph,
    ``exact`` never; ``ef_search`` is the graph search's candidate list.
    """

    def __init__(self, retriever: Any, *, k: int, probe: str = "auto", ef_search: int = 64) -> None:
        check_probe(probe, ef_search)
        self.retriever = retriever
        self.k = k
        self.ef_search = ef_search
        self.probe = probe
        self._dense = retriever if isinstance(retriever, DenseIndex) else None
        self._graph: ProbeGraph | None = None
        self._building = threading.Lock()  # queries routed in several threads change the graph once

    @property
    def kind(self) -> str:
        """``graph`` (HNSW over float16 vectors), ``scores`` (the dense index's own search, scores
        only) or ``hits`` (the retriever's search, its hits' scores). A source that grows past
        :data:`GRAPH_MIN_DOCUMENTS` documents moves to the graph."""
        dense = self._dense
        if dense is None:
            return "hits"
        graph = (
            self.probe == "auto"
            and dense.params.factory == "flat"
            and len(dense.store) >= GRAPH_MIN_DOCUMENTS
        )
        return "graph" if graph else "scores"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "retriever": type(self.retriever).__name__}
        if self.kind == "graph":
            out.update(m=GRAPH_M, ef_search=self.ef_search, storage="float16")
        return out

    def top_scores(self, queries: ProbeQueries, n: int) -> np.ndarray:
        """Mean of the top ``n`` scores of each query (0 where the source returned nothing)."""
        out = np.zeros(len(queries.contexts))
        if self._dense is None:
            with internal_searches():  # a probe shows the caller nothing: no exposure ledger counts it
                found = search_contexts(self.retriever, queries.contexts, self.k)
            for i, (hits, context) in enumerate(zip(found, queries.contexts)):
                # only documents the caller may read (a retriever that does not filter returns others)
                out[i] = _mean([h.score for h in readable(hits, context.scopes)[:n]])
            return out
        dense = self._dense
        graph = self.kind == "graph"
        if not graph and self._graph is not None:
            self.release()
        for g, (positions, _, filters) in enumerate(queries.groups):
            vectors = queries.vectors(g, dense.encoder)
            with dense.store.reading():  # whether the query is restricted, and its scores: one version
                if graph and dense.store.filter_mask(filters) is None:
                    # the top n of the k an exact search reads (until session 54 the graph read n
                    # where k < n: another mean than the scan's)
                    rows = self._graph_scores(vectors, min(n, self.k))
                else:
                    rows = [scores[:n] for scores in dense.best_scores(vectors, self.k, filters)]
            for i, scores in zip(positions, rows):
                out[i] = _mean(scores)
        return out

    def _graph_scores(self, vectors: np.ndarray, n: int) -> list[list[float]]:
        graph = self._current_graph()
        if graph is None:  # no vectors to read back (the index keeps none)
            assert self._dense is not None
            return self._dense.best_scores(vectors, n)
        return graph.top_scores(vectors, n, max(self.ef_search, n))

    def _current_graph(self) -> ProbeGraph | None:
        """The graph over the index's documents as they are now (:meth:`ProbeGraph.followed`).
        A query reads the graph it found from start to end; a change makes a new one, swapped in
        at once, so queries routed in other threads never see one half-changed."""
        dense = self._dense
        assert dense is not None
        graph = self._graph
        if graph is None or graph.version != dense.store.version:
            with self._building:
                graph = self._graph
                if graph is None or graph.version != dense.store.version:
                    followed = graph.followed(dense) if graph is not None else None
                    graph = self._graph = followed or ProbeGraph.build(dense)
        return graph if graph.index is not None else None

    def release(self) -> None:
        """Drop the graph (a source that shrank below :data:`GRAPH_MIN_DOCUMENTS`)."""
        self._graph = None


@dataclass(frozen=True)
class ProbeGraph:
    """An HNSW graph over a dense index's vectors (float16), as of one version of the index.

    Its labels are insertion numbers; ``iids`` maps them to the index's document iids. Documents
    added to the index since wait in an exact ``tail`` (float32, scanned beside the graph) until
    there are :func:`tail_limit` of them, then are inserted in one batch, into a copy of the graph
    (faiss's HNSW insert costs time in proportion to the whole graph per call, ~1-2 ms at 25k
    documents, and must not run under a search). Deleted ones are excluded from searches by
    ``selector`` until they are :data:`REBUILD_DEAD_SHARE` of the graph, when :meth:`followed`
    asks for a new build. Never changed once made: :meth:`followed` returns a new one. Built and
    grown on one thread, so the same history gives the same graph.
    """

    index: Any  # faiss.IndexHNSWSQ, or None when the index keeps no vectors to read back
    iids: np.ndarray  # label -> iid
    dead: np.ndarray  # by label: deleted from the index since
    tail: np.ndarray  # vectors of documents added since, not in the graph yet
    tail_iids: np.ndarray
    watermark: int  # every iid at or above it is new to this graph
    version: int  # the index's DocumentStore.version it was made for (-1: try again)
    selector: Any = None  # excludes the dead labels (kept here: faiss's parameters do not own it)

    @classmethod
    def build(cls, dense: DenseIndex) -> ProbeGraph:
        with dense.store.reading():  # the documents and their vectors of one version
            return cls._build(dense)

    @classmethod
    def _build(cls, dense: DenseIndex) -> ProbeGraph:
        store = dense.store
        version, iids = store.version, store.iids
        vectors = dense.stored_vectors(np.arange(len(iids))) if len(iids) else None
        if vectors is None:  # nothing to read (yet): scanned exactly, tried again at the next query
            empty = np.zeros(0, dtype=np.int64)
            return cls(None, empty, np.zeros(0, dtype=bool), _NO_VECTORS, empty, 0, -1)
        index = faiss.IndexHNSWSQ(
            vectors.shape[1],
            faiss.ScalarQuantizer.QT_fp16,  # type: ignore[arg-type]  # faiss's stubs want the class, SWIG an int
            GRAPH_M,
            faiss.METRIC_INNER_PRODUCT,
        )
        index.hnsw.efConstruction = GRAPH_EF_CONSTRUCTION
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        omp_threads_for(1)  # one thread: HNSW inserts in parallel in a thread-dependent order
        index.train(vectors)
        index.add(vectors)
        return cls(index, iids, np.zeros(len(iids), dtype=bool), _NO_VECTORS, iids[:0], _after(iids), version)

    def followed(self, dense: DenseIndex) -> ProbeGraph | None:
        """This graph brought up to the index's documents, or None when it must be built again."""
        if self.index is None:
            return None
        with dense.store.reading():  # the documents and their vectors of one version
            return self._followed(dense)

    def _followed(self, dense: DenseIndex) -> ProbeGraph | None:
        store = dense.store
        version, current = store.version, store.iids  # the version first: a change after it is seen
        tail, tail_iids = self.tail, self.tail_iids
        new_positions = np.flatnonzero(current >= self.watermark)
        if len(new_positions):
            vectors = dense.stored_vectors(new_positions)
            if vectors is None:
                return None
            tail = (
                np.vstack([tail, vectors]).astype(np.float32)
                if len(tail)
                else np.asarray(vectors, np.float32)
            )
            tail_iids = np.concatenate([tail_iids, current[new_positions]])
        dead = self.dead
        if len(current) < len(self.iids) - int(dead.sum()) + len(tail_iids):  # some were deleted
            dead = dead | ~np.isin(self.iids, current, assume_unique=True)
            kept = np.isin(tail_iids, current, assume_unique=True)
            tail, tail_iids = tail[kept], tail_iids[kept]
        # rebuilt once the deleted are a quarter of it, as documented (until session 54 only above it)
        if dead.sum() >= REBUILD_DEAD_SHARE * len(dead):
            return None
        index, iids = self.index, self.iids
        if len(tail_iids) >= tail_limit(len(iids)):
            index = faiss.clone_index(index)  # searches in other threads may be reading this one
            omp_threads_for(1)
            index.add(np.ascontiguousarray(tail))
            iids, dead = (
                np.concatenate([iids, tail_iids]),
                np.concatenate([dead, np.zeros(len(tail_iids), bool)]),
            )
            tail, tail_iids = _NO_VECTORS, tail_iids[:0]
        selector = self.selector if dead is self.dead else _excluding(dead)
        watermark = max(self.watermark, _after(current))
        return ProbeGraph(index, iids, dead, tail, tail_iids, watermark, version, selector)

    def top_scores(self, vectors: np.ndarray, n: int, ef_search: int) -> list[list[float]]:
        assert self.index is not None
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in faiss's stubs
        params.efSearch = ef_search
        if self.selector is not None:
            params.sel = self.selector
        omp_threads_for(len(vectors))
        scores, labels = self.index.search(vectors, min(n, self.index.ntotal), params=params)
        rows = [
            [s for s, label in zip(row, row_labels) if label >= 0]
            for row, row_labels in zip(scores.tolist(), labels.tolist())
        ]
        if len(self.tail_iids):  # documents added since the last insert: scanned exactly
            sims = vectors @ self.tail.T
            top = min(n, sims.shape[1])
            best = -np.partition(-sims, top - 1, axis=1)[:, :top]
            rows = [sorted(row + extra, reverse=True)[:n] for row, extra in zip(rows, best.tolist())]
        return rows


_NO_VECTORS = np.zeros((0, 0), dtype=np.float32)


def _after(iids: np.ndarray) -> int:
    """The least iid above all of ``iids`` (iids only grow: every later document's is at least this)."""
    return int(iids.max()) + 1 if len(iids) else 0


def _excluding(dead: np.ndarray) -> Any:
    return faiss.IDSelectorNot(faiss.IDSelectorBatch(np.flatnonzero(dead))) if dead.any() else None


def tail_limit(graph_size: int) -> int:
    """How many added documents wait in a graph's exact tail before they are inserted: 256, or 1%
    of the graph if more (a scan of the tail stays well below the graph search's cost)."""
    return max(256, graph_size // 100)


def _mean(scores: Sequence[float]) -> float:
    return sum(scores) / len(scores) if scores else 0.0  # a handful of floats: no numpy call
