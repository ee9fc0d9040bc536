"""What expert routers learn from: how well each expert ranked each training query.

An expert router (:mod:`ragroute.route.pilot`, :mod:`ragroute.route.expert_quality`)
chooses among sources that hold the *same* documents but retrieve them
differently (expert encoders, BM25). Its training data is an
:class:`ExpertGains`: for each training query (labelled, or a pseudo-query cut
from the documents, which is labelled by construction), the nDCG@10 each expert
achieves, plus the query's vector under the routing encoder. Both routers also
share their persistence (artifact family ``router``: one ``.npz`` of arrays,
loaded without pickle, and the parameters in the manifest), and refuse to load
against an expert set whose names differ from the ones they were fitted on.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode.identity import check_fitted_encoder
from ragroute.errors import EncoderMismatchError, IndexFormatError, RagrouteError
from ragroute.exposure import internal_searches
from ragroute.route.base import softmax
from ragroute.store.arrays import read_arrays

ARTIFACT_FAMILY = "router"
ARRAYS_FILE = "arrays.npz"


def check_unique_expert_names(names: Sequence[str]) -> None:
    """One :class:`RagrouteError` line naming the expert names given more than once, if any (what an
    expert set and a pilot router both refuse)."""
    repeated = sorted(name for name, count in Counter(map(str, names)).items() if count > 1)
    if repeated:
        raise RagrouteError(f"expert names must be unique: {', '.join(repeated)} repeated")


@dataclass
class ExpertGains:
    """``gains[i, j]``: the quality (nDCG@10) expert ``labels[j]`` reached on query ``texts[i]``."""

    labels: list[str]
    texts: list[str]
    vectors: np.ndarray
    gains: np.ndarray

    def __post_init__(self) -> None:
        self.gains = np.asarray(self.gains, dtype=np.float64)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.gains.shape != (len(self.texts), len(self.labels)):
            raise RagrouteError(
                f"gains has shape {self.gains.shape}, expected {(len(self.texts), len(self.labels))}"
            )
        if len(self.vectors) != len(self.texts):
            raise RagrouteError(f"{len(self.vectors)} query vectors for {len(self.texts)} queries")
        if len(set(self.labels)) != len(self.labels):
            raise RagrouteError(f"expert names must be unique: {self.labels}")

    def subset(self, rows: Sequence[int]) -> ExpertGains:
        rows = list(rows)
        return ExpertGains(self.labels, [self.texts[i] for i in rows], self.vectors[rows], self.gains[rows])

    def winners(self) -> list[list[int]]:
        """Per query, the experts that rank it best (all of them when tied); an empty list for
        queries every expert handles equally (no expert is better there: nothing to learn)."""
        out = []
        for row in self.gains:
            best = [int(j) for j in np.flatnonzero(row >= row.max() - 1e-12)]
            # every expert within the tie tolerance of the best is a tie among all (until session 54
            # only exact equality was: gains 1e-13 apart made every expert a winner, not a skip)
            out.append([] if len(best) == len(row) else best)
        return out


def measure_gains(
    sources: Sequence[Any],
    contexts: Sequence[Any],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    k: int = 10,
    metric: str = "ndcg@10",
) -> np.ndarray:
    """``metric`` of every source (expert) on every query context: shape (queries, sources).

    A query with no relevant judgement (not :func:`~ragroute.evaluation.metrics.is_scorable`)
    gets 0 from every expert: it has no score, and averages over these rows leave it out."""
    from ragroute.evaluation.evaluators import hits_of_k_documents
    from ragroute.evaluation.metrics import evaluate_run

    gains = np.zeros((len(contexts), len(sources)))
    for j, source in enumerate(sources):
        with internal_searches():  # pseudo-queries: nothing is shown to a caller
            found = source.search_contexts(list(contexts), k)
            for i, (context, (hits, _)) in enumerate(zip(contexts, found)):
                # k documents, as the evaluators read them: an expert over chunks is searched deeper
                # where its k hits hold fewer (until session 50 scored on those few)
                hits = hits_of_k_documents(hits, k, functools.partial(_deeper, source, context))
                rels = qrels[context.id]
                # judged as the qrels name it: the chunk itself (pseudo-queries cut from chunks), else
                # its parent
                judged = (h.doc_id if h.doc_id in rels else (h.parent_id or h.doc_id) for h in hits)
                ranking = list(dict.fromkeys(judged))[:k]
                gains[i, j] = evaluate_run({context.id: ranking}, {context.id: rels}, (metric,))[metric]
    return gains


def _deeper(source: Any, context: Any, depth: int) -> list[Any]:
    """``source``'s ``depth`` hits for one query context."""
    return list(source.search_contexts([context], depth)[0][0])


def check_labels(
    fitted: Sequence[str], available: Sequence[str], where: str, failed: Sequence[str] = ()
) -> list[str]:
    """Refuse an expert router fitted on other experts than the pipeline offers; return the fitted
    experts that are configured but failed to load (``failed``): the router routes around them."""
    missing = sorted(set(fitted) - set(available) - set(failed))
    if missing:
        raise RagrouteError(
            f"{where}: the router was fitted on experts {', '.join(fitted)}, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not among the sources "
            f"({', '.join(available) or 'none'}); refit it on this expert set"
        )
    return sorted(set(fitted) & set(failed))


