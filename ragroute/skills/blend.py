"""How much a catalogue's stage 1 should weigh against the cross-encoder, fitted on its labelled tasks.

The reranker's calibration (``sigmoid(a * logit + b + c / rank + d * z)``, fitted where the reranker
was trained) sets one balance between the cross-encoder's logit and stage 1's rank and score for
every catalogue. How much stage 1 deserves differs from catalogue to catalogue: measured on held-out
queries, the best weight on the stage-1 terms was 0.5x the fitted one on toollens and 1.5-3x on
seal_tools, where BM25 alone is right 96% of the time (docs/rerank.md#calibration). Without labels
nothing tells them apart (pseudo-queries do not track it), so the balance stays as fitted; a user
with labelled tasks for their catalogue can fit it:

* every labelled task is routed (stage 1, then the reranker over its ``candidates``) once; each
  candidate's logit, stage-1 rank and pool z-score are read from the trace;
* for each weight ``s`` of :data:`STAGE1_WEIGHTS` the pools are re-ordered by ``a * logit + b +
  s * (c / rank + d * z)`` and scored by nDCG@10 (skills below the pool keep stage 1's order);
  the best ``s`` wins (ties: the one nearest 1, the balance as fitted), unless stage 1's own order
  (the reranker's logit weighted 0) scores strictly better than every ``s``: then the catalogue
  keeps stage 1's order (``order="stage1"``; the cross-encoder still runs, for the trace);
* the probabilities are then re-calibrated on the same pools (Platt: one scale and one shift of
  that score), so they stay probabilities of relevance on this catalogue.

The result (:class:`RerankBlend`) is saved with the skill router and applies only to the reranker
build it was fitted with; with any other the router uses that reranker's own calibration and says so
in its trace. Near-duplicate handling (``overlap``) runs after the reranker and is not part of the
fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragroute.errors import InvalidArgumentError, RagrouteError, check_batch
from ragroute.rerank.cross_encoder import Calibration

#: the stage-1 weights tried (1 = the reranker's calibration as fitted)
STAGE1_WEIGHTS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
#: fewer labelled tasks than this fit nothing (one task moves nDCG@10 by a tenth of the curve's range)
MIN_TASKS = 10


def reranker_identity(reranker: Any) -> dict[str, str]:
    """What a blend is bound to: the reranker artifact's name and build (its path when it has none)."""
    info = getattr(reranker, "info", {}) or {}
    return {"name": str(info.get("name", "")), "build": str(info.get("build") or info.get("path") or "")}


