"""Signals a retrieval gate reads, none of which needs an LLM: each returns named numbers per query.

A gate signal turns a batch of queries into a float matrix, one column per named
value (``names``; a gate calls them ``<kind>.<name>``, e.g. ``knn_vote.share``).
Signals that learn from labelled examples (``needs_examples``) are fitted on
:class:`Examples` (texts, whether each needs retrieval, their embeddings) and
give *leave-one-out* (or out-of-fold) values for those same examples through
:meth:`GateSignal.fit_values`, so a gate stacked on them is never trained on a
query that votes for itself.

=====================  =====================================================================
kind                   values
=====================  =====================================================================
``knn_vote``           ``share`` (similarity-weighted share of the k nearest labelled queries
                       that needed retrieval), ``nearest_sim``
``bank_margin``        ``retrieve`` / ``answer`` (mean top-n cosine to each example bank),
                       ``margin`` (their difference)
``retrieval``          ``top``, ``gap`` (best minus second score of the best source),
                       ``spread`` (of the sources' top scores), ``router_max`` / ``router_none``
                       (the router's best and no-retrieval probabilities); needs sources
``rarity``             ``min_zipf`` / ``mean_zipf`` / ``rare_share`` (general-language
                       frequency of the content words, ``wordfreq`` Zipf scale),
                       ``entity_min_zipf``; with a corpus also ``max_idf``, ``mean_idf``,
                       ``unseen_share`` (document frequency in the indexed corpora)
``complexity``         length, entities, question words, multi-hop, temporal and action cues,
                       answer options (see :data:`COMPLEXITY_NAMES`)
``text_probe``         ``logit``: a linear probe (:class:`~ragroute.route.trained.TrainedRouter`
                       over embedding, cheap features and hashed n-grams), out-of-fold on
                       its own training examples
``tuned_probe``        ``logit``: MiniLM fine-tuned here as a retrieve/answer classifier
                       (:mod:`ragroute.gate.tuned_probe`; its own encoder), out-of-fold on
                       its own training examples; opt-in (fitting fine-tunes a model)
=====================  =====================================================================

Everything at decision time is numpy (plus a cached ``wordfreq`` lookup per word).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragroute.context import QueryContext
from ragroute.encode.base import row_products
from ragroute.errors import (
    IndexFormatError,
    RagrouteError,
    check_keys,
    check_setting,
    error_summary,
    is_finite_number,
    unknown_keys_message,
    value_type_name,
)
from ragroute.exposure import internal_searches
from ragroute.memo import scoped_memo
from ragroute.registry import load_plugins
from ragroute.route.features import CHEAP_FEATURE_NAMES, cheap_features, question_stem
from ragroute.route.folds import grouped_stratified_folds, normalized_text
from ragroute.route.labels import ANSWER_LABELS, is_answer_label  # noqa: F401 - ANSWER_LABELS re-exported by ragroute.gate
from ragroute.route.sources import hits_of
from ragroute.store.arrays import check_arrays, read_arrays


def needs_retrieval(label: Any) -> bool:
    """Whether a LABELS label asks for retrieval (a list label: its first item). Case, and hyphens or
    spaces for the underscore, are not read (``No-Tool`` is ``no_tool``: until session 38 it asked for
    retrieval, and a file labelling its negatives so trained them as positives without a word)."""
    if isinstance(label, (list, tuple)):
        label = label[0] if label else "none"
    return not is_answer_label(label)


def label_counts(labels: Sequence[Any], names: tuple[str, str] = ("retrieve", "answer")) -> str:
    """How many labels ask for retrieval (a skill) and how many not (``names``), with each label's
    count, most common first: ``20 retrieve (tool 20), 13 answer (no-tool 12, none 1)``, so that a
    label read the wrong way shows."""
    counts: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    for label in labels:
        shown = label[0] if isinstance(label, (list, tuple)) and label else label
        counts[needs_retrieval(label)][str(shown)] += 1

    def part(kind: bool, name: str) -> str:
        each = ", ".join(f"{label} {n}" for label, n in counts[kind].most_common(4))
        more = ", ..." if len(counts[kind]) > 4 else ""
        return f"{sum(counts[kind].values())} {name}" + (f" ({each}{more})" if each else "")

    return f"{part(True, names[0])}, {part(False, names[1])}"


@dataclass
class Examples:
    """Labelled example queries: ``retrieve[i]`` is True when query ``i`` needs retrieval.

    ``vectors`` are the gate encoder's embeddings of ``texts`` (``None`` when no
    signal embeds).
    """

    texts: list[str]
    retrieve: np.ndarray
    vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.retrieve = np.asarray(self.retrieve, dtype=bool)
        if len(self.texts) != len(self.retrieve):
            raise RagrouteError(f"{len(self.texts)} example texts but {len(self.retrieve)} labels")
        if self.vectors is not None:
            self.vectors = normalise(self.vectors)
            if self.vectors.shape[0] != len(self.texts):
                raise RagrouteError(f"{self.vectors.shape[0]} example vectors for {len(self.texts)} texts")

    @property
    def groups(self) -> np.ndarray:
        """A group id per example: identical texts (case and spacing ignored) share one."""
        ids: dict[str, int] = {}
        return np.asarray([ids.setdefault(normalized_text(t), len(ids)) for t in self.texts], dtype=np.int64)


def normalise(vectors: Any) -> np.ndarray:
    """Float32 rows scaled to unit length (zero rows stay zero)."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


# --------------------------------------------------------------------------- base


