"""One meaning for the scores a pipeline returns: similarity on the deployment encoder's cosine scale.

Fusion ranks hits well, but its values mean nothing outside one query (RRF values near 0.03,
min-max values with every route's top hit at 1.0, calibrated z-scores that depend on each
source's spread), so a cutoff chosen on some queries keeps a different share of the relevant
hits on others. Measured on Glasgow and TAT-QA (``ragroute bench scores``), the number whose
cutoffs transfer best is the plain cosine similarity of the deployment encoder. So a
pipeline's hits carry that as their ``score`` (the fusion value stays in ``explain["fused"]``):

* a dense index (or a query-side expert over it) of the pipeline's encoder: its own score,
  the cosine (kind ``cosine``);
* a hybrid index of that encoder: the cosine of its dense half when the document was among the
  dense candidates (``hybrid``), else the mapped fused value;
* a nested pipeline that scores the same way (with no reranker but ``parents``): its scores as
  they are (``cosine``);
* every other source (BM25, a graph, another encoder, a framework retriever): its score mapped
  onto the cosine scale by a monotone quantile map (``mapped``), fitted without labels on
  pseudo-queries cut from the sources (:func:`ragroute.route.pseudo.pseudo_queries`): the
  source's top hits for them, paired with the encoder's cosine between query and hit text;
* without an encoder, a source whose hits carry no text, one that raised while the scale was
  fitted, or one so small that the pseudo-queries found fewer than :data:`MIN_PAIRS` hits: the
  source's own score (``raw``, said in the trace, with the reason; a hybrid keeps its dense
  half's cosine).

Scales are fitted once per set of sources (memoised in the process) and reported in the
trace of every query. :class:`SourceScale` gives the hits of one source searched alone (the
LlamaIndex and LangChain retrievers over one index) the scores a pipeline over that source alone
gives them, through the same fit and the same :func:`rescored`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragroute.context import QueryContext, encoder_key, query_vectors
from ragroute.errors import error_summary
from ragroute.exposure import internal_searches
from ragroute.index.base import content_key
from ragroute.memo import RetrieverMemo
from ragroute.route.pseudo import pseudo_queries
from ragroute.route.sources import Source, copied_hit
from ragroute.scopes import readable
from ragroute.types import Hit

#: Pseudo-queries used to fit mapped scales (in all, cut evenly from the sources, at least
#: MIN_PER_SOURCE from each), and hits read per pseudo-query.
FIT_QUERIES = 120
MIN_PER_SOURCE = 8
FIT_DEPTH = 3
MIN_PAIRS = 10  # (score, cosine) pairs a quantile map needs
_KNOTS = 21
_HUGE = 1e300  # raw scores beyond this are halved before any difference is taken

_memo: RetrieverMemo[dict[str, ScoreScale]] = RetrieverMemo()


@dataclass
class ScoreScale:
    """How one source's scores become cosine-scale similarities."""

    kind: str  # cosine | hybrid | mapped | raw
    raw_knots: list[float] = field(default_factory=list)
    cosine_knots: list[float] = field(default_factory=list)
    slope: float = 0.0
    error: str = ""  # why no map could be fitted (the source raised, too few hits): raw scores

    def similarity(self, hit: Hit) -> float:
        """``hit``'s score on the cosine scale."""
        if self.kind == "cosine" or self.kind == "raw":
            return float(hit.score)
        if self.kind == "hybrid":
            dense = hit.explain.get("dense")
            if isinstance(dense, Mapping) and "score" in dense:
                return float(dense["score"])
        return self.map(float(hit.score))

    def map(self, value: float) -> float:
        """The quantile map, extended linearly beyond the fitted range (clipped to [-1, 1])."""
        if not self.raw_knots:
            return value
        low, high = self.raw_knots[0], self.raw_knots[-1]
        # scores near the float range are read halved (exact, and no difference of two halves
        # overflows): until session 44 a difference of two of them overflowed, and 0 * inf (a flat
        # map) or inf - inf (between knots) made the similarity NaN
        unit = 2.0 if max(abs(low), abs(high)) > _HUGE else 1.0
        if value < low:
            out = self.cosine_knots[0] + (
                self.slope * unit * (value / unit - low / unit) if self.slope else 0.0
            )
        elif value > high:
            out = self.cosine_knots[-1] + (
                self.slope * unit * (value / unit - high / unit) if self.slope else 0.0
            )
        else:
            knots = np.asarray(self.raw_knots) / unit
            out = float(np.interp(value / unit, knots, self.cosine_knots))
        return float(min(max(out, -1.0), 1.0))

    def describe(self) -> dict[str, Any]:
        """For the trace: the kind, and for a mapped scale the ends of the map."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.error:
            out["error"] = self.error
        if self.raw_knots:
            out["raw"] = [round(self.raw_knots[0], 4), round(self.raw_knots[-1], 4)]
            out["cosine"] = [round(self.cosine_knots[0], 4), round(self.cosine_knots[-1], 4)]
        return out


def fit_quantile_map(raw: Sequence[float], cosine: Sequence[float], kind: str = "mapped") -> ScoreScale:
    """A monotone map sending the quantiles of ``raw`` onto those of ``cosine`` (paired samples)."""
    raw_a = np.asarray(raw, dtype=np.float64)
    cos_a = np.asarray(cosine, dtype=np.float64)
    qs = np.linspace(0.0, 1.0, _KNOTS)
    # quantiles of scores near the float range overflowed (inf knots): they are taken of the halves
    unit = 2.0 if raw_a.size and float(np.abs(raw_a).max()) > _HUGE else 1.0
    raw_q, cos_q = np.quantile(raw_a / unit, qs) * unit, np.quantile(cos_a, qs)
    # strictly increasing raw knots: a run of knots on one raw value (many tied scores, e.g. a
    # source capped at 1.0) maps to the mean of its cosine quantiles, still non-decreasing. Until
    # session 43 the run's first (lowest) quantile was kept, so 18 scores tied at 1.0 of 20 mapped
    # to the lowest cosine of the sample.
    starts = np.flatnonzero(np.concatenate(([True], np.diff(raw_q) > 1e-12)))
    raw_q, cos_q = raw_q[starts], np.add.reduceat(cos_q, starts) / np.diff(np.append(starts, len(qs)))
    if len(raw_q) < 2:  # every raw score equal: no information to map
        return ScoreScale(kind, [float(raw_q[0])], [float(np.median(cos_a))], 0.0)
    inner = slice(max(len(raw_q) // 10, 0), len(raw_q) - max(len(raw_q) // 10, 0))
    span = raw_q[inner][-1] / unit - raw_q[inner][0] / unit
    slope = float((cos_q[inner][-1] - cos_q[inner][0]) / span / unit) if span > 0 else 0.0
    return ScoreScale(kind, [float(v) for v in raw_q], [float(v) for v in cos_q], slope)


def native_kind(source: Source, encoder: Any) -> str | None:
    """``cosine`` or ``hybrid`` when ``source``'s scores already are ``encoder``'s cosines (or
    a hybrid of them), else None (the scale must be fitted)."""
    from ragroute.index.hybrid import HybridIndex
    from ragroute.index.local import VectorIndex
    from ragroute.rerank.parents import ParentsReranker

    retriever = source.retriever
    model = getattr(encoder, "model_id", None)
    if model is None:
        return None
    if isinstance(retriever, VectorIndex):  # dense, qdrant: inner products of the encoder's unit vectors
        return "cosine" if retriever.encoder.model_id == model else None
    if isinstance(retriever, HybridIndex):
        return "hybrid" if retriever.dense.encoder.model_id == model else None
    options = getattr(retriever, "options", None)  # a nested pipeline
    if callable(getattr(retriever, "retrieve_contexts", None)) and options is not None:
        inner = getattr(getattr(retriever, "encoder", None), "model_id", None)
        # a reranker (other than ``parents``, which keeps the scores) scores its hits with its own
        # probability of relevance: they were passed on as cosines until session 43
        reranker = getattr(retriever, "reranker", None)
        reranked = reranker is not None and not isinstance(reranker, ParentsReranker)
        same = getattr(options, "scores", None) == "similarity" and inner == model and not reranked
        return "cosine" if same else None
    return None


def fit_score_scales(
    sources: Sequence[Source], encoder: Any, *, queries: int = FIT_QUERIES, seed: int = 0
) -> dict[str, ScoreScale]:
    """Every source's :class:`ScoreScale` on ``encoder``'s cosine scale (see the module docstring)."""
    if encoder is None or not callable(getattr(encoder, "encode_documents", None)):
        return {s.name: ScoreScale("raw") for s in sources}
    per_source = max(MIN_PER_SOURCE, queries // max(len(sources), 1))
    key = (
        per_source,
        seed,
        encoder_key(encoder),  # its weights too: a model folder trained again in place keeps its id
        *((s.name, id(s.retriever), content_key(s)) for s in sources),
    )
    cached = _memo.get(key, [s.retriever for s in sources])
    if cached is not None:
        return cached
    scales: dict[str, ScoreScale] = {}
    to_fit = []
    for source in sources:
        kind = native_kind(source, encoder)
        scales[source.name] = ScoreScale(kind) if kind == "cosine" else ScoreScale("raw")
        if kind != "cosine":
            to_fit.append((source, kind or "mapped"))
    if to_fit:
        contexts = _fit_queries(sources, per_source, seed)
        vectors = query_vectors(contexts, encoder) if contexts else None
        for source, kind in to_fit:
            scales[source.name] = _fit_source(source, kind, contexts, vectors, encoder)
    if not any(scale.error for scale in scales.values()):  # a source that failed is tried again
        _memo.put(key, [s.retriever for s in sources], scales)
    return scales


def _fit_queries(sources: Sequence[Source], per_source: int, seed: int) -> list[QueryContext]:
    """Pseudo-queries cut from every source with documents (``per_source`` from each)."""
    contexts: list[QueryContext] = []
    for source in sources:
        for _, text in pseudo_queries(source.documents, per_source, seed=seed, key=source.name):
            contexts.append(QueryContext(text))
    return contexts


def _fit_source(
    source: Source, kind: str, contexts: list[QueryContext], vectors: np.ndarray | None, encoder: Any
) -> ScoreScale:
    raw: list[float] = []
    cosine: list[float | None] = []
    texts: list[str] = []
    owners: list[int] = []
    if not contexts or vectors is None:
        return _unfitted(kind, "no pseudo-queries could be cut from the sources' documents")
    try:
        with internal_searches():  # pseudo-queries: nothing is shown to a caller
            found = source.search_contexts(contexts, FIT_DEPTH)
    except Exception as exc:  # noqa: BLE001 - a failing source keeps its raw scores, said in the trace
        return ScoreScale("raw", error=error_summary(exc))
    for i, (hits, _) in enumerate(found):
        # what a caller of no scopes may read: a retriever that does not filter by scope returned
        # documents with access labels too, and their scores and texts shaped the map every caller's
        # trace shows the ends of (until session 51)
        for hit in readable(hits, contexts[i].scopes):
            known = hit.explain.get("dense") if kind == "hybrid" else None
            text = f"{hit.title}\n{hit.text}" if hit.title else hit.text
            if isinstance(known, Mapping) and "score" in known:  # a hybrid's own cosine: no encoding
                raw.append(float(hit.score))
                cosine.append(float(known["score"]))
                texts.append("")
                owners.append(i)
            elif text.strip():
                raw.append(float(hit.score))
                cosine.append(None)
                texts.append(text)
                owners.append(i)
    if len(raw) < MIN_PAIRS:
        return _unfitted(kind, f"{len(raw)} pseudo-query hits, fewer than the {MIN_PAIRS} a map needs")
    unique = list(dict.fromkeys(t for t, c in zip(texts, cosine) if c is None))
    if unique:
        doc_vectors = np.asarray(encoder.encode_documents(unique, show_progress=False), dtype=np.float32)
        row = {text: i for i, text in enumerate(unique)}
        cosine = [
            float(vectors[o] @ doc_vectors[row[t]]) if c is None else c
            for o, t, c in zip(owners, texts, cosine)
        ]
    return fit_quantile_map(raw, [float(c) for c in cosine if c is not None], kind)


def _unfitted(kind: str, why: str) -> ScoreScale:
    """The scale of a source no map could be fitted for: its raw scores, except that a hybrid's
    hits still carry their dense half's cosine."""
    return ScoreScale("hybrid" if kind == "hybrid" else "raw", error=why)