@dataclass
class RerankBlend:
    """A catalogue's balance between stage 1 and the cross-encoder (see the module doc)."""

    stage1_weight: float
    scale: float = 1.0
    shift: float = 0.0
    reranker: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    order: str = "blend"  # or "stage1": stage 1's order, the probability from its rank alone

    def applies_to(self, reranker: Any) -> bool:
        """True for the reranker build this blend was fitted with."""
        return reranker is not None and reranker_identity(reranker) == self.reranker

    def apply(self, reranker: Any) -> tuple[Any, dict[str, Any]]:
        """``(reranker to use, trace note)``: ``reranker`` re-balanced when this blend was fitted for
        it, else ``reranker`` unchanged with the reason."""
        if not self.applies_to(reranker):
            fitted = f"{self.reranker.get('name')} (build {self.reranker.get('build')})"
            return reranker, {"applied": False, "why": f"fitted for reranker {fitted}, not this one"}
        note = {"applied": True, "order": self.order, "tasks": self.report.get("tasks")}
        if self.order == "stage1":
            calibration = Calibration(0.0, self.shift, self.scale, True, 0.0)  # sigmoid(scale / rank + shift)
            return reranker.with_calibration(calibration, "skills, stage-1 order"), note
        calibration = reranker.calibration.blended(self.stage1_weight, self.scale, self.shift)
        note["stage1_weight"] = self.stage1_weight
        return reranker.with_calibration(calibration, f"skills, stage-1 weight {self.stage1_weight:g}"), note

    def summary(self) -> tuple[str, str]:
        """``(what was chosen, the fitting tasks' nDCG@10 by weight)``, as `skills tune` and
        `bench skills` print them."""
        curve = ", ".join(f"{w}: {v:.4f}" for w, v in self.report.get("ndcg@10", {}).items())
        if "ndcg@10_stage1_order" in self.report:
            curve += f"; stage 1's order: {self.report['ndcg@10_stage1_order']:.4f}"
        chosen = "stage 1's order" if self.order == "stage1" else f"stage-1 weight {self.stage1_weight:g}"
        return chosen, curve

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage1_weight": self.stage1_weight,
            "scale": self.scale,
            "shift": self.shift,
            "reranker": dict(self.reranker),
            "report": dict(self.report),
            "order": self.order,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankBlend:
        missing = sorted({"stage1_weight", "reranker"} - set(data))
        if missing:
            raise RagrouteError(
                f"rerank blend without {', '.join(missing)}: refit it (`ragroute skills tune`)"
            )
        try:
            numbers = [
                float(data["stage1_weight"]),
                float(data.get("scale", 1.0)),
                float(data.get("shift", 0.0)),
            ]
            reranker = {str(k): str(v) for k, v in dict(data["reranker"]).items()}
            report = dict(data.get("report") or {})
        except (TypeError, ValueError) as exc:
            raise RagrouteError(
                f"rerank blend is malformed ({exc}): refit it (`ragroute skills tune`)"
            ) from None
        if not all(np.isfinite(numbers)) or numbers[0] <= 0:
            raise RagrouteError(
                f"rerank blend has unusable numbers {numbers}: refit it (`ragroute skills tune`)"
            )
        return cls(numbers[0], numbers[1], numbers[2], reranker, report, _order(data.get("order", "blend")))


