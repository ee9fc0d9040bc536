"""Training-free routing by similarity to what each source is and holds.

For every source the router keeps three things, all embedded with the same
encoder as the queries:

* its description (one vector), when it has one;
* its centroid: the mean embedding of (a sample of) its documents;
* a document bank: those sampled document embeddings, scored as the mean of the
  query's ``bank_top_n`` best cosines (a kNN density of the source near the query).

A source's score is the weighted mean of the cosines it has (a source without a description,
or without documents, is scored over the others), scaled to the most weight any source's terms
have. Probabilities are a
softmax whose temperature is fitted on pseudo-queries cut from the sources' own
documents (self-supervised calibration: no labelled query is needed). An
optional ``none_threshold`` adds a ``none`` route that wins when no source is
similar enough.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ragroute.encode.base import row_products
from ragroute.errors import RagrouteError, check_setting
from ragroute.index.base import content_key
from ragroute.index.rwlock import reading
from ragroute.route.base import (
    NONE_ROUTE,
    BaseRouter,
    decision_from_probs,
    fit_temperature,
    log_routes_of,
    moved_by_a_quarter,
    softmax,
)
from ragroute.route.pseudo import pseudo_queries, public_positions, sample_documents
from ragroute.route.sources import Source, check_sources
from ragroute.types import Decision, Document


@dataclass
class PrototypeConfig:
    """Weights of the three similarities and how the router calibrates itself."""

    description_weight: float = 0.5
    centroid_weight: float = 1.0
    bank_weight: float = 1.0
    bank_top_n: int = 5
    # Documents sampled per source for the bank (the bank's matrix product is most of the router's
    # time: 8 Glasgow sources x 500 cost ~0.15 ms per query on 2 cores, x 1000 ~0.35 ms). Routing
    # accuracy on Glasgow dev (sampling seeds 0 / 1 / 2): 500 docs 0.820 / 0.820 / 0.814, 1000 docs
    # 0.823 / 0.820 / 0.814; 250 docs 0.808 and 2000 docs 0.817 (seed 0): from 500 up the differences
    # are within the sampling noise.
    max_docs: int = 500
    # Dimensions the document bank is kept in (``None``: the encoder's own). With a number, the bank
    # and each query are projected onto the bank's leading principal components (fitted on the
    # bank itself, no labels), so the product reads a fraction of the memory.
    bank_dim: int | None = None
    calibration_queries: int = 100
    temperature: float | None = None
    none_threshold: float | None = None
    seed: int = 0


class PrototypeRouter(BaseRouter):
    """Routes by similarity of the query to each source's description, centroid and documents."""

    name = "prototype"

    def __init__(
        self, sources: Sequence[Source], encoder: Any, config: PrototypeConfig | None = None
    ) -> None:
        sources = check_sources(sources)  # two of one name overwrote each other's route (session 37)
        if not sources:
            raise RagrouteError("a prototype router needs at least one source")
        self.encoder = encoder
        # a copy: calibrating wrote the fitted temperature into the caller's config, and a second
        # router built with it took that temperature as given (never calibrated on its own sources)
        self.config = replace(config) if config is not None else PrototypeConfig()
        _check_config(self.config)
        self.sources = sources
        # ``is not None``: a threshold of 0 (a valid cosine) added no ``none`` route until session 43
        none = self.config.none_threshold is not None
        self.labels = [s.name for s in self.sources] + ([NONE_ROUTE] if none else [])
        n = len(self.sources)
        self._banks: list[np.ndarray] = [np.zeros((0, encoder.dim), dtype=np.float32)] * n
        self._bank_positions: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n  # as sampled
        # the documents of the bank rows, as the objects the index holds: a document edited (deleted
        # and added again under its id) is another object, so its row is read again
        self._bank_docs: list[list[Document]] = [[] for _ in range(n)]
        self._sampled_public = [0] * n  # public documents when the bank was last sampled
        self._contents: list[Any] = [None] * n  # content_key of each source in the bank in use
        self._read: list[Any] = [None] * n  # ... and in the banks being made (published with it)
        self._centroids = np.zeros((n, encoder.dim), dtype=np.float32)
        self._descriptions = np.zeros((n, encoder.dim), dtype=np.float32)
        #: per source: where its bank came from, "index" (stored vectors) or "encoded"
        self.bank_from: dict[str, str] = {}
        self._refreshing = threading.Lock()
        self._embed_sources()
        self.calibration = self._calibrate()

    def _embed_sources(self) -> None:
        for i, source in enumerate(self.sources):
            if not source.documents and not source.description:
                raise RagrouteError(
                    f"source {source.name!r} has neither documents nor a description to route by"
                )
            self._sample_bank(i)
        described = [i for i, s in enumerate(self.sources) if s.description]
        if described:
            vectors = self.encoder.encode_queries(
                [self.sources[i].description for i in described], show_progress=False
            )
            self._descriptions[described] = vectors
        self._assemble()

    def _sample_bank(self, i: int) -> None:
        """Sample source ``i``'s bank afresh from its public documents (and its centroid)."""
        with reading(self.sources[i].retriever):  # documents and vectors of one version
            self._sample_bank_now(i)

    def _sample_bank_now(self, i: int) -> None:
        source, cfg = self.sources[i], self.config
        docs = source.documents
        self._read[i] = content_key(source)  # under the read lock: what this bank is of
        # public documents only: a bank row of a document some callers may not read would tell
        # them, through their routing and its similarity signals, that the source holds it
        public = public_positions(docs)
        self._sampled_public[i] = len(public)
        picks = sample_documents(docs, public, cfg.max_docs, cfg.seed, source.name)
        self._bank_positions[i] = picks
        self._bank_docs[i] = [docs[int(p)] for p in picks]
        self._banks[i] = self._vectors_of(i, picks)
        if docs and not len(public):  # every document labelled: routed by its description alone
            self.bank_from[source.name] = "none (no public documents)"
        self._set_centroid(i)

    def _vectors_of(self, i: int, positions: np.ndarray) -> np.ndarray:
        """Embeddings of source ``i``'s documents at ``positions``: the vectors its dense index
        already holds, encoded only when it has none."""
        from ragroute.index.dense import stored_document_vectors

        source = self.sources[i]
        if not len(positions):
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        bank = stored_document_vectors(source.retriever, positions, self.encoder)
        self.bank_from[source.name] = "index" if bank is not None else "encoded"
        if bank is None:
            bank = self.encoder.encode_documents([source.documents[int(p)].full_text() for p in positions])
        return np.asarray(bank, dtype=np.float32)

    def _set_centroid(self, i: int) -> None:
        bank = self._banks[i]
        centroid = bank.mean(axis=0) if len(bank) else np.zeros(self.encoder.dim, dtype=np.float32)
        self._centroids[i] = centroid / max(float(np.linalg.norm(centroid)), 1e-12)

    def _follow(self, i: int) -> None:
        """Bring source ``i``'s bank up to its documents now: rows of documents deleted (or now
        labelled) go, public documents not in a bank with room join it, and a source whose public
        documents changed in number by more than a quarter since it was sampled is sampled again."""
        with reading(self.sources[i].retriever):  # documents and vectors of one version
            self._follow_now(i)

    def _follow_now(self, i: int) -> None:
        source, cfg = self.sources[i], self.config
        docs = source.documents
        public = public_positions(docs)
        if moved_by_a_quarter(len(public), self._sampled_public[i]):
            self._sample_bank(i)
            return
        self._read[i] = content_key(source)
        position_of = {docs[int(p)].id: int(p) for p in public}
        # a row stays while its document does, the same object: one deleted and added again under
        # its id (an edit) was kept with its old vector until session 40
        kept = [
            row
            for row, doc in enumerate(self._bank_docs[i])
            if doc.id in position_of and docs[position_of[doc.id]] is doc
        ]
        held_docs = [self._bank_docs[i][row] for row in kept]
        bank = self._banks[i][kept]
        room = cfg.max_docs - len(held_docs)
        if room > 0:
            held = {doc.id for doc in held_docs}
            joining = [p for doc_id, p in position_of.items() if doc_id not in held][:room]
            if joining:
                bank = np.vstack([bank, self._vectors_of(i, np.asarray(joining, dtype=np.int64))])
                held_docs += [docs[p] for p in joining]
        self._banks[i], self._bank_docs[i] = bank, held_docs
        self._set_centroid(i)

    def _refresh(self) -> None:
        """Follow every source whose documents changed since its bank was read
        (:func:`~ragroute.index.base.content_key`), then swap in the new bank at once."""
        changed = [i for i, s in enumerate(self.sources) if content_key(s) != self._contents[i]]
        if not changed:
            return
        with self._refreshing:  # queries arriving meanwhile wait here for the new bank
            changed = [i for i, s in enumerate(self.sources) if content_key(s) != self._contents[i]]
            for i in changed:
                self._follow(i)
            if changed:
                self._assemble()

    def _assemble(self) -> None:
        """Stack every source's bank and profile into one :class:`_Bank`, swapped in at once (a
        query scored in another thread reads one bank from start to end)."""
        cfg = self.config
        sizes = [len(bank) for bank in self._banks]
        # per source, the weights of the terms it has (no documents: no centroid, no bank; no
        # description: none of its term): its score over them is its weighted mean cosine
        held = np.asarray(sizes, dtype=np.float64) > 0
        described = np.any(self._descriptions != 0, axis=1)
        weight_sums = (cfg.centroid_weight + cfg.bank_weight) * held + cfg.description_weight * described
        # each source's terms scaled to the most any source has: its score is its weighted mean cosine
        # times that most, so a source without a description, or with no documents (routed by its
        # description alone), competes on its mean (1.0 where every source has the same terms). Until
        # session 52 its terms were summed: a described source got its description's cosine on top,
        # and a description-only source scored a fifth of a documented one for the same cosine
        most = float(weight_sums.max(initial=0.0))
        scale = np.divide(most, weight_sums, out=np.ones_like(weight_sums), where=weight_sums > 0)
        term_scale = scale.astype(np.float32)
        # the centroid and description terms of every source as one (dim, sources) matrix: one
        # product per query (sources without a description have a zero row in _descriptions)
        profiles = np.ascontiguousarray(
            (cfg.centroid_weight * self._centroids + cfg.description_weight * self._descriptions).T
            * term_scale
        )
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        stacked = np.ascontiguousarray(np.vstack(self._banks)) if sum(sizes) else None
        projection, bank_mean = None, np.zeros(self.encoder.dim, dtype=np.float32)
        if stacked is not None and cfg.bank_dim is not None and cfg.bank_dim < stacked.shape[1]:
            stacked, projection, bank_mean = _project(stacked, int(cfg.bank_dim))
        # at query time the similarities are scattered into a (queries, sources, largest bank) block
        # padded with -inf: one partition finds every source's best cosines
        largest = max(sizes, default=0)
        padded_at = np.concatenate(
            [np.zeros(0, dtype=np.int64)]
            + [s * largest + np.arange(size, dtype=np.int64) for s, size in enumerate(sizes)]
        )
        # per source bank_weight / (top cosines averaged), as the per-source loop below weighs them
        counts = np.maximum(np.minimum(np.asarray(sizes, dtype=np.int64), cfg.bank_top_n), 1)
        bank = _Bank(
            profiles,
            offsets,
            stacked,
            projection,
            bank_mean,
            padded_at,
            (len(sizes), largest),
            (cfg.bank_weight / counts * scale).astype(np.float32),
            np.full(len(sizes), most, dtype=np.float32),
            term_scale,
        )
        self._bank = bank
        self._contents = list(self._read)  # published with the bank: "changed?" sees it only now

    def scores(self, query_vectors: np.ndarray, exclude: list[tuple[int, int]] | None = None) -> np.ndarray:
        """Raw similarity scores (queries x sources); ``exclude`` hides (source, bank row) pairs.

        All banks are stacked into one matrix, so a query costs one matrix product
        and one partition (per source only while calibrating, when ``exclude`` hides rows).
        """
        cfg = self.config
        if exclude is None:
            self._refresh()
        bank = self._bank
        q = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
        total = row_products(q, bank.profiles.T)  # as the query alone (until session 52 not)
        if cfg.bank_weight == 0 or bank.stacked is None:
            return total
        sims = bank.similarities(q)
        if exclude is not None:
            for row, (src, bank_row) in enumerate(exclude):
                if src >= 0:
                    sims[row, bank.offsets[src] + bank_row] = -np.inf
        if exclude is None and bank.padded_shape[1]:
            sources, largest = bank.padded_shape
            top_n = min(cfg.bank_top_n, largest)
            if sims.shape[1] == sources * largest:  # banks of one size: nothing to pad
                blocks = sims.reshape(len(q), sources, largest)
            else:
                padded = np.full((len(q), sources * largest), -np.inf, dtype=sims.dtype)
                padded[:, bank.padded_at] = sims
                blocks = padded.reshape(len(q), sources, largest)
            top = np.partition(blocks, largest - top_n, axis=2)[:, :, -top_n:]
            sums = np.where(np.isfinite(top), top, 0.0).sum(axis=2)  # -inf: past a small bank's end
            return total + bank.bank_weights * sums
        for s in range(len(bank.offsets) - 1):
            lo, hi = int(bank.offsets[s]), int(bank.offsets[s + 1])
            if hi == lo:
                continue
            top_n = min(cfg.bank_top_n, hi - lo)
            top = np.partition(sims[:, lo:hi], hi - lo - top_n, axis=1)[:, -top_n:]
            if exclude is not None:
                top = np.where(np.isfinite(top), top, 0.0)
            total[:, s] += (cfg.bank_weight / top_n) * top.sum(axis=1) * bank.term_scale[s]
        return total

    def _with_none(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` with the ``none`` route's score: the threshold times the weights of the terms
        the best-scoring source is scored over (:meth:`_assemble`), so ``none`` wins exactly when
        that source's similarity (its weighted mean cosine) is below the threshold. Until session 50
        the description's weight was left out, and with described sources the similarity had to be a
        quarter below it."""
        if self.config.none_threshold is None:
            return raw
        best = raw.argmax(axis=1)  # a router has one source at least
        none_score = self.config.none_threshold * self._bank.weight_sums[best]
        return np.hstack([raw, none_score[:, None].astype(raw.dtype)])

    def _calibrate(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.temperature is not None:
            return {"temperature": cfg.temperature, "source": "given"}
        texts, targets, exclude = [], [], []
        for s, source in enumerate(self.sources):
            docs = source.documents
            if not docs:
                continue
            bank_positions = {int(p): row for row, p in enumerate(self._bank_positions[s])}
            for position, text in pseudo_queries(
                docs, cfg.calibration_queries, seed=cfg.seed, key=source.name
            ):
                texts.append(text)
                targets.append(s)
                exclude.append((s, bank_positions.get(position, -1)))
        if len(set(targets)) < 2:
            self.config.temperature = 0.05
            return {"temperature": 0.05, "source": "default (too few sources to calibrate)"}
        vectors = self.encoder.encode_queries(texts, show_progress=False)
        exclude = [(s, row) if row >= 0 else (-1, 0) for s, row in exclude]
        raw = self.scores(vectors, exclude)
        temperature = fit_temperature(raw, np.asarray(targets))
        accuracy = float(np.mean(raw.argmax(axis=1) == np.asarray(targets)))
        self.config.temperature = temperature
        return {
            "temperature": temperature,
            "source": "pseudo-queries",
            "pseudo_queries": len(texts),
            "pseudo_accuracy": round(accuracy, 4),
        }

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        """One decision per query, by similarity to each source's description, centroid and documents."""
        if query_vectors is None:
            query_vectors = self.encoder.encode_queries(list(queries), show_progress=False)
        raw = self._with_none(self.scores(query_vectors))
        temperature = self.config.temperature or 0.05
        probs = softmax(raw, temperature)
        return [
            decision_from_probs(
                self.labels,
                p,
                decided_by=self.name,
                signals={"similarity": {label: round(v, 4) for label, v in zip(self.labels, r.tolist())}},
                detail={"temperature": round(self.config.temperature or 0.05, 4)},
                log_routes=log_routes_of(self.labels, r, temperature),
            )
            for r, p in zip(raw, probs)
        ]

    def describe(self) -> dict:
        """Its settings and calibration, as plain data."""
        return {
            "kind": self.name,
            "config": asdict(self.config),
            "calibration": self.calibration,
            "bank_from": dict(self.bank_from),
        }


def _check_config(cfg: PrototypeConfig) -> None:
    """Refuse settings the router cannot route by, in one line, as a routing config's are refused.
    Until session 54 a NaN ``none_threshold`` made every probability NaN, a ``bank_top_n`` below 1
    ended in numpy's traceback, and a NaN weight routed every query by NaN scores."""
    # positive, as a config's `temperature:` must be: until session 52 the Python API took 0 and
    # routed at another temperature without a word, and a negative one inverted the routing
    check_setting(cfg.temperature, "number", "", "temperature", positive=True, optional=True)
    check_setting(cfg.none_threshold, "number", "", "none_threshold", minimum=-1, maximum=1, optional=True)
    for key in ("description_weight", "centroid_weight", "bank_weight"):
        check_setting(getattr(cfg, key), "number", "", key, minimum=0)
    check_setting(cfg.bank_top_n, "integer", "", "bank_top_n", minimum=1)
    check_setting(cfg.max_docs, "integer", "", "max_docs", minimum=0)
    check_setting(cfg.calibration_queries, "integer", "", "calibration_queries", minimum=0)
    check_setting(cfg.bank_dim, "integer", "", "bank_dim", minimum=1, optional=True)


@dataclass(frozen=True)
class _Bank:
    """What a query is scored against: every source's profile and document bank, stacked."""

    profiles: np.ndarray  # (dim, sources): centroid and description terms
    offsets: np.ndarray  # where each source's rows start in ``stacked``
    stacked: np.ndarray | None  # every bank row (in ``bank_dim`` coordinates when projected)
    projection: np.ndarray | None
    bank_mean: np.ndarray
    padded_at: np.ndarray
    padded_shape: tuple[int, int]
    bank_weights: np.ndarray
    weight_sums: np.ndarray  # per source: the most weight any source's terms have (see ``_assemble``)
    term_scale: np.ndarray  # per source: that most over the weights of its own terms

    def similarities(self, q: np.ndarray) -> np.ndarray:
        """Cosines of each query to every bank row (approximated in ``bank_dim`` dimensions when set)."""
        assert self.stacked is not None
        if self.projection is None:
            return row_products(q, self.stacked)
        projected = row_products(q, self.projection.T)
        return row_products(projected, self.stacked) + row_products(q, self.bank_mean[None, :])


def _project(stacked: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bank as its coordinates on its ``dims`` leading principal components, the projection and
    the bank's mean: a query's cosine to a row becomes ``q . mean + (q P) . ((row - mean) P)``
    (exact for the part of the bank those components span)."""
    if dims < 1:
        raise RagrouteError(f"prototype router: bank_dim must be at least 1, got {dims}")
    mean = stacked.mean(axis=0)
    centred = stacked - mean
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projection = np.ascontiguousarray(components[:dims].T, dtype=np.float32)
    return np.ascontiguousarray(centred @ projection, dtype=np.float32), projection, mean.astype(np.float32)
