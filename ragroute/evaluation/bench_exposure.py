"""``ragroute bench exposure``: does an exposure budget stop extraction without stopping users?

The knowledge base is the eight Glasgow collections as eight sources of the product pipeline
(:func:`~ragroute.pipeline.build.pipeline_from_settings`, prototype router, dense sources,
``k`` = 10). For each budget setting (:class:`~ragroute.exposure.ExposureBudget`, hard stop on):

* **attack**: an anchor-mutation stream (:func:`ragroute.reliability.extraction.anchor_mutation_attack`)
  runs as one caller through the pipeline with that budget's ledger; reported: the documents it
  got per source (as a share of the source and of the knowledge base), when the first hit was
  withheld, and how many queries it ran. The same stream without a budget shows what it reaches
  undefended.
* **benign users**: simulated users (:func:`~ragroute.reliability.extraction.benign_users`) ask
  the Glasgow dev questions; their hits are the pipeline's, and each user's are admitted in order
  through a ledger with that budget (the same :meth:`~ragroute.exposure.ExposureLedger.admit` the
  pipeline calls); reported: the share of users who had a hit withheld (stopped) and who raised
  an alert.

All of one user's (and the attacker's) queries fall in one window (a day): the volume
assumption of the benign users is per window.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.evaluation.bench_corpus_routing import GLASGOW_SPLIT, Log, glasgow_descriptions, prepare
from ragroute.exposure import ExposureBudget, ExposureLedger
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.reliability.extraction import anchor_mutation_attack, benign_users

K = 10
#: name -> budget (all with the hard stop on)
SETTINGS: dict[str, ExposureBudget] = {
    "per source 2% / 200": ExposureBudget(per="source", max_fraction=0.02, min_documents=200, hard_stop=True),
    "per source 2% / 50": ExposureBudget(per="source", max_fraction=0.02, min_documents=50, hard_stop=True),
    **{
        f"pipeline {p}% / 200": ExposureBudget(
            per="pipeline", max_fraction=p / 100, min_documents=200, hard_stop=True
        )
        for p in (1, 2, 3, 4)
    },
}
GOALS = {"leaked_fraction": 0.05, "benign_stopped_rate": 0.01}


def run_exposure_bench(
    glasgow: Path,
    encoder: Any,
    *,
    users: int = 1000,
    max_queries: int = 2000,
    seed: int = 0,
    settings: Mapping[str, ExposureBudget] | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """The whole benchmark (see the module docstring)."""
    say = log or (lambda _msg: None)
    data = prepare(glasgow, GLASGOW_SPLIT, encoder, descriptions=glasgow_descriptions(), log=say)
    sizes = {s.name: len(s.documents) for s in data.sources}
    total = sum(sizes.values())
    plain = pipeline_from_settings(data.sources, {"kind": "prototype"}, encoder=data.encoder)

    def attack(pipeline: Any) -> dict[str, Any]:
        def retrieve(query: str) -> tuple[list, int]:
            result = pipeline.retrieve(query, K, caller="attacker")
            step = next((s for s in result.decision.trace if s.stage == "exposure"), None)
            return result.hits, int(step.detail["withheld"]) if step else 0

        run = anchor_mutation_attack(retrieve, max_queries=max_queries, seed=seed)
        shares = {name: round(run.distinct.get(name, 0) / size, 4) for name, size in sizes.items()}
        large = {name: share for name, share in shares.items() if sizes[name] >= 1000}
        return {
            "queries": run.queries,
            "leaked_documents": sum(run.distinct.values()),
            "leaked_fraction_kb": round(sum(run.distinct.values()) / total, 4),
            "leaked_fraction_per_source": shares,
            "leaked_fraction_max_source": max(shares.values()),
            "leaked_fraction_max_source_1000_plus": max(large.values()) if large else None,
            "first_withheld_at_query": run.first_withheld_at,
            "seen_when_first_withheld": run.seen_at_first_withheld,
            "stopped": run.stopped,
            "curve": run.curve,  # distinct documents seen after each query
        }

    say("attack without a budget ...")
    undefended = attack(plain)
    questions: dict[str, list[str]] = {}
    for context, label in zip(data.contexts, data.query_labels):
        questions.setdefault(label, []).append(context.text)
    crowd = benign_users(questions, users, seed=seed)
    texts = list(dict.fromkeys(q for user in crowd for q in user.queries))
    say(
        f"{len(crowd)} benign users, {sum(len(u.queries) for u in crowd)} questions "
        f"({len(texts)} distinct) ..."
    )
    hits_of = {text: result.hits for text, result in zip(texts, plain.retrieve_many(texts, K))}
    volumes = np.array([len(u.queries) for u in crowd])
    results: dict[str, Any] = {}
    for name, budget in (settings or SETTINGS).items():
        say(f"{name} ...")
        ledger = ExposureLedger(budget, clock=lambda: 0.0)
        defended = pipeline_from_settings(
            data.sources, {"kind": "prototype"}, encoder=data.encoder, router=plain.router, exposure=ledger
        )
        row: dict[str, Any] = {"budget": _describe(budget, sizes, total), "attack": attack(defended)}
        alerts: set[str] = set()
        users_ledger = ExposureLedger(budget, clock=lambda: 0.0, on_alert=_collect(alerts))
        users_ledger.add_sizes(sizes)
        stopped = 0
        for i, user in enumerate(crowd):
            withheld = 0
            for text in user.queries:
                _, step = users_ledger.admit(f"user-{i}", hits_of[text])
                withheld += int(step.detail["withheld"])
            stopped += bool(withheld)
        row["benign_stopped_rate"] = round(stopped / len(crowd), 4)
        row["benign_alerted_rate"] = round(len(alerts) / len(crowd), 4)
        results[name] = row
    return {
        "glasgow": str(glasgow),
        "documents": total,
        "sources": sizes,
        "skipped": dict(data.skipped),  # folders of the root left out (also said through log)
        "k": K,
        "benign_users": {
            "count": len(crowd),
            "queries_per_user": {
                "median": float(np.median(volumes)),
                "p99": float(np.percentile(volumes, 99)),
                "max": int(volumes.max()),
            },
            "assumption": "log-normal questions per window (median 8, sigma 1, at most 200), 80% from a home "
            "collection, 30% reformulated",
        },
        "undefended": undefended,
        "settings": results,
        "goals": GOALS,
    }


def _collect(callers: set[str]) -> Any:
    """An alert hook that collects the alerted callers."""
    return lambda alert: callers.add(alert.caller)


def _describe(budget: ExposureBudget, sizes: Mapping[str, int], total: int) -> dict[str, Any]:
    if budget.per == "pipeline":
        return {"per": "pipeline", "documents": budget.limit(total)}
    return {"per": "source", "documents": {name: budget.limit(size) for name, size in sizes.items()}}


def format_report(result: Mapping[str, Any]) -> str:
    """The benchmark as a table: leak of the attack and benign users stopped, per budget."""
    u = result["benign_users"]
    und = result["undefended"]
    lines = [
        f"knowledge base: {result['documents']} documents in {len(result['sources'])} sources; "
        f"k = {result['k']}",
        f"benign users: {u['count']} ({u['assumption']}; median {u['queries_per_user']['median']:g}, "
        f"p99 {u['queries_per_user']['p99']:g} questions)",
        f"undefended attack: {und['leaked_documents']} documents ({und['leaked_fraction_kb']:.1%} of the "
        f"knowledge base, up to {und['leaked_fraction_max_source']:.1%} of a source) "
        f"in {und['queries']} queries",
        *(f"skipped {name}: {why}" for name, why in result.get("skipped", {}).items()),
        "",
        f"{'budget (hard stop)':<31} {'leak KB':>8} {'max src':>8} {'src>=1k':>8} {'queries':>8} "
        f"{'1st stop':>9} {'users stopped':>14} {'alerted':>8}",
    ]
    lines.append("-" * len(lines[-1]))
    for name, row in result["settings"].items():
        a = row["attack"]
        big = a["leaked_fraction_max_source_1000_plus"]
        lines.append(
            f"{name:<31} {a['leaked_fraction_kb']:>8.2%} {a['leaked_fraction_max_source']:>8.1%} "
            f"{'-' if big is None else f'{big:.1%}':>8} {a['queries']:>8} "
            f"{str(a['first_withheld_at_query'] or '-'):>9} {row['benign_stopped_rate']:>14.2%} "
            f"{row['benign_alerted_rate']:>8.2%}"
        )
    lines.append(
        f"goals: the attack stopped before {GOALS['leaked_fraction']:.0%} of a corpus; fewer than "
        f"{GOALS['benign_stopped_rate']:.0%} of benign users stopped"
    )
    return "\n".join(lines)
