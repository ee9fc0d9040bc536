"""A router learned from labelled queries: a linear (or one-hidden-layer) classifier over
[query embedding ; cheap features ; hashed n-grams], with calibrated probabilities.

Fitting::

    features = QueryFeatures(hashed_dim=4096)
    router = TrainedRouter.fit(texts, labels, encoder, none_label="no", features=features)
    router.route("What colour is the roof of the Sydney Opera House?").routes
    router.save("routers/modality")
    router = TrainedRouter.load("routers/modality", encoder)

Labels are any strings (source names, or modality labels); ``none_label`` is
renamed :data:`~ragroute.route.base.NONE_ROUTE` so the rest of ragroute reads it
as "answer without retrieval". Inputs are scaled per block (the unit-norm
embedding as is, the cheap features standardised then multiplied by
``cheap_weight``, the unit-norm hashed n-grams by ``hashed_weight``), so one
regularisation strength ``C`` fits all blocks. With ``calibrate`` a temperature is
fitted on a stratified held-out part of the training data (identical texts never on
both sides, :func:`~ragroute.route.folds.grouped_holdout`)
(:func:`~ragroute.route.base.fit_temperature`), then the model is refitted on all
of it, keeping that temperature.

scikit-learn fits the model; the router keeps only numpy arrays, predicts with
numpy, and saves itself through the artifact store (family ``router``, kind
``trained``: its settings in the checksummed manifest, its arrays in
``router_weights.npz``, no pickle), so loading a router does not import
scikit-learn. Routers saved by ragroute 0.1 (``router.json`` beside the weights)
still load.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragroute.encode.identity import check_fitted_encoder, encoder_record
from ragroute.errors import (
    IndexFormatError,
    RagrouteError,
    check_batch,
    check_query,
    check_query_vectors,
    is_finite_number,
    value_type_name,
)
from ragroute.route.base import (
    NONE_ROUTE,
    BaseRouter,
    checked_queries,
    decision_from_probs,
    fit_temperature,
    log_routes_of,
    softmax,
)
from ragroute.route.features import CHEAP_FEATURE_NAMES, DEFAULT_HASHED_DIM, QueryFeatures, cheap_features
from ragroute.route.folds import grouped_holdout, grouped_stratified_folds
from ragroute.store.arrays import npz_arrays
from ragroute.types import Decision

ROUTER_FILE = "router.json"
DEFAULT_HIDDEN = 256  # hidden units of the MLP model
WEIGHTS_FILE = "router_weights.npz"
FORMAT = "ragroute.trained-router"
FORMAT_VERSION = 1
ARTIFACT_FAMILY = "router"
MODELS = ("logreg", "mlp")
TOP_FEATURES = 5
LOGREG_MAX_ITER = 3000
MLP_MAX_ITER = 300

ModelKind = Literal["logreg", "mlp"]


@dataclass
class _Network:
    """Dense layers in numpy: ReLU between layers, raw logits out; a one-column output is binary."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.from_first_layer(x @ self.weights[0] + self.biases[0])

    def from_first_layer(self, h: np.ndarray) -> np.ndarray:
        """The logits, given the first layer's output before its activation."""
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = np.maximum(h, 0.0) @ w + b
        if h.shape[1] == 1:  # binary classifiers score only the second class
            h = np.hstack([np.zeros_like(h), h])
        return h


@dataclass
class _Scaling:
    """Per-column ``(x - offset) * scale`` that puts the blocks on comparable scales."""

    offset: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.offset) * self.scale


@dataclass(frozen=True)
class _Blocks:
    """Widths of the input blocks, in input order: embedding, cheap features, hashed n-grams."""

    dim: int
    cheap: int
    hashed: int


@dataclass
class _Rows:
    """Unscaled inputs of ``n`` queries by block (float64); the hashed n-grams as each query's
    non-zero ``(buckets, values)``."""

    n: int
    vectors: np.ndarray | None
    cheap: np.ndarray | None
    hashed: list[tuple[np.ndarray, np.ndarray]]


