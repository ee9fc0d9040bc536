"""Ranking metrics computed from ranked id lists and graded relevance judgements.

All functions take one query's ranking (doc ids, best first) and its qrels
(``{doc_id: grade}``, grade > 0 meaning relevant). ``evaluate_run`` averages
them over queries. Per query, every metric is trec_eval's (pytrec_eval's, as BEIR reads
them): nDCG@k is ``ndcg_cut.k`` (linear gain ``grade``, not ``2**grade - 1``, a
``log2(rank + 1)`` discount, the ideal ranking cut at ``k``), recall@k divides by every
relevant document (not ``min(k, relevant)``), MRR@k is ``recip_rank`` of the top ``k``
and hit@k is ``success.k``; grades of 0 and below are not relevant. Two rules are this
library's own. A query judged with no relevant document is skipped by ``evaluate_run``,
where trec_eval and BEIR average it in as 0 (no set in ../shared/data has one). A ranking
is judged in the order given (the retriever's tie-break), where trec_eval re-sorts it by
score, breaking ties by document id (on the Glasgow dev BM25 runs of docs/benchmarks.md,
cacm's nDCG@10 reads 0.4307 here, 0.4301 in pytrec_eval; the other seven are equal). A
document id repeated in a ranking counts once, at its first rank (later copies are dropped
before the cut-off), so no metric can credit one relevant document twice.

One rule for every average in the library and the benchmarks: a query is scored only
when :func:`is_scorable` (it has a relevant judgement; a query judged only with grade 0
has no nDCG), and a mean over groups (collections) is taken with :func:`macro_mean`,
which leaves out the groups with no scored query.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ragroute.errors import InvalidArgumentError, RagrouteError, check_k, is_whole_number, value_type_name


def relevant(qrels: Mapping[str, int]) -> dict[str, int]:
    """The judged documents that are relevant (grade > 0), with their grades."""
    return {doc: int(grade) for doc, grade in qrels.items() if int(grade) > 0}


def is_scorable(qrels: Mapping[str, int]) -> bool:
    """Whether a query with these judgements is scored: it has a relevant (grade > 0) document.

    Others (no judgement, or grade 0 only) are left out of every average and every oracle.
    """
    return bool(relevant(qrels))


def macro_mean(values: Iterable[float | None]) -> float:
    """Mean over groups of their values, ``None`` marking a group with no scored query: it is left
    out (not counted as 0). 0.0 when no group has a value."""
    kept = [value for value in values if value is not None]
    return float(np.mean(kept)) if kept else 0.0


def _top(ranking: Sequence[str], k: int) -> list[str]:
    """The first ``k`` distinct ids of ``ranking`` (a repeated id keeps its first rank)."""
    return list(dict.fromkeys(ranking))[:k]


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain of the top ``k`` (graded gain)."""
    rel = relevant(qrels)
    if not rel:
        return 0.0
    dcg = sum(rel.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(_top(ranking, k)))
    ideal = sorted(rel.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Fraction of the relevant documents found in the top ``k``."""
    rel = relevant(qrels)
    if not rel:
        return 0.0
    return len(rel.keys() & set(_top(ranking, k))) / len(rel)


def mrr_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0 if none)."""
    rel = relevant(qrels)
    for i, doc in enumerate(_top(ranking, k)):
        if doc in rel:
            return 1.0 / (i + 1)
    return 0.0


def hit_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """1 if any relevant document is in the top ``k``, else 0."""
    rel = relevant(qrels)
    return float(any(doc in rel for doc in _top(ranking, k)))


def full_chain_recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """1 only if every relevant document is in the top ``k`` (multi-hop "full chain")."""
    rel = relevant(qrels)
    if not rel:
        return 0.0
    return float(rel.keys() <= set(_top(ranking, k)))


METRICS = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "mrr": mrr_at_k,
    "hit": hit_at_k,
    "full_chain_recall": full_chain_recall_at_k,
}

DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "hit@1", "hit@10", "full_chain_recall@10")


