"""Distributed builds on Ray (``ragroute.scale.ray_build``, ``ragroute build --engine ray``).

Ray is an optional extra (``ragroute[ray]``), not in the ``test`` extra: without it this module is
skipped. Ray runs in local mode with two CPUs, started once for the module.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from rank_bm25 import BM25Okapi

from ragroute.cli import main
from ragroute.errors import RagrouteError
from ragroute.index.bm25_tokenize import tokenize_many
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.types import Document

ray = pytest.importorskip("ray")

from conftest import HashingEncoder  # noqa: E402

from ragroute.scale.ray_build import (  # noqa: E402
    build_graph_ray,
    build_index_ray,
    encode_on_ray,
    graphs_identical,
    indexes_identical,
    measure_build_throughput,
)

WORDS = ["telescope", "star", "galaxy", "orbit", "bread", "flour", "yeast", "oven"]
WORDS += ["printer", "laptop", "password", "network", "vpn"]
QUERIES = ["star orbit galaxy", "bread oven", "vpn password network", "laptop telescope yeast"]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Any:
    """Ray on this machine, two CPUs; the test encoder's module and this one (its encoder factories)
    are pickled by value for the workers, which cannot import them (until session 44 every factory
    here failed on the worker with "No module named 'test_ray_build'", whatever it did)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[HashingEncoder.__module__])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    rng = np.random.default_rng(11)
    return [
        Document(
            id=f"d{i:03d}", text=" ".join(rng.choice(WORDS, size=int(rng.integers(3, 20)))), title=f"t{i % 7}"
        )
        for i in range(90)
    ]


def _scores(index: Any, method: str) -> list[list[tuple[str, float]]]:
    return [[(h.doc_id, h.score) for h in index.search(q, k=15)] for q in QUERIES]