class GateSignal:
    """Base of the gate signals; see the module docstring.

    Subclasses set ``kind``, ``names`` and ``primary`` (the value a single-signal
    threshold gate reads), implement :meth:`values`, and, when they learn from
    examples, :meth:`fit` and :meth:`fit_values`. Their state (what :meth:`fit`
    learned) is saved by :meth:`save` into a folder of the gate's artifact.
    """

    kind: ClassVar[str] = ""
    primary: ClassVar[str] = ""
    uses_encoder: ClassVar[bool] = False
    needs_examples: ClassVar[bool] = False
    needs_sources: ClassVar[bool] = False

    @property
    def names(self) -> list[str]:
        raise NotImplementedError

    def columns(self) -> list[str]:
        """The gate's names of this signal's values: ``<kind>.<name>``."""
        return [f"{self.kind}.{name}" for name in self.names]

    def settings(self) -> dict[str, Any]:
        """The constructor settings (JSON), saved with a gate."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.settings()}

    def fit(self, examples: Examples) -> None:
        """Learn from labelled examples (signals that do not learn ignore them)."""

    def fit_values(self, examples: Examples) -> np.ndarray:
        """Fit on ``examples`` and return their values as unseen queries would get them."""
        self.fit(examples)
        return self.values(_contexts(examples.texts), examples.vectors)

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        """A float64 ``(len(contexts), len(names))`` matrix; ``vectors``: the gate encoder's, unit length."""
        raise NotImplementedError

    def explain(self, context: QueryContext, vector: np.ndarray | None) -> dict[str, Any]:
        """Extra detail for one decision (e.g. the nearest example); empty by default."""
        return {}

    def encoders(self) -> list[Any]:
        """Query encoders of its own whose vectors the signal reads from the query contexts (besides
        the gate encoder's vectors it is handed): none by default."""
        return []

    # ------------------------------------------------------------------ state

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What :meth:`fit` learned: JSON data and arrays."""
        return {}, {}

    def set_state(self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""

    def save(self, folder: Path) -> None:
        data, arrays = self.state()
        folder.mkdir(parents=True, exist_ok=True)
        if data:
            (folder / "state.json").write_text(json.dumps(data), encoding="utf-8")
        if arrays:
            payload: dict[str, Any] = dict(arrays)
            np.savez(folder / "arrays.npz", **payload)

    def check_state(
        self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str, encoder: Any
    ) -> None:
        """One line (naming ``where``, the signal's folder) when saved state is not what :meth:`state`
        writes: checked by :meth:`load` before :meth:`set_state` reads it. Nothing by default."""

    def load(self, folder: Path, *, encoder: Any = None) -> None:
        where = f"gate signal {self.kind} in {folder}"
        data = read_state(folder, where)
        arrays: dict[str, np.ndarray] = {}
        if (folder / "arrays.npz").is_file():
            arrays = read_arrays(folder / "arrays.npz", f"{where}: arrays.npz")
        # a file wrong but checksummed was a KeyError or numpy traceback, or a bank of the wrong
        # rows read silently (until session 49)
        self.check_state(data, arrays, where, encoder)
        self.set_state(data, arrays)


def read_state(folder: Path, where: str) -> dict[str, Any]:
    """A signal folder's ``state.json`` (``{}`` when it has none), or one line naming ``where``
    when it is not a JSON object."""
    path = folder / "state.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = error_summary(exc, 160)
        raise IndexFormatError(
            f"{where}: state.json is not readable JSON ({reason}); refit the gate"
        ) from None
    if not isinstance(data, dict):
        raise IndexFormatError(
            f"{where}: state.json holds {value_type_name(data)}, not an object; refit the gate"
        )
    return data


def check_bank_state(
    data: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str, encoder: Any
) -> None:
    """An example bank as :class:`KnnVoteSignal` and :class:`BankMarginSignal` save it: ``vectors``
    (one row per example, of the encoder's width when it is given), ``retrieve`` (one flag per
    row), and ``texts`` (a list of strings, in the state)."""
    texts = data.get("texts", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise IndexFormatError(
            f"{where}: state.json's 'texts' are not a list of example texts; refit the gate"
        )
    file = f"{where}: arrays.npz"
    check_arrays(arrays, file, {"vectors": (None, None)})
    check_arrays(arrays, file, {"retrieve": (len(arrays["vectors"]),)})
    dim = getattr(encoder, "dim", None)
    if isinstance(dim, int) and arrays["vectors"].shape[1] != dim:
        raise IndexFormatError(
            f"{file}: array 'vectors' has {arrays['vectors'].shape[1]} dimensions, the encoder {dim}"
        )


def _contexts(texts: Sequence[str]) -> list[QueryContext]:
    return [QueryContext(text) for text in texts]


def _need_vectors(signal: GateSignal, vectors: np.ndarray | None, n: int) -> np.ndarray:
    if vectors is None:
        raise RagrouteError(f"gate signal {signal.kind} needs query embeddings: give the gate an encoder")
    if vectors.shape[0] != n:
        raise RagrouteError(f"gate signal {signal.kind}: {vectors.shape[0]} vectors for {n} queries")
    return vectors


def _leave_one_out_sims(examples: Examples, block: int = 1024) -> Iterable[tuple[slice, np.ndarray]]:
    """Cosine similarities of each example to all examples, ``-inf`` on itself and identical texts."""
    vectors = _need_vectors(GateSignal(), examples.vectors, len(examples.texts))
    groups = examples.groups
    for start in range(0, len(groups), block):
        rows = slice(start, min(start + block, len(groups)))
        sims = vectors[rows] @ vectors.T
        sims[groups[rows, None] == groups[None, :]] = -np.inf
        yield rows, sims


# --------------------------------------------------------------------------- example similarities

_SIMS: contextvars.ContextVar[dict[tuple[bytes, bytes], np.ndarray] | None] = contextvars.ContextVar(
    "ragroute_gate_example_sims", default=None
)


def shared_example_similarities() -> contextlib.AbstractContextManager[None]:
    """Within the block, each query's cosine similarities to one example bank are computed once:
    the neighbour vote, the bank margin and the vote's explanation read the same product (the
    product over the examples is most of their cost). Scoped to one decision, like
    :func:`~ragroute.route.features.shared_cheap_features`."""
    return scoped_memo(_SIMS)


def bank_fingerprint(bank: np.ndarray) -> bytes:
    """Identifies an example matrix by content, so signals fitted on the same examples share products."""
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    return hashlib.blake2b(str(bank.shape).encode() + bank.tobytes(), digest_size=16).digest()


def example_similarities(bank: np.ndarray, fingerprint: bytes, vectors: np.ndarray) -> np.ndarray:
    """``vectors @ bank.T`` (:func:`~ragroute.encode.base.row_products`), read from and stored in
    the per-decision memo when one is open."""
    memo = _SIMS.get()
    if memo is None:
        return row_products(vectors, bank)
    keys = [(fingerprint, row.tobytes()) for row in vectors]
    rows = [memo.get(key) for key in keys]
    if all(row is not None for row in rows):
        return np.vstack(rows)  # type: ignore[arg-type]
    sims = row_products(vectors, bank)  # each row as the query's alone (until session 52 not)
    memo.update(zip(keys, sims))
    return sims


def rows_by_text(texts: Sequence[str]) -> dict[str, list[int]]:
    """Example rows by normalised text (case and spacing ignored: the groups of :class:`Examples`)."""
    rows: dict[str, list[int]] = {}
    for row, text in enumerate(texts):
        rows.setdefault(normalized_text(text), []).append(row)
    return rows


def same_text_rows(
    rows_of_text: Mapping[str, list[int]], contexts: Sequence[QueryContext]
) -> list[tuple[int, list[int]]]:
    """``(query index, example rows)`` for each query whose text is a labelled example's."""
    if not rows_of_text:
        return []
    found = ((i, rows_of_text.get(normalized_text(c.text))) for i, c in enumerate(contexts))
    return [(i, rows) for i, rows in found if rows]


def leave_own_text_out(
    sims: np.ndarray, rows_of_text: Mapping[str, list[int]], contexts: Sequence[QueryContext]
) -> np.ndarray:
    """``sims`` with ``-inf`` where an example has the query's own text: the example signals are
    fitted leave one out (:func:`_leave_one_out_sims`), so a query that repeats a labelled example
    is read as that example was when the gate was fitted, never with a similarity of 1.0 to
    itself, a value the fitted model never saw for it (the neighbour vote's ``nearest_sim`` read
    1.0 and a model that learned "a very close example -> retrieve" sent every answer-example to
    retrieval). ``sims`` may be the per-decision memo's rows: it is copied before any change."""
    same = same_text_rows(rows_of_text, contexts)
    if not same:
        return sims
    sims = sims.copy()
    for i, rows in same:
        sims[i, rows] = -np.inf
    return sims


class OwnExampleValues:
    """The out-of-fold values a probe gave its own training examples, by normalised text (case and
    spacing ignored; identical texts averaged). A probe reads a query that repeats one of its
    examples as that value, the one the gate was fitted on, as the neighbour vote and the banks
    leave the example out (:func:`leave_own_text_out`): the probe fitted on every example scored
    its own ones far more surely than any unseen query, so a gate deciding its own examples sent
    them elsewhere than fitted and a ``retrieval_rate`` read off them missed (0.94 for 1.0 on 50
    MetaTool queries, until session 40). Probes saved before keep none and read them in-sample."""

    def __init__(self, texts: Sequence[str] = (), values: Sequence[float] | np.ndarray = ()) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(texts) != len(values):
            raise RagrouteError(f"{len(texts)} example texts for {len(values)} out-of-fold values")
        self._by_text = {key: float(values[rows].mean()) for key, rows in rows_by_text(texts).items()}

    def __len__(self) -> int:
        return len(self._by_text)

    def value_of(self, context: QueryContext) -> float | None:
        """The out-of-fold value of the example ``context`` repeats (``None``: it repeats none)."""
        return self._by_text.get(normalized_text(context.text)) if self._by_text else None

    def apply(self, contexts: Sequence[QueryContext], values: np.ndarray) -> np.ndarray:
        """``values`` (one row per context, one column) with a repeated example's row replaced."""
        if not self._by_text:
            return values
        for i, context in enumerate(contexts):
            own = self.value_of(context)
            if own is not None:
                values[i, 0] = own
        return values

    def to_json(self) -> dict[str, list[Any]]:
        return {"texts": list(self._by_text), "values": list(self._by_text.values())}

    @classmethod
    def from_json(cls, data: Any, where: str) -> OwnExampleValues:
        if data is None:
            return cls()
        if not (
            isinstance(data, Mapping)
            and isinstance(data.get("texts"), list)
            and isinstance(data.get("values"), list)
            and all(isinstance(t, str) for t in data["texts"])
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data["values"])
        ):
            raise RagrouteError(f"{where}: the examples' out-of-fold values are damaged; refit the gate")
        try:
            return cls(data["texts"], data["values"])
        except RagrouteError as exc:
            raise RagrouteError(f"{where}: {exc}; refit the gate") from None

    def explain(self, context: QueryContext) -> dict[str, Any]:
        own = self.value_of(context)
        return {} if own is None else {"labelled_example": {"out_of_fold_logit": round(own, 4)}}


