"""Graph retrieval: personalized PageRank over a knowledge graph, as a registered index kind.

:class:`GraphIndex` is an index of kind ``graph`` (``ragroute build CORPUS --method
graph``; a source a router can choose). A query walks the graph with zero LLM calls:

1. every fact (a pair of co-occurring phrases) is scored by the cosine of its
   phrases with the query (``fact_score``: the better of the two, or their mean as
   in the static HippoRAG-2 style walk); the phrases of the ``top_facts`` best facts
   are seeded with the fact's score divided by how many passages contain the phrase
   (specific phrases weigh more). An optional :attr:`GraphIndex.fact_filter` (e.g. an
   LLM, :class:`~ragroute.graph.fact_filter.LLMFactFilter`) may first drop candidate
   facts; it is off by default, the zero-LLM walk is the product;
2. query-aware anchors: the query's own entity-like phrases (the rule extractor run
   on the query) are linked to phrase nodes, by exact match or by embedding
   cosine >= ``anchor_similarity``, and seeded with ``anchor_weight`` divided by how
   many passages contain them (0 switches anchors off);
3. the ``prior_depth`` best passages of a dense search seed the walk too (whatever ``k``
   is), with ``passage_prior`` times their min-max normalised cosine; ``fact_passage_boost``
   (off by default: it measured slightly worse) adds reset mass to the passages carrying the
   top facts;
4. hub damping: edges into a phrase are scaled by ``1 / degree ** hub_damping``
   (degree = passages containing it), so generic phrases pass on less mass;
5. query-conditioned edges: the query's terms that no fact seed covers (BM25 tokens,
   e.g. the relation word of the second hop) scale the edges into the passages that
   hold them by ``1 + lexical_edges x`` their idf-weighted share, for this query only.
   Scaling edges by query-fact embedding cosine did not help (measured earlier); this
   lexical signal did (MuSiQue dev R@5 .713 -> .733, FCR@5 .45 -> .48, flat from 4 to 16);
6. personalized PageRank (damping ``damping``) runs from that reset vector, and
   passages are ranked by the mass they receive; passages it gives no mass (linked to no
   seed, outside the dense prior or its last passage, whose min-max prior is 0) fill the
   slots left up to ``k`` after them, by dense similarity then id, with score 0 and
   ``method`` ``"dense"`` (``fallback`` says why). Both scalings scale the edges *into*
   a node, so they reach the engine as one per-call ``target_scale`` vector (never a
   change to the shared graph): the engine's adjacency stays symmetric and its walk
   reversible, so it can certify the top ``k`` passages (among those the filters allow)
   with a local push from the seeds (:meth:`PPREngine.run
   <ragroute.graph.ppr.PPREngine.run>`, ``method="auto"``).

Every switch is a :class:`WalkParams` field, so ``ragroute bench graph`` ablates each.
A query whose facts link to nothing falls back to dense retrieval and says so in
each hit's explanation. Each hit explains itself: its PPR mass, its dense rank,
the seed phrases, anchors and facts of the walk, and the ``path`` its mass came
along (from a seed phrase, or from the dense prior, to the passage).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from ragroute.context import query_vectors
from ragroute.encode.base import Encoder
from ragroute.errors import IndexFormatError, InvalidArgumentError, RagrouteError
from ragroute.exposure import explanations_confined
from ragroute.graph.build import (
    GraphParams,
    GraphTables,
    build_graph,
    check_params,
    extend_graph,
    extract_passages,
)
from ragroute.graph.extract import RuleExtractor, normalise, resolve_extractor
from ragroute.graph.lexical import PassageTerms
from ragroute.graph.ppr import PPREngine
from ragroute.index.bm25_counts import TermCountsKeeper
from ragroute.index.bm25_tokenize import tokenize_many
from ragroute.index.dense import DenseIndex
from ragroute.index.docstore import DocumentStore, check_have_text
from ragroute.index.local import LocalIndex
from ragroute.scopes import scope_of
from ragroute.store.arrays import npz_arrays
from ragroute.types import Document, Hit

ARRAYS_FILE = "graph_arrays.npz"
SCOPED_GRAPHS = 8  # walk graphs kept for callers' scopes (one per distinct set of visible passages)
PHRASES_FILE = "graph_phrases.json"
#: ``explain["confined"]`` of a hit found under an exposure budget (:meth:`GraphIndex._confine`)
CONFINED = "an exposure budget is on: only what this passage holds (no path)"
#: why a hit the walk gave no mass is there (``explain["fallback"]``, with ``method`` ``"dense"``)
NO_WALK_MASS = "no walk mass: ranked after the walked passages by dense similarity"


#: type, least and most value of each walk parameter (None: unbounded)
WALK_LIMITS: dict[str, tuple[str, float | None, float | None]] = {
    "top_facts": ("integer", 0, None),
    "passage_prior": ("number", 0, 1),
    "prior_depth": ("integer", 0, None),
    "damping": ("number", 0.01, 0.99),
    "fact_score": ("string", None, None),
    "anchor_weight": ("number", 0, None),
    "anchor_similarity": ("number", 0, 1),
    "fact_passage_boost": ("number", 0, None),
    "hub_damping": ("number", 0, None),
    "fact_candidates": ("integer", 1, None),
    "lexical_edges": ("number", 0, None),
}


@dataclass
class WalkParams:
    """How a query walks the graph (see the module docstring)."""

    top_facts: int = 5
    passage_prior: float = 0.05
    prior_depth: int = 200  # passages of the query's dense search the prior seeds (0: none), any k
    damping: float = 0.5
    fact_score: str = "max"  # "max" or "mean" of the fact's two phrase-query cosines
    anchor_weight: float = 1.0  # seed weight of the query's own phrases (0: off)
    anchor_similarity: float = 0.8  # cosine needed to link a query phrase with no exact match
    fact_passage_boost: float = 0.0  # reset mass for the passages that carry the top facts (0: off)
    hub_damping: float = 0.5  # edges into a phrase scaled by 1 / degree ** hub_damping (0: off)
    fact_candidates: int = 20  # facts shown to a fact filter, when one is set
    lexical_edges: float = 8.0  # edges into passages scaled by 1 + this x unmatched-term overlap (0: off)

    def __post_init__(self) -> None:  # until session 36 fact_score "maxx" walked as "mean", silently
        check_params(self, WALK_LIMITS)
        if self.fact_score not in ("max", "mean"):
            raise InvalidArgumentError(
                f"WalkParams: 'fact_score' must be 'max' or 'mean', not {self.fact_score!r}"
            )

    @classmethod
    def static(cls) -> WalkParams:
        """The static walk in the HippoRAG 2 manner: mean fact score, no query anchors, no hub
        damping, no query-conditioned edges."""
        return cls(fact_score="mean", anchor_weight=0.0, hub_damping=0.0, lexical_edges=0.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WalkParams:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SeedFact:
    """A fact the walk seeds from: its row in the fact table, its two phrases, its query score."""

    id: int
    subject: str
    object: str
    score: float

    def __str__(self) -> str:
        return f"{self.subject} | {self.object} ({self.score:.3f})"


class _Reach(NamedTuple):
    """What a caller's scope lets a walk touch: the passages it may read, the phrases and facts
    found in at least one of them, how many visible passages hold each phrase, and the per-node
    scale that closes every other node."""

    passages: np.ndarray  # (N,) bool
    phrases: np.ndarray  # (P,) bool
    facts: np.ndarray  # (F,) bool
    counts: np.ndarray  # (P,) float32: visible passages containing each phrase
    node_scale: np.ndarray  # (P+N,) 1.0 for reachable nodes, 0.0 for the others
    key: bytes  # identifies the visible passages (the scoped walk graphs are cached by it)


class _WalkGraph(NamedTuple):
    engine: PPREngine  # the graph's own engine: hub damping is a per-call target scale
    node_scale: np.ndarray | None  # edges into node v scaled by node_scale[v] (None: hub damping off)
    adjacency: sp.csr_array  # the engine's (symmetric) weights before any scale, for explanations


class GraphIndex(LocalIndex):
    """Passages and phrases in one graph; queries walk it by personalized PageRank."""

    kind = "graph"
    needs_encoder = True

    def __init__(
        self,
        dense: DenseIndex,
        tables: GraphTables,
        *,
        graph_params: GraphParams | None = None,
        walk: WalkParams | None = None,
        extractor: Mapping[str, Any] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(dense.store, name)
        self.dense = dense
        self.encoder = dense.encoder
        self.tables = tables
        self.graph_params = graph_params or GraphParams()
        self.walk = walk or WalkParams()
        self.extractor = dict(extractor or RuleExtractor().describe())
        #: Optional ``(query, facts) -> facts`` filter over the candidate facts (e.g.
        #: :class:`~ragroute.graph.fact_filter.LLMFactFilter`); None: the zero-LLM walk.
        self.fact_filter: Callable[[str, list[SeedFact]], Sequence[SeedFact]] | None = None
        self._query_extractor = RuleExtractor()  # finds the query's own phrases (anchors)
        self._term_counts = TermCountsKeeper()  # the passages' term counts, kept between adds
        self._adding = threading.Lock()  # one add at a time: each extends the graph the last one left
        self._set_tables(tables)

    def _set_tables(self, tables: GraphTables) -> None:
        """Use ``tables``, with a PPR engine and passage node ids made for them."""
        engine = PPREngine(tables.adjacency)
        self.tables, self.engine = tables, engine
        self._walk_graphs: dict[float, _WalkGraph] = {}
        self._terms: PassageTerms | None = None  # built on the first walk that needs it
        self._incidence: sp.csr_array | None = None  # phrase x passage, built on the first scoped walk
        self._scoped_graphs: OrderedDict[tuple[float, bytes], _WalkGraph] = OrderedDict()
        self._scoped_lock = threading.Lock()
        self._passage_nodes = np.arange(tables.n_phrases, tables.n_phrases + len(self.store))
        self._ids: tuple[int, dict[str, int]] | None = None  # (phrases, phrase -> node id): first anchoring

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        encoder: Encoder,
        *,
        graph_params: GraphParams | None = None,
        walk: WalkParams | None = None,
        extractor: Any = None,
        name: str = "",
        show_progress: bool | None = None,
    ) -> GraphIndex:
        """Index ``documents`` densely and build their graph with ``extractor`` (a registered
        name such as ``"rules"``, an extractor object, or ``None`` for the rule extractor)."""
        docs = list(documents)
        extractor = resolve_extractor(extractor)
        dense = DenseIndex.build(docs, encoder, name=name, show_progress=show_progress)
        tables = build_graph(
            dense.store.documents,
            encoder,
            extractor=extractor,
            params=graph_params,
            show_progress=show_progress,
        )
        return cls(
            dense, tables, graph_params=graph_params, walk=walk, extractor=extractor.describe(), name=name
        )

    @classmethod
    def from_options(cls, documents, options, *, encoder=None, name="", show_progress=None) -> GraphIndex:
        return cls.build(
            documents,
            encoder,
            graph_params=options.graph,
            extractor=options.extractor,
            name=name,
            show_progress=show_progress,
        )

    def add(
        self, documents: Sequence[Document], *, extractor: Any = None, show_progress: bool | None = None
    ) -> None:
        """Add new passages (ids not in the index yet) to the dense part and to the graph.

        Only the new passages are extracted; their new phrases are appended to the phrase
        table (old phrases keep their ids), encoded, and searched against all phrase
        vectors for synonym edges (old synonym links are never recomputed); their facts
        are appended to the fact table (a fact already known gains weight and passages).
        Passage nodes are renumbered after the new phrases and the PPR engine is rebuilt.
        The index is unchanged when this raises (an id already present or repeated, an
        extractor other than the one the graph was built with, an encoder error). Like
        :meth:`DenseIndex.add <ragroute.index.dense.DenseIndex.add>`, it holds the document
        store's write lock while the passages and the graph change: searches in other threads
        see the graph before or after, never between. An add in another thread waits for this one
        (searches do not): two at once each extended the graph they started from, and the later
        one's tables dropped the earlier one's passages from the graph (until session 48).
        """
        docs = list(documents)
        if not docs:
            return
        with self._adding:
            self._add(docs, extractor, show_progress)

    def _add(self, docs: list[Document], extractor: Any, show_progress: bool | None) -> None:
        """:meth:`add` of a non-empty batch, with no other add running."""
        check_have_text(docs)  # passages are extracted and embedded from their text
        seen: set[str] = set()
        for doc in docs:
            if doc.id in self.store or doc.id in seen:
                where = "in the index" if doc.id in self.store else "given twice"
                raise RagrouteError(f"cannot add document {doc.id!r}: the id is already {where}")
            seen.add(doc.id)
        self._check_in_step()
        extractor = resolve_extractor(self.extractor if extractor is None else extractor)
        if extractor.describe() != self.extractor:
            raise RagrouteError(
                f"graph {self.name!r} was built with extractor {self.extractor}, not "
                f"{extractor.describe()}: add passages with the graph's own extractor, or rebuild the graph"
            )
        extractions = extract_passages(docs, extractor, show_progress)
        tables = extend_graph(
            self.tables, extractions, self.encoder, params=self.graph_params, show_progress=show_progress
        )
        vectors = self.dense.encoder.encode_documents(
            [d.full_text() for d in docs], show_progress=show_progress
        )
        with self.store.writing():  # passages and graph change before any walk sees either
            self.dense.add_vectors(docs, vectors)
            self._set_tables(tables)

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Not supported: a passage's phrases, facts and synonym links are shared with others, so
        the graph is rebuilt without it (``ragroute build --method graph`` on the corpus minus it)."""
        raise RagrouteError(
            f"graph {self.name!r}: passages cannot be deleted from a knowledge graph; rebuild it "
            "without them (`ragroute build CORPUS --method graph`)"
        )

    def _check_in_step(self) -> None:
        """One line, instead of walks over passage nodes that no longer match the documents, when
        the shared document store changed outside :meth:`add` (a delete through ``index.dense``)."""
        if self.tables.n_passages != len(self.store):
            raise IndexFormatError(
                f"graph {self.name!r} has {self.tables.n_passages} passage nodes for {len(self.store)} "
                "documents: its documents changed outside GraphIndex.add; rebuild it"
            )

    @property
    def confidence_probe(self) -> DenseIndex:
        """PPR masses say nothing about how well a source matched: routers probe the dense part."""
        return self.dense

    # ------------------------------------------------------------------ searching

    def query_encoders(self) -> list[Any]:
        return [self.encoder]

    def _search_contexts(
        self, contexts: Sequence[Any], k: int, filters: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        return self._walk([c.text for c in contexts], query_vectors(contexts, self.encoder), k, filters)

    def _walk(
        self, texts: list[str], vectors: np.ndarray, k: int, filters: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        self._check_in_step()
        tables, walk = self.tables, self.walk
        n_phrases = tables.n_phrases
        dense = self.dense.ranked_positions(vectors, max(k, walk.prior_depth), filters)
        allowed = self.store.filter_mask(filters)
        reach = self._reach(filters)  # None unless a caller's scope hides passages
        # The walk certifies the top k among the passages a hit may come from.
        candidates = self._passage_nodes if allowed is None else self._passage_nodes[np.asarray(allowed)]
        graph = (
            self._walk_graph(walk.hub_damping)
            if reach is None
            else self._scoped_graph(walk.hub_damping, reach)
        )
        out = []
        for text, vector, ranked in zip(texts, vectors, dense):
            seeds, facts, filter_failed = self._seeds(vector, text, reach)
            seeds_from_facts = list(seeds)
            anchors = self._anchors(text, reach)
            for phrase, weight in anchors.items():
                seeds[phrase] = seeds.get(phrase, 0.0) + weight
            if not seeds:
                out.append(self._fallback(ranked[:k]))
                continue
            reset = np.zeros(tables.adjacency.shape[0], dtype=np.float64)
            for phrase, weight in seeds.items():
                reset[phrase] = weight
            # the prior is the dense search's top prior_depth whatever k is (until session 49 it
            # was its top max(k, prior_depth): a k above prior_depth changed the walk, and so the
            # order of the passages a smaller k returned)
            prior = ranked[: walk.prior_depth]
            if prior and walk.passage_prior > 0:
                scores = np.array([s for _, s in prior], dtype=np.float64)
                low, span = scores.min(), scores.max() - scores.min()
                normed = (scores - low) / span if span > 0 else np.ones_like(scores)
                positions = np.array([position for position, _ in prior], dtype=np.intp)
                reset[n_phrases + positions] += walk.passage_prior * normed
            if walk.fact_passage_boost > 0:
                for fact in facts:
                    row = tables.fact_passages[[fact.id]].indices
                    if reach is not None:
                        row = row[reach.passages[row]]
                    if row.size:
                        reset[n_phrases + row] += walk.fact_passage_boost * fact.score / row.size
            # only the fact seeds' words are taken out: an anchor's words stay unmatched and weigh
            # the edges into the passages holding them, as the lexical edges were measured
            # (docs/benchmarks.md); explain["unmatched_terms"] lists these words
            fact_phrases = [tables.phrases[p] for p in seeds_from_facts]
            unmatched, lexical = self._lexical_edges(
                text, fact_phrases, None if reach is None else reach.passages
            )
            target_scale = graph.node_scale
            if lexical is not None:
                target_scale = lexical if target_scale is None else target_scale * lexical
            if reach is not None:  # no mass enters what the scope hides (its graph has no edges there)
                target_scale = reach.node_scale if target_scale is None else target_scale * reach.node_scale
            full = graph.engine.run(
                reset,
                damping=walk.damping,
                top_k=k,
                among=candidates,
                target_scale=target_scale,
                max_iter=_max_iterations(walk.damping),
            ).scores
            mass = full[n_phrases:]
            if allowed is not None:
                mass = np.where(allowed, mass, -1.0)
                if unmatched and self._terms is not None:  # named only if a passage it may read has them
                    unmatched = self._terms.held_by(unmatched, np.asarray(allowed, dtype=bool))
            order = np.lexsort((np.arange(len(mass)), -mass))[:k]
            dense_rank = {position: rank for rank, (position, _) in enumerate(ranked, 1)}
            seed_names = [tables.phrases[p] for p in sorted(seeds, key=lambda p: -seeds[p])][:8]
            fact_texts = [str(fact) for fact in facts]
            normalised_reset = reset / reset.sum()
            # every node's out-weight under this query's scales (the adjacency is symmetric: the
            # weight of v -> u is that of u -> v, scaled by u's factor)
            scale = np.ones(graph.adjacency.shape[0]) if target_scale is None else target_scale
            out_weight = np.asarray(graph.adjacency @ scale, dtype=np.float64).ravel()
            walked = [int(position) for position in order if mass[position] > 0]
            hits = []
            for rank, position in enumerate(walked, 1):
                hit = self.store.hit(position, float(mass[position]), rank, self.name)
                hit.explain = {
                    "method": "ppr",
                    "dense_rank": dense_rank.get(int(position)),
                    "seeds": seed_names,
                    "anchors": [tables.phrases[p] for p in anchors],
                    "facts": fact_texts,
                    "unmatched_terms": unmatched,
                    "fact_filter": None if self.fact_filter is None else _describe(self.fact_filter),
                    **({"fact_filter_failed": filter_failed} if filter_failed else {}),
                    "path": self._path(
                        n_phrases + int(position),
                        full,
                        normalised_reset,
                        seeds,
                        graph,
                        out_weight,
                        target_scale,
                    ),
                }
                if lexical is not None:  # how much more mass the passage's unmatched terms let in
                    hit.explain["lexical_scale"] = round(float(lexical[n_phrases + int(position)]), 4)
                hits.append(hit)
            # passages the walk gave no mass (linked to no seed; the dense prior gives its last
            # passage 0) fill the k slots left, after every walked one, with score 0 (they used to
            # be dropped, so a search returned fewer than k of the passages the caller may read)
            for position in self._unwalked(ranked, walked, allowed, k - len(hits)):
                hit = self.store.hit(position, 0.0, len(hits) + 1, self.name)
                hit.explain = {
                    "method": "dense",
                    "fallback": NO_WALK_MASS,
                    "dense_rank": dense_rank.get(position),
                    "seeds": seed_names,
                    "anchors": [tables.phrases[p] for p in anchors],
                    "facts": fact_texts,
                    "unmatched_terms": unmatched,
                    "fact_filter": None if self.fact_filter is None else _describe(self.fact_filter),
                    **({"fact_filter_failed": filter_failed} if filter_failed else {}),
                }
                hits.append(hit)
            if explanations_confined():
                for hit in hits:
                    self._confine(hit, facts, seeds, anchors)
            out.append(hits)
        return out

    def _confine(
        self, hit: Hit, facts: Sequence[Any], seeds: Mapping[int, float], anchors: Iterable[int]
    ) -> None:
        """``hit``'s explanation as an exposure budget lets it be shown: the seeds, anchors, facts and
        query terms its own passage holds, and no walk path (it names other passages and phrases);
        see :func:`~ragroute.exposure.explanations_confined`."""
        tables = self.tables
        position = self.store.position(hit.doc_id)
        node = tables.adjacency[[tables.n_phrases + position]].indices
        own = {int(p) for p in node[node < tables.n_phrases]}  # a passage links only to its phrases
        explain = hit.explain
        explain["seeds"] = [tables.phrases[p] for p in sorted(seeds, key=lambda p: -seeds[p]) if p in own][:8]
        explain["anchors"] = [tables.phrases[p] for p in anchors if p in own]
        explain["facts"] = [str(f) for f in facts if position in tables.fact_passages[[f.id]].indices]
        if explain.get("unmatched_terms") and self._terms is not None:
            alone = np.zeros(len(self.store), dtype=bool)
            alone[position] = True
            explain["unmatched_terms"] = self._terms.held_by(explain["unmatched_terms"], alone)
        explain.pop("path", None)
        explain["confined"] = CONFINED

    def _unwalked(
        self, ranked: list[tuple[int, float]], walked: list[int], allowed: np.ndarray | None, wanted: int
    ) -> list[int]:
        """Up to ``wanted`` passages outside ``walked`` that the filters (the caller's scope
        included) allow, to follow the walked ones: those of the query's dense search (``ranked``,
        run with the same filters) by its similarity, ties by id; then, only if that search found
        too few (the graph's flat dense index finds every allowed passage up to its depth), the
        other allowed passages by id."""
        if wanted <= 0:
            return []
        docs = self.store.documents
        taken = set(walked)
        pool = sorted(
            ((score, position) for position, score in ranked if position not in taken),
            key=lambda item: (-item[0], docs[item[1]].id),
        )
        out = [p for _, p in pool if allowed is None or allowed[p]][:wanted]
        if len(out) < wanted:
            taken.update(position for position, _ in ranked)
            rest = range(len(docs)) if allowed is None else np.flatnonzero(allowed).tolist()
            out += sorted((p for p in rest if p not in taken), key=lambda p: docs[p].id)[: wanted - len(out)]
        return out

    def _reach(self, filters: Mapping[str, Any] | None) -> _Reach | None:
        """What the caller's scope (a :class:`~ragroute.scopes.Visible` among ``filters``) lets the
        walk touch; ``None`` when the search is not scoped or the scope hides no passage.

        A passage the scope hides is closed: it is never a seed, no mass flows into it, so none
        flows through it either (an allowed seed cannot reach a passage, nor rank others, through
        a hidden one). So is a phrase found only in hidden passages, and the link between two
        phrases that only a hidden passage's facts make. Facts seed the walk only when one of
        their passages is visible, query anchors link only to visible phrases, and phrase weights
        count visible passages only (:meth:`_scoped_graph`).
        """
        scope = scope_of(filters)
        passages = None if scope is None else self.store.access_mask(scope.scopes, scope.key)
        if passages is None:
            return None
        tables = self.tables
        if self._incidence is None:
            self._incidence = sp.csr_array(tables.adjacency[: tables.n_phrases, tables.n_phrases :])
        seen = passages.astype(np.float32)
        counts = np.asarray(self._incidence @ seen, dtype=np.float32).ravel()
        phrases = counts > 0
        if tables.fact_passages.shape[0]:
            facts = np.asarray(tables.fact_passages @ seen).ravel() > 0
        else:
            facts = np.zeros(0, dtype=bool)
        node_scale = np.concatenate([phrases, passages]).astype(np.float64)
        key = hashlib.blake2b(np.packbits(passages).tobytes(), digest_size=16).digest()
        return _Reach(passages, phrases, facts, counts, node_scale, key)

    def _scoped_graph(self, hub_damping: float, reach: _Reach) -> _WalkGraph:
        """The graph a scoped walk runs on: the graph without the nodes ``reach`` closes, without
        the phrase-phrase links of facts found only in hidden passages, with hub damping by the
        visible passages containing each phrase, and its own PPR engine (so the walk still
        pushes locally). The last :data:`SCOPED_GRAPHS` are kept, by visible passages."""
        key = (hub_damping, reach.key)
        with self._scoped_lock:
            if key in self._scoped_graphs:
                self._scoped_graphs.move_to_end(key)
                return self._scoped_graphs[key]
        tables = self.tables
        n = tables.adjacency.shape[0]
        coo = sp.coo_array(tables.adjacency)
        open_node = reach.node_scale > 0
        keep = open_node[coo.row] & open_node[coo.col]
        closed = ~reach.facts
        if closed.any():  # one fact per phrase pair: its link is closed with it
            a, b = tables.fact_subject[closed], tables.fact_object[closed]
            pairs = np.concatenate([a * n + b, b * n + a])
            keep &= ~np.isin(coo.row.astype(np.int64) * n + coo.col, pairs)
        adjacency = sp.csr_array(
            (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=(n, n), dtype=np.float32
        )
        graph = _damped(adjacency, PPREngine(adjacency), tables.n_phrases, reach.counts, hub_damping)
        with self._scoped_lock:
            self._scoped_graphs[key] = graph
            while len(self._scoped_graphs) > SCOPED_GRAPHS:
                self._scoped_graphs.popitem(last=False)
        return graph

    def _walk_graph(self, hub_damping: float) -> _WalkGraph:
        """The graph the walk runs on: edges into a phrase scaled by ``1 / degree ** hub_damping``
        (degree: passages containing the phrase). The scale is a per-call ``target_scale`` of the
        graph's own engine (the shared adjacency stays symmetric, so the walk can push locally
        with tight bounds); the damped weights are kept per value for explanations."""
        graphs = self._walk_graphs
        if hub_damping not in graphs:
            tables = self.tables
            graphs[hub_damping] = _damped(
                sp.csr_array(tables.adjacency),
                self.engine,
                tables.n_phrases,
                tables.phrase_passages,
                hub_damping,
            )
        return graphs[hub_damping]

    def _lexical_edges(
        self, text: str, covered: list[str], visible: np.ndarray | None = None
    ) -> tuple[list[str], np.ndarray | None]:
        """The query's terms no fact seed covers, and the per-call node scale they give: edges
        into a passage are scaled by ``1 + lexical_edges x`` its idf-weighted share of those
        terms (None when off or when no passage holds any of them). ``visible`` (a caller's scope:
        the passages it may read) keeps only the terms one of those passages holds: a term only
        hidden passages held took its share of the idf, so the scale of every visible passage (its
        score, its ``lexical_scale``) said whether some hidden passage holds a word, until session
        49."""
        beta = self.walk.lexical_edges
        if beta <= 0:
            return [], None
        if self._terms is None:
            with self.store.reading():  # the counts of one version of the passages
                counts = self._term_counts.update(self.store.documents, self.store.iids, tokenize_many)
                self._terms = PassageTerms.from_counts(counts)
        terms = self._terms.unmatched_terms(text, covered)
        if visible is not None:
            terms = self._terms.held_by(terms, visible)
        overlap = self._terms.overlap(terms)
        if not overlap.any():
            return terms, None
        node_scale = np.ones(self.engine.num_nodes, dtype=np.float64)
        node_scale[self.tables.n_phrases :] += beta * overlap
        return terms, node_scale

    def _path(
        self,
        node: int,
        mass: np.ndarray,
        reset: np.ndarray,
        seeds: Mapping[int, float],
        graph: _WalkGraph,
        out_weight: np.ndarray,
        target_scale: np.ndarray | None,
    ) -> list[str]:
        """How the walk's mass reached ``node``: from a seed (or the dense prior) to ``node``.

        Walks back from ``node``, each time to the neighbour that sent it the most mass (its
        score times its transition probability into the node, under this query's edge scales:
        hub damping, the lexical weight of the passage's unmatched terms, the caller's scope),
        until a seed, or a node whose own reset share (the dense prior, a key-fact boost)
        outweighs what its neighbours sent it (never to a node twice, so it ends). Until session 52
        it stopped after 4 hops, and the path of a passage further from the seeds began at a node
        that was neither a seed nor the dense prior. Until session 36 the flows read
        the hub-damped weights of the reverse edges and no query's scale, so a passage whose
        lexical weight brought it up was said to come from the dense prior.
        """
        adjacency, damping = graph.adjacency, self.walk.damping
        trail = [node]
        while True:  # each step goes to a node not on the trail (a flow above 0 from it)
            current = trail[-1]
            if current in seeds:
                break
            lo, hi = adjacency.indptr[current], adjacency.indptr[current + 1]
            neighbours = adjacency.indices[lo:hi]
            into = 1.0 if target_scale is None else float(target_scale[current])
            flow = mass[neighbours] * adjacency.data[lo:hi] * into / np.maximum(out_weight[neighbours], 1e-30)
            flow[np.isin(neighbours, trail)] = 0.0
            if not flow.size or damping * flow.max() <= (1.0 - damping) * reset[current]:
                # the node's own reset mass: the dense prior or a fact boost. A node with none that
                # only the trail sent mass (a passage's mass gone out to its own phrase and back, at
                # a high damping) is no source: the trail is cut back to its last node with reset
                # mass (until session 56 the path said the dense prior seeded such a phrase)
                while reset[trail[-1]] <= 0 and any(reset[t] > 0 for t in trail):
                    trail.pop()
                trail.append(-1)
                break
            trail.append(int(neighbours[int(np.argmax(flow))]))
        return [self._node_label(n) for n in reversed(trail)]

    def _node_label(self, node: int) -> str:
        if node < 0:
            return "(dense prior)"
        n_phrases = self.tables.n_phrases
        if node < n_phrases:
            return self.tables.phrases[node]
        doc = self.store.documents[node - n_phrases]
        return f"passage {doc.id}" + (f" ({doc.title})" if doc.title else "")

    def _seeds(
        self, vector: np.ndarray, text: str = "", reach: _Reach | None = None
    ) -> tuple[dict[int, float], list[SeedFact], str | None]:
        """Seed phrases (id -> weight) from the query's best facts, those facts, and why the fact
        filter kept every candidate when it failed (None otherwise).

        With a :attr:`fact_filter` set, the ``fact_candidates`` best facts are offered to it
        and the ``top_facts`` best of those it keeps are used (a filter with a ``select(query,
        facts) -> (kept, failure)`` method says why it kept them all). ``reach`` (a caller's scope)
        keeps only the facts found in a passage the caller may read.
        """
        tables, walk = self.tables, self.walk
        if not len(tables.fact_subject):
            return {}, [], None
        sims = tables.phrase_vectors @ np.asarray(vector, dtype=np.float32)
        subject, obj = sims[tables.fact_subject], sims[tables.fact_object]
        fact_scores = np.maximum(subject, obj) if walk.fact_score == "max" else (subject + obj) / 2.0
        if reach is not None:
            fact_scores = np.where(reach.facts, fact_scores, -np.inf)
        wanted = walk.fact_candidates if self.fact_filter is not None else walk.top_facts
        best = _best_facts(fact_scores, np.minimum(subject, obj), min(wanted, len(fact_scores)))
        candidates = [
            SeedFact(
                int(f),
                tables.phrases[int(tables.fact_subject[f])],
                tables.phrases[int(tables.fact_object[f])],
                float(fact_scores[f]),
            )
            for f in best
            if fact_scores[f] > 0
        ]
        failed = None
        if self.fact_filter is not None and candidates:
            select = getattr(self.fact_filter, "select", None)
            if select is not None:
                kept, failed = select(text, candidates)
            else:
                kept = self.fact_filter(text, candidates)
            candidates = list(kept)
        chosen = candidates[: walk.top_facts]
        counts = tables.phrase_passages if reach is None else reach.counts
        seeds: dict[int, float] = {}
        for fact in chosen:
            for phrase in (int(tables.fact_subject[fact.id]), int(tables.fact_object[fact.id])):
                weight = fact.score / max(float(counts[phrase]), 1.0)
                seeds[phrase] = max(seeds.get(phrase, 0.0), weight)
        return seeds, chosen, failed

    def _anchors(self, text: str, reach: _Reach | None = None) -> dict[int, float]:
        """The query's own phrases linked to phrase nodes (exact, else nearest by cosine), with
        weights; ``reach`` (a caller's scope) allows only the phrases of visible passages."""
        walk, tables = self.walk, self.tables
        if walk.anchor_weight <= 0 or not tables.n_phrases:
            return {}
        phrases = self._query_extractor.sentence_phrases(text)
        ids = self._phrase_ids()
        if reach is not None:
            ids = {p: i for p, i in ids.items() if reach.phrases[i]}
            if not ids:
                return {}
        linked = {ids[p]: 1.0 for p in phrases if p in ids}
        unmatched = [p for p in phrases if p not in ids]
        if unmatched:
            vectors = np.asarray(
                self.encoder.encode_queries(unmatched, show_progress=False), dtype=np.float32
            )
            sims = vectors @ tables.phrase_vectors.T
            if reach is not None:
                sims[:, ~reach.phrases] = -np.inf
            for row in sims:
                best = int(np.argmax(row))
                if row[best] >= walk.anchor_similarity:
                    linked.setdefault(best, 1.0)
        counts = tables.phrase_passages if reach is None else reach.counts
        return {
            p: walk.anchor_weight * strength / max(float(counts[p]), 1.0) for p, strength in linked.items()
        }

    def _phrase_ids(self) -> dict[str, int]:
        """Phrase key -> node id, for the query's phrases: each node by its key and by the key the
        rule extractor makes of it now (a graph built before version 3 holds "the beatles", which
        the query's "The Beatles" now reads as "beatles")."""
        cached = self._ids
        if cached is None or cached[0] != self.tables.n_phrases:
            ids = {p: i for i, p in enumerate(self.tables.phrases)}
            for i, p in enumerate(self.tables.phrases):
                ids.setdefault(normalise(p), i)
            cached = self._ids = (self.tables.n_phrases, ids)
        return cached[1]

    def _fallback(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        hits = []
        for rank, (position, score) in enumerate(ranked, 1):
            hit = self.store.hit(position, score, rank, self.name)
            hit.explain = {"method": "dense", "fallback": "the query linked to no fact of the graph"}
            hits.append(hit)
        return hits

    # ------------------------------------------------------------------ persistence

    def write_files(self, directory: Path) -> None:
        self.dense.write_files(directory)
        t = self.tables
        adjacency, facts = t.adjacency, t.fact_passages
        np.savez(
            Path(directory) / ARRAYS_FILE,
            adj_data=adjacency.data,
            adj_indices=adjacency.indices,
            adj_indptr=adjacency.indptr,
            phrase_vectors=t.phrase_vectors,
            phrase_passages=t.phrase_passages,
            fact_subject=t.fact_subject,
            fact_object=t.fact_object,
            fact_data=facts.data,
            fact_indices=facts.indices,
            fact_indptr=facts.indptr,
        )
        (Path(directory) / PHRASES_FILE).write_text(
            json.dumps(t.phrases, ensure_ascii=False), encoding="utf-8"
        )

    def manifest_params(self) -> dict[str, Any]:
        t = self.tables
        return {
            **self.dense.manifest_params(),
            "graph": self.graph_params.to_dict(),
            "walk": asdict(self.walk),
            "extractor": self.extractor,
            "counts": {
                "phrases": t.n_phrases,
                "passages": len(self.store),
                "facts": int(len(t.fact_subject)),
                "edges": int(t.adjacency.nnz),
                "synonym_edges": int(t.synonym_edges),
            },
        }

    def encoder_info(self) -> dict[str, Any] | None:
        return self.dense.encoder_info()

    @classmethod
    def read(
        cls, directory: Path, params: Mapping[str, Any], store: DocumentStore, name: str, encoder: Encoder
    ) -> GraphIndex:
        dense = DenseIndex.read(directory, params, store, name, encoder)
        tables = _read_tables(Path(directory), params.get("counts") or {}, len(store), encoder.dim)
        return cls(
            dense,
            tables,
            graph_params=GraphParams.from_dict(params.get("graph") or {}),
            walk=WalkParams.from_dict(params.get("walk") or {}),
            extractor=params.get("extractor"),
            name=name,
        )


def _read_tables(directory: Path, counts: Mapping[str, Any], n_passages: int, dim: int) -> GraphTables:
    """The graph's tables as written, checked whole: a file that passed its checksum but does not
    hold a graph (written by hand or by a broken writer: phrases that are not unique text, node or
    passage ids out of range, weights that are not finite and non-negative) is one
    :class:`IndexFormatError` (until session 43 most of these loaded and failed later with a
    ValueError, IndexError or TypeError traceback, or walked a wrong graph silently)."""
    path = directory / ARRAYS_FILE
    try:  # until session 53 a phrases file that could not be read was said as the arrays'
        phrases = json.loads((directory / PHRASES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        where = directory / PHRASES_FILE
        raise IndexFormatError(f"{where}: unreadable graph phrases ({type(exc).__name__}: {exc})") from None
    try:
        arrays = npz_arrays(path)
    except (OSError, ValueError, KeyError) as exc:
        raise IndexFormatError(f"{path}: unreadable graph arrays ({type(exc).__name__}: {exc})") from None
    if (
        not isinstance(phrases, list)
        or not all(isinstance(p, str) for p in phrases)
        or len(set(phrases)) != len(phrases)
    ):
        raise IndexFormatError(f"{directory / PHRASES_FILE}: not a list of distinct phrases")
    n_phrases = len(phrases)
    n = n_phrases + n_passages
    try:
        adjacency = sp.csr_array(
            (arrays["adj_data"], arrays["adj_indices"], arrays["adj_indptr"]), shape=(n, n)
        )
        n_facts = len(arrays["fact_subject"])
        facts = sp.csr_array(
            (arrays["fact_data"], arrays["fact_indices"], arrays["fact_indptr"]), shape=(n_facts, n_passages)
        )
        adjacency.check_format(full_check=True)  # indices within the nodes, pointers ascending
        facts.check_format(full_check=True)
        fact_ids = np.concatenate([arrays["fact_subject"], arrays["fact_object"]])
        tables = GraphTables(
            phrases=list(phrases),
            phrase_vectors=np.ascontiguousarray(arrays["phrase_vectors"], dtype=np.float32),
            phrase_passages=arrays["phrase_passages"].astype(np.float32),
            fact_subject=arrays["fact_subject"].astype(np.int64),
            fact_object=arrays["fact_object"].astype(np.int64),
            fact_passages=facts,
            adjacency=sp.csr_array(adjacency, dtype=np.float32),
            synonym_edges=int(counts.get("synonym_edges", 0)),
        )
        ok = (
            tables.phrase_vectors.shape == (n_phrases, dim)
            and tables.phrase_passages.shape == (n_phrases,)
            and len(arrays["fact_object"]) == n_facts
            and fact_ids.dtype.kind in "iu"
            and (n_facts == 0 or (int(fact_ids.min()) >= 0 and int(fact_ids.max()) < n_phrases))
            and bool(np.isfinite(tables.adjacency.data).all() and (tables.adjacency.data >= 0).all())
            # NaN phrase counts failed every walk with a ValueError traceback, NaN phrase vectors
            # seeded none, silently (until session 49)
            and bool(np.isfinite(tables.phrase_passages).all() and np.isfinite(tables.phrase_vectors).all())
            and counts.get("phrases", n_phrases) == n_phrases
        )
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise IndexFormatError(f"{path}: inconsistent graph arrays ({exc})") from None
    if not ok:
        raise IndexFormatError(f"{path}: graph arrays do not match the phrase table or the encoder")
    return tables


def _damped(
    adjacency: sp.csr_array,
    engine: PPREngine,
    n_phrases: int,
    phrase_passages: np.ndarray,
    hub_damping: float,
) -> _WalkGraph:
    """A walk graph over ``adjacency`` and its ``engine``: edges into a phrase scaled by
    ``1 / degree ** hub_damping`` (degree: ``phrase_passages``) as a per-call target scale."""
    node_scale = None
    if hub_damping > 0:
        node_scale = np.ones(adjacency.shape[0], dtype=np.float64)
        node_scale[:n_phrases] = np.maximum(phrase_passages, 1.0) ** -hub_damping
    return _WalkGraph(engine, node_scale, adjacency)


def _max_iterations(damping: float, tol: float = 1e-6) -> int:
    """Power iteration steps enough for a walk at ``damping`` to converge to ``tol`` (the engine's
    default): a step's L1 change is at most ``2 damping^t``. The engine's default of 100 steps left
    a walk at damping 0.95 or 0.99 (``WalkParams`` allows up to 0.99) unconverged, and its hits in
    a wrong order, without a word, until session 49."""
    return max(100, int(np.ceil(np.log(tol / 2.0) / np.log(damping))))


def _best_facts(scores: np.ndarray, second: np.ndarray, top: int) -> np.ndarray:
    """The ``top`` best facts by ``scores``, ties by ``second`` (the cosine of the fact's other
    phrase), then by fact id, best first. Under ``fact_score: max`` every fact of the phrase
    nearest the query scores the same, and which of them seeded the walk was left to
    ``np.argpartition`` until session 41: adding one passage no query was about changed the
    top 5 of 22 of the 100 MuSiQue dev questions."""
    if top <= 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(-scores, top - 1)[top - 1]
    tied = np.flatnonzero(-scores <= kth)  # every fact at least as good as the top-th, ties included
    order = np.lexsort((tied, -second[tied], -scores[tied]))
    return tied[order[:top]]


def _describe(part: Any) -> str:
    return str(getattr(part, "name", None) or type(part).__name__)
