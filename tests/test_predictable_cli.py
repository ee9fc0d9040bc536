"""Issue #12 item 5, a predictable CLI: one per-user cache folder (announced once), ``--cache-dir`` on
every command that encodes, progress bars on terminals only, benchmarks that name what they skip
and show reference numbers only on their own data, and a first routed query that re-encodes no
document an index already holds."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import ragroute.cli.build as cli_build
import ragroute.cli.common as cli_common
import ragroute.cli.graph as cli_graph
import ragroute.encode
import ragroute.encode.resolve as resolve
from ragroute.cli import main
from ragroute.encode._common import PROGRESS_THRESHOLD, want_progress
from ragroute.progress import PROGRESS_ENV, progress_enabled

# ----------------------------------------------------------------------------------- cache folder


@pytest.fixture
def no_cache_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RAGROUTE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_cache_folder_is_ragroute_cache_then_xdg_then_home(no_cache_env, monkeypatch):
    tmp_path = no_cache_env
    assert resolve.default_cache_dir() == tmp_path / "home" / ".cache" / "ragroute"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as XDG says
    assert resolve.default_cache_dir() == tmp_path / "home" / ".cache" / "ragroute"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve.default_cache_dir() == tmp_path / "xdg" / "ragroute"
    monkeypatch.setenv("RAGROUTE_CACHE", str(tmp_path / "mine"))
    assert resolve.default_cache_dir() == tmp_path / "mine"
    assert not (tmp_path / "mine").exists()  # resolving creates nothing


def test_cache_folder_creation_is_said_once(no_cache_env, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(no_cache_env / "xdg"))
    folder = resolve.default_cache_dir(create=True)
    assert folder == no_cache_env / "xdg" / "ragroute" and folder.is_dir()
    assert resolve.default_cache_dir(create=True) == folder
    err = capsys.readouterr().err
    assert err.count("created cache folder") == 1 and str(folder) in err
    monkeypatch.setenv("RAGROUTE_CACHE", str(no_cache_env / "existing"))
    (no_cache_env / "existing").mkdir()
    resolve.default_cache_dir(create=True)  # already there: nothing to say
    assert capsys.readouterr().err == ""


def test_load_encoder_caches_in_the_user_folder(no_cache_env, monkeypatch, capsys):
    """Without cache_dir, load_encoder's embedding cache lives in the per-user folder (said once)."""
    from ragroute.encode import load as load_module

    monkeypatch.setenv("RAGROUTE_CACHE", str(no_cache_env / "user-cache"))
    seen = {}

    class Fake:
        model_id, backend, dim, max_seq_length = "test/fake", "torch", 4, 8

        def __init__(self, resolved, threads=None):
            seen["model"] = resolved.model_id

    monkeypatch.setattr(load_module, "SentenceTransformerEncoder", Fake)
    encoder = load_module.load_encoder(backend="torch")
    assert encoder.cache.path == no_cache_env / "user-cache" / "embeddings.sqlite"
    assert "created cache folder" in capsys.readouterr().err
    encoder.cache.close()


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


#: commands that never load an encoder (everything else must take --cache-dir)
NO_ENCODER = {
    "graph stats",
    "graph export",
    "rerank score",
    "inspect",
    "config check",
    "bench bm25",
    "bench reliability",
    "bench scale",  # synthetic vectors (its --ray-corpus builds use the per-user cache)
}


def test_every_command_that_encodes_takes_cache_dir():
    lacking = {
        name
        for name, command in _commands(main)
        if not any("--cache-dir" in param.opts for param in command.params)
    }
    assert lacking == NO_ENCODER