# --------------------------------------------------------------------------- neighbour vote


class KnnVoteSignal(GateSignal):
    """SKR-style vote: the ``k`` most similar labelled queries, each weighted by its similarity.

    A query whose text is one of the labelled examples (case and spacing ignored) is voted on
    without that example, as each example was when the gate was fitted (:func:`leave_own_text_out`);
    :meth:`explain` names the example and its label.
    """

    kind = "knn_vote"
    primary = "share"
    uses_encoder = True
    needs_examples = True

    def __init__(self, k: int = 10) -> None:
        if k < 1:
            raise RagrouteError(f"knn_vote: k must be >= 1, got {k}")
        self.k = int(k)
        self._set_bank(np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool), [])

    def _set_bank(self, vectors: np.ndarray, retrieve: np.ndarray, texts: list[str]) -> None:
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._retrieve = np.asarray(retrieve, dtype=bool)
        self._texts = texts
        self._fingerprint = bank_fingerprint(self._vectors)
        self._rows_of_text = rows_by_text(texts)

    @property
    def names(self) -> list[str]:
        return ["share", "nearest_sim"]

    def settings(self) -> dict[str, Any]:
        return {"k": self.k}

    def fit(self, examples: Examples) -> None:
        vectors = _need_vectors(self, examples.vectors, len(examples.texts))
        self._set_bank(vectors, examples.retrieve.copy(), list(examples.texts))

    def fit_values(self, examples: Examples) -> np.ndarray:
        self.fit(examples)
        out = np.zeros((len(examples.texts), 2))
        for rows, sims in _leave_one_out_sims(examples):
            out[rows] = self._vote(sims)
        return out

    def _vote(self, sims: np.ndarray) -> np.ndarray:
        k = min(self.k, sims.shape[1])
        if k == 0:
            return np.tile([0.5, 0.0], (sims.shape[0], 1))
        # plain indexing throughout: take_along_axis, where and column_stack cost more than the
        # vote itself for the one-query decision
        top = np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        near = sims[np.arange(sims.shape[0])[:, None], top]
        weights = (np.maximum(near, 0.0) + 1e-6) * np.isfinite(near)  # -inf: a left-out example
        votes = (weights * self._retrieve[top]).sum(axis=1)
        self._share_ties(sims, top, near, votes)
        out = np.empty((sims.shape[0], 2))
        out[:, 0] = votes / np.maximum(weights.sum(axis=1), 1e-12)
        out[:, 1] = near.max(axis=1)
        out[~np.isfinite(out[:, 1]), 1] = -1.0  # every neighbour left out
        return out

    def _share_ties(self, sims: np.ndarray, top: np.ndarray, near: np.ndarray, votes: np.ndarray) -> None:
        """Examples tied at the k-th similarity (duplicate examples, or another example's exact
        vector) vote together: ``argpartition`` took some of them by their position in the bank,
        so the vote moved with the examples' order (until session 42). Each tied example now votes
        for its share of the slots the tie fills; ``votes`` is corrected in place (the weights'
        sum does not change: the slots and each slot's weight are the same)."""
        kth = near.min(axis=1)
        at_kth = near == kth[:, None]
        uneven = np.flatnonzero(((sims == kth[:, None]).sum(axis=1) > at_kth.sum(axis=1)) & np.isfinite(kth))
        for i in uneven:  # rare: a loop over the tied rows only
            tied = np.flatnonzero(sims[i] == kth[i])
            taken = int(at_kth[i].sum())
            weight = max(float(kth[i]), 0.0) + 1e-6
            picked = float(self._retrieve[top[i][at_kth[i]]].sum())
            votes[i] += weight * (taken * float(self._retrieve[tied].mean()) - picked)

    def _similarities(self, contexts: Sequence[QueryContext], vectors: np.ndarray) -> np.ndarray:
        sims = example_similarities(self._vectors, self._fingerprint, vectors)
        return leave_own_text_out(sims, self._rows_of_text, contexts)

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        vectors = _need_vectors(self, vectors, len(contexts))
        return self._vote(self._similarities(contexts, vectors))

    def explain(self, context: QueryContext, vector: np.ndarray | None) -> dict[str, Any]:
        if vector is None or not len(self._texts):
            return {}
        out: dict[str, Any] = {}
        same = same_text_rows(self._rows_of_text, [context])
        if same:
            row = same[0][1][0]
            out["labelled_example"] = {"retrieve": bool(self._retrieve[row]), "left_out_of_vote": True}
        sims = self._similarities([context], vector[None])[0]
        if np.isfinite(sims).any():
            best = int(np.argmax(sims))
            out.update(nearest=self._texts[best][:80], nearest_retrieve=bool(self._retrieve[best]))
        return out

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"texts": self._texts}, {"vectors": self._vectors, "retrieve": self._retrieve}

    def check_state(
        self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str, encoder: Any
    ) -> None:
        check_bank_state(data, arrays, where, encoder)

    def set_state(self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        texts = list(data.get("texts", []))
        if texts and len(texts) != len(arrays["vectors"]):  # explain() would name the wrong example
            raise RagrouteError(
                f"gate signal knn_vote: {len(texts)} example texts for {len(arrays['vectors'])} "
                "example vectors: the saved gate is damaged; refit it"
            )
        self._set_bank(arrays["vectors"], arrays["retrieve"], texts)


# --------------------------------------------------------------------------- bank margin


class BankMarginSignal(GateSignal):
    """Mean of the ``top_n`` best cosine similarities to the "needs retrieval" example bank, to the
    "answerable directly" bank, and their difference (as vLLM Semantic Router's complexity margin).

    A query repeating a labelled example is measured without it, as the example was when fitted
    (:func:`leave_own_text_out`; gates saved before session 36 keep no texts and do not)."""

    kind = "bank_margin"
    primary = "margin"
    uses_encoder = True
    needs_examples = True

    def __init__(self, top_n: int = 3) -> None:
        if top_n < 1:
            raise RagrouteError(f"bank_margin: top_n must be >= 1, got {top_n}")
        self.top_n = int(top_n)
        self._set_bank(np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=bool), [])

    def _set_bank(self, vectors: np.ndarray, retrieve: np.ndarray, texts: list[str]) -> None:
        """All examples in one matrix (the vote's, when fitted on the same examples: one product
        serves both), which of them need retrieval, and their texts."""
        self._texts = texts
        self._rows_of_text = rows_by_text(texts)
        self._bank = np.ascontiguousarray(vectors, dtype=np.float32)
        self._is_retrieve = np.asarray(retrieve, dtype=bool)
        self._retrieve_rows = np.flatnonzero(self._is_retrieve)
        self._answer_rows = np.flatnonzero(~self._is_retrieve)
        self._fingerprint = bank_fingerprint(self._bank)

    @property
    def names(self) -> list[str]:
        return ["retrieve", "answer", "margin"]

    def settings(self) -> dict[str, Any]:
        return {"top_n": self.top_n}

    def fit(self, examples: Examples) -> None:
        vectors = _need_vectors(self, examples.vectors, len(examples.texts))
        if examples.retrieve.all() or not examples.retrieve.any():
            raise RagrouteError("bank_margin needs examples of both kinds (retrieve and answer directly)")
        self._set_bank(vectors, examples.retrieve.copy(), list(examples.texts))

    def fit_values(self, examples: Examples) -> np.ndarray:
        self.fit(examples)
        out = np.zeros((len(examples.texts), 3))
        for rows, sims in _leave_one_out_sims(examples):
            out[rows] = self._margin(sims[:, examples.retrieve], sims[:, ~examples.retrieve])
        return out

    def _top_mean(self, sims: np.ndarray) -> np.ndarray:
        n = min(self.top_n, sims.shape[1])
        if n == 0:
            return np.zeros(sims.shape[0])
        top = np.partition(sims, sims.shape[1] - n, axis=1)[:, -n:]
        if np.isfinite(top).all():  # -inf marks left-out examples (their own text)
            return top.mean(axis=1)
        # the mean of each row's finite values, 0 for a row with none (np.nanmean warned of those
        # rows, which np.errstate does not silence: a RuntimeWarning on small training sets)
        finite = np.isfinite(top)
        counts = finite.sum(axis=1)
        sums = np.where(finite, top, 0.0).sum(axis=1)
        # in the similarities' dtype, divided as np.nanmean divides (float32 sums over int counts,
        # cast back): the same bits as before, and as the all-finite path's mean
        out = np.zeros(len(sums), dtype=top.dtype)
        return np.divide(sums, counts, out=out, where=counts > 0, casting="unsafe")

    def _margin(self, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
        retrieve, answer = self._top_mean(pos), self._top_mean(neg)
        # float64 as every signal's values (the float32 means, widened exactly): until session 55
        # float32, so a threshold gate over the margin compared it to its cut in float32 and its
        # trace showed 0.666700005531311 for 0.6667
        return np.column_stack([retrieve, answer, retrieve - answer]).astype(np.float64)

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        vectors = _need_vectors(self, vectors, len(contexts))
        sims = example_similarities(self._bank, self._fingerprint, vectors)
        sims = leave_own_text_out(sims, self._rows_of_text, contexts)
        return self._margin(sims[:, self._retrieve_rows], sims[:, self._answer_rows])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"texts": self._texts}, {"vectors": self._bank, "retrieve": self._is_retrieve}

    def check_state(
        self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str, encoder: Any
    ) -> None:
        if "vectors" in arrays or "retrieve_bank" not in arrays:
            check_bank_state(data, arrays, where, encoder)
            return
        # gates saved before the banks became one matrix: two banks of one width
        file = f"{where}: arrays.npz"
        check_arrays(arrays, file, {"retrieve_bank": (None, None)})
        check_arrays(arrays, file, {"answer_bank": (None, arrays["retrieve_bank"].shape[1])})

    def set_state(self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        if "vectors" in arrays:
            texts = list(data.get("texts", []))
            if texts and len(texts) != len(arrays["vectors"]):
                texts = []  # not this bank's: compare no text rather than the wrong rows
            self._set_bank(arrays["vectors"], arrays["retrieve"], texts)
            return
        # gates saved before the banks became one matrix: the two banks, stacked
        retrieve, answer = (np.asarray(arrays[k], dtype=np.float32) for k in ("retrieve_bank", "answer_bank"))
        mask = np.r_[np.ones(len(retrieve), dtype=bool), np.zeros(len(answer), dtype=bool)]
        self._set_bank(np.vstack([retrieve, answer]), mask, [])


# --------------------------------------------------------------------------- retrieval confidence


class RetrievalConfidenceSignal(GateSignal):
    """How well the pipeline's sources (and router) answer the query, before deciding to use them.

    Each source is searched for ``k`` hits (one batched call per source): ``top`` is
    the best score over sources, ``gap`` the best source's first minus second
    score, ``spread`` the max minus min of the sources' top scores (0 with one
    source). With a router, ``router_max`` is its highest route probability and
    ``router_none`` its probability of the no-retrieval route (no ``router`` given: the router of
    the pipeline whose gate stage runs it, :func:`~ragroute.pipeline.stages.gate_router`). Costs one shallow
    retrieval per source: use it when that is cheaper than a wrong answer.
    """

    kind = "retrieval"
    primary = "top"
    needs_sources = True

    def __init__(self, sources: Sequence[Any] = (), router: Any = None, k: int = 3) -> None:
        self.sources = list(sources)
        self.router = router
        self.k = int(k)

    @property
    def names(self) -> list[str]:
        return ["top", "gap", "spread", "router_max", "router_none"]

    def settings(self) -> dict[str, Any]:
        return {"k": self.k}

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        if not self.sources:
            raise RagrouteError("gate signal retrieval needs the pipeline's sources")
        contexts = list(contexts)
        tops = np.full((len(contexts), len(self.sources)), np.nan)
        gaps = np.zeros((len(contexts), len(self.sources)))
        for j, source in enumerate(self.sources):
            # a source outside a caller's scopes is not read for that caller's queries (its scores
            # would tell whether it holds a match); documents outside them are filtered by the search
            with internal_searches():  # a probe shows the caller nothing: no exposure ledger counts it
                found = hits_of(source, contexts, self.k)
            for i, hits in enumerate(found):
                if hits:
                    tops[i, j] = hits[0].score
                    gaps[i, j] = hits[0].score - hits[1].score if len(hits) > 1 else hits[0].score
        out = np.zeros((len(contexts), 5))
        for i in range(len(contexts)):
            row = tops[i]
            if np.isfinite(row).any():
                best = int(np.nanargmax(row))
                out[i, 0] = row[best]
                out[i, 1] = gaps[i, best]
                out[i, 2] = float(np.nanmax(row) - np.nanmin(row))
        from ragroute.pipeline.stages import gate_router

        router = self.router if self.router is not None else gate_router()
        if router is not None:
            from ragroute.route.base import NONE_ROUTE, route_contexts, router_for

            hidden_of = {
                c.scopes: frozenset(s.name for s in self.sources if not s.visible_to(c.scopes))
                for c in contexts
            }
            from ragroute.pipeline.stages import visible_routes

            # each caller's queries routed as the route stage routes them: by the router restricted to
            # the routes it may see where the router offers that (until session 51 the router as it
            # is: an LLM router's prompt named the hidden sources, and left the visible routes tied
            # when the LLM took one)
            decisions: list[Any] = [None] * len(contexts)
            by_hidden: dict[frozenset[str], list[int]] = {}
            for i, context in enumerate(contexts):
                by_hidden.setdefault(hidden_of[context.scopes], []).append(i)
            for hidden, rows in by_hidden.items():
                routed = route_contexts(router_for(router, hidden), [contexts[i] for i in rows])
                for i, decision in zip(rows, routed):
                    decisions[i] = decision
            for i, decision in enumerate(decisions):
                routes = {r: p for r, p in decision.routes.items() if r not in hidden_of[contexts[i].scopes]}
                if len(routes) < len(decision.routes) and routes:
                    # as the route stage renormalises them: from the router's unrounded log-probabilities
                    # (until session 49 every visible route rounded to 0 beside a hidden winner, and
                    # router_max read 0 exactly when a hidden source had won)
                    routes = visible_routes(routes, decision.log_routes())
                total = sum(routes.values())  # renormalised over what the caller may see
                out[i, 3] = max(routes.values(), default=0.0) / total if total > 0 else 0.0
                out[i, 4] = routes.get(NONE_ROUTE, 0.0) / total if total > 0 else 0.0
        return out


# --------------------------------------------------------------------------- rarity

# words of any script (letters, inner apostrophes and hyphens) and numbers; until session 36 only
# ASCII letters, so a Cyrillic, Greek or CJK query had no content word and read as the commonest
# words (the LLM gate's default fallback answered it without retrieval), and "gründete" was "gr" +
# "ndete"
_LETTER = r"[^\W\d_]"
_TOKEN = re.compile(rf"{_LETTER}(?:{_LETTER}|['’-])*{_LETTER}|{_LETTER}|\d+")
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
    ]
)
COMMON_ZIPF = 7.0
"""The Zipf value given when a query has no content word (as common as the commonest words)."""
RARE_ZIPF = 3.5
"""Content words below this Zipf value (about 3 per million words) count as rare."""


