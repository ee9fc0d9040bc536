"""Arguments of the Python API a notebook user gets wrong: one-line errors at the call, never a
silently empty or character-split result (found by an audit of the public API)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ragroute.context import QueryContext
from ragroute.errors import InvalidArgumentError, RagrouteError
from ragroute.index.build import build_index
from ragroute.pipeline import Pipeline
from ragroute.route.prototype import PrototypeRouter
from ragroute.route.sources import Source


@pytest.fixture
def indexes(hashing_encoder, small_docs):
    return {
        method: build_index(small_docs, method, encoder=hashing_encoder, name=method)
        for method in ("bm25", "dense", "hybrid")
    }


@pytest.fixture
def pipeline(hashing_encoder, small_docs):
    def topic(name):
        return [d for d in small_docs if d.metadata["topic"] == name]

    topics = ("astro", "cook", "it")
    sources = [Source(t, build_index(topic(t), "dense", encoder=hashing_encoder)) for t in topics]
    return Pipeline(sources, PrototypeRouter(sources, hashing_encoder), encoder=hashing_encoder)


def test_k_is_a_whole_number_of_any_integer_type_on_every_index_kind(indexes):
    for index in indexes.values():
        assert len(index.search("planet orbit", k=3.0)) == 3
        assert len(index.search("planet orbit", k=np.int64(2))) == 2
        wrong = ((2.5, "got 2.5"), ("3", "got a string"), (None, "got empty"), (True, "got a boolean"))
        for bad, said in wrong:
            with pytest.raises(InvalidArgumentError, match=f"k must be a whole number >= 1, {said}"):
                index.search("planet orbit", k=bad)
        with pytest.raises(InvalidArgumentError, match="k must be >= 1, got 0"):
            index.search("planet orbit", k=0)
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidArgumentError, RagrouteError)


def test_a_bare_string_is_not_a_batch_and_filters_are_a_mapping(indexes, pipeline):
    with pytest.raises(InvalidArgumentError, match=r"queries must be a list, not a single string"):
        indexes["dense"].search_many("planet")
    with pytest.raises(InvalidArgumentError, match=r"queries must be a list, not a single string"):
        pipeline.retrieve_many("toner")
    # the retriever protocol's search_many, on a pipeline and on a source: was one query per letter
    calls = (
        lambda: pipeline.search_many("abc", 3),
        lambda: pipeline.sources[0].search_many("abc", 3),
        lambda: pipeline.router.route_many("abc"),  # every BaseRouter subclass's route_many
    )
    for call in calls:
        with pytest.raises(InvalidArgumentError, match=r"queries must be a list, not a single string"):
            call()
    assert len(pipeline.search_many(("toner", "planet"), 3)) == 2  # any sequence of strings is a batch
    assert len(pipeline.router.route_many(q for q in ("toner", "planet"))) == 2
    for index in indexes.values():
        with pytest.raises(InvalidArgumentError, match="filters must be a mapping"):
            index.search("planet", filters="astro")
    with pytest.raises(InvalidArgumentError, match="filters must be a mapping"):
        QueryContext.of("planet", filters="astro")
    for index in indexes.values():  # an operator mapping raised TypeError: unhashable type: 'dict'
        with pytest.raises(InvalidArgumentError, match=r"'topic' must be a value or a list of values"):
            index.search("planet", filters={"topic": {"$eq": "astro"}})
    assert len(indexes["bm25"].search("planet", filters={"topic": ["astro", "cook"]}, k=3)) == 3


def test_add_and_delete_take_lists_on_every_index_kind(hashing_encoder, small_docs):
    from ragroute.types import Document

    docs = [Document(id=i, text=f"document number {i} about topic {i}") for i in ("1", "2", "12")]
    for method in ("bm25", "dense", "hybrid", "graph"):
        index = build_index(docs, method, encoder=hashing_encoder, name=method)
        if method != "graph":  # a graph has no delete (passages leave with a rebuild)
            # a bare id was split into characters: delete("12") deleted "1" and "2"
            with pytest.raises(InvalidArgumentError, match="document ids must be a list, not a single"):
                index.delete("12")
            with pytest.raises(InvalidArgumentError, match="document ids must be strings, got an integer"):
                index.delete([12])
        new = Document(id="7", text="seven")
        with pytest.raises(InvalidArgumentError, match=r"not one Document \(wrap it: \[document '7'\]\)"):
            index.add(new)
        with pytest.raises(InvalidArgumentError, match="documents must be a list, not a single string"):
            index.add("durian")
        with pytest.raises(InvalidArgumentError, match=r"must be Document objects \(Document\(id, text"):
            index.add(["durian"])
        # a mapping's keys alone: "got a string" of its first key until session 51
        with pytest.raises(InvalidArgumentError, match="documents must be a list, got a mapping"):
            index.add({"7": new})
        with pytest.raises(InvalidArgumentError, match="queries must be a list, got a mapping"):
            index.search_many({"q1": "seven"})
        with pytest.raises(InvalidArgumentError, match="document ids must be a list, got a mapping"):
            index.delete({"12": None})
        assert sorted(d.id for d in index.documents) == ["1", "12", "2"], method  # nothing changed
        if method != "graph":
            assert index.delete(("12",)) == 1 and sorted(d.id for d in index.documents) == ["1", "2"]


def test_a_routed_llama_retriever_refuses_filters_it_could_not_apply(pipeline):
    """Over an object with only retrieve(text, k) the filters were dropped, silently."""
    from ragroute.integrations.llamaindex import RoutedLlamaRetriever

    class TextOnly:
        def retrieve(self, query, k):
            return pipeline.retrieve(query, k)

    assert RoutedLlamaRetriever(pipeline, filters={"topic": "astro"}).retrieve("planet orbit")
    with pytest.raises(InvalidArgumentError, match="filters need a ragroute Pipeline"):
        RoutedLlamaRetriever(TextOnly(), filters={"topic": "astro"})


def test_pipeline_k_float_is_a_value_not_a_failed_source(pipeline):
    # a float k used to reach faiss, fail there and be recorded as a failing source: 0 hits, no error
    result = pipeline.retrieve("planets and stars", k=3.0)
    assert len(result.hits) == 3
    with pytest.raises(InvalidArgumentError):
        pipeline.retrieve("planets and stars", k=2.5)


def test_a_non_finite_query_vector_is_refused(hashing_encoder):
    context = QueryContext.of("planet")
    for bad in ([np.nan] * 8, [np.inf] * 8, []):
        with pytest.raises(InvalidArgumentError, match="empty or not finite"):
            context.set_vector(hashing_encoder, bad)
    assert not context.has_vector(hashing_encoder)


def test_sources_are_sources_with_distinct_names_and_none_is_reserved(pipeline, hashing_encoder):
    from ragroute.pipeline.build import pipeline_from_settings

    astro, cook = pipeline.sources[0], pipeline.sources[1]
    twice = [astro, Source("astro", cook.retriever)]
    with pytest.raises(InvalidArgumentError, match="two sources are named 'astro': one would hide the other"):
        pipeline_from_settings(twice, {"kind": "prototype"}, encoder=hashing_encoder)
    with pytest.raises(InvalidArgumentError, match="may not be named 'none'"):
        Pipeline([astro, Source("none", cook.retriever)], PrototypeRouter([astro], hashing_encoder))
    with pytest.raises(InvalidArgumentError, match="sources must be Source objects .* got DenseIndex"):
        pipeline_from_settings([astro.retriever], {"kind": "prototype"}, encoder=hashing_encoder)
    with pytest.raises(RagrouteError, match="router settings must be a mapping"):
        pipeline_from_settings([astro], "prototype", encoder=hashing_encoder)


def test_a_diverging_fine_tune_stops_with_one_line_and_learning_rates_are_checked_first():
    import torch

    from ragroute.experts.train import ExpertTrainParams
    from ragroute.rerank.train import TrainParams
    from ragroute.training import fine_tune

    weight = torch.nn.Parameter(torch.ones(3))

    def exploding(_positions):
        return (weight * torch.tensor([float("inf"), 1.0, 1.0])).sum()

    settings = {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "warmup": 0.1, "seed": 0}
    diverged = r"toy: the loss became inf at step 1 of 2 .* nothing was published"
    with pytest.raises(RagrouteError, match=diverged):
        fine_tune([weight], 4, exploding, **settings, desc="toy", show_progress=False)
    for bad in (-1.0, float("nan"), float("inf"), "fast"):
        with pytest.raises(RagrouteError, match="learning rate must be a finite number >= 0"):
            ExpertTrainParams(learning_rate=bad)
        with pytest.raises(RagrouteError, match="learning rate must be a finite number >= 0"):
            TrainParams(learning_rate=bad)


def test_reranker_training_refuses_a_batch_size_epochs_or_warmup_it_cannot_train_with():
    """TrainParams(batch_size=0) was accepted, and training failed after the pairs were mined and
    the model built, with a bare ZeroDivisionError in the fine-tuning loop (a NaN warm-up with a
    bare ValueError)."""
    from ragroute.rerank.train import TrainParams

    for bad in ({"batch_size": 0}, {"epochs": -1}, {"batch_size": 2.5}, {"epochs": True}):
        with pytest.raises(
            RagrouteError, match=rf"reranker training: {next(iter(bad))} must be (a whole number )?>= 1"
        ):
            TrainParams(**bad)
    for warmup in (float("nan"), -0.1, 1.5, "0.1"):
        with pytest.raises(RagrouteError, match="reranker training: warmup must be a share between 0 and 1"):
            TrainParams(warmup=warmup)
    assert TrainParams(epochs=1, batch_size=1, warmup=0).warmup == 0
    assert type(TrainParams(batch_size=np.int64(4)).batch_size) is int  # as the manifest's JSON needs


def test_gate_arguments(hashing_encoder):
    from test_gate import ANSWER, RETRIEVE

    from ragroute.gate import TrainedGate

    texts = RETRIEVE[:6] + ANSWER[:6]
    labels = [True] * 6 + [False] * 6
    for bad, said in (
        ({"retrieve": ["yes"] * 6 + ["no"] * 6}, "retrieve must hold booleans"),
        ({"validation_fraction": 1.5}, "validation_fraction must be a share between 0 and 1"),
        ({"validation_fraction": -1}, "validation_fraction must be a share between 0 and 1"),
        ({"signals": "rarity"}, "signals must be a list, not a single string"),
        ({"texts": "what is"}, "texts must be a list, not a single string"),
    ):
        arguments = {"texts": texts, "retrieve": labels, "signals": ["rarity", "complexity"], **bad}
        with pytest.raises(RagrouteError, match=said):
            TrainedGate.fit(encoder=hashing_encoder, **arguments)
    gate = TrainedGate.fit(texts, labels, hashing_encoder, signals=["rarity", "complexity"])
    question = "Who founded the Xylofrant company?"
    decided = gate.gate_many([question])  # a text is a query, as elsewhere
    assert decided[0].action in ("retrieve", "answer")
    assert decided[0].probability == pytest.approx(gate.probabilities([question])[0])


def test_documents_are_typed_and_notebook_metadata_saves(tmp_path, hashing_encoder):
    from ragroute.index.io import load_index, save_index
    from ragroute.types import Document

    assert Document(id=np.int64(7), text="x").id == "7" and Document(id=1, text="y").id == "1"
    for bad, said in (("text", "must be a list, not a single string"), ([{"id": 1}], "got a mapping")):
        with pytest.raises(InvalidArgumentError, match=said):
            build_index(bad, "bm25")
    with pytest.raises(InvalidArgumentError, match="document 'a': text must be a string, got empty"):
        Document(id="a", text=None)
    with pytest.raises(InvalidArgumentError, match="document 'a': metadata must be a mapping"):
        Document(id="a", text="t", metadata=["x"])
    docs = [Document(id="a", text="comet tail", metadata={"year": np.int64(2019), "w": np.float32(0.5)})]
    index = build_index(docs, "bm25", name="n")
    save_index(index, tmp_path / "ok")
    assert load_index(tmp_path / "ok").search("comet", k=1)[0].metadata == {"year": 2019, "w": 0.5}
    odd = build_index([Document(id="b", text="comet", metadata={"tags": {"x"}})], "bm25", name="n")
    with pytest.raises(InvalidArgumentError, match="document 'b': metadata holds a set, which cannot be"):
        save_index(odd, tmp_path / "odd")
    assert not (tmp_path / "odd" / "CURRENT").exists()
    # before (session 45): saved, and loaded back with the key "1" (JSON writes keys as text)
    for metadata in ({1: "x"}, {"tags": [{"n": 1, 2: "y"}]}):
        keyed = build_index([Document(id="c", text="comet", metadata=metadata)], "bm25", name="n")
        with pytest.raises(InvalidArgumentError, match=r"document 'c': metadata has the key \d \(int\)"):
            save_index(keyed, tmp_path / "keyed")
        assert not (tmp_path / "keyed" / "CURRENT").exists()


def test_skill_router_settings(hashing_encoder):
    from ragroute.skills.records import Skill
    from ragroute.skills.router import SkillRouter

    skills = [Skill(f"s{i}", f"tool {i}", f"does thing {i}", "") for i in range(3)]
    router = SkillRouter.build(skills, hashing_encoder)
    for bad in ({"threshold": 5}, {"threshold": -1}, {"candidates": 0}, {"candidates": "5"}):
        with pytest.raises(RagrouteError, match="threshold must be a probability|candidates must be"):
            router.with_options(**bad)
        with pytest.raises(RagrouteError, match="threshold must be a probability|candidates must be"):
            SkillRouter(router.index, **bad)
    with pytest.raises(InvalidArgumentError, match="tasks must be a list, not a single string"):
        router.route_many("send email")
    assert [r.skills[0].id for r in router.route_many(["does thing 2"], k=2.0)] == ["s2"]


def test_a_pipelines_sources_are_read_only_and_nesting_still_works(pipeline, hashing_encoder):
    # editing the list changed nothing: the stages hold the sources, so "cook" was still searched
    assert isinstance(pipeline.sources, tuple)
    with pytest.raises(TypeError):
        pipeline.sources[:] = [s for s in pipeline.sources if s.name != "cook"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        pipeline.sources = list(pipeline.sources[:1])  # type: ignore[misc]
    assert [s.name for s in pipeline.sources] == ["astro", "cook", "it"]
    outer_source = Source("inner", pipeline)
    outer = Pipeline(
        [outer_source], PrototypeRouter([outer_source], hashing_encoder), encoder=hashing_encoder
    )
    hits = outer.retrieve("planets and stars", k=3).hits
    assert hits and {h.source for h in hits} == {"inner"}
    assert len(outer.documents) == len(pipeline.documents) > 0


def test_wrong_arguments_at_the_main_entry_points_are_one_line_errors(tmp_path, pipeline, hashing_encoder):
    from ragroute.encode import load_encoder
    from ragroute.index.io import load_index, save_index
    from ragroute.loaders import load_corpus
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.config import load_routing
    from ragroute.skills import load_catalogue

    save_index(pipeline.sources[0].retriever, tmp_path / "astro")
    named = r"encoder= takes an encoder object, not the name 'all-MiniLM-L6-v2': load it with " + (
        r"ragroute\.encode\.load_encoder\('all-MiniLM-L6-v2'\)"
    )
    calls = (  # each was AttributeError: 'str' object has no attribute 'model_id'
        lambda: load_index(tmp_path / "astro", encoder="all-MiniLM-L6-v2"),  # type: ignore[arg-type]
        lambda: load_routing("corpora/routing.yaml", encoder="all-MiniLM-L6-v2"),
        lambda: pipeline_from_settings(list(pipeline.sources), {}, encoder="all-MiniLM-L6-v2"),
    )
    for call in calls:
        with pytest.raises(InvalidArgumentError, match=named):
            call()
    with pytest.raises(InvalidArgumentError, match=r"encoder= takes an encoder object .* got int"):
        load_index(tmp_path / "astro", encoder=3)  # type: ignore[arg-type]
    assert load_index(tmp_path / "astro", encoder=hashing_encoder).kind == "dense"
    nothing = (  # TypeError: expected str, bytes or os.PathLike object, not NoneType
        (load_routing, "load_routing needs a routing config file path, got NoneType"),
        (load_corpus, "load_corpus needs a corpus file or folder path, got NoneType"),
        (load_catalogue, "load_catalogue needs a catalogue file or folder path, got NoneType"),
        (load_encoder, "load_encoder needs a model name or folder path, got NoneType"),
        (load_index, "load_index needs an index folder path, got NoneType"),
    )
    for function, said in nothing:
        with pytest.raises(InvalidArgumentError, match=said):
            function(None)  # type: ignore[operator]
    with pytest.raises(InvalidArgumentError, match="on_error must be 'skip' or 'raise', got 'ignore'"):
        load_corpus("corpora/astronomy", on_error="ignore")  # a plain ValueError
    with pytest.raises(InvalidArgumentError, match=r"contexts must be QueryContext objects .* got str"):
        pipeline.retrieve_contexts(["planets"])  # type: ignore[list-item]
    assert pipeline.retrieve_contexts([QueryContext.of("planets")], 2)[0].hits


def test_a_pipeline_checks_its_encoder_options_gate_and_reranker_at_the_constructor(pipeline):
    """Until session 56 ``Pipeline`` took a model name as its encoder (every source's scores then
    stayed raw, silently: no scale could be fitted), a ``router:`` mapping as its options
    (AttributeError), and a kind name as its gate (AttributeError at every query) or reranker (every
    query's rerank failed, in the trace only); a gate without a ``name`` raised at every query."""
    from ragroute.pipeline import GateDecision, RoutingOptions

    sources, router = list(pipeline.sources), pipeline.router
    with pytest.raises(
        InvalidArgumentError, match=r"^Pipeline: encoder= takes an encoder object, not the name"
    ):
        Pipeline(sources, router, encoder="all-MiniLM-L6-v2")
    with pytest.raises(InvalidArgumentError, match=r"^Pipeline: options must be RoutingOptions\(\.\.\.\) "):
        Pipeline(sources, router, options={"threshold": 0.1})  # type: ignore[arg-type]
    with pytest.raises(
        InvalidArgumentError, match=r"^Pipeline: gate must be a ragroute gate .*, not a string$"
    ):
        Pipeline(sources, router, gate="threshold")  # type: ignore[arg-type]
    with pytest.raises(
        InvalidArgumentError, match=r"^Pipeline: reranker must be a ragroute reranker .*string$"
    ):
        Pipeline(sources, router, reranker="parents")  # type: ignore[arg-type]

    class Unnamed:  # a gate without the protocol's ``name``
        def gate_many(self, contexts):
            return [GateDecision("retrieve", 0.9) for _ in contexts]

    gated = Pipeline(sources, router, gate=Unnamed(), options=RoutingOptions(threshold=0.1))
    result = gated.retrieve("telescope", k=2)
    assert result.hits and result.trace[0].detail["gate"] == "?"


def test_wrong_values_are_value_errors_and_a_non_text_query_is_not_empty(pipeline):
    from ragroute.errors import EmptyQueryError, InvalidQueryError
    from ragroute.skills.router import SkillRouter

    with pytest.raises(InvalidQueryError, match="query must be a string, got int") as raised:
        pipeline.retrieve(123)  # type: ignore[arg-type]
    assert not isinstance(raised.value, EmptyQueryError)  # an EmptyQueryError: but 123 is not empty
    with pytest.raises(EmptyQueryError):
        pipeline.retrieve("   ")
    wrong = (  # each a plain RagrouteError, which `except ValueError` let through
        (lambda: pipeline.retrieve("planets", scopes=[1]), "scopes: 1 is not a scope label"),  # type: ignore[list-item]
        (lambda: SkillRouter([], threshold="0.5"), r"threshold must be a probability in \[0, 1\], got '0.5'"),  # type: ignore[arg-type]
        (lambda: SkillRouter([], method="bm2"), "unknown stage-1 method 'bm2': choose one of"),
        (lambda: SkillRouter([], overlap="merge"), "unknown overlap mode 'merge'"),
    )
    for call, said in wrong:
        with pytest.raises(InvalidArgumentError, match=said):
            call()
        with pytest.raises(ValueError):
            call()


def test_a_source_checks_its_name_and_retriever(pipeline):
    from pathlib import Path

    index = pipeline.sources[0].retriever
    for bad in (1, "", "  ", None):
        with pytest.raises(InvalidArgumentError, match="a source's name must be a non-empty string"):
            Source(bad, index)  # type: ignore[arg-type]  # 1 reached every hit as its source
    for path in ("indexes/demo/astronomy", Path("indexes/demo/astronomy")):
        # accepted, then "neither documents nor a description" at the router
        said = (
            r"source 'a': retriever must be .* not a path \('indexes/demo/astronomy'\): load it first with "
        )
        with pytest.raises(InvalidArgumentError, match=said + r"ragroute\.index\.io\.load_index"):
            Source("a", path)  # type: ignore[arg-type]
    with pytest.raises(
        InvalidArgumentError, match=r"anything with search_contexts or search_many\), not a list"
    ):
        Source("a", [index])  # type: ignore[arg-type]
    assert Source("nested", pipeline).retriever is pipeline  # a pipeline, a Source: retrievers too
    assert Source("again", pipeline.sources[0]).name == "again"


def test_the_three_trainers_check_their_settings_alike_before_anything_loads():
    """Until session 49 the expert and tuned-probe settings read counts through int() (2.5 trained
    with 2, "x" was a ValueError traceback), the tuned probe never checked its warm-up (NaN failed
    inside the scheduler) and numpy numbers were kept as they came (the manifest's JSON refuses them)."""
    from ragroute.experts.train import ExpertTrainParams
    from ragroute.gate.tuned_probe import ProbeTrainParams
    from ragroute.rerank.train import TrainParams

    trainers = {
        "expert training": ExpertTrainParams,
        "tuned probe training": ProbeTrainParams,
        "reranker training": TrainParams,
    }
    for where, params in trainers.items():
        for bad in (2.5, "2", 0, True):
            with pytest.raises(RagrouteError, match=rf"^{where}: batch_size must be"):
                params(batch_size=bad)
        made = params(batch_size=np.int64(4), epochs=np.float64(2.0), learning_rate=np.float32(1e-4))
        assert (type(made.batch_size), type(made.epochs), type(made.learning_rate)) == (int, int, float)
        json.dumps(dataclasses.asdict(made))  # what a manifest writes
    for warmup in (float("nan"), 1.5):
        with pytest.raises(RagrouteError, match="^tuned probe training: warmup must be a share"):
            ProbeTrainParams(warmup=warmup)


def test_the_three_trainers_check_their_thread_count_before_anything_loads():
    """Until session 52 the trainers' ``threads`` went unchecked: 0 ran on every core, -1 failed
    inside torch only after the pairs were mined (or the corpus encoded), 2.5 trained an expert on
    2 threads and the reranker with a TypeError from torch."""
    from ragroute.experts.train import ExpertTrainParams
    from ragroute.gate.tuned_probe import ProbeTrainParams
    from ragroute.rerank.train import TrainParams

    trainers = {
        "expert training": ExpertTrainParams,
        "tuned probe training": ProbeTrainParams,
        "reranker training": TrainParams,
    }
    for where, params in trainers.items():
        for bad in (0, -1, 2.5, "2", True):
            with pytest.raises(RagrouteError, match=rf"^{where}: threads must be"):
                params(threads=bad)
        assert params().threads is None  # every usable core
        made = params(threads=np.int64(2))
        assert made.threads == 2 and type(made.threads) is int
