"""A trained per-query expert router: predict each expert's nDCG@10 for this query, route by it.

Features are the routing encoder's query vector plus the trained router's cheap
model-free query features (:func:`~ragroute.route.features.cheap_features`:
length, question words, capitalisation, digits, ...), standardised. One ridge
regression per expert predicts the quality (nDCG@10) that expert would reach;
the regularisation strength is chosen by leave-one-out (scikit-learn
``RidgeCV``, closed form, on the training queries only). Predicted qualities
become route probabilities by a softmax whose temperature is fitted on the
training queries' winning experts; the trace shows every expert's predicted
quality. Mixtures come from the pipeline's selection (``threshold``,
``max_routes``) with ``route_weights: probability``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    load_router,
    recorded_dim,
    route_probabilities,
    save_router,
)
from ragroute.route.features import CHEAP_FEATURE_NAMES, cheap_features
from ragroute.store.arrays import check_arrays

ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


class QualityRouter(BaseRouter):
    """Routes by each expert's predicted nDCG@10 (ridge regression on query vector + cheap features)."""

    name = "quality"

    def __init__(
        self,
        labels: Sequence[str],
        coef: np.ndarray,
        intercept: np.ndarray,
        offset: np.ndarray,
        scale: np.ndarray,
        *,
        encoder: Any = None,
        temperature: float = 0.05,
        encoder_info: dict[str, Any] | None = None,
        alphas: Sequence[float] | None = None,
    ) -> None:
        self.labels = list(labels)
        self.coef = np.asarray(coef, dtype=np.float64)  # (experts, features)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.offset = np.asarray(offset, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        if self.coef.shape != (len(self.labels), len(self.offset)) or len(self.intercept) != len(self.labels):
            raise RagrouteError("quality router: coefficient shapes do not match the experts and features")
        self.encoder = encoder
        self.temperature = check_temperature(temperature, "quality router")
        self.encoder_info = encoder_info or encoder_record(encoder)
        self.alphas = [float(a) for a in (alphas or [])]
        self.unavailable: list[str] = []  # experts that failed to load: routed around

    @staticmethod
    def features(texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        return np.hstack(
            [np.asarray(vectors, dtype=np.float64), cheap_features(list(texts)).astype(np.float64)]
        )

    @classmethod
    def fit(cls, data: ExpertGains, *, encoder: Any = None) -> QualityRouter:
        from sklearn.linear_model import RidgeCV

        # no expert scoring anything: a router of constant predictions, fitted in silence until session 36
        if not np.asarray(data.gains).any():
            raise RagrouteError(
                "no expert finds a relevant document for any training query (every nDCG@10 is 0): "
                "are the labelled queries about these sources' documents?"
            )
        x = cls.features(data.texts, data.vectors)
        offset = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = (x - offset) / scale
        coef, intercept, alphas = [], [], []
        for j in range(len(data.labels)):
            model = RidgeCV(alphas=ALPHAS).fit(z, data.gains[:, j])
            coef.append(model.coef_)
            intercept.append(float(model.intercept_))
            alphas.append(float(model.alpha_))
        router = cls(
            data.labels, np.vstack(coef), np.array(intercept), offset, scale, encoder=encoder, alphas=alphas
        )
        winners = data.winners()
        rows = [i for i, w in enumerate(winners) if w]
        if rows:
            predicted = router.predict(data.texts, data.vectors)
            targets = np.array([winners[i][0] for i in rows])
            router.temperature = fit_temperature(predicted[rows], targets, np.geomspace(1e-3, 1.0, 60))
        return router

    @property
    def query_dim(self) -> int:
        """The width of the query vectors the router was fitted on."""
        return len(self.offset) - len(CHEAP_FEATURE_NAMES)

    def check_width(self, dim: int, what: str, where: str = "quality router") -> None:
        """:class:`EncoderMismatchError` when query vectors of ``dim`` (``what`` names their
        encoder) are not of the width the router was fitted on (until session 54 a router saved
        without an encoder record loaded with any encoder, and routing raised numpy's broadcast
        traceback, as the pilot router's did until session 40)."""
        check_query_width(dim, self.query_dim, what, where, f"was fitted on {self.query_dim}-d query vectors")

    def predict(self, texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Predicted nDCG@10 of every expert for every query: shape (queries, experts)."""
        vectors = np.atleast_2d(vectors)
        self.check_width(vectors.shape[1], "the caller")
        z = (self.features(texts, vectors) - self.offset) / self.scale
        # each query's row as when it is routed alone (a BLAS product until session 53)
        return row_products(z, self.coef) + self.intercept

    def route_many(self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None) -> list:
        queries = list(queries)
        if query_vectors is None:
            if self.encoder is None:
                raise RagrouteError("a quality router needs query vectors or an encoder")
            query_vectors = self.encoder.encode_queries(queries, show_progress=False)
        predicted = self.predict(queries, query_vectors)
        probs, notes = route_probabilities(predicted, self.labels, self.unavailable, self.temperature)
        return [
            decision_from_probs(
                self.labels,
                p,
                decided_by=self.name,
                signals={
                    "predicted_ndcg@10": {label: round(float(v), 4) for label, v in zip(self.labels, row)}
                },
                detail={"unavailable": self.unavailable, **({} if note is None else {"fallback": note})},
            )
            for row, p, note in zip(predicted, probs, notes)
        ]

    def save(self, path_dir: str | os.PathLike[str]) -> Path:
        arrays = {"coef": self.coef, "intercept": self.intercept, "offset": self.offset, "scale": self.scale}
        params = {
            "labels": self.labels,
            "temperature": self.temperature,
            "encoder": self.encoder_info,
            "cheap_features": list(CHEAP_FEATURE_NAMES),
            "alphas": self.alphas,
        }
        return save_router(path_dir, "quality", arrays, params)

    @classmethod
    def load(cls, path_dir: str | os.PathLike[str], encoder: Any = None) -> QualityRouter:
        arrays, params = load_router(path_dir, "quality")
        check_encoder_info(params.get("encoder"), encoder, f"quality router {path_dir}")
        features = params.get("cheap_features", [])  # list(5) of a re-signed manifest: a TypeError
        if not isinstance(features, list) or features != list(CHEAP_FEATURE_NAMES):
            raise RagrouteError(
                f"quality router {path_dir} was fitted on query features this version does not compute; "
                "refit it with `ragroute expert fit-router`"
            )
        labels = check_router_labels(params, f"quality router {path_dir}")
        where = f"quality router {path_dir}: {ARRAYS_FILE}"
        dim = recorded_dim(params)
        check_arrays(arrays, where, {"offset": (None if dim is None else dim + len(CHEAP_FEATURE_NAMES),)})
        features = len(arrays["offset"])
        check_arrays(
            arrays,
            where,
            {"coef": (len(labels), features), "intercept": (len(labels),), "scale": (features,)},
        )
        temperature, alphas = params.get("temperature", 0.05), params.get("alphas") or []
        # float("x") of a hand-edited (re-signed) manifest raised a bare ValueError traceback, as the
        # pilot router's did until session 38 (fixed here in session 43)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise IndexFormatError(f"quality router {path_dir}: temperature is {temperature!r}, not a number")
        if not isinstance(alphas, list) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in alphas
        ):
            raise IndexFormatError(f"quality router {path_dir}: alphas are {alphas!r}, not a list of numbers")
        router = cls(
            labels,
            arrays["coef"],
            arrays["intercept"],
            arrays["offset"],
            arrays["scale"],
            encoder=encoder,
            temperature=float(temperature),
            encoder_info=params.get("encoder"),
            alphas=alphas,
        )
        if dim is None and encoder is not None:  # no encoder recorded: the coefficients' width is checked
            router.check_width(int(encoder.dim), f"encoder {encoder.model_id}", f"quality router {path_dir}")
        return router