def test_every_option_and_command_explains_itself_in_help():
    undocumented = [
        f"{name} {param.opts[0]}"
        for name, command in _commands(main)
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert not undocumented, undocumented
    assert not [name for name, command in _commands(main) if not (command.help or "").strip()]


def test_no_option_help_is_only_its_default():
    """Until session 55 `expert train --learning-rate` said its default and nothing of what it sets,
    and `gate fit --max-steps` did not say what happens without it."""
    import re

    bare = [
        f"{name} {param.opts[0]}"
        for name, command in _commands(main)
        for param in command.params
        if isinstance(param, click.Option) and not re.sub(r"\[default:[^\]]*\]", "", param.help or "").strip()
    ]
    assert not bare, bare
    gate_fit = dict(_commands(main))["gate fit"]
    (max_steps,) = [p for p in gate_fit.params if "--max-steps" in p.opts]
    assert "[default: none" in (max_steps.help or "")


def test_commands_default_to_the_user_cache_and_take_cache_dir(tmp_path, monkeypatch, hashing_encoder):
    """`build` without --cache-dir caches in the per-user folder (no .cache beside the index)."""
    calls = []

    def load_encoder(name, backend="auto", cache_dir=None, **_kwargs):
        calls.append(cache_dir)
        return hashing_encoder

    monkeypatch.setattr(ragroute.encode, "load_encoder", load_encoder)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"_id": "a", "text": "comets have tails"}\n', encoding="utf-8")
    out = tmp_path / "indexes" / "idx"
    assert (
        CliRunner().invoke(main, ["build", str(corpus), "--out", str(out), "--method", "dense"]).exit_code
        == 0
    )
    mine = tmp_path / "mine"
    args = ["build", str(corpus), "--out", str(out), "--method", "dense", "--cache-dir", str(mine)]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert calls == [None, mine]


def test_routing_cache_dir_flag_then_config_then_user_folder(
    tmp_path, monkeypatch, hashing_encoder, small_docs
):
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.route.config import RoutingConfig

    save_index(build_index(small_docs, "dense", encoder=hashing_encoder, name="all"), tmp_path / "all")
    config = tmp_path / "conf" / "routing.yaml"
    config.parent.mkdir()
    config.write_text("sources:\n  all: {index: ../all}\nrouter: {kind: centroid}\n", encoding="utf-8")
    assert RoutingConfig.read(config).cache_dir() is None
    assert RoutingConfig.read(config).cache_dir(tmp_path / "flag") == tmp_path / "flag"
    calls = []

    def load_encoder(name, backend="auto", cache_dir=None, **_kwargs):
        calls.append(cache_dir)
        return hashing_encoder

    monkeypatch.setattr(ragroute.encode, "load_encoder", load_encoder)
    query = ["route", str(config), "telescope galaxy"]
    assert CliRunner().invoke(main, query).exit_code == 0
    assert CliRunner().invoke(main, [*query, "--cache-dir", str(tmp_path / "flag")]).exit_code == 0
    config.write_text(config.read_text() + "cache_dir: cache\n", encoding="utf-8")
    assert CliRunner().invoke(main, query).exit_code == 0
    assert CliRunner().invoke(main, [*query, "--cache-dir", str(tmp_path / "flag")]).exit_code == 0
    assert calls == [None, tmp_path / "flag", (config.parent / "cache").resolve(), tmp_path / "flag"]