def similarities(
    lists: Mapping[str, Sequence[Hit]],
    scales: Mapping[str, ScoreScale],
    documents_of: Mapping[str, str] | None = None,
) -> dict[tuple[str, str], float]:
    """The best cosine-scale similarity of each document over the lists that found it."""
    from ragroute.index.fusion import document_key

    best: dict[tuple[str, str], float] = {}
    for name, hits in lists.items():
        scale = scales.get(name) or ScoreScale("raw")
        for hit in hits:
            key = document_key(hit, documents_of)
            value = scale.similarity(hit)
            if key not in best or value > best[key]:
                best[key] = value
    return best


def rescored(
    hits: Sequence[Hit],
    lists: Mapping[str, Sequence[Hit]],
    scales: Mapping[str, ScoreScale],
    documents_of: Mapping[str, str] | None = None,
) -> list[Hit]:
    """``hits`` (fused from ``lists``, in their order) with each document's cosine-scale similarity
    (:func:`similarities`) as its score; the value that ordered them goes to ``explain["fused"]``."""
    from ragroute.index.fusion import document_key

    best = similarities(lists, scales, documents_of)
    out = []
    for hit in hits:
        # a copy with two fields set (until session 53 by dataclasses.replace, at twice the cost)
        own = copied_hit(hit)
        own.score = best.get(document_key(hit, documents_of), hit.score)
        own.explain = {**hit.explain, "fused": hit.score}
        out.append(own)
    return out


class SourceScale:
    """The scores a pipeline over ``source`` alone (with ``encoder``, its query encoder) gives the
    hits of that source: its :class:`ScoreScale` from :func:`fit_score_scales` (memoised with the
    pipelines' fits), fitted on first use and again when the source's documents change, applied by
    :func:`rescored` (order kept, the source's own score in ``explain["fused"]``)."""

    def __init__(self, source: Source, encoder: Any) -> None:
        self.source = source
        self.encoder = encoder
        self._fitted: tuple[tuple[Any, ...], ScoreScale] | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> SourceScale:
        """The same source and encoder, fitted again on first use (a lock is never copied)."""
        return SourceScale(self.source, self.encoder)

    def scale(self) -> ScoreScale:
        """The source's scale (fitted again whenever its documents change: :func:`content_key`)."""
        content = content_key(self.source)
        with self._lock:
            if self._fitted is None or self._fitted[0] != content:
                self._fitted = (content, fit_score_scales([self.source], self.encoder)[self.source.name])
            return self._fitted[1]

    def rescore(self, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` of the source with cosine-scale similarities as scores."""
        if not hits:
            return []
        name = self.source.name
        return rescored(hits, {name: hits}, {name: self.scale()})