@dataclass
class _FoldedLayer:
    """A linear layer over the scaled inputs, ``((x - offset) * scale) @ W + b``, with the scaling
    folded into the weights: ``x @ (scale * W) - (offset * scale) @ W + b``, split by input block.

    A query's hashed n-grams fill ~1% of their buckets, so the hashed block is read only at its
    non-zero buckets instead of building and scaling a dense input row. ``rows`` keeps each
    output unit's weights as one contiguous row too (an explanation reads one route's weights).
    """

    weights: np.ndarray  # (width, units): scale[:, None] * W
    offset: np.ndarray  # (width,)
    constants: tuple[np.ndarray, np.ndarray, np.ndarray]  # per block: -(offset @ weights), (units,)
    bias: np.ndarray  # (units,)
    embedding: slice
    cheap: slice
    hashed: slice
    rows: np.ndarray | None = None  # (units, width), when asked for

    @classmethod
    def of(
        cls, w: np.ndarray, b: np.ndarray, scaling: _Scaling, blocks: _Blocks, *, rows: bool = False
    ) -> _FoldedLayer:
        weights = np.asarray(scaling.scale, dtype=np.float64)[:, None] * np.asarray(w, dtype=np.float64)
        offset = np.asarray(scaling.offset, dtype=np.float64)
        cuts = np.cumsum([0, blocks.dim, blocks.cheap, blocks.hashed])
        parts = [slice(int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]
        constants = tuple(-(offset[part] @ weights[part]) for part in parts)
        return cls(
            weights=np.ascontiguousarray(weights),
            offset=offset,
            constants=(constants[0], constants[1], constants[2]),
            bias=np.asarray(b, dtype=np.float64),
            embedding=parts[0],
            cheap=parts[1],
            hashed=parts[2],
            rows=np.ascontiguousarray(weights.T) if rows else None,
        )

    def apply(self, rows: _Rows) -> np.ndarray:
        """The layer's output (before any activation) for ``rows``: ``(rows.n, units)``."""
        out = np.empty((rows.n, self.weights.shape[1]))
        out[:] = self.bias + self.constants[0] + self.constants[1] + self.constants[2]
        if rows.vectors is not None:
            out += rows.vectors @ self.weights[self.embedding]
        if rows.cheap is not None:
            out += rows.cheap @ self.weights[self.cheap]
        for i, (buckets, values) in enumerate(rows.hashed):
            out[i] += values @ self.weights[self.hashed.start + buckets]
        return out


class TrainedRouter(BaseRouter):
    """Routes with a classifier fitted on labelled queries; see the module docstring.

    Build one with :meth:`fit` or :meth:`load`. ``labels`` are the routes (with
    ``none_label`` renamed ``"none"``); ``metrics`` holds numbers measured while
    fitting (held-out accuracy and log-loss before and after calibration).
    """

    name = "trained"

    def __init__(
        self,
        *,
        labels: Sequence[str],
        kind: ModelKind,
        network: _Network,
        scaling: _Scaling,
        features: QueryFeatures | None,
        encoder: Any = None,
        encoder_info: dict[str, Any] | None = None,
        temperature: float = 1.0,
        none_bias: float = 0.0,
        none_label: str | None = None,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        self.labels = list(labels)
        self.kind = kind
        self.features = features
        self.encoder = encoder
        self.encoder_info = dict(encoder_info) if encoder_info else None
        self.temperature = float(temperature)
        self.none_bias = float(none_bias)
        self.none_label = none_label
        self.params = dict(params or {})
        self.metrics = dict(metrics or {})
        self._network = network
        self._scaling = scaling
        self._bias = _bias_vector(self.labels, self.none_bias)
        dim = int(self.encoder_info["dim"]) if self.encoder_info else 0
        n_cheap = len(CHEAP_FEATURE_NAMES) if features is not None and features.cheap else 0
        self._blocks = _Blocks(dim, n_cheap, features.hashed_dim if features is not None else 0)
        self._first = _FoldedLayer.of(network.weights[0], network.biases[0], scaling, self._blocks)
        relative = _relative_weights(network, len(self.labels)) if kind == "logreg" else None
        # the scaling folded into each route's relative weights, one contiguous row per route:
        # _explain reads a single route's weights per decision
        self._relative = (
            None
            if relative is None
            else _FoldedLayer.of(relative, np.zeros(relative.shape[1]), scaling, self._blocks, rows=True)
        )

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        encoder: Any = None,
        *,
        none_label: str | None = None,
        model: ModelKind = "logreg",
        C: float = 1.0,
        class_weight: Literal["balanced"] | None = "balanced",
        features: QueryFeatures | None = None,
        cheap_weight: float = 0.1,
        hashed_weight: float = 1.0,
        none_bias: float = 0.0,
        hidden: int = DEFAULT_HIDDEN,
        calibrate: bool = True,
        validation_fraction: float = 0.2,
        seed: int = 0,
        query_vectors: np.ndarray | None = None,
    ) -> TrainedRouter:
        """Fit a router on ``texts`` and their ``labels``.

        ``encoder`` embeds the texts (``None``: no embedding block, only
        ``features``); ``query_vectors`` may hold those embeddings already (refused without
        the ``encoder`` that made them).
        ``features`` (default: cheap features and :data:`~ragroute.route.features.DEFAULT_HASHED_DIM`
        hashed n-gram buckets) adds model-free columns. ``model`` is ``"logreg"`` (multinomial
        logistic regression, inverse regularisation ``C``) or ``"mlp"`` (one ReLU
        layer of ``hidden`` units, L2 penalty ``1 / C``). ``class_weight="balanced"``
        weighs classes inversely to their frequency. ``none_bias`` is added to the
        ``"none"`` logit at prediction time (a higher recall of "no retrieval"
        at some cost in accuracy). ``calibrate`` fits the temperature on the
        ``validation_fraction`` held out (above 0 then). Deterministic for a given ``seed``.
        """
        texts = [check_query(t) for t in check_batch(texts, "texts")]
        raw = _route_names(labels)
        if query_vectors is not None and encoder is None:
            # they were dropped without a word: a router of the features alone, no embedding block
            raise RagrouteError(
                "query_vectors were given without the encoder that made them: pass it too (the router "
                "embeds later queries with it), or leave both out for a router of the features alone"
            )
        if query_vectors is not None:  # a NaN row ended in scikit-learn's multi-line refusal
            query_vectors = check_query_vectors(query_vectors, len(texts), encoder)
        if features is None:
            features = QueryFeatures(hashed_dim=DEFAULT_HASHED_DIM)
        _check_fit_args(texts, raw, encoder, features, model, none_label, validation_fraction, C, calibrate)
        _check_fit_numbers(
            none_bias=none_bias, cheap_weight=cheap_weight, hashed_weight=hashed_weight, hidden=hidden
        )
        classes = sorted(set(raw))
        target = np.array([classes.index(label) for label in raw])
        route_labels = [NONE_ROUTE if c == none_label else c for c in classes]
        x, scaling = _design(texts, encoder, features, query_vectors, cheap_weight, hashed_weight)
        weights = _sample_weights(target, len(classes), class_weight)
        fit_args: dict[str, Any] = {"model": model, "C": C, "hidden": hidden, "seed": seed}

        temperature, metrics = 1.0, {"n_train": len(texts), "class_counts": _counts(raw)}
        if calibrate:
            train_idx, val_idx = grouped_holdout(texts, raw, validation_fraction, seed)
            if len(val_idx) and len(np.unique(target[train_idx])) == len(classes):
                net, _ = _fit_network(x[train_idx], target[train_idx], weights[train_idx], **fit_args)
                bias = _bias_vector(route_labels, none_bias)
                val_logits = net.logits(x[val_idx]) + bias
                temperature = fit_temperature(val_logits, target[val_idx])
                metrics.update(_holdout_metrics(val_logits, target[val_idx], temperature))
        network, converged = _fit_network(x, target, weights, **fit_args)
        metrics["converged"] = converged
        params = {
            "C": C,
            "class_weight": class_weight,
            "cheap_weight": cheap_weight,
            "hashed_weight": hashed_weight,
            "hidden": hidden if model == "mlp" else None,
            "calibrate": calibrate,
            "validation_fraction": validation_fraction,
            "seed": seed,
        }
        return cls(
            labels=route_labels,
            kind=model,
            network=network,
            scaling=scaling,
            features=features,
            encoder=encoder,
            encoder_info=encoder_record(encoder),
            temperature=temperature,
            none_bias=none_bias,
            none_label=none_label,
            params=params,
            metrics=metrics,
        )

    # ------------------------------------------------------------------ prediction

    def logits(self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None) -> np.ndarray:
        """Raw (uncalibrated, ``none_bias`` included) class scores, ``(len(queries), len(labels))``."""
        texts, query_vectors = checked_queries(self, queries, query_vectors)  # a string was one per letter
        rows = self._rows(texts, query_vectors)
        return self._network.from_first_layer(self._first.apply(rows)) + self._bias

    def predict_proba(self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities over ``labels``, one row per query."""
        return softmax(self.logits(queries, query_vectors=query_vectors), self.temperature)

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        """One decision per query: probabilities over ``labels``, with the signals behind them.

        ``query_vectors`` (the encoder's embeddings of ``queries``) skips encoding.
        ``signals`` holds ``logit_margin`` (best minus second-best calibrated
        logit), ``temperature`` and ``features``: for logistic regression the
        cheap features that pushed the chosen route most (value and contribution
        to its logit relative to the mean over routes) and each block's total
        contribution; for the MLP the non-zero cheap feature ``values`` by name.
        """
        texts = [check_query(q) for q in queries]
        if not texts:
            return []
        rows = self._rows(texts, query_vectors)
        logits = self._network.from_first_layer(self._first.apply(rows)) + self._bias
        logits /= max(self.temperature, 1e-9)
        probs = softmax(logits)
        temperature = round(self.temperature, 4)
        decisions = []
        for i in range(len(texts)):
            order = np.argsort(-logits[i], kind="stable")
            margin = float(logits[i, order[0]] - logits[i, order[1]]) if len(order) > 1 else math.inf
            signals = {
                "logit_margin": round(margin, 4),
                "temperature": temperature,
                "features": self._explain(rows, i, int(order[0])),
            }
            decisions.append(
                decision_from_probs(
                    self.labels,
                    probs[i],
                    decided_by=f"{self.name}:{self.kind}",
                    signals=signals,
                    log_routes=log_routes_of(self.labels, logits[i]),
                )
            )
        return decisions

    def _rows(self, queries: Sequence[str], query_vectors: np.ndarray | None) -> _Rows:
        """The unscaled inputs of ``queries``, block by block (hashed n-grams sparse)."""
        blocks, features = self._blocks, self.features
        vectors = self._vectors(queries, query_vectors).astype(np.float64) if blocks.dim else None
        cheap = cheap_features(queries).astype(np.float64) if blocks.cheap else None
        hashed = []
        if blocks.hashed and features is not None:
            for text in queries:
                buckets, values = features.sparse_hashed(text)
                hashed.append((buckets, values.astype(np.float64)))
        return _Rows(len(queries), vectors, cheap, hashed)

    def _vectors(self, queries: Sequence[str], query_vectors: np.ndarray | None) -> np.ndarray:
        dim = int(self.encoder_info["dim"]) if self.encoder_info else 0
        if query_vectors is None:
            if self.encoder is None:
                raise RagrouteError("this router needs query embeddings: pass query_vectors or an encoder")
            query_vectors = self.encoder.encode_queries(list(queries), show_progress=False)
        vectors = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
        if vectors.shape != (len(queries), dim):
            raise RagrouteError(
                f"query_vectors has shape {vectors.shape}, expected ({len(queries)}, {dim}) for this router"
            )
        return vectors

    def _explain(self, rows: _Rows, i: int, best: int) -> dict[str, Any]:
        """Cheap feature values (and, for logistic regression, what pushed route ``best``)."""
        if rows.cheap is None:
            return {}
        values = rows.cheap[i]
        if self._relative is None:
            return {"values": {name: round(float(v), 4) for name, v in zip(CHEAP_FEATURE_NAMES, values) if v}}
        relative = self._relative
        assert relative.rows is not None  # built with rows=True
        weights = relative.rows[best]
        cheap = (values - relative.offset[relative.cheap]) * weights[relative.cheap]
        top = [j for j in np.argsort(-np.abs(cheap), kind="stable")[:TOP_FEATURES] if cheap[j] != 0]
        blocks = {"cheap": round(float(cheap.sum()), 4)}
        if rows.vectors is not None:
            embedding = rows.vectors[i] @ weights[relative.embedding] + relative.constants[0][best]
            blocks["embedding"] = round(float(embedding), 4)
        if self._blocks.hashed:
            buckets, values_hashed = rows.hashed[i]
            hashed = values_hashed @ weights[relative.hashed.start + buckets] + relative.constants[2][best]
            blocks["hashed"] = round(float(hashed), 4)
        top_features = {
            CHEAP_FEATURE_NAMES[j]: {
                "value": round(float(values[j]), 4),
                "contribution": round(float(cheap[j]), 4),
            }
            for j in top
        }
        return {"top": top_features, "blocks": blocks}

    # ------------------------------------------------------------------ persistence

    def _arrays(self) -> dict[str, Any]:
        arrays: dict[str, Any] = {"offset": self._scaling.offset, "scale": self._scaling.scale}
        for i, (w, b) in enumerate(zip(self._network.weights, self._network.biases)):
            arrays[f"W{i}"] = w
            arrays[f"b{i}"] = b
        return arrays

    def write_files(self, folder: Path) -> None:
        """Write this router as plain files (``router.json`` beside its weights) into ``folder``,
        inside another artifact's build, whose manifest checksums them (a gate's ``text_probe``):
        :meth:`load` reads them. Until session 38 such a router was a whole artifact store of its
        own inside the gate's build, with a lock file holding the writer's pid and a timestamped
        build folder, so two identical fits never published the same files."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ROUTER_FILE).write_text(json.dumps(self._manifest(), indent=2), encoding="utf-8")
        np.savez(folder / WEIGHTS_FILE, **self._arrays())

    def save(self, path_dir: str | os.PathLike[str]) -> Path:
        """Publish this router as a new build of the artifact at ``path_dir`` (atomic, checksummed)."""
        from ragroute.store import write_artifact

        arrays = self._arrays()
        settings = self._manifest()
        with write_artifact(
            Path(path_dir),
            ARTIFACT_FAMILY,
            "trained",
            name=Path(path_dir).name,
            params=settings,
            encoder=self.encoder_info,
            error=IndexFormatError,
            supersedes=(ROUTER_FILE, WEIGHTS_FILE),  # a 0.1 router refitted in place
        ) as build:
            np.savez(build.path / WEIGHTS_FILE, **arrays)
        return Path(path_dir)

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "labels": self.labels,
            "none_label": self.none_label,
            "encoder": self.encoder_info,
            "features": None if self.features is None else self.features.to_dict(),
            "temperature": self.temperature,
            "none_bias": self.none_bias,
            "layers": len(self._network.weights),
            "params": self.params,
            "metrics": self.metrics,
        }

    @classmethod
    def load(cls, path_dir: str | os.PathLike[str], encoder: Any = None) -> TrainedRouter:
        """Load a saved router; ``encoder`` must match the one it was fitted with (``model_id``, ``dim``).

        Raises :class:`IndexFormatError` for a missing or corrupt folder and
        :class:`EncoderMismatchError` for another encoder.
        """
        from ragroute.store import read_artifact

        folder = Path(path_dir)
        if is_legacy_router(folder):
            return cls._load_files(folder, _read_manifest(folder), folder / WEIGHTS_FILE, encoder)
        return read_artifact(
            folder,
            lambda snap: cls._load_files(
                folder, check_router_settings(folder, snap.manifest.params), snap.file(WEIGHTS_FILE), encoder
            ),
            family=ARTIFACT_FAMILY,
            error=IndexFormatError,
        )

    @staticmethod
    def read_settings(path_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """The saved router's settings (labels, model kind, ...) checked as :meth:`load` checks them
        (either layout, format and version), without its weights: what ``config check`` reads."""
        from ragroute.store import read_artifact

        folder = Path(path_dir)
        if is_legacy_router(folder):
            return _read_manifest(folder)
        return read_artifact(
            folder,
            lambda snap: check_router_settings(folder, snap.manifest.params),
            family=ARTIFACT_FAMILY,
            error=IndexFormatError,
        )

    @classmethod
    def _load_files(
        cls, folder: Path, manifest: dict[str, Any], weights: Path, encoder: Any
    ) -> TrainedRouter:
        info = manifest.get("encoder")
        if info is not None and (not isinstance(info, dict) or "model_id" not in info or "dim" not in info):
            raise IndexFormatError(f"{folder / ROUTER_FILE} is corrupt: bad encoder entry")
        check_fitted_encoder(f"router {folder}", info, encoder)
        arrays = _read_weights(weights, int(manifest.get("layers", 0)))
        try:
            features = None if manifest["features"] is None else QueryFeatures.from_dict(manifest["features"])
            labels = [str(label) for label in manifest["labels"]]
            kind = manifest["kind"]
            temperature = float(manifest["temperature"])
            none_bias = float(manifest.get("none_bias", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{folder / ROUTER_FILE} is corrupt: {exc}") from None
        except RagrouteError as exc:  # readable, but of features this version does not compute
            raise IndexFormatError(f"router {folder} {exc}") from None
        layers = int(manifest["layers"])
        network = _Network([arrays[f"W{i}"] for i in range(layers)], [arrays[f"b{i}"] for i in range(layers)])
        scaling = _Scaling(arrays["offset"], arrays["scale"])
        width = (int(info["dim"]) if info else 0) + (features.width if features else 0)
        _check_shapes(folder, network, scaling, width, len(labels), kind)
        return cls(
            labels=labels,
            kind=kind,
            network=network,
            scaling=scaling,
            features=features,
            encoder=encoder,
            encoder_info=info,
            temperature=temperature,
            none_bias=none_bias,
            none_label=manifest.get("none_label"),
            params=manifest.get("params") or {},
            metrics=manifest.get("metrics") or {},
        )


# --------------------------------------------------------------------------- cross-validation


def cross_val_logits(
    texts: Sequence[str],
    labels: Sequence[str],
    encoder: Any = None,
    *,
    folds: int = 5,
    seed: int = 0,
    query_vectors: np.ndarray | None = None,
    **fit_options: Any,
) -> tuple[list[str], np.ndarray]:
    """Out-of-fold logits: each row scored by a router fitted on the other folds
    (stratified by label, identical texts in one fold: :mod:`ragroute.route.folds`).

    Returns the route labels (as :meth:`TrainedRouter.fit` names them) and a
    ``(len(texts), len(labels))`` array of uncalibrated logits without
    ``none_bias``. ``fit_options`` go to :meth:`TrainedRouter.fit` (its own
    calibration is switched off: temperatures do not change which route wins).
    """
    raw = _route_names(labels)  # a NaN was stringified before fit could refuse it (until session 51)
    classes = sorted(set(raw))
    vectors = None
    if encoder is not None:
        vectors = (
            query_vectors
            if query_vectors is not None
            else encoder.encode_queries(list(texts), show_progress=False)
        )
    fold_of = grouped_stratified_folds(texts, raw, folds, seed)
    options = {**fit_options, "calibrate": False, "none_bias": 0.0, "seed": seed}
    route_labels: list[str] = []
    logits = np.zeros((len(texts), len(classes)))
    for fold in range(folds):
        train, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        if not len(test):
            continue
        train_labels = [raw[i] for i in train.tolist()]
        # a none label whose every query is in this fold: the route scores -inf like any label the
        # other folds lack (until session 43 fitting refused the none_label as not among the labels)
        absent = {"none_label": None} if options.get("none_label") not in (None, *train_labels) else {}
        router = TrainedRouter.fit(
            [texts[i] for i in train.tolist()],
            train_labels,
            encoder,
            query_vectors=None if vectors is None else vectors[train],
            **{**options, **absent},
        )
        route_labels = [NONE_ROUTE if c == fit_options.get("none_label") else c for c in classes]
        scores = router.logits(
            [texts[i] for i in test.tolist()], query_vectors=None if vectors is None else vectors[test]
        )
        columns = [router.labels.index(label) if label in router.labels else -1 for label in route_labels]
        for j, col in enumerate(columns):
            logits[test, j] = scores[:, col] if col >= 0 else -np.inf
    return route_labels, logits


def choose_none_bias(
    route_labels: Sequence[str],
    logits: np.ndarray,
    truth: Sequence[str],
    *,
    target_recall: float = 0.85,
    grid: Sequence[float] = tuple(np.round(np.arange(0.0, 3.01, 0.25), 2)),
) -> tuple[float, dict[str, float]]:
    """The smallest ``none_bias`` in ``grid`` whose recall of ``"none"`` reaches ``target_recall``.

    ``logits`` and ``truth`` (route labels) are typically from
    :func:`cross_val_logits`. If no bias reaches the target, the one with the
    highest recall is returned. The second value gives that bias's accuracy and
    none recall on these logits.
    """
    labels = list(route_labels)
    if NONE_ROUTE not in labels:
        return 0.0, {}
    truth_arr = np.asarray(list(truth))
    is_none = truth_arr == NONE_ROUTE
    best: tuple[float, dict[str, float]] | None = None
    for bias in grid:
        pred = np.asarray(labels)[(logits + _bias_vector(labels, float(bias))).argmax(axis=1)]
        stats = {
            "accuracy": float(np.mean(pred == truth_arr)),
            "none_recall": float(np.mean(pred[is_none] == NONE_ROUTE)) if is_none.any() else 0.0,
        }
        if stats["none_recall"] >= target_recall:
            return float(bias), stats
        if best is None or stats["none_recall"] > best[1]["none_recall"]:
            best = (float(bias), stats)
    assert best is not None
    return best


# --------------------------------------------------------------------------- fitting helpers


def _route_names(labels: Sequence[Any]) -> list[str]:
    """The training labels as route names (a number as its text); a label that names no route is
    refused: None (learnt as a route named 'None' until session 37), blank text, or a NaN (pandas'
    missing value, learnt as a route named 'nan' until session 51, a blank label as one of spaces)."""
    labels = check_batch(labels, "labels")
    for i, label in enumerate(labels):
        blank = isinstance(label, str) and not label.strip()
        if label is None or blank or (isinstance(label, (float, np.floating)) and math.isnan(label)):
            raise RagrouteError(f"label {i} is {label!r}: every text needs a route name")
    return [str(label) for label in labels]


def _check_fit_args(
    texts: Sequence[str],
    labels: Sequence[str],
    encoder: Any,
    features: QueryFeatures | None,
    model: str,
    none_label: str | None,
    validation_fraction: float,
    C: float,
    calibrate: bool = True,
) -> None:
    if len(texts) != len(labels):
        raise RagrouteError(f"{len(texts)} texts but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise RagrouteError("a router needs at least two distinct labels to learn from")
    if model not in MODELS:
        raise RagrouteError(f"unknown model {model!r}: expected one of {', '.join(MODELS)}")
    if none_label is not None and none_label not in set(labels):
        raise RagrouteError(f"none_label {none_label!r} is not among the labels")
    if NONE_ROUTE in set(labels) and none_label not in (None, NONE_ROUTE):
        raise RagrouteError(
            f"label {NONE_ROUTE!r} is reserved for the no-retrieval route, and none_label "
            f"{none_label!r} names another label for it: give the queries of both one label "
            f"(or make {NONE_ROUTE!r} the none label, and {none_label!r} a route)"
            if none_label is not None
            else f"label {NONE_ROUTE!r} is reserved for the no-retrieval route"
        )
    if not 0.0 <= validation_fraction < 1.0:
        raise RagrouteError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if calibrate and validation_fraction == 0:  # nothing held out: the router was left at temperature 1
        raise RagrouteError(
            "validation_fraction 0 holds no query out to calibrate on: give a fraction above 0, or "
            "calibrate=False"
        )
    if not C > 0:  # NaN too: it reached scikit-learn's refusal (a traceback from `route fit --C nan`)
        raise RagrouteError(f"C must be positive, got {C}")
    if encoder is None and (features is None or not features.width):
        raise RagrouteError(
            "nothing to learn from: give an encoder, or features with cheap or hashed columns"
        )


def _check_fit_numbers(*, none_bias: float, cheap_weight: float, hashed_weight: float, hidden: int) -> None:
    """Until session 43 a NaN or infinite ``none_bias`` fitted a router whose every probability was
    NaN, and a NaN weight or a ``hidden`` below 1 ended in scikit-learn's multi-line refusal."""
    for name, value in (
        ("none_bias", none_bias),
        ("cheap_weight", cheap_weight),
        ("hashed_weight", hashed_weight),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RagrouteError(f"{name} must be a finite number, got {value!r}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise RagrouteError(f"hidden must be an integer >= 1, got {hidden!r}")


def _design(
    texts: Sequence[str],
    encoder: Any,
    features: QueryFeatures | None,
    query_vectors: np.ndarray | None,
    cheap_weight: float,
    hashed_weight: float,
) -> tuple[np.ndarray, _Scaling]:
    """The scaled training matrix and the scaling that produced it."""
    blocks, offsets, scales = [], [], []
    if encoder is not None:
        vectors = encoder.encode_queries(list(texts), show_progress=False) if query_vectors is None else None
        vectors = np.asarray(query_vectors if vectors is None else vectors, dtype=np.float32)
        if vectors.shape != (len(texts), int(encoder.dim)):
            raise RagrouteError(
                f"query_vectors has shape {vectors.shape}, expected ({len(texts)}, {encoder.dim})"
            )
        blocks.append(vectors)
        offsets.append(np.zeros(vectors.shape[1]))
        scales.append(np.ones(vectors.shape[1]))
    features = features if features is not None else QueryFeatures()
    table = features.transform(texts)
    n_cheap = len(CHEAP_FEATURE_NAMES) if features.cheap else 0
    if n_cheap:
        cheap = table[:, :n_cheap]
        std = cheap.std(axis=0).astype(np.float64)
        std[std < 1e-6] = 1.0  # constant columns (never varied in training) stay at zero
        blocks.append(cheap)
        offsets.append(cheap.mean(axis=0).astype(np.float64))
        scales.append(cheap_weight / std)
    if features.hashed_dim:
        blocks.append(table[:, n_cheap:])
        offsets.append(np.zeros(features.hashed_dim))
        scales.append(np.full(features.hashed_dim, hashed_weight))
    scaling = _Scaling(np.concatenate(offsets), np.concatenate(scales))
    return scaling.apply(np.hstack(blocks).astype(np.float64)), scaling


def _sample_weights(target: np.ndarray, n_classes: int, class_weight: str | None) -> np.ndarray:
    if class_weight is None:
        return np.ones(len(target))
    if class_weight != "balanced":
        raise RagrouteError(f"unknown class_weight {class_weight!r}: expected 'balanced' or None")
    counts = np.bincount(target, minlength=n_classes).astype(np.float64)
    return len(target) / (n_classes * counts[target])


def _fit_network(
    x: np.ndarray, target: np.ndarray, weights: np.ndarray, *, model: str, C: float, hidden: int, seed: int
) -> tuple[_Network, bool]:
    """Fit with scikit-learn, keep only the numpy arrays; also say whether the solver converged."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in metrics["converged"] instead
        if model == "logreg":
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(C=C, max_iter=LOGREG_MAX_ITER, random_state=seed)
            clf.fit(x, target, sample_weight=weights)
            converged = int(np.max(clf.n_iter_)) < LOGREG_MAX_ITER
            return _Network([clf.coef_.T.copy()], [clf.intercept_.copy()]), converged
        from sklearn.neural_network import MLPClassifier

        mlp = MLPClassifier((hidden,), alpha=1.0 / C, max_iter=MLP_MAX_ITER, random_state=seed)
        mlp.fit(x, target, sample_weight=weights)
        network = _Network([w.copy() for w in mlp.coefs_], [b.copy() for b in mlp.intercepts_])
        return network, mlp.n_iter_ < MLP_MAX_ITER


def _relative_weights(network: _Network, n_labels: int) -> np.ndarray:
    """A linear model's weights per route minus their mean over routes (binary models: 0 for the first)."""
    w = network.weights[0]
    if w.shape[1] == 1 and n_labels == 2:
        w = np.hstack([np.zeros_like(w), w])
    return w - w.mean(axis=1, keepdims=True)


def _bias_vector(labels: Sequence[str], none_bias: float) -> np.ndarray:
    bias = np.zeros(len(labels))
    if NONE_ROUTE in labels:
        bias[list(labels).index(NONE_ROUTE)] = none_bias
    return bias


def _holdout_metrics(logits: np.ndarray, target: np.ndarray, temperature: float) -> dict[str, Any]:
    rows = np.arange(len(target))

    def nll(t: float) -> float:
        return float(-np.mean(np.log(np.clip(softmax(logits, t)[rows, target], 1e-12, None))))

    return {
        "n_validation": len(target),
        "validation_accuracy": round(float(np.mean(logits.argmax(axis=1) == target)), 4),
        "validation_nll_uncalibrated": round(nll(1.0), 4),
        "validation_nll": round(nll(temperature), 4),
    }


def _counts(labels: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for label in labels:
        out[label] = out.get(label, 0) + 1
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- loading helpers


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / ROUTER_FILE
    if not folder.is_dir():
        raise IndexFormatError(f"router folder {folder} not found")
    if not path.is_file():
        raise IndexFormatError(f"{path} not found: not a saved trained router")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path} is not valid JSON: {exc}") from None
    return check_router_settings(path, manifest)


def is_legacy_router(folder: Path) -> bool:
    """Whether ``folder`` holds a router as plain files (``router.json`` beside its weights, no
    artifact pointer: written by ragroute 0.1, or by :meth:`TrainedRouter.write_files` inside
    another artifact's build): loading, ``read_settings`` and ``inspect`` read it apart."""
    from ragroute.store import artifact_exists

    return (Path(folder) / ROUTER_FILE).is_file() and not artifact_exists(folder)


def check_router_settings(folder: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (a router.json, or a build's manifest params) when this version reads them: the
    router format and version are checked (a newer one: upgrade; another: refit), then the model."""
    from ragroute.store.manifest import newer_format_message

    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise IndexFormatError(f"{folder} is not a {FORMAT} manifest; refit it with `ragroute route fit`")
    version = settings.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise IndexFormatError(newer_format_message(str(folder), version, FORMAT_VERSION, "trained-router "))
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{folder} has trained-router format version {version!r}, expected {FORMAT_VERSION}; "
            "refit it with `ragroute route fit`"
        )
    if settings.get("kind") not in MODELS:
        raise IndexFormatError(
            f"{folder}: unknown model kind {settings.get('kind')!r}; refit it with `ragroute route fit`"
        )
    info = settings.get("encoder")  # as loading checks it: inspect read a string here as a mapping
    if info is not None and (
        not isinstance(info, dict) or "model_id" not in info or not _is_count(info.get("dim"), 1)
    ):
        raise IndexFormatError(f"{folder} is corrupt: bad encoder entry")
    problem = _saved_value_problem(settings)
    if problem:
        raise IndexFormatError(f"{folder} is corrupt: {problem}")
    return settings


def _saved_value_problem(settings: dict[str, Any]) -> str | None:
    """What is wrong with a saved router's labels, temperature or ``none_bias``, or None (as the
    pilot and quality routers check theirs). Each used to load: a temperature of 0 or below made
    every query certain of its best route (the softmax read it as 1e-9), a NaN one every
    probability NaN, a NaN ``none_bias`` the none route's, and a label saved twice folded two
    routes into one (probabilities summing below 1). A key missing is the loader's to report."""
    labels = settings.get("labels")
    if labels is not None:
        # a label saved as null or a number (or the labels as one string) was read as its text
        # (until session 51): a route named 'None', or one per letter
        listed = isinstance(labels, list) and all(isinstance(label, str) and label for label in labels)
        if not listed or len(set(labels)) != len(labels):
            shown = labels[:8] if isinstance(labels, list) else labels
            return f"labels must be distinct route names, not {shown!r}"
    for key, positive in (("temperature", True), ("none_bias", False)):
        value = settings.get(key, 1.0)
        if not is_finite_number(value) or (positive and value <= 0):
            return f"{key} must be {'a number above 0' if positive else 'a finite number'}, not {value!r}"
    # until session 51 each of these was a traceback (a TypeError, an AttributeError), and a huge
    # "layers" ran out of memory listing the arrays to read
    if "layers" in settings and not _is_count(settings["layers"], 1):
        return f"layers must be a whole number >= 1, not {settings['layers']!r}"
    for key in ("features", "params", "metrics"):
        if settings.get(key) is not None and not isinstance(settings[key], dict):
            return f"{key} must be a mapping, not {value_type_name(settings[key])}"
    return None


def _is_count(value: Any, least: int) -> bool:
    """Whether ``value`` is a whole number (not a boolean) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _read_weights(path: Path, layers: int) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise IndexFormatError(f"{path} not found: the router's weights are missing")
    try:
        data = npz_arrays(path)
        if layers > len(data):  # two arrays a layer: never list the names of more layers than that
            raise IndexFormatError(f"{path} is corrupt: {layers} layers, but {len(data)} arrays")
        needed = ["offset", "scale", *(f"{p}{i}" for i in range(layers) for p in ("W", "b"))]
        missing = [name for name in needed if name not in data]
        if missing or layers < 1:
            raise IndexFormatError(f"{path} is corrupt: missing arrays {', '.join(missing) or 'W0'}")
        return {name: np.asarray(data[name], dtype=np.float64) for name in needed}
    except IndexFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/npy errors come in many types; all mean "corrupt"
        raise IndexFormatError(f"{path} is corrupt: {type(exc).__name__}: {exc}") from None


def _check_shapes(
    folder: Path, network: _Network, scaling: _Scaling, width: int, n_labels: int, kind: str
) -> None:
    problem = None
    if any(w.ndim != 2 for w in network.weights):  # a vector's missing column was an IndexError
        problem = "a layer's weights are not a matrix"
    elif scaling.offset.shape != (width,) or scaling.scale.shape != (width,):
        problem = f"scaling has {scaling.offset.shape[0]} columns, features have {width}"
    elif network.weights[0].shape[0] != width:
        problem = f"first layer takes {network.weights[0].shape[0]} inputs, features have {width}"
    elif network.weights[-1].shape[1] not in (n_labels, 1 if n_labels == 2 else n_labels):
        problem = f"output layer has {network.weights[-1].shape[1]} columns for {n_labels} labels"
    elif kind == "logreg" and len(network.weights) != 1:
        problem = "a logistic regression has exactly one layer"
    elif any(w.shape[1] != after.shape[0] for w, after in zip(network.weights, network.weights[1:])):
        # an MLP whose layers do not chain loaded, and every query was numpy's traceback
        problem = "a layer's outputs are not the next layer's inputs"
    elif not (np.isfinite(scaling.offset).all() and np.isfinite(scaling.scale).all()):
        problem = "the input scaling is not finite"  # every probability was NaN (until session 51)
    else:
        for w, b in zip(network.weights, network.biases):
            if b.shape != (w.shape[1],) or not (np.isfinite(w).all() and np.isfinite(b).all()):
                problem = "layer shapes do not match or weights are not finite"
    if problem:
        raise IndexFormatError(f"{folder / WEIGHTS_FILE} is corrupt: {problem}")
