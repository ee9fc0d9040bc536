"""Routing by the votes of the nearest labelled queries (SKR-style neighbour voting)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ragroute.errors import RagrouteError, check_batch, check_k, check_query
from ragroute.route.base import BaseRouter, decision_from_probs
from ragroute.types import Decision


class KnnRouter(BaseRouter):
    """Each of the ``k`` most similar labelled queries votes for its route, weighted by similarity.

    Probabilities are the normalised vote shares (with ``smoothing`` added to
    every label so no route is ever exactly impossible). With ``smoothing=0`` a query none of whose
    neighbours is similar (every cosine <= 0) gets an even share over the labels. An example
    given twice (same text, same label) is one neighbour.
    """

    name = "knn"

    def __init__(
        self, texts: Sequence[str], labels: Sequence[str], encoder, *, k: int = 5, smoothing: float = 0.01
    ):
        texts = [check_query(t) for t in check_batch(texts, "texts")]  # a string was one text per letter
        labels = check_batch(labels, "labels")
        if len(texts) != len(labels) or not texts:
            raise RagrouteError("a kNN router needs as many labels as texts, and at least one")
        if not all(isinstance(label, str) and label for label in labels):
            raise RagrouteError("a kNN router's labels must be non-empty strings (route names)")
        self.encoder = encoder
        self.k = check_k(k)  # k = 0 voted with nobody, -1 dropped a neighbour (until session 37)
        number = isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool)
        if not (number and math.isfinite(smoothing) and smoothing >= 0):
            # until session 43 a negative smoothing gave negative probabilities, NaN (or 0 with no similar
            # neighbour: 0 / 0) NaN ones
            raise RagrouteError(f"a kNN router's smoothing must be a finite number >= 0, got {smoothing!r}")
        self.smoothing = float(smoothing)
        # one vote per distinct example: until session 52 a row repeated (two labels files merged)
        # voted once per copy and took as many of the k neighbours' places
        pairs = list(dict.fromkeys(zip(texts, labels)))
        texts, labels = [text for text, _ in pairs], [label for _, label in pairs]
        self.labels = sorted(set(labels))
        self._targets = np.asarray([self.labels.index(label) for label in labels])
        self._bank = np.asarray(encoder.encode_queries(list(texts), show_progress=False), dtype=np.float32)
        self._texts = list(texts)

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        if query_vectors is None:
            query_vectors = self.encoder.encode_queries(list(queries), show_progress=False)
        sims = np.atleast_2d(query_vectors) @ self._bank.T
        k = min(self.k, sims.shape[1])
        out = []
        for row in sims:
            nearest = np.argsort(-row, kind="stable")[:k]
            votes = np.full(len(self.labels), self.smoothing)
            np.add.at(votes, self._targets[nearest], np.maximum(row[nearest], 0.0))
            neighbours = [
                {
                    "text": self._texts[i][:80],
                    "route": self.labels[self._targets[i]],
                    "sim": round(float(row[i]), 4),
                }
                for i in nearest
            ]
            total = votes.sum()
            probs = votes / total if total > 0 else np.full(len(self.labels), 1.0 / len(self.labels))
            out.append(
                decision_from_probs(
                    self.labels, probs, decided_by=self.name, signals={"neighbours": neighbours}
                )
            )
        return out