def parse_metric(name: str) -> tuple[str, int]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``; raise ``ValueError`` on an unknown name."""
    base, _, cutoff = name.partition("@")
    # isdigit() alone passes "²", which int() refuses with a message of its own (until session 49)
    if base not in METRICS or not (cutoff.isascii() and cutoff.isdigit()) or int(cutoff) < 1:
        known = ", ".join(sorted(METRICS))
        raise ValueError(f"unknown metric {name!r}: expected NAME@K with NAME in {known}")
    return base, int(cutoff)


def per_query_scores(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], metric: str
) -> dict[str, float]:
    """``metric`` for each scorable query of ``qrels`` (a judged query missing from ``run`` scores 0).
    Query and document ids are text, as the loaders read them: another type (an ``int`` id of a
    run or qrels built in code) is :class:`RagrouteError`, where it matched nothing and scored 0,
    silently (until session 53); so is a grade that is no whole number (see
    :func:`check_run_and_qrels`)."""
    base, k = parse_metric(metric)
    check_run_and_qrels(run, qrels)
    return _scores_of(run, _scorable(qrels), base, k)


def _scorable(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, Mapping[str, int]]:
    """The judgements of the queries that are scored (:func:`is_scorable`), in their order."""
    return {qid: rels for qid, rels in qrels.items() if is_scorable(rels)}


def _scores_of(
    run: Mapping[str, Sequence[str]], scorable: Mapping[str, Mapping[str, int]], base: str, k: int
) -> dict[str, float]:
    """Metric ``base@k`` of each query of ``scorable`` (:func:`check_run_and_qrels` passed already)."""
    return {qid: METRICS[base](list(run.get(qid, ())), rels, k) for qid, rels in scorable.items()}


def check_run_and_qrels(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> None:
    """One line naming the first id of ``run`` or ``qrels`` that is no text, a ranking of ``run``
    that is one string (not a list of ids: each character was judged as a document id until session
    56), or a grade of ``qrels`` that is no whole number (0.5 was cut to 0, not relevant, and NaN or
    a string raised a bare ValueError until session 56)."""
    for qid, ranking in run.items():
        if isinstance(ranking, (str, bytes)):
            raise RagrouteError(
                f"the ranking of run query {qid!r} is one string, {ranking[:20]!r}: a ranking is a list "
                "of document ids, best first"
            )
    for qid, rels in qrels.items():
        for doc, grade in rels.items():
            if not (is_whole_number(grade) or isinstance(grade, bool)):  # True reads as grade 1
                raise RagrouteError(
                    f"qrels grade {grade!r} of query {qid!r}, document {doc!r} is no whole number "
                    f"({value_type_name(grade)}): grades are whole numbers, > 0 meaning relevant"
                )
    where = (
        *(("run query id", q) for q in run),
        *(("qrels query id", q) for q in qrels),
        *(("qrels document id", d) for rels in qrels.values() for d in rels),
        *(("run document id", d) for ranking in run.values() for d in ranking),
    )
    for what, value in where:
        if not isinstance(value, str):
            raise RagrouteError(
                f"{what} {value!r} is {value_type_name(value)}: ids are text (str), as the loaders read "
                "them; an id of another type matches none"
            )


def evaluate_run(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Average each metric over the queries that have at least one relevant document.

    ``run`` maps query id -> ranked doc ids; a judged query missing from ``run``
    scores 0. The result also holds ``queries``, the number of queries averaged.
    """
    result: dict[str, float] = {}
    n = 0
    scorable = None
    for name in metrics:
        base, k = parse_metric(name)
        # the ids checked and the scored queries found once for every metric (until session 53 once
        # per metric: most of the time `ragroute eval` took to score a run)
        if scorable is None:
            check_run_and_qrels(run, qrels)
            scorable = _scorable(qrels)
        scores = _scores_of(run, scorable, base, k)
        n = len(scores)
        result[name] = sum(scores.values()) / n if n else 0.0
    result["queries"] = n
    return result