def _same_results(a: Any, b: Any, method: str) -> None:
    for got, want in zip(_scores(a, method), _scores(b, method)):
        assert [doc for doc, _ in got] == [doc for doc, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_ray_build_equals_the_single_process_build(corpus: list[Document], method: str) -> None:
    encoder = HashingEncoder()
    local = build_index(corpus, method, encoder=encoder)
    timings: dict[str, float] = {}
    built = build_index_ray(corpus, method, encoder=encoder, workers=2, shard_size=13, timings=timings)
    assert type(built) is type(local)
    assert [d.id for d in built.documents] == [d.id for d in local.documents]
    assert indexes_identical(local, built)
    assert set(timings) == {"startup_s", "workers_start_s", "build_s"}
    _same_results(built, local, method)
    assert built.manifest_params() == local.manifest_params()


def test_ray_graph_build_equals_the_single_process_graph() -> None:
    from ragroute.reliability.workload import corpus_records, documents

    docs = documents(corpus_records(1, 60))  # people and places: phrases, facts and synonym links
    encoder = HashingEncoder()
    local = build_index(docs, "graph", encoder=encoder)
    timings: dict[str, float] = {}
    built = build_graph_ray(docs, encoder=encoder, workers=2, timings=timings)
    assert local.tables.n_phrases > 10 and len(local.tables.fact_subject) > 10
    assert graphs_identical(local, built) and built.encoder is encoder
    assert set(timings) == {"startup_s", "workers_start_s", "build_s"}
    for query in ("Who lives in Kellow?", "Ada Brennan met the astro group"):
        assert [(h.doc_id, round(h.score, 6)) for h in built.search(query, k=5)] == [
            (h.doc_id, round(h.score, 6)) for h in local.search(query, k=5)
        ]
    assert built.manifest_params() == local.manifest_params()


def test_an_extractor_that_cannot_travel_to_the_workers_is_one_line(corpus: list[Document]) -> None:
    from ragroute.graph.extract import RuleExtractor

    extractor = RuleExtractor()
    extractor.lock = __import__("threading").Lock()  # type: ignore[attr-defined]
    with pytest.raises(RagrouteError, match=r"cannot be sent to Ray workers .*--engine local$"):
        build_graph_ray(corpus, encoder=HashingEncoder(), extractor=extractor, workers=1)


def test_encoding_on_ray_returns_the_vectors_in_order(corpus: list[Document]) -> None:
    # what `ragroute expert train --engine ray` gives the expert's training data
    encoder = HashingEncoder()
    texts = [d.full_text() for d in corpus]
    timings: dict[str, float] = {}
    vectors = encode_on_ray(texts, encoder=encoder, workers=2, timings=timings)
    assert np.allclose(vectors, encoder.encode_documents(texts), atol=1e-6, rtol=0)
    queries = encode_on_ray(texts[:7], encoder=encoder, queries=True, workers=2)
    assert np.allclose(queries, encoder.encode_queries(texts[:7]), atol=1e-6, rtol=0)
    assert set(timings) == {"startup_s", "workers_start_s", "build_s"}


def test_ray_bm25_scores_equal_rank_bm25(corpus: list[Document]) -> None:
    built = build_index_ray(corpus, "bm25", workers=2, shard_size=9)
    tokens = tokenize_many([d.full_text() for d in corpus], built.params.tokenizer)
    reference = BM25Okapi(tokens)
    for query in QUERIES:
        (query_tokens,) = tokenize_many([query], built.params.tokenizer)
        assert np.allclose(
            built.scorer.get_scores(query_tokens), reference.get_scores(query_tokens), atol=1e-6
        )


def test_ray_build_saves_and_loads_like_a_local_one(corpus: list[Document], tmp_path: Path) -> None:
    encoder = HashingEncoder()
    save_index(build_index_ray(corpus, "hybrid", encoder=encoder, workers=2), tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", encoder=encoder)
    local = build_index(corpus, "hybrid", encoder=encoder)
    _same_results(loaded, local, "hybrid")


def _dying_encoder() -> Any:
    """An encoder factory whose encoder kills its worker process on the first shard."""

    class Dying(HashingEncoder):
        def encode_documents(self, texts: Any, **kwargs: Any) -> Any:
            os._exit(1)

    return Dying()


def test_a_worker_killed_mid_build_is_one_line(corpus: list[Document]) -> None:
    with pytest.raises(RagrouteError) as caught:
        build_index_ray(corpus, "dense", encoder=HashingEncoder(), encoder_factory=_dying_encoder, workers=2)
    # the worker died encoding (not, as until session 44, unable to unpickle the factory)
    assert str(caught.value) == "Ray build failed: The actor died unexpectedly before finishing this task."


def test_unpicklable_encoder_names_the_fix(corpus: list[Document]) -> None:
    encoder = HashingEncoder()
    encoder.lock = __import__("threading").Lock()  # type: ignore[attr-defined]
    with pytest.raises(RagrouteError, match="encoder_factory"):
        build_index_ray(corpus, "dense", encoder=encoder, workers=1)


def test_measure_build_throughput_at_a_tiny_size(corpus: list[Document]) -> None:
    result = measure_build_throughput(corpus[:30], HashingEncoder(), [1, 2], method="hybrid")
    assert set(result["build_docs_per_s"]) == {1, 2}
    assert all(rate > 0 for rate in result["build_docs_per_s"].values())
    assert result["ray_identical"] is True
    assert result["ray_startup_s"] == 0.0  # Ray already up: nothing started, nothing counted
    assert result["single_process_docs_per_s"] > 0


@pytest.fixture
def corpus_file(tmp_path: Path, corpus: list[Document]) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in corpus))
    return path