# ----------------------------------------------------------------------------------- progress bars


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_unless_forced(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    big = PROGRESS_THRESHOLD + 1
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file, a CI pipe
    assert not progress_enabled() and not want_progress(None, big)
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert progress_enabled() and want_progress(None, big) and not want_progress(None, 10)
    monkeypatch.setenv(PROGRESS_ENV, "0")  # --no-progress on a terminal
    assert not progress_enabled() and not want_progress(None, big)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.setenv(PROGRESS_ENV, "1")  # --progress into a file
    assert progress_enabled() and want_progress(None, big)
    assert not want_progress(False, big) and want_progress(True, 3)  # a caller's explicit choice wins
    assert not progress_enabled(False)
    # a value that is neither is said once, not read (until session 50 read as unset without a word)
    from ragroute.progress import ProgressSettingWarning

    monkeypatch.setenv(PROGRESS_ENV, "ture")
    with pytest.warns(ProgressSettingWarning, match="RAGROUTE_PROGRESS='ture' is none of"):
        assert not progress_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not progress_enabled()  # said once per process


@pytest.fixture
def graph_workspace(tmp_path, monkeypatch, hashing_encoder):
    for module in (cli_graph, cli_common, cli_build):
        monkeypatch.setattr(module, "open_encoder", lambda name, backend, cache_dir: hashing_encoder)
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    rows = [
        {"_id": f"p{i}", "title": f"Town {i}", "text": f"Town {i} lies on the river Varne."} for i in range(6)
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return tmp_path


def test_no_bar_in_a_log_and_a_bar_with_progress(graph_workspace):
    corpus, out = graph_workspace / "corpus.jsonl", graph_workspace / "g"
    plain = CliRunner().invoke(main, ["graph", "build", str(corpus), "--out", str(out)])
    assert plain.exit_code == 0, plain.output
    assert "extracting" not in plain.stderr and "%|" not in plain.output
    forced = CliRunner().invoke(main, ["--progress", "graph", "build", str(corpus), "--out", str(out)])
    assert forced.exit_code == 0, forced.output
    assert "extracting" in forced.stderr and "100%|" in forced.stderr
    import os

    assert PROGRESS_ENV not in os.environ  # the flag applied to that command only
    off = CliRunner().invoke(
        main, ["--no-progress", "graph", "build", str(corpus), "--out", str(out)], env={PROGRESS_ENV: "1"}
    )
    assert off.exit_code == 0 and "extracting" not in off.stderr


class _Recorder:
    """An encoder recording the ``show_progress`` each encoding pass is given."""

    def __init__(self, encoder):
        self.encoder, self.dim, self.shown = encoder, encoder.dim, []

    def encode_queries(self, texts, *, batch_size=64, show_progress=None):
        self.shown.append(("queries", len(texts), show_progress))
        return self.encoder.encode_queries(texts)

    def encode_documents(self, texts, *, batch_size=64, show_progress=None):
        self.shown.append(("documents", len(texts), show_progress))
        return self.encoder.encode_documents(texts)

    def __getattr__(self, name):  # model_id, backend, describe, ... of the encoder it wraps
        return getattr(self.encoder, name)


def test_skills_build_and_gate_fit_encode_under_the_progress_rule(tmp_path, monkeypatch, hashing_encoder):
    """`skills build` (every dense view, and the re-encoding that tunes the dense weight) and `gate
    fit` (its examples, also under --select) leave the bar to the rule: a terminal, a long pass.
    Until session 55 they passed show_progress=False, so thousands of skills or examples encoded on
    a terminal for many seconds without a bar, where `build` and `graph build` show one."""
    recorder = _Recorder(hashing_encoder)
    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *args, **kwargs: recorder)
    words = ["weather", "stock", "email", "calendar", "translate", "route", "pdf", "unit", "image", "audio"]
    rows = [
        {"_id": f"t{i}", "name": f"tool {i}", "description": f"{words[i % 10]} tool {i}",
         "body": f"params: {words[(i + 3) % 10]} {i}"}
        for i in range(24)
    ]  # fmt: skip
    (tmp_path / "skills.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    built = CliRunner().invoke(
        main, ["skills", "build", str(tmp_path / "skills.jsonl"), "--out", str(tmp_path / "s")]
    )
    assert built.exit_code == 0, built.output
    assert "adaptive" in built.output  # the dense weight was tuned (one more encoding pass)
    documents = [shown for kind, _, shown in recorder.shown if kind == "documents"]
    assert len(documents) >= 2 and documents == [None] * len(documents), recorder.shown

    recorder.shown.clear()
    labels = [
        {"text": f"{words[i % 10]} question {i}", "label": "no" if i % 2 else "retrieve"} for i in range(40)
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in labels) + "\n", encoding="utf-8")
    fit = CliRunner().invoke(
        main,
        ["gate", "fit", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "g"), "--signals", "knn_vote"],
    )
    assert fit.exit_code == 0, fit.output
    assert recorder.shown and all(shown is None for _, _, shown in recorder.shown), recorder.shown
    recorder.shown.clear()  # --select encodes once for all its folds and candidates
    from ragroute.gate.selection import select_gate

    texts, retrieve = [r["text"] for r in labels], [r["label"] != "no" for r in labels]
    select_gate(texts, retrieve, recorder, candidates={"knn": {"signals": ["knn_vote"]}}, folds=2)
    assert recorder.shown and all(shown is None for _, _, shown in recorder.shown), recorder.shown


# ----------------------------------------------------------------------------------- benchmarks