def paired_difference(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    groups: Mapping[str, str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean per-query difference ``a - b`` over the queries both score, with a 95% percentile
    bootstrap interval (queries resampled with replacement, ``resamples`` times, seeded: the same
    inputs give the same interval). A difference whose interval holds 0 is not shown to be real
    on these queries.

    ``groups`` (query -> collection): the difference of macro means instead, the mean over
    collections of each collection's mean difference (the :func:`macro_mean` rule), with queries
    resampled within their collection."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return {"diff": None, "ci95": None, "queries": 0}
    diff = np.array([[a[k] - b[k]] for k in keys], dtype=np.float64)
    point, drawn = _macro_bootstrap(diff, keys, groups, resamples, seed)
    low, high = np.percentile(drawn[:, 0], [2.5, 97.5])
    interval = [round(float(low), 4), round(float(high), 4)]
    return {"diff": round(float(point[0]), 4), "ci95": interval, "queries": len(keys)}


def share_of_gap(
    a: Mapping[str, float],
    b: Mapping[str, float],
    ceiling: Mapping[str, float],
    *,
    groups: Mapping[str, str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """How much of the gap from ``b`` up to ``ceiling`` ``a`` closes: mean(a - b) / mean(ceiling - b)
    over the queries all three score (macro means with ``groups``, as :func:`paired_difference`),
    with a 95% percentile bootstrap interval of that ratio, each resample drawing the same queries
    for both means. ``share`` is ``None`` when the gap is not positive. A resample whose gap is not
    positive has no ratio: the interval is over the others, and ``resamples_without_gap`` says how
    many were left out (the interval is then conditional on a positive gap)."""
    keys = sorted(set(a) & set(b) & set(ceiling))
    if not keys:
        return {"share": None, "ci95": None, "queries": 0}
    columns = np.array([[a[k] - b[k], ceiling[k] - b[k]] for k in keys], dtype=np.float64)
    point, drawn = _macro_bootstrap(columns, keys, groups, resamples, seed)
    if point[1] <= 0:
        return {"share": None, "ci95": None, "queries": len(keys)}
    ratios = drawn[:, 0] / np.where(drawn[:, 1] > 0, drawn[:, 1], np.nan)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    interval = [round(float(low), 4), round(float(high), 4)]
    return {
        "share": round(float(point[0] / point[1]), 4),
        "ci95": interval,
        "queries": len(keys),
        "resamples_without_gap": int(np.sum(drawn[:, 1] <= 0)),
    }


def check_grouped(keys: Iterable[str], groups: Mapping[str, str]) -> None:
    """A one-line :class:`RagrouteError` unless every query of ``keys`` has a group: a macro mean
    left such a query out silently, and a grouped bootstrap raised a bare KeyError (until session
    43; no shipped benchmark passed one)."""
    missing = sorted(key for key in keys if key not in groups)
    if missing:
        shown = ", ".join(repr(key) for key in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise RagrouteError(f"{len(missing)} scored queries have no group (collection): {shown}")


def _macro_bootstrap(
    values: np.ndarray, keys: Sequence[str], groups: Mapping[str, str] | None, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Macro means over strata of each column of ``values`` (rows: ``keys``; one stratum without
    ``groups``), and the same means for ``resamples`` seeded resamples of the rows within their
    strata (shape: resamples x columns)."""
    check_k(resamples, "resamples")  # 0 raised a bare IndexError until session 56
    rng = np.random.default_rng(seed)
    if groups is None:
        strata = [np.arange(len(keys))]
    else:
        check_grouped(keys, groups)
        members: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            members.setdefault(groups[key], []).append(i)
        strata = [np.array(rows) for _, rows in sorted(members.items())]
    point = np.mean([values[rows].mean(axis=0) for rows in strata], axis=0)
    drawn = np.mean(
        [
            values[rows][rng.integers(0, len(rows), size=(resamples, len(rows)))].mean(axis=1)
            for rows in strata
        ],
        axis=0,
    )
    return point, drawn


def _paired(
    truth: Sequence[bool] | np.ndarray, values: np.ndarray, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """``truth`` as booleans beside ``values``; one line when their lengths differ (a bare IndexError
    until session 56)."""
    y = np.asarray(truth, dtype=bool)
    if y.shape != values.shape:
        raise InvalidArgumentError(f"{y.size} truth values and {values.size} {what}: give one per case")
    return y, values


def auroc(truth: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (ties count half); ``nan`` with a single class or any ``nan`` score
    (which no ranking places: counted anywhere, it would give a number that means nothing)."""
    y, s = _paired(truth, np.asarray(scores, dtype=np.float64), "scores")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg or np.isnan(s).any():
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(truth: Sequence[bool] | np.ndarray, pred: Sequence[bool] | np.ndarray) -> float:
    """Mean over the classes present of the share of each class predicted right (0 with none)."""
    t, p = _paired(truth, np.asarray(pred, dtype=bool), "predictions")
    parts = [float(np.mean(p[t == c] == c)) for c in (True, False) if np.any(t == c)]
    return float(np.mean(parts)) if parts else 0.0


def auroc_interval(
    truth: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> list[float] | None:
    """A 95% percentile bootstrap interval of :func:`auroc`: each class resampled with replacement
    apart (so every resample keeps the class counts), ``resamples`` times, seeded; ``None`` with a
    single class or a ``nan`` score (see :func:`auroc`)."""
    from scipy.stats import rankdata

    check_k(resamples, "resamples")
    y, s = _paired(truth, np.asarray(scores, dtype=np.float64), "scores")
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg) or np.isnan(s).any():
        return None
    rng = np.random.default_rng(seed)
    pos_drawn = pos[rng.integers(0, len(pos), (resamples, len(pos)))]
    neg_drawn = neg[rng.integers(0, len(neg), (resamples, len(neg)))]
    drawn = np.concatenate([pos_drawn, neg_drawn], axis=1)
    ranks = rankdata(drawn, axis=1)  # ties share their average rank, as in auroc
    values = (ranks[:, : len(pos)].sum(axis=1) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    low, high = np.percentile(values, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]