def test_cli_engine_ray_builds_the_same_bm25_index(corpus_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for engine, out in (("local", "a"), ("ray", "b")):
        result = runner.invoke(
            main,
            ["build", str(corpus_file), "--out", str(tmp_path / out), "--method", "bm25", "--engine", engine],
        )
        assert result.exit_code == 0, result.output
    assert indexes_identical(load_index(tmp_path / "a"), load_index(tmp_path / "b"))


def test_cli_bad_address_is_one_line_and_keeps_the_previous_index(corpus_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "idx"
    assert (
        runner.invoke(main, ["build", str(corpus_file), "--out", str(out), "--method", "bm25"]).exit_code == 0
    )
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    current = (out / "CURRENT").read_bytes()
    args = ["build", str(corpus_file), "--out", str(out), "--method", "bm25", "--engine", "ray"]
    result = runner.invoke(main, [*args, "--address", "127.0.0.1:1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == ["error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"]
    assert (out / "CURRENT").read_bytes() == current
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def test_cli_ray_options_are_refused_where_they_do_not_apply(corpus_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["build", str(corpus_file), "--out", str(tmp_path / "x")]
    result = runner.invoke(main, [*base, "--method", "bm25", "--workers", "2"])
    assert result.exit_code == 2 and "--workers does not apply to --engine local" in result.output
    result = runner.invoke(
        main, [*base, "--method", "lancedb", "--lancedb", str(tmp_path / "v"), "--engine", "ray"]
    )
    assert result.exit_code == 2 and "--engine ray builds bm25, dense, hybrid and graph" in result.output


def test_cli_expert_train_refuses_ray_options_without_the_ray_engine(
    corpus_file: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        main, ["expert", "train", str(corpus_file), "--out", str(tmp_path / "e"), "--workers", "2"]
    )
    assert result.exit_code == 2 and "--workers does not apply to --engine local" in result.output
    assert not (tmp_path / "e").exists()


def test_cli_without_ray_is_one_line(
    corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    args = ["build", str(corpus_file), "--out", str(tmp_path / "x"), "--method", "bm25", "--engine", "ray"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert (
        result.output.strip().splitlines()[-1] == "error: --engine ray needs Ray: pip install 'ragroute[ray]'"
    )


def test_more_workers_than_the_cluster_has_cpus_is_one_line(corpus: list[Document]) -> None:
    """Each worker takes one CPU: until session 41 a third worker on this 2-CPU instance waited
    for a CPU forever, silently."""
    with pytest.raises(RagrouteError) as caught:
        build_index_ray(corpus, "bm25", workers=3)
    assert str(caught.value) == (
        "--workers 3 is more than the 2 CPUs of the Ray instance: each worker takes one CPU, so the "
        "build would wait for the rest forever; use --workers 2 or fewer"
    )


def test_workers_not_ready_in_time_is_one_line(
    corpus: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that cannot start (its CPU taken by other work) stopped the build forever (until
    session 41): now after _START_TIMEOUT_S, naming the free CPUs."""
    import ragroute.scale.ray_build as ray_build

    monkeypatch.setattr(ray_build, "_START_TIMEOUT_S", 1.0)

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self) -> int:
            return 1

    holder = Holder.remote()  # type: ignore[attr-defined]
    try:
        ray.get(holder.ping.remote())
        with pytest.raises(RagrouteError) as caught:
            build_index_ray(corpus, "bm25", workers=2)
    finally:
        ray.kill(holder)
    assert re.match(
        r"[12] of 2 Ray workers were not ready after 1 s \(the cluster has 0 CPUs free", str(caught.value)
    )
    monkeypatch.setattr(ray_build, "_START_TIMEOUT_S", 300.0)
    assert len(build_index_ray(corpus, "bm25", workers=2)) == len(corpus)  # its CPU back: builds


def test_workers_are_capped_at_the_shards_with_a_note(corpus: list[Document]) -> None:
    """Until session 41 12 workers for 3 documents started 12 actors, each loading the encoder."""
    timings: dict[str, float] = {}
    with pytest.warns(UserWarning, match=r"--workers 2 is more than the 1 shards of this work: 1 started"):
        built = build_index_ray(corpus, "bm25", workers=2, shard_size=len(corpus), timings=timings)
    assert indexes_identical(built, build_index(corpus, "bm25"))


def test_a_local_instance_starts_apart_from_a_running_cluster_with_at_most_its_cpus(
    corpus: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an address Ray starts a new local instance (address="local"): until session 41
    ray.init joined a cluster already running on the machine and failed ("When connecting to an
    existing cluster, num_cpus and num_gpus must not be provided"). --workers above the machine's
    CPUs start as many as it has, with a note (12 actors on 2 CPUs, each loading the encoder)."""
    import ragroute.scale.ray_build as ray_build

    calls: list[dict[str, Any]] = []

    class Fresh:
        """Ray as ray_build sees it on a machine where it is not initialised yet (the module's
        instance, already up, does the work)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ray, name)

        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs: Any) -> None:
            calls.append(kwargs)

        def shutdown(self) -> None:  # the module's instance stays up
            pass

    monkeypatch.setattr(ray_build, "_ray", Fresh)
    monkeypatch.setattr(ray_build, "usable_cpus", lambda: 2)
    with pytest.warns(UserWarning, match=r"--workers 12 is more than this machine's 2 CPUs .*: 2 started"):
        build_index_ray(corpus, "bm25", workers=12)
    assert [(call.get("address"), call.get("num_cpus")) for call in calls] == [("local", 2)]


def test_ray_refuses_documents_without_text_before_any_work(
    corpus: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_index refuses a document with neither text nor title; until session 41 the Ray build
    indexed it."""
    import ragroute.scale.ray_build as ray_build

    blank = [*corpus[:3], Document(id="blank", text="   ")]
    with pytest.raises(RagrouteError) as local:
        build_index(blank, "bm25")
    monkeypatch.setattr(ray_build, "_ray_job", None)  # no Ray work is started
    for method in ("bm25", "hybrid"):
        with pytest.raises(RagrouteError) as caught:
            build_index_ray(blank, method, encoder=HashingEncoder(), workers=1)
        assert str(caught.value) == str(local.value)
    with pytest.raises(RagrouteError) as caught:
        build_graph_ray(blank, encoder=HashingEncoder(), workers=1)
    assert str(caught.value) == str(local.value)


def test_ray_build_warns_of_documents_longer_than_the_encoder_reads(corpus: list[Document]) -> None:
    """As build_index does (until session 41 neither said a word)."""

    class Short(HashingEncoder):
        max_seq_length = 8

    with pytest.warns(UserWarning, match=r"at least \d+ of 90 documents are longer than the 8 tokens"):
        build_index_ray(corpus, "dense", encoder=Short(), workers=1)


def test_an_address_not_used_because_ray_is_up_is_said(corpus: list[Document]) -> None:
    """Ray already initialised in the process: until session 41 an address given was probed, then
    silently not used."""
    with pytest.warns(UserWarning, match=r"Ray is already initialised in this process .*not at auto"):
        build_index_ray(corpus, "bm25", workers=1, address="auto")


def test_progress_counts_the_shards_documents(corpus: list[Document], capsys: pytest.CaptureFixture) -> None:
    """--progress drew nothing on Ray until session 41 (the workers encode without a bar)."""
    build_index_ray(corpus, "dense", encoder=HashingEncoder(), workers=2, shard_size=13, show_progress=True)
    err = capsys.readouterr().err
    assert "encoding" in err and "90/90" in err


def _factory_without_model() -> Any:
    """An encoder factory that fails on the worker as a model missing there does."""
    raise RagrouteError("no model 'minilm-x' in /models on this node")


def _failing_encoder() -> Any:
    """An encoder factory whose encoder raises on its first shard."""

    class Failing(HashingEncoder):
        def encode_documents(self, texts: Any, **kwargs: Any) -> Any:
            raise ValueError("cannot encode an empty batch")

    return Failing()


def test_a_workers_own_error_is_the_one_line(corpus: list[Document]) -> None:
    """Until session 44 an error raised on a worker (its encoder not loading, an encoding error) was
    reported by Ray's header alone, in terminal colours: 'Ray build failed: \\x1b[36mray::
    _ShardWorker.ready()\\x1b[39m (pid=..., ip=..., actor_id=..., repr=...)', never the error."""
    for factory, said in (
        (_factory_without_model, "no model 'minilm-x' in /models on this node"),
        (_failing_encoder, "ValueError: cannot encode an empty batch"),
    ):
        with pytest.raises(RagrouteError) as caught:
            build_index_ray(corpus, "dense", encoder=HashingEncoder(), encoder_factory=factory, workers=2)
        assert str(caught.value) == f"Ray build failed: {said}"
    with pytest.raises(RagrouteError) as caught:
        encode_on_ray(
            ["a", "b", "c"], encoder=HashingEncoder(), encoder_factory=_factory_without_model, workers=1
        )
    assert str(caught.value) == "Ray encoding failed: no model 'minilm-x' in /models on this node"


def test_documents_that_are_not_a_list_of_documents_are_refused_as_build_index_refuses_them(
    corpus: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until session 44 a bare string gave AttributeError: 'str' object has no attribute 'text'
    (build_index: one line), and encode_on_ray("some text") started Ray and encoded each character."""
    import ragroute.scale.ray_build as ray_build

    monkeypatch.setattr(ray_build, "_ray_job", None)  # refused before any Ray work
    for bad in ("some text", [corpus[0], {"id": "x", "text": "y"}], 7):
        with pytest.raises(RagrouteError) as local:
            build_index(bad, "bm25")  # type: ignore[arg-type]
        with pytest.raises(RagrouteError) as caught:
            build_index_ray(bad, "bm25", workers=1)  # type: ignore[arg-type]
        assert str(caught.value) == str(local.value)
        with pytest.raises(RagrouteError) as caught:
            build_graph_ray(bad, encoder=HashingEncoder(), workers=1)  # type: ignore[arg-type]
        assert str(caught.value) == str(local.value)
    with pytest.raises(RagrouteError, match="texts must be a list, not a single string"):
        encode_on_ray("some text", encoder=HashingEncoder(), workers=1)
    for size, says in [(-5, ">= 1, got -5"), (0, ">= 1, got 0"), (2.5, "a whole number >= 1, got 2.5")]:
        # -5 cut no shard: "need at least one array to concatenate"
        with pytest.raises(RagrouteError, match=f"shard_size must be {says}$"):
            build_index_ray(corpus, "dense", encoder=HashingEncoder(), workers=1, shard_size=size)  # type: ignore[arg-type]


def test_a_worker_that_cannot_start_says_why(
    corpus: list[Document], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory whose module the workers cannot import (as ragroute or a plug-in missing on a node):
    until session 44 'Ray build failed: The actor died because of an error raised in its creation
    task, ray::_ShardWorker.__init__() (pid=..., ip=..., actor_id=..., repr=...)', not the error."""
    (tmp_path / "driver_only_module.py").write_text(
        "def factory():\n    raise RuntimeError('never called')\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import driver_only_module  # type: ignore[import-not-found]

    with pytest.raises(RagrouteError) as caught:
        build_index_ray(
            corpus, "dense", encoder=HashingEncoder(), encoder_factory=driver_only_module.factory, workers=1
        )
    assert str(caught.value) == (
        "Ray build failed: a worker could not start: "
        "ModuleNotFoundError: No module named 'driver_only_module'"
    )


def test_encoding_no_texts_on_ray_returns_at_once_with_the_encoders_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until session 44 encode_on_ray([]) started Ray and a worker that loaded the encoder to encode
    nothing. Now nothing starts: (0, dim) when the encoder is given; with only encoder_factory
    (0, 0), as before, documented (the width is not known without loading the encoder)."""
    import ragroute.scale.ray_build as ray_build

    monkeypatch.setattr(ray_build, "_ray_job", None)  # no Ray work at all
    encoder = HashingEncoder()
    timings: dict[str, float] = {}
    vectors = encode_on_ray([], encoder=encoder, encoder_factory=HashingEncoder, workers=2, timings=timings)
    assert vectors.shape == (0, encoder.dim) and vectors.dtype == np.float32
    assert timings == {"startup_s": 0.0, "workers_start_s": 0.0, "build_s": 0.0}
    assert encode_on_ray((), encoder=encoder, queries=True).shape == (0, encoder.dim)
    # a factory alone: its width is not known without loading the encoder, which is not done
    assert encode_on_ray([], encoder_factory=HashingEncoder).shape == (0, 0)
    with pytest.raises(RagrouteError, match="^encode_on_ray needs an encoder or an encoder_factory$"):
        encode_on_ray([])


def _other_model() -> Any:
    """An encoder factory that loads another model of the same width (as a node whose model cache
    holds another model or revision under the name the driver loaded)."""
    return HashingEncoder(model_id="test/other-hashing")


def test_workers_whose_encoder_is_not_the_drivers_are_refused(corpus: list[Document]) -> None:
    """The workers' vectors are searched with the driver's query vectors: until session 47 workers
    that loaded another model (of the same width) built an index that answered, silently wrong."""
    said = (
        "a Ray worker's encoder is not this process's (model_id 'test/other-hashing' there, "
        "'test/hashing' here): its vectors would not match the queries; load the same model on every "
        "node"
    )
    for method in ("dense", "hybrid"):
        with pytest.raises(RagrouteError) as caught:
            build_index_ray(corpus, method, encoder=HashingEncoder(), encoder_factory=_other_model, workers=2)
        assert str(caught.value) == said
    with pytest.raises(RagrouteError) as caught:
        build_graph_ray(corpus[:10], encoder=HashingEncoder(), encoder_factory=_other_model, workers=1)
    assert str(caught.value) == said
    with pytest.raises(RagrouteError) as caught:
        encode_on_ray(["a b", "c d"], encoder=HashingEncoder(), encoder_factory=_other_model, workers=1)
    assert str(caught.value) == said


def _hashing_encoder(lock: Any) -> Any:
    return HashingEncoder()


def test_an_encoder_factory_that_cannot_travel_to_the_workers_is_one_line(corpus: list[Document]) -> None:
    """As an encoder that does not pickle: until session 47 Ray's own multi-line TypeError ("Could
    not serialize the argument functools.partial(...) for a task or actor ...", then its
    serialization report), not one line."""
    factory = functools.partial(_hashing_encoder, threading.Lock())
    for build in (
        lambda: build_index_ray(
            corpus, "dense", encoder=HashingEncoder(), encoder_factory=factory, workers=1
        ),
        lambda: encode_on_ray(["a", "b"], encoder_factory=factory, workers=1),
    ):
        with pytest.raises(RagrouteError) as caught:
            build()
        assert str(caught.value) == (
            "the encoder_factory (partial) cannot be sent to Ray workers (cannot pickle '_thread.lock' "
            "object); pass a picklable function that loads the encoder (defined at module level)"
        )


def test_workers_and_shard_size_may_be_numpy_integers_and_bad_values_say_what_they_are(
    corpus: list[Document],
) -> None:
    """Until session 49 numpy.int64(2) workers (a count read from an array) was refused as "--workers
    must be at least 1, got np.int64(2)", and 2.5 as if it were below 1."""
    built = build_index_ray(corpus, "bm25", workers=np.int64(2), shard_size=np.int32(13))
    assert indexes_identical(built, build_index(corpus, "bm25"))
    for bad, says in [
        (2.5, "a whole number >= 1, got 2.5"),
        (True, "a whole number >= 1, got a boolean"),
        ("2", "a whole number >= 1, got a string"),
        (0, ">= 1, got 0"),
        (np.int64(-1), f">= 1, got {np.int64(-1)!r}"),
    ]:
        with pytest.raises(RagrouteError, match=f"^--workers must be {re.escape(says)}$"):
            build_index_ray(corpus, "bm25", workers=bad)  # type: ignore[arg-type]
        with pytest.raises(RagrouteError, match=f"^--workers must be {re.escape(says)}$"):
            encode_on_ray(["a b"], encoder=HashingEncoder(), workers=bad)  # type: ignore[arg-type]