def _collection(folder: Path, name: str, words: list[str], split: str = "dev") -> None:
    folder.mkdir(parents=True)
    rows = [{"_id": f"{name}-{i}", "text": " ".join(words[i:] + words[:i])} for i in range(len(words))]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    queries = [{"_id": f"{name}-q{i}", "text": f"{words[i]} {words[i + 1]}"} for i in range(3)]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n", encoding="utf-8")
    (folder / "qrels").mkdir()
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{name}-q{i}\t{name}-{i}\t1\n" for i in range(3))
    (folder / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")


@pytest.fixture
def mixed_root(tmp_path) -> Path:
    root = tmp_path / "data"
    _collection(root / "astro", "astro", ["telescope", "star", "galaxy", "orbit", "planet", "comet"])
    _collection(root / "cook", "cook", ["bread", "flour", "yeast", "oven", "butter", "sauce"])
    _collection(
        root / "late", "late", ["printer", "laptop", "password", "network", "vpn", "email"], split="test"
    )
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a collection", encoding="utf-8")
    (root / "SOURCE.md").write_text("a file, not a folder", encoding="utf-8")
    return root


def test_corpus_routing_names_what_it_skipped_and_shows_no_glasgow_numbers(
    mixed_root, monkeypatch, hashing_encoder
):
    from ragroute.cli.bench import corpus_routing_command

    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **k: hashing_encoder)
    result = CliRunner().invoke(corpus_routing_command, ["--data", str(mixed_root), "--json"])
    assert result.exit_code == 0, result.output
    assert f"skipped {mixed_root / 'late'}: no qrels/dev.tsv (splits: test)" in result.stderr
    assert f"skipped {mixed_root / 'notes'}: not a BEIR collection (no qrels/ folder)" in result.stderr
    assert "SOURCE.md" not in result.output
    assert "skipped router llamaindex-embedding-selector (baseline): no description for astro, cook" in (
        result.stderr
    )
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload["collections"]) == {"astro", "cook"}
    assert set(payload["skipped"]["collections"]) == {"late", "notes"}
    assert payload["baseline_reference"] is None
    assert "issue reference" not in result.output and "0.520" not in result.output


def test_reference_numbers_belong_to_their_data(tmp_path):
    from ragroute.evaluation.bench_corpus_routing import (
        BASELINES_REFERENCE,
        GLASGOW_SIZES,
        glasgow_reference,
    )
    from ragroute.evaluation.bench_graph import MUSIQUE_SIZE, REFERENCE, musique_reference

    glasgow = dict(GLASGOW_SIZES)
    assert glasgow_reference(glasgow, "dev", BASELINES_REFERENCE) is BASELINES_REFERENCE
    seven = {n: size for n, size in glasgow.items() if n != "time"}  # one collection skipped
    assert glasgow_reference(seven, "dev", BASELINES_REFERENCE) is None
    assert glasgow_reference(glasgow, "test", BASELINES_REFERENCE) is None
    assert glasgow_reference({"astro": (3, 2), "cook": (3, 2)}, "dev", BASELINES_REFERENCE) is None
    assert musique_reference(tmp_path / "musique", "dev", REFERENCE, MUSIQUE_SIZE) is REFERENCE
    assert musique_reference(tmp_path / "2wiki", "dev", REFERENCE, MUSIQUE_SIZE) is None


def test_reference_numbers_are_left_out_on_data_cut_from_theirs(tmp_path):
    # the names alone were checked: Glasgow cut to 40 documents a collection, a 60-query slice of
    # metatool_need_tool or a cut musique folder printed the numbers as if measured there
    from conftest import HashingEncoder

    from ragroute.evaluation import bench_gate
    from ragroute.evaluation.bench_corpus_routing import (
        BASELINES_REFERENCE,
        GLASGOW_SIZES,
        glasgow_reference,
    )
    from ragroute.evaluation.bench_graph import REFERENCE, musique_reference

    said: list[str] = []
    cut = {name: (40, queries) for name, (_, queries) in GLASGOW_SIZES.items()}
    assert glasgow_reference(cut, "dev", BASELINES_REFERENCE, said.append) is None
    assert said[0].startswith("issue reference left out: the data differs from the Glasgow dev")
    assert "adi 40 documents and 18 queries, measured on 82 and 18" in said[0]
    assert musique_reference(tmp_path / "musique", "dev", REFERENCE, (60, 500), said.append) is None
    assert "60 questions over 500 passages, measured on 100 over 1890" in said[1]

    folder = tmp_path / "metatool_need_tool"
    folder.mkdir()
    rows = [{"_id": f"r{i}", "text": f"look up the price of item {i}", "label": "tool"} for i in range(30)]
    rows += [{"_id": f"a{i}", "text": f"tell me a joke number {i}", "label": "no_tool"} for i in range(30)]
    (folder / "slice60.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = bench_gate.run_gate_bench(
        folder / "slice60.jsonl",
        folds=2,
        encoder=HashingEncoder(dim=64),
        gates=["knn5_embedding"],
        log=said.append,
    )
    assert result["task"] == "metatool_need_tool" and result["baseline_reference"] == {}
    assert "(issue)" not in bench_gate.format_report(result)
    assert (
        "issue reference left out: the data differs from the metatool_need_tool dev file it was measured "
        "on (60 queries, measured on 520)" in said
    )


