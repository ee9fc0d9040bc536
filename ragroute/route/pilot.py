"""Pilot-embedding routing across experts (RouterRetriever's router, with calibrated probabilities).

Fitting: for each training query, find the expert(s) that rank it best
(:meth:`~ragroute.route.expert_gains.ExpertGains.winners`; queries every
expert handles equally teach nothing and are skipped), group the queries by
winning expert, and keep each group's centroid — or ``clusters`` k-means
centroids per expert — as *pilot vectors* tagged with that expert. Routing:
compare the query vector with every pilot and score each expert by its nearest
pilot (``mode: nearest``, the released code's rule) or by the mean similarity
to its pilots (``mode: mean``, the paper's). Scores become probabilities by a
softmax whose temperature is fitted on the training queries' winners (out of
fold: each scored against pilots made without it), so the pipeline's selection
can mix the top experts (a per-query mixture) instead of always taking one. An
expert no training query preferred gets no pilot and a probability of zero.

Without any training query, :meth:`PilotRouter.from_domains` takes each domain
expert's pilot from the documents it was trained for (the centroid of their
vectors): a query goes to the expert of the domain it resembles most, and
experts without a domain (the base model, BM25) get no pilot; they are the
generalists a config adds with ``always``. Its temperature is fitted on
pseudo-queries cut from those documents when it is given them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.draws import drawn
from ragroute.encode.base import row_products
from ragroute.encode.identity import encoder_record
from ragroute.errors import IndexFormatError, RagrouteError
from ragroute.route.base import BaseRouter, decision_from_probs, fit_temperature
from ragroute.route.expert_gains import (
    ARRAYS_FILE,
    ExpertGains,
    check_encoder_info,
    check_query_width,
    check_router_labels,
    check_temperature,
    check_unique_expert_names,
    load_router,
    recorded_dim,
    route_probabilities,
    save_router,
)
from ragroute.route.folds import grouped_stratified_folds
from ragroute.route.pseudo import pseudo_queries
from ragroute.store.arrays import check_arrays
from ragroute.types import Document

MODES = ("nearest", "mean")
TEMPERATURE_GRID = np.geomspace(1e-3, 1.0, 60)


class PilotRouter(BaseRouter):
    """Routes a query to the expert whose pilot vectors it is most similar to."""

    name = "pilot"

    def __init__(
        self,
        labels: Sequence[str],
        pilots: np.ndarray,
        owners: np.ndarray,
        *,
        encoder: Any = None,
        mode: str = "nearest",
        temperature: float = 0.05,
        encoder_info: dict[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise RagrouteError(f"unknown pilot mode {mode!r}: choose {' or '.join(MODES)}")
        self.labels = list(labels)
        # a repeated name kept one of its columns in each decision's routes (the one without a
        # pilot, at 0): until session 51 its expert was never routed to and the routes summed to 0
        check_unique_expert_names(self.labels)
        self.pilots = np.asarray(pilots, dtype=np.float32)
        self.owners = np.asarray(owners, dtype=np.int64)
        self.encoder = encoder
        self.mode = mode
        self.temperature = check_temperature(temperature, "pilot router")
        self.encoder_info = encoder_info or encoder_record(encoder)
        self.name = f"pilot-{mode}"
        self.unavailable: list[str] = []  # experts that failed to load: routed around

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        data: ExpertGains,
        *,
        encoder: Any = None,
        mode: str = "nearest",
        clusters: int = 1,
        seed: int = 0,
        folds: int = 5,
        warn: bool = True,
    ) -> PilotRouter:
        """Pilot vectors from the training queries' winning experts (``clusters`` per expert at most).

        The softmax temperature is fitted out of fold: each training query is scored against pilots
        made from the other ``folds - 1`` folds, so no query vouches for a pilot it helped make
        (fitted on the queries that made the pilots, the probabilities came out over-confident on
        held-out queries). With ``folds`` < 2, or fewer than two queries with a winner per fold,
        the temperature is fitted on the training queries themselves. ``warn``: say a temperature
        fitted at an end of its grid (:func:`~ragroute.route.base.fit_temperature`), for the one kept.
        """
        winners = data.winners()
        members: dict[int, list[int]] = {}
        for i, best in enumerate(winners):
            for j in best:
                members.setdefault(j, []).append(i)
        if not members:
            raise RagrouteError("no training query is ranked better by one expert than by another")
        rows = [i for i, w in enumerate(winners) if w]
        targets = np.array([winners[i][0] for i in rows])
        groups = {j: data.vectors[members[j]] for j in sorted(members)}
        out_of_fold = folds >= 2 and len(rows) >= 2 * folds
        router = cls._from_groups(
            data.labels,
            groups,
            data.vectors[rows],
            targets,
            encoder=encoder,
            mode=mode,
            clusters=clusters,
            seed=seed,
            warn=warn and not out_of_fold,  # replaced below: said of the one kept
        )
        if out_of_fold:
            router.temperature = cls._out_of_fold_temperature(
                data, rows, targets, folds, encoder=encoder, mode=mode, clusters=clusters, seed=seed
            )
        return router

    @classmethod
    def _out_of_fold_temperature(
        cls,
        data: ExpertGains,
        rows: Sequence[int],
        targets: np.ndarray,
        folds: int,
        **options: Any,
    ) -> float:
        """The temperature fitted on each query's scores against pilots of the other folds (folded in
        an order of their own: by text, winner and vector, not the order the queries came in)."""
        order = sorted(
            range(len(rows)),
            key=lambda k: (data.texts[rows[k]], int(targets[k]), data.vectors[rows[k]].tobytes()),
        )
        rows, targets = [rows[k] for k in order], targets[order]
        fold_of = grouped_stratified_folds(
            [data.texts[i] for i in rows], [data.labels[t] for t in targets], folds, options["seed"]
        )
        scores, picked = [], []
        for fold in range(folds):
            inner = [rows[k] for k in np.flatnonzero(fold_of != fold).tolist()]
            held = np.flatnonzero(fold_of == fold)
            if not len(held):
                continue
            part = cls.fit(data.subset(inner), folds=0, warn=False, **options)  # its temperature unused
            scores.append(part._scores(data.vectors[[rows[k] for k in held.tolist()]]))
            picked.append(targets[held])
        return fit_temperature(np.vstack(scores), np.concatenate(picked), TEMPERATURE_GRID)

    @classmethod
    def from_domains(
        cls,
        labels: Sequence[str],
        domains: Mapping[str, np.ndarray],
        *,
        encoder: Any = None,
        mode: str = "nearest",
        clusters: int = 1,
        seed: int = 0,
        calibration_docs: int = 200,
        documents: Mapping[str, Sequence[Document]] | None = None,
    ) -> PilotRouter:
        """Pilots from each domain expert's documents, no query needed.

        ``domains`` maps an expert name (one of ``labels``) to the vectors, under the routing
        encoder, of the documents that expert was trained for; its pilot is their centroid (or
        ``clusters`` k-means centroids). Experts not in ``domains`` get no pilot (probability 0).

        The softmax temperature is fitted on up to ``calibration_docs`` stand-ins for queries
        per domain. With ``documents`` (the same experts -> their documents) and an ``encoder``,
        they are pseudo-queries (word windows of :func:`~ragroute.route.pseudo.pseudo_queries`,
        as the training-free routers calibrate) embedded by the encoder: query-like texts that
        did not make the pilot. Otherwise the document vectors themselves stand in; they built
        the centroids, so when the domains separate cleanly the fit runs to the smallest
        temperature and every query gets a probability of 1 (also one from no domain at all).
        """
        labels = list(labels)
        unknown = sorted(set(domains) - set(labels))
        if unknown:
            raise RagrouteError(f"domains name experts not in the set: {', '.join(unknown)}")
        if len(domains) < 2:
            raise RagrouteError("domain pilots need the documents of at least two domain experts")
        if documents is not None:
            if encoder is None:
                raise RagrouteError("domain pilots calibrated on pseudo-queries need an encoder")
            missing = sorted(set(domains) - set(documents))
            if missing:
                raise RagrouteError(f"documents missing for domain(s): {', '.join(missing)}")
        groups: dict[int, np.ndarray] = {}
        sample, targets = [], []
        for name, vectors in domains.items():
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) == 0:
                raise RagrouteError(f"domain {name!r}: no document vectors")
            j = labels.index(name)
            groups[j] = vectors
            if documents is not None:
                cut = pseudo_queries(list(documents[name]), calibration_docs, seed=seed, key=str(name))
                texts = [text for _, text in cut]
                if not texts:
                    raise RagrouteError(
                        f"domain {name!r}: no document of 5 words or more to cut pseudo-queries from"
                    )
                stand_ins = np.asarray(encoder.encode_queries(texts, show_progress=False), dtype=np.float32)
            else:
                # drawn by row and domain name, not from one generator run across the domains in
                # the order given (until session 49 the same domains in another order fitted another
                # temperature)
                picked = drawn([str(i) for i in range(len(vectors))], calibration_docs, seed, str(name))
                stand_ins = vectors[np.sort(picked)]
            sample.append(stand_ins)
            targets += [j] * len(stand_ins)
        return cls._from_groups(
            labels,
            groups,
            np.vstack(sample),
            np.array(targets),
            encoder=encoder,
            mode=mode,
            clusters=clusters,
            seed=seed,
        )

    @classmethod
    def _from_groups(
        cls,
        labels: Sequence[str],
        groups: Mapping[int, np.ndarray],
        calibration: np.ndarray,
        targets: np.ndarray,
        *,
        encoder: Any,
        mode: str,
        clusters: int,
        seed: int,
        warn: bool = True,
    ) -> PilotRouter:
        """Pilots of each expert (index -> the vectors it stands for, in that order); the softmax
        temperature fitted on ``calibration`` vectors whose expert is ``targets``."""
        pilots, owners = [], []
        for j, vectors in groups.items():
            for centre in _centroids(vectors, clusters, seed):
                pilots.append(centre)
                owners.append(j)
        router = cls(labels, np.vstack(pilots), np.array(owners), encoder=encoder, mode=mode)
        scores = router._scores(calibration)
        router.temperature = fit_temperature(scores, targets, TEMPERATURE_GRID, warn=warn)
        return router

    # ------------------------------------------------------------------ routing
    def check_width(self, dim: int, what: str, where: str = "pilot router") -> None:
        """:func:`check_pilot_width` of this router's pilots against query vectors of ``dim``."""
        check_pilot_width(self.pilots.shape[1], dim, what, where)

    def _scores(self, vectors: np.ndarray) -> np.ndarray:
        """Per query and expert: nearest-pilot or mean pilot similarity; -inf for experts without
        pilots (until session 36 -1, which a genuine cosine of -1 could not be told from)."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        self.check_width(vectors.shape[1], "the caller")
        # each query's row as when it is routed alone (until session 53 a BLAS product: a batch's
        # scores and probabilities differed from the same queries' routed one by one)
        sims = row_products(vectors, self.pilots)
        out = np.full((len(sims), len(self.labels)), -np.inf, dtype=np.float64)
        for j in np.unique(self.owners):
            block = np.ascontiguousarray(sims[:, self.owners == j])
            if self.mode == "nearest":
                out[:, j] = block.max(axis=1)
            else:  # each row summed in one order whatever the batch (numpy's mean summed 8 pilots or
                # more in another order alone than in a batch, until session 53)
                out[:, j] = np.einsum("qp->q", block) / block.shape[1]
        return out

    def route_many(self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None) -> list:
        if query_vectors is None:
            if self.encoder is None:
                raise RagrouteError("a pilot router needs query vectors or an encoder")
            query_vectors = self.encoder.encode_queries(list(queries), show_progress=False)
        scores = self._scores(query_vectors)
        probs, notes = route_probabilities(scores, self.labels, self.unavailable, self.temperature)
        detail = {"mode": self.mode, "pilots": len(self.pilots), "unavailable": self.unavailable}
        return [
            decision_from_probs(
                self.labels,
                p,
                decided_by=self.name,
                signals={  # None: an expert without a pilot (no similarity to show)
                    "pilot_similarity": {
                        label: round(float(s), 4) if np.isfinite(s) else None
                        for label, s in zip(self.labels, row)
                    }
                },
                detail=detail if note is None else {**detail, "fallback": note},
            )
            for row, p, note in zip(scores, probs, notes)
        ]

    # ------------------------------------------------------------------ persistence
    def save(self, path_dir: str | os.PathLike[str]) -> Path:
        params = {
            "labels": self.labels,
            "mode": self.mode,
            "temperature": self.temperature,
            "encoder": self.encoder_info,
        }
        return save_router(path_dir, "pilot", {"pilots": self.pilots, "owners": self.owners}, params)

    @classmethod
    def load(cls, path_dir: str | os.PathLike[str], encoder: Any = None) -> PilotRouter:
        arrays, params = load_router(path_dir, "pilot")
        check_encoder_info(params.get("encoder"), encoder, f"pilot router {path_dir}")
        labels = check_router_labels(params, f"pilot router {path_dir}")
        where = f"pilot router {path_dir}: {ARRAYS_FILE}"
        dim = recorded_dim(params)
        check_arrays(arrays, where, {"pilots": (None, dim)})
        check_arrays(arrays, where, {"owners": (len(arrays["pilots"]),)})
        if dim is None and encoder is not None:  # no encoder recorded: the pilots' own width is checked
            check_pilot_width(
                arrays["pilots"].shape[1],
                int(encoder.dim),
                f"encoder {encoder.model_id}",
                f"pilot router {path_dir}",
            )
        owners = arrays["owners"]
        numbered = owners.dtype.kind in "iu" and len(owners) > 0
        if not numbered or owners.min() < 0 or owners.max() >= len(labels):
            raise IndexFormatError(
                f"{where}: array 'owners' must hold expert numbers 0 to {len(labels) - 1} (one per pilot), "
                f"not {owners.tolist()[:8]}"
            )
        temperature = params.get("temperature", 0.05)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            # float("x") raised a bare ValueError traceback (until session 38)
            raise IndexFormatError(f"pilot router {path_dir}: temperature is {temperature!r}, not a number")
        return cls(
            labels,
            arrays["pilots"],
            arrays["owners"],
            encoder=encoder,
            mode=str(params.get("mode", "nearest")),
            temperature=float(temperature),
            encoder_info=params.get("encoder"),
        )


def check_pilot_width(width: int, dim: int, what: str, where: str) -> None:
    """:class:`EncoderMismatchError` when query vectors of ``dim`` (``what`` names their encoder)
    cannot be compared with pilots of ``width``: a router saved without an encoder record is
    checked by its pilots' width (until session 40 any encoder passed, and routing raised numpy's
    matmul traceback)."""
    check_query_width(dim, width, what, where, f"has {int(width)}-d pilots")


def _centroids(vectors: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """``clusters`` k-means centroids of ``vectors`` (fewer when there are fewer vectors), L2-normalised.

    The vectors are taken in an order of their own (sorted by value): k-means starts from seeded
    picks of row positions, so until session 51 the same training queries in another order made
    other pilots (and routed other queries elsewhere)."""
    vectors = vectors[np.lexsort(vectors.T[::-1])]
    k = max(1, min(int(clusters), len(vectors)))
    if k == 1:
        centres = vectors.mean(axis=0, keepdims=True)
    else:
        from sklearn.cluster import KMeans

        centres = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(vectors).cluster_centers_
    return centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
