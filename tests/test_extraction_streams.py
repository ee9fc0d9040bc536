"""The synthetic extraction attack and benign users of ``ragroute bench exposure``, on a tiny pipeline."""

from __future__ import annotations

import numpy as np
from test_pipeline import FixedRouter

from ragroute.exposure import ExposureBudget, ExposureLedger
from ragroute.index.build import build_index
from ragroute.pipeline import Pipeline
from ragroute.reliability.extraction import anchor_mutation_attack, anchor_words, benign_users
from ragroute.route.sources import Source
from ragroute.types import Document


def _corpus(n: int = 300) -> list[Document]:
    rng = np.random.default_rng(3)
    vocab = anchor_words(300, seed=5) + [f"term{i}" for i in range(400)]
    return [Document(id=f"d{i}", text=" ".join(rng.choice(vocab, size=30))) for i in range(n)]


def _attack(pipeline: Pipeline, **kwargs):
    def retrieve(query: str):
        result = pipeline.retrieve(query, 10, caller="attacker")
        step = next((s for s in result.decision.trace if s.stage == "exposure"), None)
        return result.hits, int(step.detail["withheld"]) if step else 0

    return anchor_mutation_attack(retrieve, **kwargs)


def test_the_attack_enumerates_an_undefended_corpus_and_the_budget_stops_it():
    source = Source("kb", build_index(_corpus(), "bm25", name="kb"))
    open_pipeline = Pipeline([source], FixedRouter({"kb": 1.0}))
    undefended = _attack(open_pipeline, max_queries=120, seed=1)
    assert undefended.distinct["kb"] > 150  # half the corpus in 120 benign-looking queries
    assert undefended.withheld == 0 and undefended.first_withheld_at is None
    assert undefended.curve == sorted(undefended.curve) and len(undefended.curve) == undefended.queries
    ledger = ExposureLedger(ExposureBudget(max_fraction=0.1, min_documents=1, hard_stop=True))
    defended = Pipeline([source], FixedRouter({"kb": 1.0}), exposure=ledger)
    run = _attack(defended, max_queries=120, patience=20, seed=1)
    assert run.distinct["kb"] == 30  # exactly the budget: 10% of 300
    assert run.first_withheld_at is not None and run.seen_at_first_withheld <= 30
    assert run.stopped.startswith("nothing new")
    # deterministic for a seed
    assert _attack(open_pipeline, max_queries=40, seed=1).curve == undefended.curve[:40]


def test_benign_users_follow_the_volume_and_home_assumptions():
    questions = {
        "a": [f"alpha question {i} here" for i in range(20)],
        "b": [f"beta query {i} now" for i in range(5)],
    }
    users = benign_users(questions, 400, seed=2)
    volumes = np.array([len(u.queries) for u in users])
    assert 5 <= np.median(volumes) <= 11 and volumes.max() <= 200 and volumes.min() >= 1
    assert sum(u.home == "a" for u in users) > 250  # homes follow the collections' sizes (20 vs 5)
    asked = [q for u in users if u.home == "a" for q in u.queries]
    assert 0.7 < np.mean([q.startswith("alpha") for q in asked]) < 0.98  # 80% home + some of the rest
    shortened = [q for q in asked if q.startswith("alpha") and len(q.split()) == 3]
    assert 0.15 < len(shortened) / len(asked) < 0.45  # about 30% reformulated (a word dropped)
