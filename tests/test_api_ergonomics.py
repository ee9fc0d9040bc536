"""The public API as a notebook user meets it: reprs that fit a cell, results that ``json.dumps``
takes, arguments given as a generator that apply to the whole batch, and a docstring on every
public method (an audit of ``ragroute.__all__``; tests/test_api_arguments.py has the argument
checks)."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import ragroute
from ragroute.index.build import build_index
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.route.sources import Source
from ragroute.skills.records import Skill
from ragroute.skills.router import SkillRouter
from ragroute.types import Document

LONG = " ".join(["telescope galaxy orbit comet"] * 300)  # a page of text per document


@pytest.fixture
def long_pipeline(hashing_encoder):
    docs = [Document(id=f"d{i}", text=f"{LONG} {i}", title=f"page {i}", metadata={"n": i}) for i in range(8)]
    source = Source("astro", build_index(docs, "dense", encoder=hashing_encoder, name="astro"))
    return pipeline_from_settings([source], {"kind": "fixed"}, encoder=hashing_encoder)


def test_scopes_given_as_a_generator_reach_every_query_of_a_batch(hashing_encoder):
    """``scopes=`` was read once per query: a generator gave its labels to the first query only,
    and the others silently saw the public sources alone."""
    public = Source("public", build_index([Document("p", "holiday rules")], "bm25"))
    private = Source("hr", build_index([Document("h", "salary rules")], "bm25"), access=frozenset({"hr"}))
    pipeline = pipeline_from_settings([public, private], {"kind": "fixed"}, encoder=None)
    queries = ["salary rules", "salary rules again"]
    results = pipeline.retrieve_many(queries, 2, scopes=(label for label in ["hr"]))
    assert [sorted(h.doc_id for h in r.hits) for r in results] == [["h", "p"], ["h", "p"]]
    hits = pipeline.search_many(queries, 2, scopes=(label for label in ["hr"]))
    assert [sorted(h.doc_id for h in found) for found in hits] == [["h", "p"], ["h", "p"]]
    with_array = pipeline.retrieve("salary rules", 2, scopes=np.array(["hr"]))  # truth value ambiguous
    assert sorted(h.doc_id for h in with_array.hits) == ["h", "p"]


def test_a_skill_routes_to_dict_is_json_with_numpy_values_in_a_catalogue_built_in_code(hashing_encoder):
    skills = [
        Skill(f"s{i}", f"tool {i}", f"does thing {i}", metadata={"cost": np.int64(i), "w": np.float32(0.5)})
        for i in range(3)
    ]
    route = SkillRouter.build(skills, hashing_encoder).route("does thing 2", k=2)
    for data in (route.to_dict(), route.to_dict(trace=True), route.skills[0].to_dict(signals=True)):
        assert json.loads(json.dumps(data))  # raised: Object of type int64 is not JSON serializable
    assert route.to_dict()["skills"][0]["metadata"] == {"cost": 2, "w": 0.5}


def test_reprs_fit_a_notebook_cell_and_say_what_the_object_is(long_pipeline, hashing_encoder):
    result = long_pipeline.retrieve("telescope galaxy", k=8)
    shown = repr(result)
    assert len(shown) < 400, len(shown)  # was every hit's whole text: ~10 kB for 8 hits
    assert shown.startswith("PipelineResult(8 hits: [astro:d") and "more" in shown and "chosen=" in shown
    index = long_pipeline.sources[0].retriever
    assert repr(index) == "DenseIndex(name='astro', documents=8, model='test/hashing')"
    assert repr(build_index([Document("a", "x")], "bm25")) == "BM25Index(name='', documents=1)"
    assert repr(long_pipeline) == "Pipeline(sources=['astro'], router=FixedRoutes)"
    skills = [Skill(f"s{i}", f"tool {i}", f"does thing {i} {LONG}") for i in range(7)]
    router = SkillRouter.build(skills, hashing_encoder)
    assert repr(router).startswith("SkillRouter(7 skills, method=")
    route = router.route("does thing 2", k=7)
    assert len(repr(route)) < 300 and repr(route).startswith("SkillRoute(task='does thing 2', skills=[s2 ")
    for obj in (index, long_pipeline, router):
        assert "object at 0x" not in repr(obj)


def test_a_trained_gates_repr_names_its_signals(hashing_encoder):
    from test_gate import ANSWER, RETRIEVE

    from ragroute.gate import TrainedGate

    gate = TrainedGate.fit(
        RETRIEVE[:6] + ANSWER[:6], [True] * 6 + [False] * 6, hashing_encoder, signals=["rarity", "complexity"]
    )
    assert repr(gate).startswith("TrainedGate(name='trained', signals=[") and "threshold=" in repr(gate)


def _public_methods(cls):
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        function = function.fget if isinstance(function, property) else function
        if callable(function):
            yield name, function


def test_every_public_name_and_method_has_a_docstring_and_annotated_arguments():
    missing = []
    for name in ragroute.__all__:
        obj = getattr(ragroute, name)
        if not inspect.getdoc(obj):
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for method, function in [*_public_methods(obj), ("__init__", obj.__init__)]:
            if method != "__init__" and not inspect.getdoc(getattr(obj, method)):
                missing.append(f"{name}.{method}: no docstring")
            try:
                parameters = inspect.signature(function).parameters.values()
            except (TypeError, ValueError):
                continue
            for p in parameters:
                if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty:
                    missing.append(f"{name}.{method}: {p.name} has no type")
    assert not missing, missing
