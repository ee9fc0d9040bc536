"""Routing by retrieval confidence: ask every source cheaply, trust the ones that answer well.

Each source is searched for its top ``k`` hits. Raw scores are not comparable
across sources (BM25 scores depend on each corpus's statistics, and dense
cosines drift with corpus style), so each source's top-hit score is turned into
a z-score against what that source returns for pseudo-queries cut from its own
documents. The calibrated score is the mean z of the top ``top_n`` hits;
probabilities are a softmax whose temperature is fitted on those pseudo-queries.
The scale is fitted again (the temperature kept) once a source's number of
documents has moved by more than a quarter since, or once a source whose probe raised
while the router calibrated answers (until then it gets no probability).

A retriever may name the part of itself to search for this purpose with a
``confidence_probe`` attribute: a hybrid index offers its dense part, because its
RRF-fused scores depend only on ranks and so carry no confidence at all. How the
scores are read (scores only; through a small HNSW graph for large flat dense
sources unless ``probe: exact``) is :mod:`ragroute.route.score_probe`'s job.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError, check_setting, error_summary
from ragroute.route.base import (
    BaseRouter,
    decision_from_probs,
    fit_temperature,
    log_routes_of,
    moved_by_a_quarter,
    softmax,
)
from ragroute.route.pseudo import pseudo_queries
from ragroute.route.score_probe import ProbeQueries, SourceProbe
from ragroute.route.sources import Source, check_sources
from ragroute.types import Decision

#: the z-score of a source whose probe raised: no probability (unless every source failed)
_FAILED = -1e9


@dataclass
class ConfidenceConfig:
    k: int = 10
    top_n: int = 3
    calibration_queries: int = 60
    temperature: float | None = None
    seed: int = 0
    #: ``auto``: large flat dense sources are read through an HNSW graph (see
    #: :mod:`ragroute.route.score_probe`); ``exact``: every source's own exact search
    probe: str = "auto"
    probe_ef_search: int = 64


def _check_config(cfg: ConfidenceConfig) -> None:
    """Refuse settings the router cannot route by, in one line. Until session 54 ``k=0``,
    ``top_n=0``, ``k=2.5`` or ``top_n="3"`` routed every query uniformly, without a word."""
    # positive, as a config's `temperature:` must be: until session 52 the Python API took 0 and
    # routed at another temperature without a word, and a negative one inverted the routing
    check_setting(cfg.temperature, "number", "", "temperature", positive=True, optional=True)
    for key in ("k", "top_n"):
        check_setting(getattr(cfg, key), "integer", "", key, minimum=1)
    check_setting(cfg.calibration_queries, "integer", "", "calibration_queries", minimum=0)
    check_setting(cfg.seed, "integer", "", "seed")


class ConfidenceRouter(BaseRouter):
    """Routes to the sources whose own retrieval is most confident for the query."""

    name = "confidence"

    def __init__(self, sources: Sequence[Source], config: ConfidenceConfig | None = None) -> None:
        sources = check_sources(sources)  # two of one name overwrote each other's route (session 37)
        if not sources:
            raise RagrouteError("a confidence router needs at least one source")
        self.sources = list(sources)
        self.labels = [s.name for s in self.sources]
        # a copy: calibrating writes the fitted temperature into it, and until session 54 a second
        # router built with the caller's config took that temperature as given (never calibrated)
        self.config = replace(config) if config is not None else ConfidenceConfig()
        _check_config(self.config)
        self.probes = [  # each checks the probe settings
            SourceProbe(
                probe(source),
                k=self.config.k,
                probe=self.config.probe,
                ef_search=self.config.probe_ef_search,
            )
            for source in self.sources
        ]
        # each source's score scale (mean, std): one tuple, so a rescale is seen whole
        self._scale = (np.zeros(len(self.sources)), np.ones(len(self.sources)))
        self._calibrated_sizes = [len(s.documents) for s in self.sources]
        self._rescaling = threading.Lock()
        self.calibration = self._calibrate()

    def _top_scores(
        self, queries: Sequence[Any], *, one_by_one: bool = True
    ) -> tuple[np.ndarray, list[dict[int, str]]]:
        """(queries x sources) mean of the top ``top_n`` raw scores of each source's probe, and for
        each query the error of each source whose probe raised for it (its score stays 0: it loses
        only itself).

        A source whose probe of the whole batch raises is probed again query by query
        (``one_by_one``), so that only the queries it fails for lose it: until session 52 one query
        a source refused (a filter it does not offer, a text it cannot handle) took that source from
        every query routed beside it. Without ``one_by_one`` the batch's error is every query's.
        ``queries`` are texts or query contexts (whose cached vectors the probes reuse).
        """
        from ragroute.context import QueryContext

        batch = ProbeQueries([QueryContext.of(q) for q in queries])
        out = np.zeros((len(batch.contexts), len(self.sources)))
        errors: list[dict[int, str]] = [{} for _ in batch.contexts]
        for s, source_probe in enumerate(self.probes):
            try:
                out[:, s] = source_probe.top_scores(batch, self.config.top_n)
            except Exception as exc:  # noqa: BLE001 - one failing source must not sink the others
                if not one_by_one or len(batch.contexts) == 1:
                    for row in errors:
                        row[s] = error_summary(exc)
                    continue
                for i, context in enumerate(batch.contexts):
                    try:
                        out[i, s] = source_probe.top_scores(ProbeQueries([context]), self.config.top_n)[0]
                    except Exception as exc_i:  # noqa: BLE001 - this query alone loses the source
                        errors[i][s] = error_summary(exc_i)
        return out, errors

    def _calibrate(self) -> dict:
        # published with the scale, not before it: a query that read the sizes of a scale still
        # being fitted took them as fitted and routed with the old scale
        sizes = [len(s.documents) for s in self.sources]
        texts, targets = [], []
        for s, source in enumerate(self.sources):
            for _, text in pseudo_queries(
                source.documents, self.config.calibration_queries, seed=self.config.seed, key=source.name
            ):
                texts.append(text)
                targets.append(s)
        if not texts:
            self._calibrated_sizes = sizes
            return {"source": "none (no documents)"}
        raw, per_query = self._top_scores(texts, one_by_one=False)  # a source fails for all or none
        errors = per_query[0]
        # Per-source score scale, measured on every pseudo-query (in- and out-of-source). A source
        # whose probe raised has none (NaN): until session 52 it got (0, 1e-9), and once it answered
        # its z-scores were +-1e9, so every query went to it (or never could)
        mean = raw.mean(axis=0)
        mean[list(errors)] = np.nan
        self._scale = (mean, np.maximum(raw.std(axis=0), 1e-9))
        self._calibrated_sizes = sizes  # after the scale: "moved?" is answered by the scale in use
        z = (raw - self._scale[0]) / self._scale[1]
        z[:, list(errors)] = _FAILED
        targets_arr = np.asarray(targets)
        if self.config.temperature is None:
            self.config.temperature = fit_temperature(z, targets_arr, grid=np.geomspace(0.05, 20.0, 100))
        return {
            "temperature": self.config.temperature,
            "probes": {source.name: p.describe() for source, p in zip(self.sources, self.probes)},
            "pseudo_queries": len(texts),
            "pseudo_accuracy": round(float(np.mean(z.argmax(axis=1) == targets_arr)), 4),
            **({"errors": {self.labels[s]: e for s, e in errors.items()}} if errors else {}),
        }

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        """One decision per query, from how confidently each source answers it (see the class)."""
        return self.route_contexts(list(queries))

    def _rescale_if_changed(self) -> None:
        """Calibrate again (each source's score scale; the temperature is kept) once a source's
        number of documents moved by more than a quarter since calibration: its scores' scale moves
        with its size and content, and a stale scale sent queries to a source that had grown."""

        def moved() -> bool:
            sizes = zip((len(s.documents) for s in self.sources), self._calibrated_sizes)
            return any(moved_by_a_quarter(now, then) for now, then in sizes)

        if moved():
            with self._rescaling:
                if moved():
                    self.calibration = self._calibrate()

    def route_contexts(self, contexts: Sequence[Any]) -> list[Decision]:
        self._rescale_if_changed()
        mean, std = self._scale
        raw, errors = self._top_scores(list(contexts))
        answered = {s for s in range(len(self.sources)) if any(s not in row for row in errors)}
        if any(np.isnan(mean[s]) for s in answered):
            # a source whose probe raised at calibration answers now: calibrate again to scale it
            with self._rescaling:
                if self._scale[0] is mean:
                    self.calibration = self._calibrate()
            mean, std = self._scale
        for s in np.flatnonzero(np.isnan(mean)).tolist():
            for row in errors:
                if s not in row:  # its probe raised at calibration (again): its scores have no scale
                    row[s] = f"no score scale: its probe raised at calibration ({self._calibration_error(s)})"
        z = (raw - mean) / std
        for i, row in enumerate(errors):
            z[i, list(row)] = _FAILED  # a source whose probe raised for the query gets no probability
        temperature = self.config.temperature or 1.0
        probs = softmax(z, temperature)
        read_by = {label: p.kind for label, p in zip(self.labels, self.probes)}  # one dict for the batch
        failures = [{self.labels[s]: e for s, e in row.items()} for row in errors]
        return [
            decision_from_probs(
                self.labels,
                p,
                decided_by=self.name,
                signals={
                    "top_score": dict(zip(self.labels, np.round(r, 4).tolist())),
                    "z": dict(zip(self.labels, np.round(zr, 3).tolist())),
                    **({"errors": failed} if failed else {}),
                },
                detail={
                    "temperature": round(self.config.temperature or 1.0, 4),
                    "probes": dict(read_by),
                    **({"errors": failed} if failed else {}),
                },
                log_routes=log_routes_of(self.labels, zr, temperature),
            )
            for r, zr, p, failed in zip(raw, z, probs, failures)
        ]

    def _calibration_error(self, s: int) -> str:
        """What source ``s``'s probe raised when the router last calibrated."""
        return str(self.calibration.get("errors", {}).get(self.labels[s], "unknown error"))

    def describe(self) -> dict:
        """Settings, what calibration found (``calibration["probes"]``: how each source was read
        then), and how each source is read now (a source that grew past or shrank below
        :data:`~ragroute.route.score_probe.GRAPH_MIN_DOCUMENTS` documents since moved)."""
        return {
            "kind": self.name,
            "config": asdict(self.config),
            "calibration": self.calibration,
            "probes": {source.name: p.describe() for source, p in zip(self.sources, self.probes)},
        }


def probe(source: Source) -> Any:
    """What the confidence router searches for ``source``: its retriever's ``confidence_probe``
    if it names one, else the retriever itself."""
    return getattr(source.retriever, "confidence_probe", source.retriever)
