"""``ragroute bench experts`` scoring on hand-made expert data (no expert trained, no model loaded)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ragroute.context import QueryContext
from ragroute.evaluation.bench_experts import ExpertData, score_router
from ragroute.index.build import build_index
from ragroute.route.fixed import FixedRoutes
from ragroute.route.sources import Source
from ragroute.types import Document


def test_routing_to_any_of_tied_best_experts_is_correct(hashing_encoder):
    # a query's gold is every expert tied for its best nDCG@10; RoutingRow reads several gold routes
    # as "all needed", so a top-1 router that picked one of two tied experts counted as wrong (every
    # query on which all experts score 0 too): accuracy 0.5 here instead of 1.0
    docs = [Document(id="d1", text="cats purr loudly"), Document(id="d2", text="ships sail the sea")]
    sources = [
        Source(name, build_index(docs, kind, encoder=hashing_encoder, name="c"), metadata={"corpus": "c"})
        for name, kind in (("e1", "dense"), ("e2", "dense"))
    ]
    contexts = [QueryContext("cats purr", id="q1"), QueryContext("ships sail", id="q2")]
    for context in contexts:
        context.set_vector(hashing_encoder, hashing_encoder.encode_queries([context.text])[0])
    data = ExpertData(
        names=["e1", "e2"],
        collections=["c"],
        sources={"c": sources},
        contexts=contexts,
        labels=["c", "c"],
        qrels={"q1": {"d1": 1}, "q2": {"d2": 1}},
        gains=np.array([[1.0, 1.0], [1.0, 0.0]]),  # q1: both experts best; q2: e1 alone
        experts=SimpleNamespace(query_encoders=lambda chosen: []),
    )
    row = score_router(data, [(FixedRoutes(["e1"]), [0, 1])], {"max_routes": 1}, hashing_encoder)
    assert row["accuracy"] == 1.0
    row = score_router(data, [(FixedRoutes(["e2"]), [0, 1])], {"max_routes": 1}, hashing_encoder)
    assert row["accuracy"] == 0.5
    assert row["ndcg@10"] == pytest.approx(1.0) and row["per_collection"] == {"c": 1.0}