def mask_unavailable(scores: np.ndarray, labels: Sequence[str], unavailable: Sequence[str]) -> np.ndarray:
    """Routing scores with the ``unavailable`` experts' set to -inf (probability 0 after the softmax)."""
    if not unavailable:
        return scores
    out = np.array(scores, dtype=np.float64)
    out[:, [label in set(unavailable) for label in labels]] = -np.inf
    return out


def check_temperature(value: Any, where: str) -> float:
    """A softmax temperature: a finite number above 0, else one line (a saved router's NaN gave NaN
    probabilities, and 0 or below sent every query to one expert, until session 36)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise RagrouteError(f"{where}: temperature must be a number above 0, not {value!r}")
    return float(value)


def route_probabilities(
    scores: np.ndarray, labels: Sequence[str], unavailable: Sequence[str], temperature: float
) -> tuple[np.ndarray, list[str | None]]:
    """Per query, the softmax of ``scores`` (-inf: an expert that cannot be chosen) with the
    ``unavailable`` experts at probability 0, and a note per query (``None`` if none).

    A query none of whose available experts has a finite score (every expert with a pilot failed
    to load) gets equal probabilities over the available experts, noted, rather than the NaN of a
    softmax over nothing; with no expert available at all the router refuses in one line."""
    masked = np.atleast_2d(mask_unavailable(np.asarray(scores, dtype=np.float64), labels, unavailable))
    available = np.array([label not in set(unavailable) for label in labels])
    if not available.any():
        raise RagrouteError(
            f"every expert of the router ({', '.join(labels)}) failed to load: nothing to route to"
        )
    empty = ~np.isfinite(masked).any(axis=1)
    probs = np.zeros_like(masked)
    if (~empty).any():
        probs[~empty] = softmax(masked[~empty], temperature)
    probs[np.ix_(empty, available)] = 1.0 / available.sum()
    gone = ", ".join(sorted(unavailable)) or "none"
    note = (
        f"no available expert has a routing score (unavailable: {gone}): equal probabilities over "
        f"{', '.join(label for label, ok in zip(labels, available) if ok)}"
    )
    return probs, [note if e else None for e in empty.tolist()]


def save_router(
    path_dir: str | os.PathLike[str], kind: str, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> Path:
    """Publish an expert router's arrays and parameters as a new build of the artifact at ``path_dir``."""
    from ragroute.store import write_artifact

    with write_artifact(
        Path(path_dir),
        ARTIFACT_FAMILY,
        kind,
        name=Path(path_dir).name,
        params=dict(params),
        error=IndexFormatError,
    ) as build:
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(build.path / ARRAYS_FILE, **payload)
    return Path(path_dir)


def load_router(path_dir: str | os.PathLike[str], kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and parameters of the ``kind`` expert router saved at ``path_dir``."""
    from ragroute.store import read_artifact

    def read(snapshot: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if snapshot.manifest.kind != kind:
            raise IndexFormatError(f"{path_dir} holds a {snapshot.manifest.kind} router, not a {kind} router")
        arrays = read_arrays(snapshot.file(ARRAYS_FILE), f"{path_dir}: {ARRAYS_FILE}")
        return arrays, dict(snapshot.manifest.params)

    return read_artifact(Path(path_dir), read, family=ARTIFACT_FAMILY, error=IndexFormatError)


def check_router_labels(params: Mapping[str, Any], where: str) -> list[str]:
    """The expert names a saved router records: a non-empty list of distinct strings, or a one-line
    :class:`IndexFormatError` naming ``where``."""
    labels = params.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(label, str) for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise IndexFormatError(f"{where}: the manifest's 'labels' are not a list of distinct expert names")
    return list(labels)


def recorded_dim(params: Mapping[str, Any]) -> int | None:
    """The query-vector dimension a saved router's manifest records (``None`` if it records none)."""
    recorded = params.get("encoder")
    dim = recorded.get("dim") if isinstance(recorded, Mapping) else None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def check_query_width(dim: int, width: int, what: str, where: str, held: str) -> None:
    """:class:`EncoderMismatchError` when query vectors of ``dim`` (``what`` names their encoder)
    are not of the ``width`` an expert router saved without an encoder record reads (``held``: what
    the router holds of that width, ``has 128-d pilots``): the one check of the pilot and quality
    routers, at load, in ``ragroute config check`` and for query vectors a caller passes."""
    if int(dim) != int(width):
        raise EncoderMismatchError(
            f"{where} {held}, but {what} gives {int(dim)}-d query vectors: route with an encoder of "
            "that width, or refit the router with this one"
        )


def check_encoder_info(recorded: Mapping[str, Any] | None, encoder: Any, where: str) -> None:
    """The routing encoder must be the one the router was fitted with (same vector space): the check
    of every fitted router and gate (:func:`ragroute.encode.identity.check_fitted_encoder`: id,
    dimension, weights). An expert router loaded without an encoder is given its query vectors
    (``route_many(..., query_vectors=...)``): nothing to check then."""
    if encoder is not None:
        check_fitted_encoder(where, recorded, encoder)
