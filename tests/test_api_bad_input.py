"""Bad input to the public Python API (not the CLI): each case returned a wrong or empty answer, or
failed deep inside with an AttributeError / IndexError / faiss assertion, until an audit of the API
in session 37. Each is now refused in one line naming the argument, or cannot happen."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import topic_sources

from ragroute.context import QueryContext
from ragroute.errors import EmptyQueryError, InvalidArgumentError, RagrouteError
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.route.ensemble import EnsembleRouter
from ragroute.route.knn import KnnRouter
from ragroute.route.prototype import PrototypeRouter
from ragroute.route.sources import Source
from ragroute.route.trained import TrainedRouter
from ragroute.skills.records import Skill
from ragroute.skills.router import SkillRouter
from ragroute.types import Document


def test_the_documents_an_index_hands_out_cannot_change_its_searches(hashing_encoder, small_docs):
    for kind in ("bm25", "dense", "hybrid"):
        index = build_index(small_docs, kind, encoder=hashing_encoder)
        before = [h.doc_id for h in index.search("telescope galaxy", 3)]
        documents = index.documents
        with pytest.raises(AttributeError):  # a tuple: sorting the list the store searched by broke it
            documents.sort(key=lambda d: d.id, reverse=True)  # type: ignore[attr-defined]
        assert [h.doc_id for h in index.search("telescope galaxy", 3)] == before
        assert index.documents is documents  # one tuple per version of the store, not a copy per call
        index.add([Document(id="new", text="comet tail")])
        assert len(index.documents) == len(documents) + 1


def test_a_documents_metadata_edited_after_it_was_added_changes_nothing(hashing_encoder, small_docs):
    index = build_index(small_docs, "bm25")
    small_docs[0].metadata["topic"] = "secret"  # the caller's own dict, edited after the build
    small_docs[1].metadata["access"] = ["hr"]
    assert index.search("telescope", 30, filters={"topic": "secret"}) == []
    assert "astro-1" in [h.doc_id for h in index.search("star telescope galaxy orbit", 30)]


def test_query_vectors_of_the_wrong_shape_or_not_finite_are_refused(hashing_encoder, small_docs):
    sources = topic_sources(small_docs, hashing_encoder)
    pipeline = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    context = QueryContext.of("telescope galaxy")
    with pytest.raises(InvalidArgumentError, match="has 32 dimensions; the encoder gives 64"):
        context.set_vector(hashing_encoder, np.ones(32))  # it answered no hits at all
    router = pipeline.router
    two = ["telescope", "bread"]
    with pytest.raises(InvalidArgumentError, match=r"one row per query \(2\), got shape \(1, 64\)"):
        router.route_many(two, query_vectors=np.ones((1, 64)))  # one decision for two queries
    with pytest.raises(InvalidArgumentError, match="NaN or infinity"):
        router.route_many(["telescope"], query_vectors=np.full((1, 64), np.nan))  # NaN routes, one chosen
    with pytest.raises(EmptyQueryError):
        router.route_many([""])  # routed evenly
    index = sources[0].retriever
    with pytest.raises(InvalidArgumentError, match="the encoder gives 64"):
        index.search_vectors(np.ones((1, 32)), 3)  # a bare faiss AssertionError
    with pytest.raises(InvalidArgumentError, match="k must be"):
        index.search_vectors(np.ones((1, 64)), 0)
    with pytest.raises(RagrouteError, match="the vector of document 'nan' holds NaN"):
        index.add_vectors([Document(id="nan", text="x")], np.full((1, 64), np.nan))  # never findable
    with pytest.raises(InvalidArgumentError, match="not one Document"):
        index.add_vectors(Document(id="one", text="x"), np.ones((1, 64)))


def test_a_query_context_built_directly_checks_its_text(hashing_encoder, small_docs):
    pipeline = pipeline_from_settings(
        [Source("all", build_index(small_docs, "bm25"))], {"kind": "fixed"}, encoder=None
    )
    with pytest.raises(EmptyQueryError):
        pipeline.retrieve(QueryContext(""))  # returned 10 hits
    with pytest.raises(EmptyQueryError):
        QueryContext(None)  # type: ignore[arg-type]


def test_router_arguments_are_checked(hashing_encoder, small_docs):
    texts, labels = ["telescope star", "bread oven", "printer vpn"], ["astro", "cook", "it"]
    with pytest.raises(InvalidArgumentError, match="texts must be a list"):
        KnnRouter("ab", ["a", "b"], hashing_encoder)  # one text per letter
    for k in (0, -1, 2.5):  # no neighbour voted, -1 dropped one, 2.5 was taken
        with pytest.raises(InvalidArgumentError, match="k must be"):
            KnnRouter(texts, labels, hashing_encoder, k=k)
    with pytest.raises(RagrouteError, match="labels must be non-empty strings"):
        KnnRouter(texts, ["astro", None, "it"], hashing_encoder)
    astro = Source("astro", build_index(small_docs[:10], "bm25"))
    with pytest.raises(InvalidArgumentError, match="two sources are named 'astro'"):
        PrototypeRouter([astro, astro], hashing_encoder)  # routes summing to 0.52
    prototype = PrototypeRouter(
        [astro, Source("cook", build_index(small_docs[10:20], "bm25"))], hashing_encoder
    )
    knn = KnnRouter(texts * 2, labels * 2, hashing_encoder)
    for weights in ([1.0], [1.0, 2.0, 3.0], [1.0, -5.0], [float("nan"), 1.0], [0, 0]):
        with pytest.raises(RagrouteError, match="one finite weight >= 0 per member"):
            EnsembleRouter([prototype, knn], weights=weights)  # dropped a member, or routed evenly
    with pytest.raises(InvalidArgumentError, match="must be a list"):
        EnsembleRouter("ab")  # type: ignore[arg-type]
    fitted = TrainedRouter.fit(texts * 4, labels * 4, hashing_encoder)
    with pytest.raises(InvalidArgumentError, match="queries must be a list"):
        fitted.predict_proba("bread")  # type: ignore[arg-type]  # five rows, one per letter
    with pytest.raises(RagrouteError, match="label 1 is None: every text needs a route name"):
        TrainedRouter.fit(texts * 4, ["astro", None, "it"] * 4, hashing_encoder)  # a route named 'None'
    with pytest.raises(InvalidArgumentError, match="NaN or infinity"):
        TrainedRouter.fit(texts * 4, labels * 4, hashing_encoder, query_vectors=np.full((12, 64), np.nan))


def test_skills_and_index_files_refuse_the_wrong_objects(hashing_encoder, tmp_path):
    skills = [
        Skill(id=f"s{i}", name=f"tool {i}", description=d) for i, d in enumerate(["send mail", "read pdf"])
    ]
    with pytest.raises(InvalidArgumentError, match="not one Skill"):
        SkillRouter.build(skills[0], hashing_encoder)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="name must be a string"):
        Skill(id="a", name=None)  # type: ignore[arg-type]
    router = SkillRouter.build(skills, hashing_encoder)
    with pytest.raises(InvalidArgumentError, match="1 ids for 2 tasks"):
        router.route_many(["mail bob", "open a pdf"], ids=["q1"])  # an IndexError
    with pytest.raises(InvalidArgumentError, match="save_index needs an index"):
        save_index("not an index", tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs an index folder path"):
        load_index(None)  # type: ignore[arg-type]