@functools.lru_cache(maxsize=1 << 17)
def zipf(word: str) -> float:
    """General-language frequency of ``word`` on the Zipf scale (log10 per billion words; 0 = unseen).

    Exactly ``wordfreq.zipf_frequency(word, "en")``. A lower-case ASCII word is its own single
    token, so its value is read straight from wordfreq's frequency table with wordfreq's rounding
    (its tokenizer costs ~20 us per word, most of the rarity signal's time on a new query)."""
    if word.isascii() and word.isalpha() and word.islower():
        freq = max(_english_frequencies().get(word, 0.0), 1e-9)  # 1e-9: zipf_to_freq(0), the minimum
        freq = round(freq, math.floor(-math.log(freq, 10)) + 3)  # wordfreq keeps 3 significant digits
        return round(math.log(freq, 10) + 9, 2)
    from wordfreq import zipf_frequency

    return float(zipf_frequency(word, "en"))


def forget_queries() -> None:
    """Empty the caches kept by query text and word (:func:`_content_words`, :func:`zipf`), so the
    next decision costs what a new query's does; what every query reads (wordfreq's table) is kept.
    A benchmark times its gates after this: the scoring pass it makes first had read every timed
    query, and until session 44 the latency it printed was that of queries seen before."""
    _content_words.cache_clear()
    zipf.cache_clear()


