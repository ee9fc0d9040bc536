"""Choosing a gate's signals on the training data alone: nested selection among candidate gates.

Which signals gate best depends on the task (a text probe alone on MetaTool's need-tool queries,
every default signal on UniversalRAG's), and picking the best of several gates by their score on the
queries they are then judged on flatters the pick. :func:`select_gate` chooses among
:data:`CANDIDATE_GATES` (or the caller's own) by cross-validation *inside the training data*: each
candidate is fitted on all folds but one and scored on that one, for every fold (grouped and
stratified: identical texts in one fold); the candidate with the highest mean AUROC over the folds
is fitted on all the training data and returned. A candidate must beat the default gate
(:data:`DEFAULT_CANDIDATE`: the default signals) by more than :data:`TIE_MARGIN` to replace it.
The rule was written down before any selection was run on the benchmark data.

The selection is in the returned gate's ``metrics["selection"]`` (saved with it): each candidate's
AUROC per fold and its mean, the rule, and the one chosen. ``ragroute gate fit --select`` runs it;
``ragroute bench gate`` scores it as the ``selected`` row, the selection made again on each outer
fold's training part, so no query is scored by a gate whose signals were chosen on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError, check_batch, check_query_vectors
from ragroute.evaluation.metrics import auroc
from ragroute.gate.signals import DEFAULT_SIGNALS, fold_ids, normalise
from ragroute.gate.trained import MIN_EXAMPLES_PER_KIND, TrainedGate, check_example_kinds, check_flags

CANDIDATE_GATES: dict[str, dict[str, Any]] = {
    "threshold_knn_vote": {"signals": ["knn_vote"], "columns": ["knn_vote.share"]},
    "threshold_bank_margin": {"signals": ["bank_margin"], "columns": ["bank_margin.margin"]},
    "threshold_rarity": {"signals": ["rarity"], "columns": ["rarity.min_zipf"]},
    "threshold_complexity": {"signals": ["complexity"], "columns": ["complexity.multihop_cues"]},
    "threshold_text_probe": {"signals": ["text_probe"], "columns": ["text_probe.logit"]},
    "trained_signals": {"signals": ["knn_vote", "bank_margin", "rarity", "complexity"]},
    "trained_all": {"signals": list(DEFAULT_SIGNALS)},
}
"""The gates :func:`select_gate` chooses among by default: keyword arguments of
:meth:`TrainedGate.fit` (single-signal threshold gates, the LLM-free signals but the text probe, and
the default signals). None fine-tunes a model, so a selection costs seconds to minutes."""
DEFAULT_CANDIDATE = "trained_all"
"""The gate a selection keeps unless another beats it by more than :data:`TIE_MARGIN`."""
TIE_MARGIN = 0.001
"""Mean-AUROC lead a candidate needs over the default gate to replace it."""
SELECTION_FOLDS = 5
RULE = (
    f"highest mean AUROC over {{folds}} grouped stratified folds of the training data; the default "
    f"gate ({DEFAULT_CANDIDATE}) kept unless another leads it by more than {TIE_MARGIN}"
)


def select_gate(
    texts: Sequence[str],
    retrieve: Sequence[bool] | np.ndarray,
    encoder: Any = None,
    *,
    candidates: Mapping[str, Mapping[str, Any]] | None = None,
    folds: int = SELECTION_FOLDS,
    query_vectors: np.ndarray | None = None,
    seed: int = 0,
    **fit_options: Any,
) -> TrainedGate:
    """The candidate gate with the best cross-validated AUROC on ``texts`` (see the module
    docstring), fitted on all of them, its selection in ``metrics["selection"]``.

    ``candidates``: name -> :meth:`TrainedGate.fit` keyword arguments (default
    :data:`CANDIDATE_GATES`; when it has no :data:`DEFAULT_CANDIDATE`, the best mean AUROC wins
    outright); ``folds``: at least 2; ``fit_options``: passed to every fit (``C``,
    ``default_threshold``, ``max_steps``...).
    """
    texts = check_batch(texts, "texts")
    y = np.asarray(check_flags(retrieve), dtype=bool)
    if len(texts) != len(y):
        raise RagrouteError(f"{len(texts)} texts but {len(y)} labels")
    check_example_kinds(y)
    pool = dict(CANDIDATE_GATES if candidates is None else candidates)
    if not pool:
        raise RagrouteError("a gate selection needs at least one candidate gate")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise RagrouteError(f"folds must be a whole number of at least 2, got {folds!r}")
    clash = sorted(set(fit_options) & {"signals", "columns", "name", "query_vectors", "seed"})
    if clash:
        raise RagrouteError(f"{', '.join(clash)}: set by each candidate or by select_gate itself")
    if query_vectors is None and encoder is not None:
        # once for every fold and candidate: a bar on a terminal (until session 55 none, show_progress=False)
        query_vectors = np.asarray(encoder.encode_queries(texts), dtype=np.float32)
    elif query_vectors is not None:  # rows of another count were an IndexError (until session 49)
        query_vectors = check_query_vectors(query_vectors, len(texts), encoder)
    fold_of = fold_ids(texts, y.tolist(), folds, seed)
    scores: dict[str, list[float]] = {name: [] for name in pool}
    for fold in range(folds):
        fit_idx, held_idx = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        fit_kinds = min(int(y[fit_idx].sum()), int((~y[fit_idx]).sum()))
        if len(set(y[held_idx])) < 2 or fit_kinds < MIN_EXAMPLES_PER_KIND:
            # too few examples of a kind for this fold to score anything, or to fit on: until
            # session 49 a fold fitted on one example of a kind refused the whole selection with
            # "got 1 that answer directly", though the data held 2
            continue
        fit_texts = [texts[i] for i in fit_idx]
        held = [QueryContext(texts[i]) for i in held_idx]
        vectors = None if query_vectors is None else normalise(query_vectors[held_idx])
        for name, settings in pool.items():
            gate = TrainedGate.fit(
                fit_texts,
                y[fit_idx],
                encoder,
                query_vectors=None if query_vectors is None else query_vectors[fit_idx],
                seed=seed,
                name=name,
                **{**fit_options, **settings},
            )
            # turned the way the gate's probabilities order the queries: until session 54 the raw
            # logits, whose order a candidate with a negative Platt slope decides against, so its
            # score was 1 - the AUROC of the gate it would have been
            logits = gate.model.direction * gate.model.logits(gate.signal_matrix(held, vectors))[0]
            scores[name].append(auroc(y[held_idx], logits))
    if not any(scores.values()):
        raise RagrouteError(
            f"no fold of {folds} holds examples of both kinds while leaving {MIN_EXAMPLES_PER_KIND} of "
            f"each to fit on: too few examples to select a gate ({int(y.sum())} need retrieval, "
            f"{int((~y).sum())} answer directly)"
        )
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    chosen = max(means, key=lambda name: means[name])  # the first listed among equals
    if DEFAULT_CANDIDATE in means and means[chosen] - means[DEFAULT_CANDIDATE] <= TIE_MARGIN:
        chosen = DEFAULT_CANDIDATE
    settings = {**fit_options, **pool[chosen]}
    gate = TrainedGate.fit(texts, y, encoder, query_vectors=query_vectors, seed=seed, name=chosen, **settings)
    gate.metrics["selection"] = {
        "chosen": chosen,
        "rule": RULE.format(folds=folds),
        "folds": folds,
        "mean_auroc": {name: round(value, 4) for name, value in means.items()},
        "fold_auroc": {name: [round(v, 4) for v in values] for name, values in scores.items()},
    }
    return gate


__all__ = ["CANDIDATE_GATES", "DEFAULT_CANDIDATE", "TIE_MARGIN", "select_gate"]