def fit_rerank_blend(
    router: Any,
    tasks: Sequence[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    weights: Sequence[float] = STAGE1_WEIGHTS,
    name: str = "",
) -> RerankBlend:
    """Fit the stage-1 weight of ``router``'s reranker on labelled ``tasks`` (``(id, text)``, judged
    in ``qrels``: skill id -> grade) of its catalogue; see the module doc."""
    from ragroute.evaluation.metrics import evaluate_run, is_scorable

    reranker = router.reranker
    if reranker is None or not hasattr(reranker, "calibration") or not hasattr(reranker, "with_calibration"):
        raise RagrouteError("fitting a rerank blend needs the router's cross-encoder reranker (--reranker)")
    pairs = check_batch(tasks, "tasks")
    wrong = next((t for t in pairs if not (isinstance(t, (tuple, list)) and len(t) == 2)), None)
    if wrong is not None:  # a tuple-unpacking ValueError until session 44
        raise InvalidArgumentError(f"tasks must be (id, text) pairs, got {wrong!r}"[:200])
    judged = [(qid, text) for qid, text in pairs if is_scorable(qrels.get(qid, {}))]
    if len(judged) < MIN_TASKS:
        raise RagrouteError(
            f"fitting a rerank blend needs at least {MIN_TASKS} tasks with a relevant skill, "
            f"got {len(judged)}"
        )
    plain = router.with_options(abstention=None, rerank_blend=None, overlap="keep")
    routes = plain.route_many([t for _, t in judged], k=plain.candidates, ids=[q for q, _ in judged])
    pools = []
    for route in routes:
        step = next(s for s in route.trace if s.stage == "rerank")
        rows = step.detail["scores"]
        pools.append(
            (
                route.id,
                [r["id"] for r in rows],
                np.array([r["logit"] for r in rows], dtype=np.float64),
                np.array([r["stage1_rank"] for r in rows], dtype=np.float64),
                np.array([r["stage1_z"] for r in rows], dtype=np.float64),
            )
        )
    cal = reranker.calibration

    def scores(s: float, logit: np.ndarray, rank: np.ndarray, z: np.ndarray) -> np.ndarray:
        # a candidate the reranker could not read (a skill without name, description and body: no
        # logit) comes after those read, in stage 1's order, as the reranker ranks it; until
        # session 54 its NaN sorted anywhere and the Platt fit failed with scikit-learn's ValueError
        u = cal.a * logit + cal.b + s * (cal.c / rank + cal.d * z)
        return np.where(np.isfinite(logit), u, -np.inf)

    sub = {qid: qrels[qid] for qid, _ in judged}
    curve: dict[float, float] = {}
    for s in weights:
        run = {}
        for qid, ids, logit, rank, z in pools:
            u = scores(s, logit, rank, z)
            ranked = sorted(range(len(ids)), key=lambda i: (-u[i], rank[i]))
            run[qid] = [ids[i] for i in ranked]
        curve[float(s)] = evaluate_run(run, sub, ("ndcg@10",))["ndcg@10"]
    best = max(curve, key=lambda s: (round(curve[s], 6), -abs(np.log(s))))
    by_rank = {
        qid: [ids[i] for i in np.lexsort((rank, ~np.isfinite(logit)))] for qid, ids, logit, rank, _ in pools
    }
    stage1 = evaluate_run(by_rank, sub, ("ndcg@10",))["ndcg@10"]
    order = "stage1" if round(stage1, 6) > round(curve[best], 6) else "blend"
    if order == "stage1":
        u = np.concatenate([1.0 / rk for *_, rk, _ in pools])
    else:
        u = np.concatenate([scores(best, lg, rk, z) for _, _, lg, rk, z in pools])
    y = np.concatenate([[sub[qid].get(i, 0) > 0 for i in ids] for qid, ids, *_ in pools]).astype(int)
    read = np.concatenate([np.isfinite(lg) for _, _, lg, _, _ in pools])  # unread: probability 0 anyway
    u, y = u[read], y[read]
    scale, shift = 1.0, 0.0
    separable = 0 < y.sum() < len(y) and float(u[y == 1].min()) > float(u[y == 0].max())
    if 0 < y.sum() < len(y) and not separable:
        from sklearn.linear_model import LogisticRegression

        fit = LogisticRegression(C=1e4).fit(u[:, None], y)
        scale, shift = float(fit.coef_[0][0]), float(fit.intercept_[0])
        if scale <= 0:  # a blend whose score does not rank: keep the probabilities as they were
            scale, shift = 1.0, 0.0
    # pools the blended score separates perfectly: Platt would grow without bound (12 easy tasks
    # gave scale 7.3, and an off-topic task 0.99), so the reranker's own calibration is kept
    # (until session 36 it was refitted anyway)
    return RerankBlend(
        float(best),
        scale,
        shift,
        reranker_identity(reranker),
        {
            "tasks": len(judged),
            "data": name,
            "ndcg@10": {f"{s:g}": round(v, 4) for s, v in curve.items()},
            "ndcg@10_stage1_order": round(stage1, 4),
            **({"platt": _unfitted_platt(order)} if separable else {}),
            "rule": "argmax nDCG@10 over the stage-1 weights (ties: nearest 1), stage 1's order if "
            "strictly better than all; Platt on the same pools",
        },
        order,
    )


def _unfitted_platt(order: str) -> str:
    """What the probabilities are when the pools separate perfectly (no finite Platt fit)."""
    if order == "stage1":
        # until session 43 this said the reranker's calibration was kept: none is, in stage 1's order
        return (
            "none: stage 1's order separates the pools perfectly; the probability is sigmoid(1 / rank), "
            "the same for every task's first skill (abstention on rerank_top cannot tell tasks apart)"
        )
    return "kept the reranker's calibration: the pools separate perfectly"


def _order(value: Any) -> str:
    if value not in ("blend", "stage1"):
        raise RagrouteError(f"rerank blend order must be 'blend' or 'stage1', got {value!r}")
    return str(value)