@functools.lru_cache(maxsize=1)
def _english_frequencies() -> dict[str, float]:
    from wordfreq import get_frequency_dict

    return get_frequency_dict("en", "best")


def content_words(text: str) -> tuple[list[str], list[str]]:
    """Lower-cased content words (no stop words, no bare numbers) and the entity-like ones among them
    (capitalised after the first word, or all capitals)."""
    content, entities = _content_words(text)
    return list(content), list(entities)


def _rarity_words(text: str) -> list[str]:
    """The words of ``text`` as the rarity signal reads them: of its NFKC form, so full-width ``ＰＡＲＩＳ``
    (a Chinese or Japanese keyboard in full-width mode) is ``PARIS`` and the ligature ``ﬁ`` is
    ``fi``. Until session 54 such a word was none of wordfreq's and read Zipf 0, the rarest."""
    return _TOKEN.findall(text if text.isascii() else unicodedata.normalize("NFKC", text))


def _rarity_lower(word: str) -> str:
    """``word`` lower-cased, a dotted capital I as ``i`` (``İSTANBUL`` is ``istanbul``: ``str.lower``
    writes an ``i`` and a combining dot, a word wordfreq ranks far rarer, until session 54)."""
    return word.lower().replace("i\u0307", "i")


@functools.lru_cache(maxsize=4096)
def _content_words(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    words = _rarity_words(question_stem(text))
    content, entities = [], []
    for position, word in enumerate(words):
        lower = _rarity_lower(word)
        if lower in STOPWORDS or word.isdigit() or len(word) < 2:
            continue
        content.append(lower)
        if (position > 0 and word[0].isupper()) or (len(word) > 1 and word.isupper()):
            entities.append(lower)
    return tuple(content), tuple(entities)


def public_documents(sources: Sequence[Any]) -> list[Any]:
    """The documents of ``sources`` every caller may read: of public sources, without access labels."""
    from ragroute.scopes import is_public

    return [
        doc
        for source in sources
        if not getattr(source, "access", None)
        for doc in source.documents
        if is_public(getattr(doc, "metadata", None))
    ]


class RaritySignal(GateSignal):
    """Long-tail queries need retrieval (Mallen et al.): how rare the query's words and entities are.

    General language: ``wordfreq`` Zipf frequencies (cached per word). Indexed
    corpora: document frequencies counted by :meth:`fit_corpus` (or from
    ``documents`` at construction); without a corpus those three values are 0.
    """

    kind = "rarity"
    primary = "min_zipf"

    def __init__(self, documents: Iterable[Any] | None = None) -> None:
        # (document frequency per word, documents counted), swapped as one: a query scored in
        # another thread while the counts were refitted could read the new counts with the old
        # number of documents (they were two attributes, set one after the other, until session 49)
        self._corpus: tuple[dict[str, int], int] = ({}, 0)
        self._sources: list[Any] = []  # what :meth:`following` counts, and their content then
        self._counted: list[Any] = []
        if documents is not None:
            self.fit_corpus(getattr(d, "text", d) for d in documents)

    @classmethod
    def following(cls, sources: Sequence[Any]) -> RaritySignal:
        """Counts over the public documents of ``sources`` (:func:`public_documents`), counted
        again whenever their documents change (added, deleted or relabelled)."""
        signal = cls()
        signal._sources = list(sources)
        signal._follow()
        return signal

    def _follow(self) -> None:
        if not self._sources:
            return
        from ragroute.index.base import content_key

        contents = [content_key(s) for s in self._sources]
        if contents != self._counted:
            self.fit_corpus(getattr(d, "text", d) for d in public_documents(self._sources))
            self._counted = contents

    @property
    def names(self) -> list[str]:
        return [
            "min_zipf",
            "mean_zipf",
            "rare_share",
            "entity_min_zipf",
            "max_idf",
            "mean_idf",
            "unseen_share",
        ]

    @property
    def has_corpus(self) -> bool:
        return self._corpus[1] > 0

    def settings(self) -> dict[str, Any]:
        """``corpus: true`` when it counts words in indexed documents (its counts are its state)."""
        return {"corpus": True} if self.has_corpus else {}

    def fit_corpus(self, texts: Iterable[str]) -> RaritySignal:
        """Count in how many of ``texts`` each word occurs."""
        df: dict[str, int] = {}
        n = 0
        for text in texts:
            n += 1
            for word in {_rarity_lower(w) for w in _rarity_words(str(text))}:
                df[word] = df.get(word, 0) + 1
        self._corpus = (df, n)
        return self

    def _row(self, text: str) -> list[float]:
        self._follow()
        content, entities = _content_words(text)
        if not content:
            return [COMMON_ZIPF, COMMON_ZIPF, 0.0, COMMON_ZIPF, 0.0, 0.0, 0.0]
        freqs = [zipf(w) for w in content]
        row = [
            min(freqs),
            sum(freqs) / len(freqs),
            sum(f < RARE_ZIPF for f in freqs) / len(freqs),
            min((zipf(w) for w in entities), default=COMMON_ZIPF),
        ]
        df, n_docs = self._corpus
        if n_docs:
            dfs = [df.get(w, 0) for w in content]
            idfs = [math.log((n_docs + 1) / (d + 1)) for d in dfs]
            row += [max(idfs), sum(idfs) / len(idfs), sum(d == 0 for d in dfs) / len(dfs)]
        else:
            row += [0.0, 0.0, 0.0]
        return row

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        return np.asarray([self._row(c.text) for c in contexts], dtype=np.float64).reshape(-1, 7)

    def explain(self, context: QueryContext, vector: np.ndarray | None) -> dict[str, Any]:
        content, _ = _content_words(context.text)
        if not content:
            return {
                "content_words": 0,
                "note": f"no content word: read as the commonest words (Zipf {COMMON_ZIPF})",
            }
        rarest = min(content, key=zipf)
        return {"rarest_word": rarest, "rarest_zipf": round(zipf(rarest), 2)}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        df, n_docs = self._corpus
        return ({"n_docs": n_docs, "df": df} if n_docs else {}), {}

    def check_state(
        self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str, encoder: Any
    ) -> None:
        n_docs, df = data.get("n_docs", 0), data.get("df") or {}

        def count(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        if not count(n_docs) or not isinstance(df, dict) or not all(count(v) for v in df.values()):
            raise IndexFormatError(
                f"{where}: state.json's corpus counts ('n_docs', 'df') are not counts; refit the gate"
            )

    def set_state(self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        df = {str(k): int(v) for k, v in (data.get("df") or {}).items()}
        self._corpus = (df, int(data.get("n_docs", 0)))


# --------------------------------------------------------------------------- complexity

_CHEAP_USED = (
    "log_words",
    "cap_ratio",
    "log_capitalised",
    "ends_question",
    "qw_none",
    "qw_what",
    "qw_who",
    "qw_when",
    "qw_where",
    "qw_which",
    "qw_how",
    "qw_why",
    "qw_be",
    "qw_do",
    "qw_modal",
    "has_digit",
    "has_year",
    "has_choices",
    "kw_comparison",
    "kw_exam",
    "kw_howto",
    "kw_person",
    "kw_time",
    "kw_visual",
)
_CHEAP_COLUMNS = [CHEAP_FEATURE_NAMES.index(name) for name in _CHEAP_USED]
_MULTIHOP = re.compile(
    r"\b(?:both|and|also|same|whose|than|compared?|between|before|after|older|younger|earlier|later|"
    r"first|last|the \w+ of the|of the \w+ (?:who|that|which))\b",
    re.IGNORECASE,
)
_TEMPORAL = re.compile(
    r"\b(?:latest|current(?:ly)?|today|tonight|tomorrow|now|recent(?:ly)?|this (?:week|month|year)|"
    r"upcoming|trending|live|real[- ]time|price|prices|weather|news|stock|forecast|schedule)\b",
    re.IGNORECASE,
)
_ACTION = re.compile(
    r"^(?:please |hey,? |hi,? )?(?:can|could|would|will) you\b|\b(?:help me|find|search|look up|book|"
    r"check|order|buy|reserve|download|convert|translate|track|show me|get me|send|schedule|recommend|"
    r"suggest|compare)\b",
    re.IGNORECASE,
)
COMPLEXITY_NAMES = (*_CHEAP_USED, "multihop_cues", "temporal_cues", "action_cues", "entities")
"""Values of the complexity signal: cheap router features (:mod:`ragroute.route.features`: length,
capitalised words, question word, digits, answer options, keyword groups) plus log counts of
multi-hop cues, temporal (freshness) cues, action requests, and entity-like words."""


def multihop_cues(text: str) -> int:
    """How many multi-hop cues (``and``/``both``/comparatives/nested ``of the``...) ``text`` holds."""
    return len(_MULTIHOP.findall(question_stem(text)))


class ComplexitySignal(GateSignal):
    """Query complexity and form (Adaptive-RAG's cue): length, entities, question words, multi-hop,
    temporal and action cues, answer options."""

    kind = "complexity"
    primary = "multihop_cues"

    @property
    def names(self) -> list[str]:
        return list(COMPLEXITY_NAMES)

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        texts = [c.text for c in contexts]
        cheap = cheap_features(texts)[:, _CHEAP_COLUMNS].astype(np.float64)
        extra = np.zeros((len(texts), 4))
        for i, text in enumerate(texts):
            stem = question_stem(text)
            extra[i] = [
                math.log1p(len(_MULTIHOP.findall(stem))),
                math.log1p(len(_TEMPORAL.findall(stem))),
                math.log1p(len(_ACTION.findall(stem))),
                math.log1p(len(_content_words(text)[1])),
            ]
        return np.hstack([cheap, extra])


# --------------------------------------------------------------------------- text probe


#: the file of a text probe's folder holding its examples' out-of-fold logits (:class:`OwnExampleValues`)
OWN_EXAMPLES_FILE = "own_examples.json"

PROBE_C_GRID = (0.3, 1.0, 3.0, 10.0)
"""The strengths ``C: auto`` chooses among (by out-of-fold log loss on the training examples)."""


class TextProbeSignal(GateSignal):
    """A linear probe over the query text: a binary :class:`~ragroute.route.trained.TrainedRouter`
    (embedding, cheap features and ``hashed_dim`` hashed n-grams, balanced class weights); the value
    is its retrieve-minus-answer logit. Its own examples get out-of-fold logits (``folds``-fold).

    ``C``: the logistic regression's inverse regularisation, or ``"auto"`` (the default): the value of
    :data:`PROBE_C_GRID` whose out-of-fold logits have the lowest class-balanced log loss on the
    training examples (the chosen value: ``chosen_C``, also in the saved probe's manifest).
    """

    kind = "text_probe"
    primary = "logit"
    uses_encoder = True
    needs_examples = True

    def __init__(
        self, hashed_dim: int = 4096, C: float | str = "auto", folds: int = 5, encoder: Any = None
    ) -> None:
        self.hashed_dim = int(hashed_dim)
        if C != "auto" and not isinstance(C, (int, float)):
            raise RagrouteError(f'gate signal text_probe: C must be a number or "auto", not {C!r}')
        self.C: float | str = C if C == "auto" else float(C)
        self.chosen_C: float | None = None if C == "auto" else float(C)
        self.folds = int(folds)
        self.encoder = encoder
        self._router: Any = None
        self._own = OwnExampleValues()

    @property
    def names(self) -> list[str]:
        return ["logit"]

    def settings(self) -> dict[str, Any]:
        return {"hashed_dim": self.hashed_dim, "C": self.C, "folds": self.folds}

    def _options(self, C: float) -> dict[str, Any]:
        from ragroute.route.features import QueryFeatures

        return {"features": QueryFeatures(hashed_dim=self.hashed_dim), "C": C}

    @staticmethod
    def _labels(examples: Examples) -> list[str]:
        return ["retrieve" if r else "answer" for r in examples.retrieve]

    def fit(self, examples: Examples) -> None:
        if self.chosen_C is None:  # C: auto, not chosen yet
            self.fit_values(examples)
            return
        self._fit(examples, self.chosen_C)

    def _fit(self, examples: Examples, C: float) -> None:
        from ragroute.route.trained import TrainedRouter

        self._router = TrainedRouter.fit(
            examples.texts,
            self._labels(examples),
            self.encoder if examples.vectors is not None else None,
            query_vectors=examples.vectors,
            calibrate=False,
            **self._options(C),
        )

    def _out_of_fold(self, examples: Examples, C: float) -> np.ndarray:
        """Each example's retrieve-minus-answer logit from probes fitted on the other folds."""
        from ragroute.route.trained import cross_val_logits

        labels = self._labels(examples)
        counts = min(labels.count("retrieve"), labels.count("answer"))
        folds = max(2, min(self.folds, counts))
        route_labels, logits = cross_val_logits(
            examples.texts,
            labels,
            self.encoder if examples.vectors is not None else None,
            folds=folds,
            query_vectors=examples.vectors,
            **self._options(C),
        )
        logits = np.where(np.isfinite(logits), logits, 0.0)
        return logits[:, route_labels.index("retrieve")] - logits[:, route_labels.index("answer")]

    def fit_values(self, examples: Examples) -> np.ndarray:
        if self.C != "auto":
            self.chosen_C = float(self.C)
            diff = self._out_of_fold(examples, self.chosen_C)
        else:
            retrieve = np.asarray(examples.retrieve, dtype=bool)
            best = None
            for C in PROBE_C_GRID:
                candidate = self._out_of_fold(examples, C)
                loss = balanced_log_loss(candidate, retrieve)
                if best is None or loss < best[0]:
                    best = (loss, C, candidate)
            assert best is not None
            _, self.chosen_C, diff = best
        self._fit(examples, self.chosen_C)
        self._own = OwnExampleValues(examples.texts, diff)
        return diff[:, None]

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        if self._router is None:
            raise RagrouteError("gate signal text_probe is not fitted")
        texts = [c.text for c in contexts]
        logits = self._router.logits(texts, query_vectors=vectors if self._router.encoder_info else None)
        labels = self._router.labels
        diff = (logits[:, labels.index("retrieve")] - logits[:, labels.index("answer")])[:, None]
        return self._own.apply(contexts, diff)  # a repeated example: its out-of-fold logit

    def explain(self, context: QueryContext, vector: np.ndarray | None) -> dict[str, Any]:
        return self._own.explain(context)

    def save(self, folder: Path) -> None:
        self._router.write_files(folder / "router")  # plain files: the gate's build checksums them
        if len(self._own):
            (folder / OWN_EXAMPLES_FILE).write_text(json.dumps(self._own.to_json()), encoding="utf-8")

    def load(self, folder: Path, *, encoder: Any = None) -> None:
        from ragroute.route.trained import TrainedRouter

        self.encoder = encoder
        self._router = TrainedRouter.load(folder / "router", encoder)
        if self.C == "auto":
            self.chosen_C = float(self._router.params["C"])
        own = folder / OWN_EXAMPLES_FILE
        where = f"gate signal text_probe in {folder}: {OWN_EXAMPLES_FILE}"
        try:
            data = json.loads(own.read_text(encoding="utf-8")) if own.is_file() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RagrouteError(f"{where} is corrupt; refit the gate") from None
        self._own = OwnExampleValues.from_json(data, where)


def balanced_log_loss(logits: np.ndarray, positive: np.ndarray) -> float:
    """Mean over the two classes of the log loss of ``sigmoid(logits)`` on that class's rows."""
    logits = np.asarray(logits, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    losses = np.where(positive, np.logaddexp(0.0, -logits), np.logaddexp(0.0, logits))
    return float(np.mean([losses[positive].mean(), losses[~positive].mean()]))


_TUNED_FITS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ragroute_tuned_probe_fits", default=None
)


def shared_tuned_probe_fits() -> contextlib.AbstractContextManager[None]:
    """Within the block, a tuned probe fitted once on some examples with some settings is reused by
    every gate fitted on the same examples with the same settings (a benchmark comparing gates
    that share the signal fine-tunes it once per fold, not once per gate)."""
    return scoped_memo(_TUNED_FITS)


class TunedProbeSignal(GateSignal):
    """A query classifier fine-tuned here (:mod:`ragroute.gate.tuned_probe`): the bundled MiniLM
    and a linear head trained on the gate's examples; the value is its retrieve-minus-answer logit.

    It reads the vectors of its *own* fine-tuned encoder (cached on the query contexts like any
    encoder's, see :meth:`encoders`), not the gate encoder's. Its examples get out-of-fold logits
    (``folds`` fine-tunes, each on the other folds); the probe that decides is ``final``:
    ``"refit"`` (default) one more fine-tune on all examples, or ``"soup"`` the fold models' weights
    averaged (:func:`~ragroute.gate.tuned_probe.soup`, on the scale the gate was calibrated on, one
    fine-tune fewer). Minutes on a CPU for a few thousand queries.

    ``members`` > 1 makes it an ensemble: every fine-tune is done ``members`` times with seeds
    ``0..members-1`` (other head initialisation and batch order) and the value is the mean of their
    logits, out of fold as in use (with ``final: refit`` each query is then encoded by every member;
    ``final: soup`` averages all members' fold models into one). ``members`` times the fitting.
    """

    kind = "tuned_probe"
    primary = "logit"
    needs_examples = True

    def __init__(
        self,
        epochs: int = 3,
        learning_rate: float = 3e-5,
        folds: int = 3,
        batch_size: int = 16,
        final: str = "refit",
        members: int = 1,
        device: str = "cpu",
    ) -> None:
        from ragroute.gate.tuned_probe import ProbeTrainParams

        if final not in ("soup", "refit"):
            raise RagrouteError(f"gate signal tuned_probe: final must be soup or refit, not {final!r}")
        if int(members) < 1:
            raise RagrouteError(f"gate signal tuned_probe: members must be at least 1, got {members}")
        # device: where the fine-tunes run, not what the signal is (left out of settings(), so a gate
        # tuned on a GPU loads and matches its config anywhere)
        self.params = ProbeTrainParams(
            epochs=int(epochs), learning_rate=float(learning_rate), batch_size=int(batch_size), device=device
        )
        self.folds = int(folds)
        self.final = final
        self.members = int(members)
        self._probes: list[Any] = []
        self._own = OwnExampleValues()

    @property
    def names(self) -> list[str]:
        return ["logit"]

    def settings(self) -> dict[str, Any]:
        return {
            "epochs": self.params.epochs,
            "learning_rate": self.params.learning_rate,
            "folds": self.folds,
            "batch_size": self.params.batch_size,
            "final": self.final,
            "members": self.members,
        }

    def encoders(self) -> list[Any]:
        return [probe.encoder for probe in self._probes]

    def _member_params(self) -> list[Any]:
        from dataclasses import replace

        return [replace(self.params, seed=self.params.seed + m) for m in range(self.members)]

    def fit(self, examples: Examples) -> None:
        self._probes = [_train_once(examples.texts, examples.retrieve, p) for p in self._member_params()]

    def fit_values(self, examples: Examples) -> np.ndarray:
        memo = _TUNED_FITS.get()
        key = _fit_key(examples.texts, examples.retrieve, self.settings())
        if memo is not None and key in memo:
            values, self._probes = memo[key]
        else:
            values = self._fit_values(examples)
            if memo is not None:
                memo[key] = (values, self._probes)
        self._own = OwnExampleValues(examples.texts, values[:, 0])
        return values.copy()

    def _fit_values(self, examples: Examples) -> np.ndarray:
        from ragroute.gate.tuned_probe import soup

        y = np.asarray(examples.retrieve, dtype=bool)
        folds = max(2, min(self.folds, int(y.sum()), int((~y).sum())))
        fold_of = fold_ids(examples.texts, y.tolist(), folds, self.params.seed)
        out = np.zeros(len(y))
        probes = []
        for f in range(folds):
            fit_idx, held_idx = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
            fit_texts, held = [examples.texts[i] for i in fit_idx], [examples.texts[i] for i in held_idx]
            for params in self._member_params():
                probe = _train_once(fit_texts, y[fit_idx], params)
                out[held_idx] += probe.logits(probe.encoder.encode_queries(held)) / self.members
                probes.append(probe)
        if self.final == "soup":
            self._probes = [soup(probes)]
        else:
            self.fit(examples)
        return out[:, None]

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        from ragroute.context import query_vectors

        if not self._probes:
            raise RagrouteError("gate signal tuned_probe is not fitted")
        logits = [probe.logits(query_vectors(contexts, probe.encoder)) for probe in self._probes]
        return self._own.apply(contexts, np.mean(logits, axis=0)[:, None])  # a repeated example: out of fold

    def explain(self, context: QueryContext, vector: np.ndarray | None) -> dict[str, Any]:
        return self._own.explain(context)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not self._probes:
            raise RagrouteError("gate signal tuned_probe is not fitted: nothing to save")
        data: dict[str, Any] = {
            "builds": [p.encoder.build for p in self._probes],
            "biases": [p.bias for p in self._probes],
        }
        if len(self._own):
            data["own_examples"] = self._own.to_json()
        return data, {"weight": np.stack([p.weight for p in self._probes])}

    def save(self, folder: Path) -> None:
        super().save(folder)  # (refuses an unfitted probe)
        for m, probe in enumerate(self._probes):
            probe.encoder.save(folder / _member_folder(m))

    def load(self, folder: Path, *, encoder: Any = None) -> None:
        from ragroute.gate.tuned_probe import ProbeEncoder, TunedProbe

        where = f"gate signal tuned_probe in {folder}"
        data = read_state(folder, where)
        arrays = read_arrays(folder / "arrays.npz", f"{where}: arrays.npz")
        one_model = "weight" in arrays and arrays["weight"].ndim == 1  # saved before ensembles
        check_arrays(arrays, f"{where}: arrays.npz", {"weight": (None,) if one_model else (None, None)})
        weights = np.atleast_2d(np.asarray(arrays["weight"], dtype=np.float64))
        # one-model probes saved before ensembles: "build" / "bias" and a 1-D weight
        builds = data["builds"] if "builds" in data else [data.get("build")]
        biases = data["biases"] if "biases" in data else [data.get("bias")]
        if (
            not isinstance(builds, list)
            or not isinstance(biases, list)
            or not all(isinstance(b, str) for b in builds)
            or not all(is_finite_number(b) for b in biases)
        ):
            raise IndexFormatError(f"{where}: state.json names no model builds and biases; refit the gate")
        if not len(builds) == len(biases) == len(weights):
            raise RagrouteError(
                f"gate signal tuned_probe in {folder}: {len(builds)} models, {len(biases)} biases "
                f"and {len(weights)} heads"
            )
        probes = []
        for m, (build, bias, weight) in enumerate(zip(builds, biases, weights)):
            probe_encoder = ProbeEncoder.load(folder / _member_folder(m), str(build))
            if probe_encoder.dim != len(weight):
                raise RagrouteError(
                    f"gate signal tuned_probe in {folder}: head of width {len(weight)} for a "
                    f"{probe_encoder.dim}-dimensional model"
                )
            probes.append(TunedProbe(probe_encoder, weight, float(bias)))
        self._probes = probes
        self._own = OwnExampleValues.from_json(
            data.get("own_examples"), f"gate signal tuned_probe in {folder}: state.json"
        )


def _train_once(texts: Sequence[str], retrieve: Any, params: Any) -> Any:
    """:func:`~ragroute.gate.tuned_probe.train_probe`, reused within :func:`shared_tuned_probe_fits`
    for the same texts, labels and training settings (an ensemble's first member is the one-model
    probe, so gates with and without ``members`` share that fine-tune)."""
    from ragroute.gate.tuned_probe import train_probe

    memo = _TUNED_FITS.get()
    if memo is None:
        return train_probe(texts, retrieve, params)
    key = "fit:" + _fit_key(texts, retrieve, params.to_dict())
    if key not in memo:
        memo[key] = train_probe(texts, retrieve, params)
    return memo[key]


def _fit_key(texts: Sequence[str], retrieve: Any, settings: Mapping[str, Any]) -> str:
    """What a tuned-probe fit is memoised under: its examples, their labels and its settings."""
    payload = [list(texts), np.asarray(retrieve, dtype=bool).tolist(), dict(settings)]
    return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()


def _member_folder(member: int) -> str:
    """Where a tuned probe's member model is saved (the first where one-model probes kept theirs)."""
    return "model" if member == 0 else f"model-{member}"


# --------------------------------------------------------------------------- building

GATE_SIGNALS: dict[str, type[GateSignal]] = {
    cls.kind: cls
    for cls in (
        KnnVoteSignal,
        BankMarginSignal,
        RetrievalConfidenceSignal,
        RaritySignal,
        ComplexitySignal,
        TextProbeSignal,
        TunedProbeSignal,
    )
}
"""Signal kinds by name (what ``signals:`` lists and saved gates record)."""
SIGNAL_SETTINGS: dict[str, frozenset[str]] = {
    "knn_vote": frozenset({"k"}),
    "bank_margin": frozenset({"top_n"}),
    "retrieval": frozenset({"k"}),
    "rarity": frozenset({"corpus"}),  # corpus: true -> word rarity counted on the sources' public documents
    "complexity": frozenset(),
    "text_probe": frozenset({"hashed_dim", "C", "folds"}),
    # device: where its fine-tunes run (cpu, cuda, ...): not a setting the fitted signal keeps
    "tuned_probe": frozenset(
        {"epochs", "learning_rate", "folds", "batch_size", "final", "members", "device"}
    ),
}
"""The settings each signal kind takes in a ``{kind: ..., ...}`` mapping (besides ``kind``)."""
SIGNAL_SETTING_TYPES: dict[str, tuple[str, float | None]] = {
    "k": ("integer", 1),
    "top_n": ("integer", 1),
    "corpus": ("boolean", None),
    "hashed_dim": ("integer", 1),
    "C": ("number_or_auto", None),
    "folds": ("integer", 2),
    "epochs": ("integer", 1),
    "learning_rate": ("number", None),
    "batch_size": ("integer", 1),
    "final": ("string", None),
    "members": ("integer", 1),
    "device": ("string", None),
}
"""The type (and least value) of each signal setting."""
DEFAULT_SIGNALS = ("knn_vote", "bank_margin", "rarity", "complexity", "text_probe")
"""The signals of a trained gate unless told otherwise (``retrieval`` needs sources, so it is opt-in)."""


def make_signal(
    spec: str | Mapping[str, Any], *, encoder: Any = None, sources: Sequence[Any] = ()
) -> GateSignal:
    """A signal from its kind (``"knn_vote"``) or a mapping ``{kind: knn_vote, k: 10}``."""
    if not isinstance(spec, (str, Mapping)):
        raise RagrouteError(
            f"a gate signal is a kind name or a {{kind: ..., ...}} mapping, not {value_type_name(spec)}"
        )
    data = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = str(data.pop("kind", ""))
    load_plugins()  # an extension's signal kinds (a saved gate read in a fresh process)
    if kind not in GATE_SIGNALS:
        # with the closest kind, as a routing config's `gate: {signal: ...}` says it (until session
        # 50 TrainedGate.fit, ThresholdGate and `gate fit --signals` listed the kinds only)
        raise RagrouteError(unknown_keys_message([kind], GATE_SIGNALS, "gate signal"))
    cls = GATE_SIGNALS[kind]
    if kind in SIGNAL_SETTINGS:
        check_keys(data, SIGNAL_SETTINGS[kind], f"gate signal {kind}", "setting")
    for key, value in data.items():
        if key in SIGNAL_SETTING_TYPES:
            expected, minimum = SIGNAL_SETTING_TYPES[key]
            # C 0 or -1 passed `config check` and was refused at load (session 37)
            positive = key in ("C", "learning_rate")
            check_setting(value, expected, f"gate signal {kind}", key, minimum=minimum, positive=positive)
    try:
        if cls is TextProbeSignal:
            return TextProbeSignal(encoder=encoder, **data)
        if cls is RetrievalConfidenceSignal:
            return RetrievalConfidenceSignal(sources, **data)
        if cls is RaritySignal and data.pop("corpus", False):
            # public documents only: counts over labelled ones would tell any caller, through the
            # signal's values, whether a word occurs in documents it may not read
            return RaritySignal.following(sources)
        return cls(**data)
    except TypeError as exc:
        raise RagrouteError(f"gate signal {kind}: bad settings {data}: {exc}") from None


def fold_ids(texts: Sequence[str], retrieve: Sequence[bool], folds: int, seed: int = 0) -> np.ndarray:
    """Stratified folds with identical texts kept together (for cross-validated gate benchmarks)."""
    return grouped_stratified_folds(texts, ["r" if r else "a" for r in retrieve], folds, seed)