# ----------------------------------------------------------------------------------- first query


class CountingEncoder:
    """The hashing encoder, counting the documents it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.model_id, self.backend, self.dim = inner.model_id, inner.backend, inner.dim
        self.documents_encoded = 0

    def encode_queries(self, texts, **kwargs):
        return self.inner.encode_queries(texts, **kwargs)

    def encode_documents(self, texts, **kwargs):
        self.documents_encoded += len(texts)
        return self.inner.encode_documents(texts, **kwargs)

    def describe(self):
        return self.inner.describe()


class _NoVectors:
    """A retriever exposing the same documents but no dense index: the router must encode."""

    def __init__(self, index):
        self.documents = index.documents

    def search_many(self, queries, k):
        return [[] for _ in queries]


def _many_docs(n: int):
    from ragroute.types import Document

    rng = np.random.default_rng(3)
    topics = {
        "astro": "telescope star galaxy orbit planet comet nebula",
        "cook": "bread flour yeast oven butter sauce knife",
    }
    return {
        topic: [
            Document(id=f"{topic}-{i}", text=" ".join(rng.choice(words.split(), size=10))) for i in range(n)
        ]
        for topic, words in topics.items()
    }


@pytest.mark.parametrize(
    "kind, params, expected",
    [
        ("dense", {}, "index"),
        ("hybrid", {}, "index"),
        ("dense", {"factory": "hnsw"}, "index"),
        ("dense", {"factory": "ivfpq", "ivf_nlist": 2, "pq_bits": 4}, "encoded"),  # codes, not vectors
        ("bm25", {}, "encoded"),
    ],
)
def test_prototype_bank_reads_the_index_vectors_and_routes_the_same(hashing_encoder, kind, params, expected):
    from ragroute.index.build import build_index
    from ragroute.index.dense import DenseParams
    from ragroute.route.prototype import PrototypeConfig, PrototypeRouter
    from ragroute.route.sources import Source

    counting = CountingEncoder(hashing_encoder)
    docs = _many_docs(80)
    options = {"dense_params": DenseParams(**params)} if params else {}
    sources = [
        Source(topic, build_index(d, kind, encoder=hashing_encoder, name=topic, **options), description=topic)
        for topic, d in docs.items()
    ]
    config = PrototypeConfig(max_docs=50)  # a sample: positions matter
    router = PrototypeRouter(sources, counting, config)
    assert router.bank_from == {"astro": expected, "cook": expected}
    assert counting.documents_encoded == (0 if expected == "index" else 100)
    for s, source in enumerate(sources):
        texts = [source.documents[int(p)].full_text() for p in router._bank_positions[s]]
        np.testing.assert_allclose(router._banks[s], hashing_encoder.encode_documents(texts), atol=1e-6)
    encoded = PrototypeRouter(
        [Source(s.name, _NoVectors(s.retriever), description=s.description) for s in sources],
        hashing_encoder,
        PrototypeConfig(max_docs=50),
    )
    assert encoded.bank_from == {"astro": "encoded", "cook": "encoded"}
    queries = ["telescope galaxy", "flour and butter", "a comet in the oven"]
    vectors = hashing_encoder.encode_queries(queries)
    np.testing.assert_allclose(router.scores(vectors), encoded.scores(vectors), atol=1e-5)
    assert router.calibration["temperature"] == pytest.approx(encoded.calibration["temperature"], abs=1e-6)
    assert [d.chosen for d in router.route_many(queries)] == [d.chosen for d in encoded.route_many(queries)]


def test_new_routing_config_over_built_indexes_encodes_no_document(tmp_path, hashing_encoder):
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    for topic, docs in _many_docs(30).items():
        save_index(build_index(docs, "hybrid", encoder=hashing_encoder, name=topic), tmp_path / topic)
    (tmp_path / "routing.yaml").write_text(
        "sources:\n  astro: {index: astro, description: stars}\n  cook: {index: cook, description: food}\n"
        "router: {kind: ensemble, members: [prototype, confidence]}\n",
        encoding="utf-8",
    )
    counting = CountingEncoder(hashing_encoder)
    result = load_routing(tmp_path / "routing.yaml", encoder=counting).retrieve("telescope galaxy", 3)
    assert result.decision.chosen[0] == "astro" and result.hits
    assert counting.documents_encoded == 0
