"""Expert sets, expert training, and the routers that choose among experts."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import HashingEncoder

from ragroute.context import QueryContext
from ragroute.errors import CalibrationWarning, EncoderMismatchError, RagrouteError
from ragroute.experts.expert_set import ExpertSet, ExpertSpec, adapter_view
from ragroute.experts.pseudo_queries import MIN_DOCUMENTS, cut_pseudo_queries
from ragroute.route.expert_gains import ExpertGains
from ragroute.route.expert_quality import QualityRouter
from ragroute.route.pilot import TEMPERATURE_GRID, PilotRouter
from ragroute.types import Document

WORDS = {
    "orbit": "telescope galaxy comet nebula spectrum quasar eclipse asteroid meteor pulsar",
    "baking": "flour yeast oven butter dough crust sugar whisk icing pastry",
    "network": "router packet firewall subnet latency bandwidth switch cable proxy gateway",
}


class Unsearched:
    """A source's retriever that routers are built over but never search."""

    def search_many(self, queries: list[str], k: int = 10, **_: object) -> list[list[object]]:
        return [[] for _ in queries]


UNSEARCHED = Unsearched()


def corpus(per_topic: int = 24) -> list[Document]:
    rng = np.random.default_rng(3)
    docs = []
    for topic, words in WORDS.items():
        vocab = words.split()
        for i in range(per_topic):
            rare = [f"{topic}{kind}{i // 3}" for kind in ("alpha", "beta", "gamma")]  # in 3 documents each
            sentences = [" ".join([*rng.choice(vocab, size=7), rare[j]]) + "." for j in range(3)]
            title = f"{topic} notes {' '.join(rng.choice(vocab, size=2))}"
            docs.append(Document(id=f"{topic}-{i}", title=title, text=" ".join(sentences)))
    return docs


# --------------------------------------------------------------------------- pseudo-queries


def test_pseudo_queries_cover_every_kind_and_point_at_their_document() -> None:
    docs = corpus()
    queries = cut_pseudo_queries(docs)
    by_id = {d.id: d for d in docs}
    assert {q.kind for q in queries} == {"title", "sentence", "keyphrases"}
    for q in queries:
        doc = by_id[q.doc_id]
        if q.kind == "title":
            assert q.text == doc.title
        elif q.kind == "sentence":
            assert q.text in doc.text
        else:
            assert 3 <= len(q.text.split()) <= 5
            assert all(word in doc.full_text().lower() for word in q.text.split())
    assert cut_pseudo_queries(docs) == queries  # deterministic
    assert cut_pseudo_queries(docs, seed=1) != queries


def test_pseudo_queries_do_not_depend_on_the_order_of_the_corpus() -> None:
    """One random stream ran through the documents in corpus order, and the cap sampled list
    positions: until session 42 a reversed corpus, or one document added, cut other pseudo-queries
    for the documents already there (and trained another expert)."""
    docs = corpus()
    for cap in (6000, 40):
        queries = cut_pseudo_queries(docs, max_queries=cap)
        assert cut_pseudo_queries(docs[::-1], max_queries=cap) == queries
        assert [(q.doc_id, q.kind) for q in queries] == sorted(
            ((q.doc_id, q.kind) for q in queries),
            key=lambda key: (key[0], ("title", "sentence", "keyphrases").index(key[1])),
        )
    extra = Document(
        id="zz-extra", title="An unrelated added page", text="A page about nothing at all in particular here."
    )
    grown = [
        q for q in cut_pseudo_queries([*docs, extra]) if q.doc_id != "zz-extra" and q.kind != "keyphrases"
    ]
    assert grown == [q for q in cut_pseudo_queries(docs) if q.kind != "keyphrases"]


def test_pseudo_queries_respect_the_cap_and_the_kinds() -> None:
    docs = corpus()
    assert len(cut_pseudo_queries(docs, max_queries=40)) == 40
    assert {q.kind for q in cut_pseudo_queries(docs, kinds=("title",))} == {"title"}
    with pytest.raises(RagrouteError, match="unknown pseudo-query kind"):
        cut_pseudo_queries(docs, kinds=("titles",))


def test_a_title_without_a_body_is_not_a_pseudo_query() -> None:
    bare = [Document(id=f"d{i}", title=f"only a title number {i}", text="") for i in range(60)]
    queries = cut_pseudo_queries(corpus() + bare)
    assert all(q.doc_id.startswith(tuple(WORDS)) for q in queries if q.kind == "title")


def test_a_body_that_only_repeats_the_title_gives_no_title_pseudo_query() -> None:
    """Until session 54 a document whose body is its title again (case, spacing or a final full
    stop aside) gave its title as a pseudo-query: the whole document, as a query for itself."""
    echoes = [
        Document(id=f"e{i}", title=f"Only a title number {i}", text=f"only a  title number {i}.")
        for i in range(5)
    ]
    queries = cut_pseudo_queries(corpus() + echoes)
    assert not [q for q in queries if q.kind == "title" and q.doc_id.startswith("e")]
    assert {q.doc_id for q in queries if q.kind == "title"} == {d.id for d in corpus()}


def test_documents_too_short_to_cut_a_pseudo_query_from_are_refused_not_trained_on(tmp_path: Path) -> None:
    # 60 one-word documents gave 0 pseudo-queries, and `expert train` still published an untrained
    # expert with exit 0 (also through the Python API)
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.experts.train import train_expert

    words = [Document(id=f"w{i}", text="ok") for i in range(60)]
    expected = "from 0 of the 60 documents with text (a document gives one with a title of 3 words"
    with pytest.raises(RagrouteError, match=re.escape(expected)) as info:
        cut_pseudo_queries(words)
    assert f"an expert needs pseudo-queries from at least {MIN_DOCUMENTS}" in str(info.value)
    with pytest.raises(RagrouteError, match=re.escape(expected)):
        train_expert(words, tmp_path / "api")
    assert not (tmp_path / "api").exists()
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(60):
        (folder / f"t{i}.txt").write_text("ok\n")
    result = CliRunner().invoke(main, ["expert", "train", str(folder), "--out", str(tmp_path / "cli")])
    assert result.exit_code != 0 and not (tmp_path / "cli").exists()
    assert result.output.strip().splitlines()[-1].startswith("error: cut 0 pseudo-queries"), result.output


def test_too_small_a_corpus_says_how_many_documents_it_needs() -> None:
    with pytest.raises(RagrouteError, match=f"at least {MIN_DOCUMENTS}"):
        cut_pseudo_queries(corpus()[:10])


def test_too_few_documents_giving_pseudo_queries_names_what_needs_them() -> None:
    """Both refusals name what needs the pseudo-queries (a router's fit, the reranker's pairs): until
    session 52 the one for documents too short to cut from said "an expert needs" whatever asked."""
    words = [Document(id=f"w{i}", text="ok") for i in range(60)]
    purpose = "fitting a router on med's pseudo-queries"
    refusals = ((corpus()[:10], "needs at least"), (words, "needs pseudo-queries from at least"))
    for documents, needs in refusals:
        with pytest.raises(RagrouteError, match=re.escape(f"{purpose} {needs} {MIN_DOCUMENTS}")) as info:
            cut_pseudo_queries(documents, purpose=purpose)
        assert "expert" not in str(info.value)


def test_a_repeated_document_id_is_refused_not_trained_towards_one_of_its_documents(tmp_path: Path) -> None:
    # a pseudo-query's positive is its document's id: two documents of one id had their pseudo-queries
    # paired with the same id, and training pointed every one of them at the last (until session 49)
    from ragroute.experts.train import train_expert

    docs = corpus()
    twin = Document(id=docs[0].id, title="another page entirely here", text=docs[30].text)
    with pytest.raises(RagrouteError, match=f"^document id {docs[0].id!r} is repeated: each document"):
        cut_pseudo_queries([*docs, twin])
    with pytest.raises(RagrouteError, match="is repeated"):
        train_expert([*docs, twin], tmp_path / "e")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("temperature", [0, -0.05, float("nan"), float("inf"), "0.05", True])
def test_an_expert_temperature_that_is_not_above_0_is_one_line(temperature) -> None:
    # 0 trained NaN (after the corpus was encoded) and a negative one trained the adapter to rank
    # each pseudo-query's own document last, without a word (until session 49)
    from ragroute.experts.train import ExpertTrainParams

    with pytest.raises(RagrouteError, match="^expert training: temperature must be a number above 0"):
        ExpertTrainParams(temperature=temperature)
    assert ExpertTrainParams(temperature=0.1).temperature == 0.1


# --------------------------------------------------------------------------- training and loading


@pytest.fixture(scope="module")
def trained_expert(tmp_path_factory: pytest.TempPathFactory, minilm) -> Path:
    from ragroute.experts.train import ExpertTrainParams, train_expert

    out = tmp_path_factory.mktemp("experts") / "orbit"
    params = ExpertTrainParams(epochs=1, batch_size=16, max_queries=48, threads=1)
    report = train_expert(corpus(), out, params, show_progress=False)
    assert report["pseudo_queries"] == 48 and report["mode"] == "query-lora"
    return out


def test_inspect_names_an_experts_base_encoder(trained_expert: Path) -> None:
    from click.testing import CliRunner

    from ragroute.cli import main

    result = CliRunner().invoke(main, ["inspect", str(trained_expert)])
    assert result.exit_code == 0, result.output
    assert "expert / query-lora" in result.output
    assert "  base encoder: sentence-transformers/all-MiniLM-L6-v2" in result.output.splitlines()


def test_a_query_lora_expert_changes_queries_not_documents(trained_expert: Path, minilm) -> None:
    from ragroute.experts.encoder import QueryAdapterEncoder, load_expert_encoder

    expert = load_expert_encoder(trained_expert, minilm)
    assert isinstance(expert, QueryAdapterEncoder)
    texts = ["telescope galaxy comet", "flour yeast oven"]
    base_q, expert_q = minilm.encode_queries(texts), expert.encode_queries(texts)
    assert np.allclose(np.linalg.norm(expert_q, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(base_q, expert_q, atol=1e-4)  # the adapter was merged
    assert np.allclose(expert.encode_documents(texts), minilm.encode_documents(texts))
    assert expert.model_id == minilm.model_id and expert.query_space != minilm.model_id
    # the whole build id names the query space (its first 12 digits are a timestamp to 0.1 s)
    from ragroute.store import open_snapshot

    assert expert.query_space.endswith("@" + open_snapshot(trained_expert).manifest.build)


def test_expert_train_refuses_an_out_of_the_users_files_before_loading_the_corpus(tmp_path, monkeypatch):
    """`expert train --out DIR` where DIR holds the user's files (no `manifest.json` or `CURRENT`)
    passed the check made before any work (`check_replaceable` looked only at artifacts): the
    corpus was loaded, encoded and trained on before `refusing to overwrite` (until session 53)."""
    from click.testing import CliRunner

    from ragroute.cli import main

    def no_loading(*_args, **_kwargs):
        raise AssertionError("the corpus was loaded for an --out that cannot be published")

    monkeypatch.setattr("ragroute.loaders.load_corpus", no_loading)
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text('{"_id": "d1", "text": "Comets have an ion tail."}\n')
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["expert", "train", str(corpus_file), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output == f"error: refusing to overwrite {out}: it exists and is not a ragroute artifact\n"
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_the_training_device_is_recorded_and_an_unusable_one_is_one_line(
    trained_expert: Path, tmp_path, monkeypatch
) -> None:
    from click.testing import CliRunner

    import ragroute.encode
    from ragroute.cli import main
    from ragroute.store import open_snapshot

    def no_encoding(*_args, **_kwargs):
        raise AssertionError("the corpus was about to be encoded for a device that cannot train")

    monkeypatch.setattr(ragroute.encode, "load_encoder", no_encoding)

    params = open_snapshot(trained_expert, family="expert").manifest.params
    assert params["train"]["device"] == "cpu"
    # what embedded the documents trained against: its backend changes the targets (not recorded
    # until session 38); here the base model run by torch inside train_expert
    assert params["document_vectors"] == {
        "model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "backend": "torch",
    }
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text("\n".join(f'{{"_id": "{d.id}", "text": "{d.text}"}}' for d in corpus()))
    result = CliRunner().invoke(
        main,
        ["expert", "train", str(corpus_file), "--out", str(tmp_path / "x"), "--device", "nosuchdevice"]
        + ["--backend", "torch", "--threads", "1"],
    )
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: cannot train on device 'nosuchdevice' here (")
    assert lines[0].endswith("; use --device cpu")
    assert not (tmp_path / "x").exists()  # refused before any work: nothing published, nothing encoded
    # the benchmark that trains missing experts refuses the same way, before encoding the collections
    result = CliRunner().invoke(
        main, ["bench", "experts", "--data", str(tmp_path), "--device", "nosuchdevice", "--backend", "torch"]
    )
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
    assert "cannot train on device 'nosuchdevice' here" in result.output
    # and its mixture options: checked after every collection was encoded (until session 38)
    monkeypatch.setattr(
        "ragroute.evaluation.bench_experts.run_experts_bench", lambda *a, **k: pytest.fail("ran the bench")
    )
    for option, wrong, said in (
        ("--fusion", "bogus", "unknown fusion method 'bogus'"),
        ("--max-routes", "0", "'max_routes' must be at least 1"),
    ):
        result = CliRunner().invoke(
            main, ["bench", "experts", "--data", str(tmp_path), option, wrong, "--backend", "torch"]
        )
        assert result.exit_code != 0 and said in result.output, (result.output, result.exception)


def test_merged_lora_equals_the_low_rank_update() -> None:
    import torch

    from ragroute.experts.encoder import merge_lora

    layer = torch.nn.Linear(4, 3, bias=False)
    net = torch.nn.Sequential(layer)
    before = layer.weight.detach().clone()
    a = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    b = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
    assert merge_lora(net, {"0.A": a, "0.B": b}, {"0": 0.5}, "test") == 1
    assert torch.allclose(layer.weight, before + 0.5 * torch.from_numpy(b @ a))
    with pytest.raises(RagrouteError, match="does not match"):
        merge_lora(net, {"0.A": a}, {"0": 0.5}, "test")
    with pytest.raises(RagrouteError, match="shape"):
        merge_lora(net, {"0.A": a[:, :3], "0.B": b}, {"0": 0.5}, "test")
    # an adapter file that passes its checksums but is not what training writes: one line each,
    # which the expert set reports (tracebacks from inside torch or float() until session 36)
    for tensors, scales, said in [
        ({"0.A": a, "0.B": b}, [0.5], "'scales' must map layer names to numbers"),
        ({"0.A": a, "0.B": b}, {"0": "x"}, "has scale 'x', not a number"),
        ({"0.A": a, "0.B": b}, {"0": float("nan")}, "has scale nan, not a number"),
        ({"0.A": a.ravel(), "0.B": b}, {"0": 0.5}, "not two float matrices B @ A"),
        ({"0.A": a, "0.B": b[:, :1]}, {"0": 0.5}, "not two float matrices B @ A"),
    ]:
        with pytest.raises(RagrouteError, match=re.escape(said)):
            merge_lora(net, tensors, scales, "test")


def test_a_merged_adapter_refuses_what_training_never_writes_and_merges_mixed_floats() -> None:
    """Until session 55 the matrices of a layer missing from 'scales' were skipped, NaN or infinite
    matrices and a scale other than alpha / rank were merged, all without a word, and matrices of
    two float dtypes raised torch's RuntimeError (a traceback out of the expert set)."""
    import torch

    from ragroute.experts.encoder import merge_lora

    a = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    b = np.arange(6, dtype=np.float32).reshape(3, 2) / 10

    def net() -> torch.nn.Sequential:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(3, 3, bias=False))

    for tensors, scales, expected, said in [
        ({"0.A": a, "0.B": b, "1.A": a[:, :3], "1.B": b}, {"0": 2.0}, None, "'1.A' is of no layer"),
        ({"0.A": a, "0.B": b, "stray": a}, {"0": 2.0}, None, "'stray' is of no layer"),
        ({"0.A": np.full_like(a, np.nan), "0.B": b}, {"0": 2.0}, None, "holds numbers that are not finite"),
        ({"0.A": a, "0.B": np.full_like(b, np.inf)}, {"0": 2.0}, None, "holds numbers that are not finite"),
        ({"0.A": a, "0.B": b}, {"0": 4.0}, 2.0, "has scale 4.0, not its alpha / rank (2.0)"),
    ]:
        model = net()
        before = model[0].weight.detach().clone()
        with pytest.raises(RagrouteError, match=re.escape(said)):
            if expected is None:
                merge_lora(model, tensors, scales, "x")
            else:
                merge_lora(model, tensors, scales, "x", expected_scale=expected)
        assert torch.equal(model[0].weight, before)
    model, mixed = net(), net()
    merge_lora(model, {"0.A": a, "0.B": b}, {"0": 2.0}, "x")
    merge_lora(mixed, {"0.A": a.astype(np.float16), "0.B": b.astype(np.float64)}, {"0": 2.0}, "x")
    assert torch.allclose(mixed[0].weight, model[0].weight, atol=1e-3)
    assert mixed[0].weight.dtype == torch.float32


def test_lora_scale_is_alpha_over_rank_where_both_are_recorded() -> None:
    from ragroute.experts.encoder import lora_scale

    assert lora_scale({"rank": 8, "alpha": 16, "scales": {}}) == 2.0
    assert lora_scale({"scales": {}}) is None and lora_scale({"rank": 0, "alpha": 16}) is None


def test_expert_set_shares_one_index_and_reports_experts_that_fail(trained_expert: Path, minilm) -> None:
    specs = [
        ExpertSpec("base", "base"),
        ExpertSpec("bm25", "bm25"),
        ExpertSpec("orbit", "adapter", str(trained_expert)),
        ExpertSpec("broken", "adapter", str(trained_expert.parent / "missing")),
    ]
    experts = ExpertSet(specs, minilm)
    assert experts.names == ["base", "bm25", "orbit"]
    assert [p.name for p in experts.problems] == ["broken"] and "no expert" in experts.problems[0].error
    sources = experts.sources("toy", corpus())
    base, bm25, orbit = (s.retriever for s in sources)
    assert orbit.faiss_index is base.faiss_index and orbit.store is base.store is bm25.store
    context = QueryContext("comet nebula telescope", id="q")
    for source in sources:
        hits = source.search_contexts([context], 5)[0][0]
        assert hits and hits[0].doc_id.startswith("orbit") and hits[0].source == source.name
    assert experts.query_encoders(["base", "bm25"]) == []
    assert len(experts.query_encoders(["base", "orbit"])) == 1


def test_expert_specs_refuse_bad_entries(minilm) -> None:
    with pytest.raises(RagrouteError, match="unknown kind"):
        ExpertSpec("x", "lora")
    with pytest.raises(RagrouteError, match="experts need a path"):
        ExpertSpec("x", "adapter")
    with pytest.raises(RagrouteError, match="unique"):
        ExpertSet([ExpertSpec("a", "base"), ExpertSpec("a", "bm25")], minilm)


def test_adapter_view_needs_a_dense_index_of_the_base_model(
    trained_expert: Path, minilm, hashing_encoder
) -> None:
    from ragroute.experts.encoder import load_expert_encoder
    from ragroute.index.dense import DenseIndex
    from ragroute.index.lexical import BM25Index

    expert = load_expert_encoder(trained_expert, minilm)
    with pytest.raises(RagrouteError, match="dense index"):
        adapter_view(BM25Index.build(corpus()), expert)
    with pytest.raises(RagrouteError, match="adapts"):
        adapter_view(DenseIndex.build(corpus()[:5], hashing_encoder), expert)


# --------------------------------------------------------------------------- routers


def two_cluster_gains(n: int = 40, dim: int = 8) -> ExpertGains:
    """Queries near e0 are answered best by expert A, near e1 by B; C never wins."""
    rng = np.random.default_rng(0)
    vectors, gains, texts = [], [], []
    for i in range(n):
        axis = i % 2
        v = np.zeros(dim)
        v[axis] = 1.0
        v += rng.normal(0, 0.1, dim)
        vectors.append(v / np.linalg.norm(v))
        gains.append([0.9, 0.2, 0.1] if axis == 0 else [0.2, 0.8, 0.1])
        texts.append(f"query {i} {'alpha' if axis == 0 else 'beta beta beta'}")
    return ExpertGains(["A", "B", "C"], texts, np.array(vectors), np.array(gains))


class FixedDim:
    model_id, backend, dim = "test/fixed", "hashing", 8


@pytest.mark.parametrize("mode", ["nearest", "mean"])
def test_pilot_router_routes_to_the_expert_that_won_nearby_queries(mode: str, tmp_path: Path) -> None:
    data = two_cluster_gains()
    router = PilotRouter.fit(data, mode=mode, clusters=2, encoder=FixedDim())
    probe = np.eye(8)[:2]
    decisions = router.route_many(["a", "b"], query_vectors=probe)
    assert [d.chosen[0] for d in decisions] == ["A", "B"]
    assert decisions[0].routes["C"] == 0.0  # no pilot: never chosen
    assert decisions[0].routes["A"] > 0.5 and "pilot_similarity" in decisions[0].signals
    router.save(tmp_path / "pilot")
    loaded = PilotRouter.load(tmp_path / "pilot", FixedDim())
    assert [d.routes for d in loaded.route_many(["a", "b"], query_vectors=probe)] == [
        d.routes for d in decisions
    ]

    class Other(FixedDim):
        dim = 16

    with pytest.raises(EncoderMismatchError, match="refit"):
        PilotRouter.load(tmp_path / "pilot", Other())


def test_pilot_temperature_is_fitted_out_of_fold() -> None:
    # ten experts whose wins have nothing to do with the query: in-sample each query sits near the
    # pilot it helped make and the softmax looks sure; pilots made without it show there is no signal
    rng = np.random.default_rng(4)
    n, experts = 80, 10
    vectors = rng.normal(size=(n, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gains = np.full((n, experts), 0.1)
    gains[np.arange(n), rng.integers(0, experts, n)] = 0.9
    data = ExpertGains([f"e{j}" for j in range(experts)], [f"q{i}" for i in range(n)], vectors, gains)
    in_sample = PilotRouter.fit(data, folds=0)
    out_of_fold = PilotRouter.fit(data)
    assert np.allclose(in_sample.pilots, out_of_fold.pilots)  # same pilots, another temperature
    assert out_of_fold.temperature > 5 * in_sample.temperature
    probe = rng.normal(size=(20, 16))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    sure = [max(d.routes.values()) for d in in_sample.route_many(["x"] * 20, query_vectors=probe)]
    unsure = [max(d.routes.values()) for d in out_of_fold.route_many(["x"] * 20, query_vectors=probe)]
    assert np.mean(unsure) < 0.2 < 0.35 < np.mean(sure)  # ten experts: 0.1 is no preference
    # where the wins follow the queries, the out-of-fold fit stays sure
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clean = PilotRouter.fit(two_cluster_gains())
    assert clean.route_many(["a"], query_vectors=np.eye(8)[:1])[0].routes["A"] > 0.9
    # sure to the grid's floor, said once, of the temperature kept: the in-sample and inner fold
    # fits, thrown away, said it six more times (session 40 audit)
    assert clean.temperature == min(TEMPERATURE_GRID)
    assert len([w for w in caught if issubclass(w.category, CalibrationWarning)]) == 1


@pytest.mark.parametrize("clusters", [1, 3])
def test_pilots_and_temperature_do_not_depend_on_the_order_of_the_training_queries(clusters) -> None:
    # k-means started from seeded picks of row positions, and the folds of the out-of-fold temperature
    # were dealt in query order: until session 51 the same training queries in another order made
    # pilots up to 0.25 apart (clusters > 1) and fitted another temperature, so routed otherwise
    rng = np.random.default_rng(2)
    n, dim = 90, 8
    axes = rng.integers(0, 3, n)
    vectors = np.eye(dim)[axes] + rng.normal(0, 0.6, (n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gains = np.full((n, 3), 0.2)
    noisy = rng.random(n) < 0.35  # a third of the wins go elsewhere: a temperature inside the grid
    gains[np.arange(n), np.where(noisy, rng.integers(0, 3, n), axes)] = 0.8
    data = ExpertGains(["A", "B", "C"], [f"q{i}" for i in range(n)], vectors, gains)
    probe = rng.normal(size=(30, dim))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        first = PilotRouter.fit(data, clusters=clusters)
        assert min(TEMPERATURE_GRID) < first.temperature < max(TEMPERATURE_GRID)
        expected = [d.routes for d in first.route_many(["x"] * 30, query_vectors=probe)]
        for seed in range(3):
            shuffled = PilotRouter.fit(
                data.subset(np.random.default_rng(seed).permutation(n).tolist()), clusters=clusters
            )
            assert np.array_equal(shuffled.pilots, first.pilots)
            assert np.array_equal(shuffled.owners, first.owners)
            assert shuffled.temperature == first.temperature
            assert [d.routes for d in shuffled.route_many(["x"] * 30, query_vectors=probe)] == expected


def domain_vectors(axis: int, n: int, seed: int, dim: int = 8, spread: float = 0.5) -> np.ndarray:
    """``n`` unit vectors scattered around basis vector ``axis`` (overlapping domains)."""
    rng = np.random.default_rng(seed)
    v = np.eye(dim)[axis] + rng.normal(0, spread, (n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_domain_pilots_route_to_the_expert_of_the_nearest_domain_without_queries(tmp_path: Path) -> None:
    labels = ["base", "bm25", "expert-med", "expert-law"]
    domains = {"expert-med": domain_vectors(0, 40, 1), "expert-law": domain_vectors(1, 60, 2)}
    router = PilotRouter.from_domains(labels, domains, encoder=FixedDim())
    assert router.owners.tolist() == [2, 3]  # one pilot per domain expert, none for the generalists
    centre = domains["expert-med"].mean(0)
    assert np.allclose(router.pilots[0], centre / np.linalg.norm(centre))
    probe = np.vstack([np.eye(8)[0], np.eye(8)[1], (np.eye(8)[0] + np.eye(8)[1]) / np.sqrt(2)])
    decisions = router.route_many(["a", "b", "c"], query_vectors=probe)
    assert [d.chosen[0] for d in decisions[:2]] == ["expert-med", "expert-law"]
    assert decisions[0].routes["base"] == decisions[0].routes["bm25"] == 0.0
    # the temperature is fitted on the domains' own documents: sure near a domain, unsure between
    assert decisions[0].routes["expert-med"] > 0.9 and decisions[1].routes["expert-law"] > 0.9
    assert max(decisions[2].routes.values()) < 0.8
    router.save(tmp_path / "domain")
    loaded = PilotRouter.load(tmp_path / "domain", FixedDim())
    assert [d.routes for d in loaded.route_many(["a", "b", "c"], query_vectors=probe)] == [
        d.routes for d in decisions
    ]


FILLER = "the of and a to in is that for it with as on was this by are be from at"


def filler_domain(topic: str, n: int, seed: int) -> list[Document]:
    """Documents of one domain: mostly words every domain shares, two domain words per sentence."""
    rng = np.random.default_rng(seed)
    filler, vocab = FILLER.split(), WORDS[topic].split()
    return [
        Document(
            id=f"{topic}-{i}",
            text=" ".join(
                " ".join([*rng.choice(filler, size=10), *rng.choice(vocab, size=2)]) + "." for _ in range(3)
            ),
        )
        for i in range(n)
    ]


def test_domain_pilots_calibrate_on_pseudo_queries_not_on_the_documents_that_made_them() -> None:
    encoder = HashingEncoder(dim=256)  # wide enough that the two domains' words do not collide
    labels = ["base", "bm25", "orbit", "baking"]
    docs = {"orbit": filler_domain("orbit", 40, 1), "baking": filler_domain("baking", 40, 2)}
    vectors = {name: encoder.encode_documents([d.text for d in ds]) for name, ds in docs.items()}
    weak = "the comet was on the list of the things that are in this"  # one domain word among fillers
    strong = "comet nebula quasar pulsar telescope galaxy"
    # the documents built the centroids and fall cleanly on their side: the fit runs to the smallest
    # temperature, and a query with one domain word is as sure as one made of nothing else
    on_documents = PilotRouter.from_domains(labels, vectors, encoder=encoder)
    assert on_documents.temperature == pytest.approx(1e-3)
    weak_docs, strong_docs = on_documents.route_many([weak, strong])
    assert weak_docs.routes["orbit"] > 0.999 and strong_docs.routes["orbit"] > 0.999
    # word windows cut from the documents are query-sized, and some hold no domain word at all
    on_queries = PilotRouter.from_domains(labels, vectors, encoder=encoder, documents=docs)
    assert on_queries.temperature > 0.005
    assert np.allclose(on_queries.pilots, on_documents.pilots)  # same pilots, another temperature
    weak_q, strong_q = on_queries.route_many([weak, strong])
    assert weak_q.chosen[0] == strong_q.chosen[0] == "orbit"
    assert 0.5 < weak_q.routes["orbit"] < 0.9 < strong_q.routes["orbit"]
    assert weak_q.routes["base"] == weak_q.routes["bm25"] == 0.0
    with pytest.raises(RagrouteError, match="need an encoder"):
        PilotRouter.from_domains(labels, vectors, documents=docs)
    with pytest.raises(RagrouteError, match="documents missing for domain.*baking"):
        PilotRouter.from_domains(labels, vectors, encoder=encoder, documents={"orbit": docs["orbit"]})


def test_domain_pilots_refuse_unknown_experts_and_single_domains() -> None:
    with pytest.raises(RagrouteError, match="not in the set: expert-tax"):
        PilotRouter.from_domains(["base", "expert-med"], {"expert-med": np.eye(2), "expert-tax": np.eye(2)})
    with pytest.raises(RagrouteError, match="at least two"):
        PilotRouter.from_domains(["base", "expert-med"], {"expert-med": np.eye(2)})


def test_a_pilot_router_refuses_an_expert_name_given_twice() -> None:
    # labels A, A, B: each decision's routes kept A's second column (no pilot, probability 0), so A
    # was never routed to, however near its pilot, and the routes summed to 0 (until session 51)
    domains = {"A": domain_vectors(0, 20, 1), "B": domain_vectors(1, 20, 2)}
    for labels in (["A", "A", "B"], ["A", "B", "A"]):
        with pytest.raises(RagrouteError, match="expert names must be unique: A repeated"):
            PilotRouter.from_domains(labels, domains)
    with pytest.raises(RagrouteError, match="expert names must be unique: A repeated"):
        PilotRouter(["A", "A"], np.eye(8)[:2], np.array([0, 1]))
    router = PilotRouter.from_domains(["A", "B"], domains)
    decision = router.route_many(["x"], query_vectors=np.eye(8)[:1])[0]
    assert decision.chosen == ["A"] and sum(decision.routes.values()) == pytest.approx(1.0, abs=1e-5)


def test_pilot_router_needs_a_query_some_expert_wins() -> None:
    flat = ExpertGains(["A", "B"], ["q1", "q2"], np.eye(2), np.full((2, 2), 0.5))
    with pytest.raises(RagrouteError, match="no training query"):
        PilotRouter.fit(flat)


def test_quality_router_predicts_which_expert_does_better(tmp_path: Path) -> None:
    data = two_cluster_gains(n=60)
    router = QualityRouter.fit(data, encoder=FixedDim())
    probe = np.eye(8)[:2]
    texts = ["query 99 alpha", "query 98 beta beta beta"]
    decisions = router.route_many(texts, query_vectors=probe)
    assert [d.chosen[0] for d in decisions] == ["A", "B"]
    predicted = decisions[0].signals["predicted_ndcg@10"]
    assert predicted["A"] == pytest.approx(0.9, abs=0.15) and predicted["A"] > max(
        predicted["B"], predicted["C"]
    )
    router.save(tmp_path / "quality")
    loaded = QualityRouter.load(tmp_path / "quality", FixedDim())
    again = loaded.route_many(texts, query_vectors=probe)
    assert [d.routes for d in again] == [d.routes for d in decisions]


def test_saved_expert_routers_load_by_kind_and_check_the_expert_names(tmp_path: Path) -> None:
    from ragroute.route.factories import RouterBuild, load_saved_router, pilot
    from ragroute.route.sources import Source

    PilotRouter.fit(two_cluster_gains(), encoder=FixedDim()).save(tmp_path / "p")
    QualityRouter.fit(two_cluster_gains(), encoder=FixedDim()).save(tmp_path / "q")
    assert isinstance(load_saved_router(tmp_path / "p", FixedDim()), PilotRouter)
    assert isinstance(load_saved_router(tmp_path / "q", FixedDim()), QualityRouter)
    sources = [Source("A", UNSEARCHED), Source("Z", UNSEARCHED)]
    with pytest.raises(RagrouteError, match="B, C are not among the sources"):
        pilot({"model": str(tmp_path / "p")}, RouterBuild(sources, FixedDim(), where="cfg"))
    with pytest.raises(RagrouteError, match="holds a pilot router"):
        QualityRouter.load(tmp_path / "p", FixedDim())


@pytest.mark.parametrize("kind", [PilotRouter, QualityRouter])
def test_expert_routers_check_their_encoder_as_every_fitted_router_and_gate_does(kind, tmp_path: Path):
    """One encoder check for fitted routers and gates (encode/identity.py): an expert router loaded
    with another encoder gets its message, naming both encoders and the remedy; one whose model
    folder changed since (same id, other weights digest) is refused too; no encoder: the router is
    given its query vectors, nothing to check."""
    from ragroute.encode.identity import check_fitted_encoder

    class Weighed(FixedDim):
        def __init__(self, weights: str) -> None:
            self.weights = weights

        def describe(self) -> dict:
            return {"model_id": self.model_id, "dim": self.dim, "weights": self.weights}

    class Wider(FixedDim):
        dim = 16

    folder = kind.fit(two_cluster_gains(), encoder=Weighed("w1")).save(tmp_path / "r")
    name = "pilot" if kind is PilotRouter else "quality"
    with pytest.raises(EncoderMismatchError) as info:
        kind.load(folder, Wider())
    assert str(info.value) == (
        f"{name} router {folder} was fitted with encoder test/fixed (8-d), not test/fixed (16-d): "
        "use that encoder, or refit it with this one"
    )
    with pytest.raises(EncoderMismatchError) as shared:
        check_fitted_encoder(f"{name} router {folder}", {"model_id": "test/fixed", "dim": 8}, Wider())
    assert str(shared.value) == str(info.value)
    with pytest.raises(EncoderMismatchError, match=r"weights w1\), whose files have changed since"):
        kind.load(folder, Weighed("w2"))
    assert kind.load(folder, Weighed("w1")).labels == ["A", "B", "C"]
    assert kind.load(folder).labels == ["A", "B", "C"]


def test_expert_gains_winners_skip_ties_everywhere() -> None:
    data = ExpertGains(
        ["A", "B"], ["x", "y", "z"], np.zeros((3, 2)), np.array([[1, 0], [0.5, 0.5], [0.2, 0.2]])
    )
    assert data.winners() == [[0], [], []]
    with pytest.raises(RagrouteError, match="shape"):
        ExpertGains(["A"], ["x"], np.zeros((1, 2)), np.zeros((1, 2)))


def test_gains_within_the_tie_tolerance_of_each_other_are_a_tie_among_all_experts() -> None:
    # until session 54 only exact equality was a tie among all: gains 1e-13 apart made every expert
    # a winner, and a pilot router put the query into every expert's pilot
    data = ExpertGains(
        ["A", "B", "C"],
        ["x", "y"],
        np.zeros((2, 2)),
        np.array([[0.5, 0.5 + 1e-13, 0.5], [0.5, 0.5 + 1e-13, 0.1]]),
    )
    assert data.winners() == [[], [0, 1]]


def test_a_quality_router_without_an_encoder_record_is_checked_by_its_width(tmp_path: Path) -> None:
    # until session 54 it loaded with an encoder of any width, and routing (or query vectors of
    # another width) raised numpy's broadcast traceback
    router = QualityRouter.fit(two_cluster_gains())  # no encoder: none recorded
    folder = router.save(tmp_path / "q")
    with pytest.raises(EncoderMismatchError) as info:
        QualityRouter.load(folder, HashingEncoder(dim=64))
    assert str(info.value) == (
        f"quality router {folder} was fitted on 8-d query vectors, but encoder test/hashing gives 64-d "
        "query vectors: route with an encoder of that width, or refit the router with this one"
    )
    assert QualityRouter.load(folder, HashingEncoder(dim=8)).labels == ["A", "B", "C"]
    with pytest.raises(EncoderMismatchError, match="fitted on 8-d query vectors, but the caller gives 16-d"):
        router.route_many(["alpha"], query_vectors=np.ones((1, 16), dtype=np.float32))


# --------------------------------------------------------------------------- pipelines over experts


def test_fusing_experts_merges_hits_of_the_same_document(trained_expert: Path, minilm) -> None:
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.fixed import FixedRoutes

    experts = ExpertSet([ExpertSpec("base", "base"), ExpertSpec("bm25", "bm25")], minilm)
    sources = experts.sources("toy", corpus())
    pipeline = pipeline_from_settings(
        sources, {"threshold": 0.0, "fusion": "rrf"}, encoder=minilm, router=FixedRoutes(["base", "bm25"])
    )
    result = pipeline.retrieve("comet nebula telescope", k=10)
    ids = [h.doc_id for h in result.hits]
    assert len(ids) == len(set(ids)) == 10
    top = result.hits[0].explain
    assert {"base", "bm25"} <= set(top)  # both lists' ranks explain the fused score


def test_a_routing_config_with_query_side_experts(trained_expert: Path, minilm, tmp_path: Path) -> None:
    import yaml

    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    save_index(build_index(corpus(), "dense", encoder=minilm), tmp_path / "index")
    PilotRouter.fit(
        ExpertGains(
            ["base", "orbit"],
            ["comet", "flour"],
            minilm.encode_queries(["comet", "flour"]),
            np.array([[0.2, 0.9], [0.8, 0.3]]),
        ),
        encoder=minilm,
    ).save(tmp_path / "router")
    config = {
        "sources": {
            "base": {"index": "index"},
            "orbit": {"index": "index", "expert": str(trained_expert)},
            "nowhere": {"index": "index", "expert": "missing-expert"},
        },
        "router": {"kind": "pilot", "model": "router", "max_routes": 1},
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(config))
    pipeline = load_routing(tmp_path / "routing.yaml", encoder=minilm)
    assert [s.name for s in pipeline.sources] == ["base", "orbit"]
    assert pipeline.sources[1].retriever.faiss_index is pipeline.sources[0].retriever.faiss_index
    result = pipeline.retrieve("comet", k=3)
    assert result.decision.chosen == ["orbit"] and result.hits[0].source == "orbit"
    assert "nowhere" in str(result.decision.signals.get("unavailable_sources", result.decision.to_dict()))


def test_a_full_expert_has_its_own_embedding_space(tmp_path: Path, minilm) -> None:
    from ragroute.experts.encoder import QueryAdapterEncoder, load_expert_encoder
    from ragroute.experts.train import ExpertTrainParams, train_expert

    params = ExpertTrainParams(mode="full", epochs=1, batch_size=8, max_queries=16, max_length=32, threads=1)
    report = train_expert(corpus(), tmp_path / "full", params, show_progress=False)
    assert report["mode"] == "full" and report["pseudo_queries"] == 16
    expert = load_expert_encoder(tmp_path / "full", minilm)
    assert not isinstance(expert, QueryAdapterEncoder)
    docs = ["telescope galaxy comet nebula"]
    assert not np.allclose(expert.encode_documents(docs), minilm.encode_documents(docs), atol=1e-4)
    experts = ExpertSet(
        [ExpertSpec("base", "base"), ExpertSpec("full", "adapter", str(tmp_path / "full"))], minilm
    )
    base, full = experts.sources("toy", corpus()[:60])
    assert full.retriever.faiss_index is not base.retriever.faiss_index  # its own index
    # the same model published with pickled weights (pytorch_model.bin) is refused, not unpickled
    import shutil

    import torch
    from safetensors.torch import load_file

    from ragroute.errors import ModelNotFoundError
    from ragroute.store import open_snapshot, write_artifact

    snapshot = open_snapshot(tmp_path / "full", family="expert")
    saved = dict(snapshot.manifest.params)
    with write_artifact(tmp_path / "pickled", "expert", "full", params=saved) as build:
        shutil.copytree(Path(snapshot.path) / "model", build.path / "model")
        weights = build.path / "model" / "model.safetensors"
        torch.save(load_file(str(weights)), str(build.path / "model" / "pytorch_model.bin"))
        weights.unlink()
    with pytest.raises(ModelNotFoundError, match="no model.safetensors .* a pytorch_model.bin is a pickle"):
        load_expert_encoder(tmp_path / "pickled", minilm)


def test_expert_cli_trains_and_fits_a_router_on_pseudo_queries(
    trained_expert: Path, minilm, tmp_path: Path
) -> None:
    import json

    import yaml
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index

    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text(
        "\n".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) for d in corpus())
    )
    result = CliRunner().invoke(
        main,
        ["expert", "train", str(corpus_file), "--out", str(tmp_path / "cli-expert"), "--epochs", "1"]
        + ["--max-queries", "16", "--batch-size", "8", "--threads", "1", "--backend", "torch"],
    )
    assert result.exit_code == 0, result.output
    assert "16 pseudo-queries" in result.output and (tmp_path / "cli-expert" / "CURRENT").is_file()

    save_index(build_index(corpus(), "dense", encoder=minilm), tmp_path / "index")
    save_index(build_index(corpus(), "bm25"), tmp_path / "bm25")
    config = {
        "backend": "torch",
        "cache_dir": "cache",
        "sources": {
            "base": {"index": "index"},
            "bm25": {"index": "bm25"},
            "orbit": {"index": "index", "expert": str(trained_expert)},
        },
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        main,
        [
            "expert",
            "fit-router",
            str(tmp_path / "routing.yaml"),
            "--kind",
            "quality",
            "--out",
            str(tmp_path / "q"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert set(summary["mean_ndcg@10"]) == {"base", "bm25", "orbit"}
    assert all(0.0 < v <= 1.0 for v in summary["mean_ndcg@10"].values())
    assert QualityRouter.load(tmp_path / "q", minilm).labels == ["base", "bm25", "orbit"]

    # --kind domain: pilots from each expert's own corpus, no query searched
    config["sources"]["baking"] = {"index": "index", "expert": str(trained_expert)}
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(config))
    for topic in ("orbit", "baking"):
        (tmp_path / f"{topic}.jsonl").write_text(
            "\n".join(json.dumps({"_id": d.id, "text": d.text}) for d in corpus() if d.id.startswith(topic))
        )
    fit = ["expert", "fit-router", str(tmp_path / "routing.yaml"), "--out", str(tmp_path / "dom")]
    orbit, baking = f"orbit={tmp_path / 'orbit.jsonl'}", f"baking={tmp_path / 'baking.jsonl'}"
    domains = ["--domain", orbit, "--domain", baking]
    result = CliRunner().invoke(main, [*fit, "--kind", "domain", *domains])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["domain_documents"] == {"orbit": 24, "baking": 24}
    router = PilotRouter.load(tmp_path / "dom", minilm)
    decisions = router.route_many(["comet and nebula spectrum", "butter dough in the oven"])
    assert [d.chosen[0] for d in decisions] == ["orbit", "baking"]
    assert decisions[0].routes["base"] == decisions[0].routes["bm25"] == 0.0
    # a table corpus whose text column is not `text`: read with the column options (no option
    # existed until session 36, and the error pointed at --text-column, which fit-router lacked)
    (tmp_path / "baking.csv").write_text(
        "docid,body\n" + "".join(f"{d.id},{d.text}\n" for d in corpus() if d.id.startswith("baking"))
    )
    table = ["--domain", orbit, "--domain", f"baking={tmp_path / 'baking.csv'}"]
    result = CliRunner().invoke(main, [*fit, "--kind", "domain", *table, "--text-column", "body"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["domain_documents"] == {"orbit": 24, "baking": 24}
    for args, message in [
        (["--kind", "domain", "--domain", baking.replace("baking=", "x="), *domains[:2]], "not a source"),
        (["--kind", "domain", *domains[:2]], "at least two experts"),
        (["--kind", "pilot", *domains], "--domain does not apply to --kind pilot"),
        (["--kind", "domain", *domains, "--data", str(tmp_path)], "--data does not apply to --kind domain"),
        (["--kind", "quality", "--text-column", "body"], "--text-column does not apply to --kind quality"),
    ]:
        result = CliRunner().invoke(main, [*fit, *args])
        assert result.exit_code != 0 and message in result.output, result.output


def test_fit_router_means_leave_out_queries_with_nothing_relevant(tmp_path: Path) -> None:
    # a --data query judged with grade 0 only has no nDCG@10, but counted as 0 for every expert in
    # the printed mean_ndcg@10 (0.75 instead of 1.0 for the expert that ranks every scored query right)
    import json

    import yaml
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index

    docs = [Document(id=f"d{i}", text=text) for i, text in enumerate(WORDS["orbit"].split())]
    save_index(build_index(docs, "bm25"), tmp_path / "good")
    save_index(build_index(corpus(3)[-3:], "bm25"), tmp_path / "bad")  # network notes: never relevant
    config = {"backend": "torch", "sources": {"good": {"index": "good"}, "bad": {"index": "bad"}}}
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(config))
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in docs)
    )
    queries = [(f"q{i}", docs[i].text, f"{docs[i].id}\t1") for i in range(3)] + [("q3", "comet", "d2\t0")]
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t, _ in queries)
    )
    (data / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{judged}\n" for q, _, judged in queries)
    )
    fit = ["expert", "fit-router", str(tmp_path / "routing.yaml"), "--kind", "pilot", "--data", str(data)]
    result = CliRunner().invoke(main, [*fit, "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["mean_ndcg@10"] == {"good": 1.0, "bad": 0.0}
    assert summary["queries_won"] == {"good": 3, "bad": 0}
    # options that did not apply were taken, then left out unsaid (until session 37)
    quality = [*fit[:3], "--kind", "quality", "--out", str(tmp_path / "q")]
    said = CliRunner().invoke(main, [*quality, "--data", str(data), "--mode", "mean", "--clusters", "3"])
    assert said.exit_code == 2 and "--clusters and --mode do not apply to --kind quality" in said.output
    said = CliRunner().invoke(main, [*quality, "--split", "test"])
    assert said.exit_code == 2 and "--split does not apply without --data" in said.output
    assert not (tmp_path / "q").exists()


def test_a_router_routes_around_an_expert_that_failed_to_load(tmp_path: Path) -> None:
    from ragroute.route.factories import RouterBuild, pilot
    from ragroute.route.sources import Source

    PilotRouter.fit(two_cluster_gains(), encoder=FixedDim()).save(tmp_path / "p")
    sources = [Source("B", UNSEARCHED), Source("C", UNSEARCHED)]
    build = RouterBuild(sources, FixedDim(), where="cfg", failed=["A"])
    router = pilot({"model": str(tmp_path / "p")}, build)
    decision = router.route_many(["a"], query_vectors=np.eye(8)[:1])[0]
    assert decision.routes["A"] == 0.0 and decision.chosen == ["B"]
    assert sum(decision.routes.values()) == pytest.approx(1.0, abs=1e-5)
    assert decision.trace[-1].detail["unavailable"] == ["A"]


def test_when_every_expert_with_a_pilot_failed_to_load_the_others_share_the_route(tmp_path: Path) -> None:
    # domain pilots for A and B only; both failed to load: the softmax was over nothing (NaN routes,
    # JSON nulls, a numpy warning, a route picked by argmax over NaN)
    import warnings

    from ragroute.route.factories import RouterBuild, pilot, quality
    from ragroute.route.sources import Source

    domains = {"A": domain_vectors(0, 20, 1), "B": domain_vectors(1, 20, 2)}
    PilotRouter.from_domains(["base", "bm25", "A", "B"], domains, encoder=FixedDim()).save(tmp_path / "p")
    sources = [Source("base", UNSEARCHED), Source("bm25", UNSEARCHED)]
    build = RouterBuild(sources, FixedDim(), where="cfg", failed=["A", "B"])
    router = pilot({"model": str(tmp_path / "p")}, build)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decision = router.route_many(["a"], query_vectors=np.eye(8)[:1])[0]
    assert decision.routes == {"base": 0.5, "bm25": 0.5, "A": 0.0, "B": 0.0}
    assert decision.chosen == ["base"]
    assert "equal probabilities over base, bm25" in decision.trace[-1].detail["fallback"]
    # with nothing left at all, one line rather than NaN
    QualityRouter.fit(two_cluster_gains(), encoder=FixedDim()).save(tmp_path / "q")
    gone = quality({"model": str(tmp_path / "q")}, RouterBuild([], FixedDim(), failed=["A", "B", "C"]))
    with pytest.raises(RagrouteError, match="every expert of the router .* failed to load"):
        gone.route_many(["a"], query_vectors=np.eye(8)[:1])


def _arrays(**arrays: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "kind, content, message",
    [
        ("pilot", b"", "arrays.npz is not a readable .npz file"),
        ("pilot", b"not an archive", "arrays.npz is not a readable .npz file"),
        (
            "pilot",
            _arrays(pilots=np.ones((2, 16), np.float32), owners=np.array([0, 1])),
            "array 'pilots' has shape (2, 16), expected (any, 8)",
        ),
        (
            "pilot",
            _arrays(pilots=np.ones((2, 8), np.float32), owners=np.array([1, 7])),
            "array 'owners' must hold expert numbers 0 to 2",
        ),
        ("pilot", _arrays(pilots=np.ones((2, 8), np.float32)), "has no array 'owners'"),
        (
            "quality",
            _arrays(coef=np.ones((3, 2)), intercept=np.ones(3), offset=np.ones(2), scale=np.ones(2)),
            "array 'offset' has shape (2,), expected",
        ),
        ("quality", _arrays(offset=np.ones(8)), "array 'offset' has shape (8,)"),
    ],
)
def test_expert_router_arrays_that_are_wrong_but_checksummed_are_one_line(
    kind: str, content: bytes, message: str, tmp_path: Path
) -> None:
    # an empty arrays.npz printed only "Aborted!"; pilots of another dimension failed at query time
    # with a matmul ValueError
    from conftest import replace_published_file

    cls = PilotRouter if kind == "pilot" else QualityRouter
    cls.fit(two_cluster_gains(), encoder=FixedDim()).save(tmp_path / kind)
    replace_published_file(tmp_path / kind, "arrays.npz", content)
    with pytest.raises(RagrouteError) as info:
        cls.load(tmp_path / kind, FixedDim())
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(tmp_path / kind) in str(info.value)


def test_measure_gains_judges_chunks_by_the_id_the_labels_use(minilm) -> None:
    from ragroute.route.expert_gains import measure_gains
    from ragroute.types import Hit

    class Chunks:
        name = "chunks"

        def search_contexts(self, contexts, k):
            return [([Hit("doc1#0", 1.0, parent_id="doc1"), Hit("doc2#0", 0.5, parent_id="doc2")], None)] * 2

    contexts = [QueryContext("a", id="by-chunk"), QueryContext("b", id="by-parent")]
    gains = measure_gains([Chunks()], contexts, {"by-chunk": {"doc2#0": 1}, "by-parent": {"doc1": 1}})
    assert gains[0, 0] == pytest.approx(1 / np.log2(3)) and gains[1, 0] == pytest.approx(1.0)


def test_measure_gains_reads_deeper_when_k_hits_hold_fewer_documents() -> None:
    """An expert over chunks: its 10 hits may be chunks of one document. Until session 50 the gain
    was scored on the documents those hits held (one here: the relevant doc2, 11th, counted as
    missed), where the evaluators read deeper until k documents; now both read alike."""
    from ragroute.route.expert_gains import measure_gains
    from ragroute.types import Hit

    ranked = [Hit(f"doc1#{i}", 1.0 - i / 100, parent_id="doc1") for i in range(10)]
    ranked += [Hit("doc2#0", 0.5, parent_id="doc2"), Hit("doc3#0", 0.4, parent_id="doc3")]

    class Chunks:
        name = "chunks"

        def search_contexts(self, contexts, k):
            return [(ranked[:k], None) for _ in contexts]

    gains = measure_gains([Chunks()], [QueryContext("a", id="q")], {"q": {"doc2": 1}}, k=10)
    assert gains[0, 0] == pytest.approx(1 / np.log2(3))  # doc2 is the second document


def test_a_fixed_router_queries_all_its_routes_by_default(minilm) -> None:
    from ragroute.pipeline.build import pipeline_from_settings

    experts = ExpertSet([ExpertSpec("base", "base"), ExpertSpec("bm25", "bm25")], minilm)
    sources = experts.sources("toy", corpus())
    pipeline = pipeline_from_settings(sources, {"kind": "fixed", "fusion": "rrf"}, encoder=minilm)
    assert pipeline.retrieve("comet", k=3).decision.chosen == ["base", "bm25"]
    narrowed = pipeline_from_settings(sources, {"kind": "fixed", "max_routes": 1}, encoder=minilm)
    assert len(narrowed.retrieve("comet", k=3).decision.chosen) == 1


def test_a_llamaindex_retriever_over_an_expert_mixture(trained_expert: Path, minilm) -> None:
    from ragroute.integrations.llamaindex import RoutedLlamaRetriever
    from ragroute.pipeline.build import pipeline_from_settings

    specs = [
        ExpertSpec("base", "base"),
        ExpertSpec("bm25", "bm25"),
        ExpertSpec("orbit", "adapter", str(trained_expert)),
    ]
    experts = ExpertSet(specs, minilm)
    sources = experts.sources("toy", corpus())
    pipeline = pipeline_from_settings(sources, {"kind": "fixed", "fusion": "rrf"}, encoder=minilm)
    nodes = RoutedLlamaRetriever(pipeline, k=4).retrieve("comet nebula telescope")
    ids = [n.node.node_id for n in nodes]
    assert len(ids) == len(set(ids)) == 4 and all(i.split(":", 1)[1].startswith("orbit") for i in ids)


def test_the_bench_pipeline_and_a_routing_config_return_the_same_hits(trained_expert: Path, minilm, tmp_path):
    """What `ragroute bench experts` scores (ExpertSet sources, pipeline_from_settings) is what a user's
    routing config with the same experts, router and selection returns."""
    import yaml

    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.config import load_routing

    docs = corpus()
    specs = [
        ExpertSpec("base", "base"),
        ExpertSpec("bm25", "bm25"),
        ExpertSpec("orbit", "adapter", str(trained_expert)),
    ]
    sources = ExpertSet(specs, minilm).sources("toy", docs)
    texts = ["comet nebula telescope", "flour yeast oven", "router packet firewall"]
    gains = ExpertGains(
        ["base", "bm25", "orbit"],
        texts,
        minilm.encode_queries(texts),
        [[0.2, 0.1, 0.9], [0.9, 0.1, 0.2], [0.1, 0.8, 0.3]],
    )
    PilotRouter.fit(gains, encoder=minilm).save(tmp_path / "router")
    from ragroute.evaluation.bench_experts import WITH_GENERALISTS

    settings = {"kind": "pilot", "model": "router", **WITH_GENERALISTS}  # the bench's own selection
    bench = pipeline_from_settings(sources, settings, encoder=minilm, base=tmp_path)
    save_index(build_index(docs, "dense", encoder=minilm), tmp_path / "dense")
    save_index(build_index(docs, "bm25"), tmp_path / "bm25")
    config = {
        "cache_dir": "cache",
        "sources": {
            "base": {"index": "dense"},
            "bm25": {"index": "bm25", "corpus": "dense"},  # the folder whose documents it holds too
            "orbit": {"index": "dense", "expert": str(trained_expert)},
        },
        "router": settings,
    }
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(config))
    user = load_routing(tmp_path / "routing.yaml", encoder=minilm)
    for text in [*texts, "pastry crust sugar", "quasar pulsar"]:
        ours, theirs = bench.retrieve(text, k=5), user.retrieve(text, k=5)
        assert ours.decision.chosen == theirs.decision.chosen
        assert [h.doc_id for h in ours.hits] == [h.doc_id for h in theirs.hits]
        assert [h.score for h in ours.hits] == pytest.approx([h.score for h in theirs.hits], abs=1e-6)


@pytest.mark.parametrize(
    "files, reason",
    [
        (
            {"adapter.json": b'{"scales": {}}', "adapter.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{"},
            "SafetensorError",
        ),
        ({"adapter.json": b"{broken", "adapter.safetensors": b""}, "JSONDecodeError"),
        ({"adapter.json": b"{}", "adapter.safetensors": b""}, "KeyError"),
    ],
)
def test_an_adapter_whose_files_cannot_be_read_is_one_line(tmp_path: Path, files, reason) -> None:
    # adapter files that pass their checksums but are damaged (written so, or re-signed) raised
    # SafetensorError / JSONDecodeError from the expert loader: a traceback instead of the expert
    # being reported and left out
    from conftest import HashingEncoder

    from ragroute.errors import ModelNotFoundError
    from ragroute.experts.encoder import load_expert_encoder
    from ragroute.store import write_artifact

    base = HashingEncoder(dim=384, model_id="sentence-transformers/all-MiniLM-L6-v2")
    with write_artifact(tmp_path / "x", "expert", "query-lora", params={"base": base.model_id}) as build:
        for name, data in files.items():
            (build.path / name).write_bytes(data)
    with pytest.raises(ModelNotFoundError) as info:
        load_expert_encoder(tmp_path / "x", base)
    message = str(info.value)
    assert reason in message and "train it again with `ragroute expert train`" in message
    assert "\n" not in message and str(tmp_path / "x") in message


def test_a_missing_adapter_file_is_named_and_the_expert_left_out(tmp_path: Path) -> None:
    """safetensors' FileNotFoundError names no file: until session 55 a build without its
    adapter.safetensors was "file ? of the published build is missing"."""
    from ragroute.errors import ArtifactFormatError
    from ragroute.experts.encoder import load_expert_encoder
    from ragroute.store import write_artifact

    base = HashingEncoder(dim=384, model_id="sentence-transformers/all-MiniLM-L6-v2")
    with write_artifact(tmp_path / "x", "expert", "query-lora", params={"base": base.model_id}) as build:
        (build.path / "adapter.json").write_text('{"rank": 8, "alpha": 16, "scales": {"l": 2.0}}')
    with pytest.raises(ArtifactFormatError) as info:
        load_expert_encoder(tmp_path / "x", base)
    assert str(info.value) == f"{tmp_path / 'x'}: file adapter.safetensors of the published build is missing"
    experts = ExpertSet([ExpertSpec("base", "base"), ExpertSpec("x", "adapter", str(tmp_path / "x"))], base)
    assert experts.names == ["base"] and "adapter.safetensors" in experts.problems[0].error


def test_an_expert_encoding_queries_as_the_base_does_is_not_counted_as_another_encoder(monkeypatch) -> None:
    """A dense expert of the base model itself (another object, the same cache key): its queries
    reuse the base vector, but until session 55 ``query_encoders`` counted it (by object)."""
    base = HashingEncoder()
    monkeypatch.setattr("ragroute.encode.load.load_encoder", lambda *_a, **_k: HashingEncoder())
    experts = ExpertSet([ExpertSpec("base", "base"), ExpertSpec("again", "dense", "test/hashing")], base)
    context = QueryContext("comet nebula")
    context.vector(base), context.vector(experts.encoders["again"])
    assert len(context.encoders_used) == 1
    assert experts.query_encoders(["base", "again"]) == [] == experts.query_encoders(["again"])


def test_pilot_mode_mean_scores_an_expert_by_its_mean_pilot_similarity() -> None:
    pilots = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    owners = np.array([0, 0, 1])
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    mean = PilotRouter(["A", "B", "C"], pilots, owners, mode="mean", temperature=1.0)
    nearest = PilotRouter(["A", "B", "C"], pilots, owners, mode="nearest", temperature=1.0)
    sims = mean.route_many(["q"], query_vectors=query)[0].signals["pilot_similarity"]
    assert sims == {"A": 0.5, "B": 0.6, "C": None}  # A: mean of 1.0 and 0.0; C has no pilot
    assert mean.route_many(["q"], query_vectors=query)[0].chosen == ["B"]
    assert nearest.route_many(["q"], query_vectors=query)[0].signals["pilot_similarity"]["A"] == 1.0
    assert nearest.route_many(["q"], query_vectors=query)[0].chosen == ["A"]
    # a genuine cosine of -1 is a similarity, not "no pilot" (until session 36 -1.0 meant both)
    pilots = np.array([[0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    opposite = PilotRouter(["A", "C"], pilots, np.array([0, 1]), temperature=1.0)
    decision = opposite.route_many(["q"], query_vectors=query)[0]
    assert decision.signals["pilot_similarity"] == {"A": 0.0, "C": -1.0} and decision.routes["C"] > 0


@pytest.mark.parametrize("kind", ["nearest", "mean", "quality"])
def test_expert_routers_route_a_batch_as_each_query_alone(kind: str) -> None:
    # until session 53 a BLAS product scored the batch (and numpy's mean summed a row of 8 pilots in
    # another order alone): a query routed in a batch got other pilot similarities and probabilities
    # (or other predicted nDCG@10) in the last digits than alone
    rng = np.random.default_rng(5)
    n, dim, labels = 120, 384, [f"e{j}" for j in range(6)]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"query {i}" for i in range(n)]
    if kind == "quality":
        router = QualityRouter.fit(ExpertGains(labels, texts, vectors, rng.random((n, len(labels)))))
        rows = [router.predict([text], vector) for text, vector in zip(texts, vectors)]
        assert np.array_equal(router.predict(texts, vectors), np.vstack(rows))
    else:  # 8 pilots per expert; a temperature low enough for the last digits to show in the routes
        pilots = vectors[rng.permutation(n)[:48]]
        router = PilotRouter(labels, pilots, np.repeat(np.arange(6), 8), mode=kind, temperature=0.002)
    batch = router.route_many(texts, query_vectors=vectors)
    alone = [router.route(text, query_vector=vector) for text, vector in zip(texts, vectors)]
    assert [d.routes for d in batch] == [d.routes for d in alone]
    assert [d.signals for d in batch] == [d.signals for d in alone]


@pytest.mark.parametrize("temperature", [float("nan"), 0.0, -1.0, "hot"])
def test_expert_routers_refuse_a_temperature_that_is_not_above_0(temperature, tmp_path: Path) -> None:
    # a saved router's NaN gave NaN probabilities, and 0 or below one expert for every query
    pilots, owners = np.eye(2, dtype=np.float32), np.array([0, 1])
    with pytest.raises(RagrouteError, match="pilot router: temperature must be a number above 0"):
        PilotRouter(["A", "B"], pilots, owners, temperature=temperature)
    with pytest.raises(RagrouteError, match="quality router: temperature must be a number above 0"):
        QualityRouter(["A"], np.zeros((1, 2)), np.zeros(1), np.zeros(2), np.ones(2), temperature=temperature)


def test_a_quality_router_refuses_labels_no_expert_finds_and_names_unavailable_experts() -> None:
    data = two_cluster_gains()
    nothing = ExpertGains(data.labels, data.texts, data.vectors, np.zeros_like(data.gains))
    with pytest.raises(RagrouteError, match="no expert finds a relevant document for any training query"):
        QualityRouter.fit(nothing)  # fitted in silence until session 36: constant predictions
    router = QualityRouter.fit(data)
    router.unavailable = [data.labels[0]]
    decision = router.route_many(data.texts[:1], query_vectors=data.vectors[:1])[0]
    step = decision.trace[-1].detail
    assert step["unavailable"] == [data.labels[0]] and decision.routes[data.labels[0]] == 0.0


def test_keyphrases_are_the_five_most_specific_mid_frequency_terms_in_document_order() -> None:
    from ragroute.experts.pseudo_queries import _keyphrase_queries

    # 20 documents: a term in 2 of them is mid-frequency (at most max(2, 10%) = 2); "common" (5
    # documents), "aardvark" (one), "ab" (two letters) and "1901" (a number) are not
    target = Document(
        id="t",
        text="aardvark aardvark aardvark ocelot zebra tapir zebra quokka lemur vole 1901 1901 ab ab "
        "common common common common",
    )
    partner = Document(id="p", text="vole lemur quokka tapir zebra ocelot 1901 ab common")
    fillers = [
        Document(id=f"f{i}", text=f"filler{i} word{i} thing{i}" + (" common" if i < 3 else ""))
        for i in range(18)
    ]
    queries = _keyphrase_queries([target, partner, *fillers])
    # zebra twice, then the ties in alphabetical order: vole is the sixth and left out
    assert queries == {"t": "ocelot zebra tapir quokka lemur", "p": "vole lemur quokka tapir ocelot"}


def test_a_sentence_restating_the_title_is_no_sentence_query() -> None:
    import random

    from ragroute.experts.pseudo_queries import _pick_sentence

    title = "How the Varne River reached the sea"
    only = Document(id="a", title=title, text="How the Varne River reached the sea.")
    assert _pick_sentence(only, random.Random(0)) is None
    both = Document(
        id="b", title=title, text=f"{title}. It rose in the Marl Hills and ran down to the coast."
    )
    picks = {_pick_sentence(both, random.Random(seed)) for seed in range(10)}
    assert picks == {"It rose in the Marl Hills and ran down to the coast."}


def test_the_expert_bench_trains_a_cached_expert_again_when_its_corpus_changed(
    trained_expert: Path, tmp_path, monkeypatch
) -> None:
    # a cached expert trained on other documents was reused silently (and its train_s reported)
    import shutil
    from types import SimpleNamespace

    import ragroute.experts.train as train_module
    from ragroute.evaluation.bench_experts import train_missing_experts

    experts = tmp_path / "experts"
    shutil.copytree(trained_expert, experts / "orbit")
    trained: list[str] = []
    monkeypatch.setattr(
        train_module, "train_expert", lambda docs, out, *a, **k: trained.append(Path(out).name)
    )
    said: list[str] = []
    same = SimpleNamespace(name="orbit", corpus=corpus())
    assert train_missing_experts([same], experts, {"orbit": None}, log=said.append) == {
        "orbit": experts / "orbit"
    }
    assert trained == [] and said == []
    changed = SimpleNamespace(name="orbit", corpus=corpus()[:-1])
    train_missing_experts([changed], experts, {"orbit": None}, log=said.append)
    assert trained == ["orbit"] and "trained on other documents than orbit's" in said[0]


def test_training_a_query_lora_expert_without_peft_is_one_line_before_any_encoding(
    tmp_path: Path, monkeypatch
) -> None:
    import sys

    from click.testing import CliRunner

    import ragroute.encode
    from ragroute.cli import main
    from ragroute.experts.train import ExpertTrainParams, train_expert

    def no_encoding(*_args, **_kwargs):
        raise AssertionError("the corpus was about to be encoded although peft is missing")

    monkeypatch.setattr(ragroute.encode, "load_encoder", no_encoding)
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text("\n".join(f'{{"_id": "{d.id}", "text": "{d.text}"}}' for d in corpus()))
    result = CliRunner().invoke(
        main, ["expert", "train", str(corpus_file), "--out", str(tmp_path / "x"), "--backend", "torch"]
    )
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "error: training a query-lora expert needs peft: pip install 'ragroute[experts]' "
        "(or --mode full, which trains without it)"
    ]
    assert not (tmp_path / "x").exists()
    with pytest.raises(RagrouteError, match=r"needs peft: pip install 'ragroute\[experts\]'"):
        train_expert(corpus(), tmp_path / "y", ExpertTrainParams(mode="query-lora"))
    assert not (tmp_path / "y").exists()


def test_a_lora_rank_above_the_layer_width_is_one_line(tmp_path: Path) -> None:
    # a rank of 100000 exhausted memory with a traceback until session 36
    from ragroute.experts.train import ExpertTrainParams, train_expert

    params = ExpertTrainParams(epochs=1, batch_size=8, max_queries=8, max_length=16, threads=1, rank=385)
    with pytest.raises(RagrouteError, match=r"^LoRA rank 385 is above the width of the adapted layers"):
        train_expert(corpus(), tmp_path / "wide", params, show_progress=False)
    assert not (tmp_path / "wide").exists()


@pytest.mark.parametrize("mode", ["query-lora", "full"])
def test_document_vectors_of_another_width_than_the_base_model_are_one_line(mode, tmp_path: Path) -> None:
    # another model's document vectors (64-d for MiniLM's 384): a torch traceback once training
    # began, until session 51
    from ragroute.experts.train import ExpertTrainParams, train_expert

    params = ExpertTrainParams(mode=mode, epochs=1, batch_size=8, max_queries=8, max_length=16, threads=1)
    other = np.eye(64, dtype=np.float32)[np.arange(len(corpus())) % 64]
    wider = r"^document_vectors are 64-d, but the base model .* embeds in 384-d"
    with pytest.raises(RagrouteError, match=wider):
        train_expert(corpus(), tmp_path / "e", params, document_vectors=other, show_progress=False)
    with pytest.raises(RagrouteError, match=r"^document_vectors has shape \(72,\), not one row per document"):
        train_expert(corpus(), tmp_path / "e", params, document_vectors=other[:, 0], show_progress=False)
    assert not (tmp_path / "e").exists()


def _resign_params(artifact: Path, **params: object) -> None:
    """Set ``params`` in the published build's manifest, re-signed (a hand edit the checks pass)."""
    import hashlib
    import json

    from ragroute.store.artifact import published_path
    from ragroute.store.manifest import canonical_checksum

    path = published_path(artifact) / "manifest.json"
    path.chmod(0o644)
    data = json.loads(path.read_text())
    data["params"].update(params)
    data["checksum"] = canonical_checksum(data)
    path.write_bytes(raw := json.dumps(data).encode())
    pointer = artifact / "CURRENT"
    pointer.chmod(0o644)
    pointer.write_text(
        json.dumps({"build": data["build"], "manifest_sha256": hashlib.sha256(raw).hexdigest()})
    )


def test_a_saved_pilot_router_whose_temperature_is_not_a_number_is_one_line(tmp_path: Path) -> None:
    """float("x") of a hand-edited (re-signed) manifest was a bare ValueError traceback."""
    from ragroute.errors import IndexFormatError

    router = PilotRouter(["A", "B"], np.eye(2, dtype=np.float32), np.array([0, 1]), temperature=0.1)
    router.save(tmp_path / "pilot")
    _resign_params(tmp_path / "pilot", temperature="x")
    with pytest.raises(IndexFormatError, match="temperature is 'x', not a number"):
        PilotRouter.load(tmp_path / "pilot")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"temperature": "x"}, "temperature is 'x', not a number"),
        ({"temperature": [0.1]}, r"temperature is \[0.1\], not a number"),
        ({"alphas": "1.0"}, "alphas are '1.0', not a list of numbers"),
        ({"cheap_features": 5}, "fitted on query features this version does not compute"),
    ],
)
def test_a_saved_quality_router_whose_numbers_are_not_numbers_is_one_line(
    params: dict, message: str, tmp_path: Path
) -> None:
    """The quality router read them with float() (a bare ValueError / TypeError traceback), after
    session 38 had made the pilot router's temperature one line (session 43)."""
    QualityRouter.fit(two_cluster_gains(), encoder=FixedDim()).save(tmp_path / "q")
    _resign_params(tmp_path / "q", **params)
    with pytest.raises(RagrouteError, match=message):
        QualityRouter.load(tmp_path / "q")


def test_a_router_fitted_on_too_small_a_corpus_is_told_what_needs_the_documents(hashing_encoder) -> None:
    """`expert fit-router` over 20 documents said "an expert needs at least 50": no expert is trained."""
    from ragroute.cli.expert import _training_queries
    from ragroute.index.build import build_index
    from ragroute.route.sources import Source
    from ragroute.types import Document

    docs = [Document(id=f"d{i}", text=f"a document about topic number {i} with words") for i in range(20)]
    source = Source("small", build_index(docs, "bm25", name="small"))
    with pytest.raises(RagrouteError, match="fitting a router on small's pseudo-queries needs at least 50"):
        _training_queries([source], None, "dev")


class _Weighed(HashingEncoder):
    """A 384-d stand-in for a base model read from a folder of content digest ``weights``."""

    def __init__(self, model_id: str, weights: str) -> None:
        super().__init__(dim=384, model_id=model_id)
        self.weights = weights

    def describe(self) -> dict:
        return {**super().describe(), "weights": self.weights}


def test_an_expert_is_its_base_by_the_weights_not_the_name(trained_expert: Path, minilm, tmp_path) -> None:
    # until session 40 by name: a byte-identical copy of the base was refused, and another model
    # under the base's name (its folder replaced after training) had the LoRA deltas merged into it
    import shutil

    from ragroute.encode.sentence_transformers import SentenceTransformerEncoder
    from ragroute.experts.encoder import load_expert_encoder
    from ragroute.index.dense import DenseIndex
    from ragroute.store import open_snapshot

    shutil.copytree(minilm.resolved.path, tmp_path / "mini")
    copy = SentenceTransformerEncoder(str(tmp_path / "mini"))
    assert copy.model_id != minilm.model_id and copy.weights == minilm.weights
    expert = load_expert_encoder(trained_expert, copy)
    texts = ["telescope galaxy comet"]
    assert np.allclose(
        expert.encode_queries(texts),
        load_expert_encoder(trained_expert, minilm).encode_queries(texts),
        atol=1e-5,
    )
    adapter_view(DenseIndex.build(corpus()[:5], copy), expert)

    other = _Weighed(minilm.model_id, "0" * 16)  # the base's name, other weights
    with pytest.raises(EncoderMismatchError) as raised:
        load_expert_encoder(trained_expert, other)
    message = str(raised.value)
    assert message.startswith(f"expert {trained_expert} was trained over {minilm.model_id!r} with weights ")
    assert message.endswith("or use the base model it was trained on") and "\n" not in message
    assert open_snapshot(trained_expert).manifest.params["base_weights"] == minilm.weights
    with pytest.raises(EncoderMismatchError, match="the index's encoder has weights 0000"):
        adapter_view(DenseIndex.build(corpus()[:5], other), expert)
    experts = ExpertSet(
        [ExpertSpec("base", "base"), ExpertSpec("orbit", "adapter", str(trained_expert))], other
    )
    assert experts.names == ["base"] and "retrain the expert" in experts.problems[0].error


def _prompted_copy(minilm, tmp_path):
    """A copy of the bundled MiniLM whose config gives it query and document prompts."""
    import json
    import shutil

    folder = tmp_path / "prompted"
    shutil.copytree(minilm.resolved.path, folder)
    config = folder / "config_sentence_transformers.json"
    settings = json.loads(config.read_text())
    settings["prompts"] = {"query": "query: ", "document": "passage: "}
    config.write_text(json.dumps(settings))
    return folder


def test_a_query_lora_expert_encodes_queries_with_its_bases_prompt(minilm, tmp_path, monkeypatch) -> None:
    # until session 40 the expert (and its training) dropped the base's query prompt, which the
    # base encoder applies

    from ragroute.encode.sentence_transformers import SentenceTransformerEncoder
    from ragroute.experts import train as train_module
    from ragroute.experts.encoder import load_expert_encoder
    from ragroute.experts.train import ExpertTrainParams, train_expert

    folder = _prompted_copy(minilm, tmp_path)
    trained_on: list[str] = []
    inputs = train_module.model_inputs
    monkeypatch.setattr(
        train_module, "model_inputs", lambda model, texts: trained_on.extend(texts) or inputs(model, texts)
    )
    params = ExpertTrainParams(epochs=1, batch_size=8, max_queries=8, threads=1)
    train_expert(corpus(), tmp_path / "e", params, base=str(folder), show_progress=False)
    assert trained_on and all(t.startswith("query: ") for t in trained_on)
    base = SentenceTransformerEncoder(str(folder))
    expert = load_expert_encoder(tmp_path / "e", base)
    texts = ["telescope galaxy comet", "flour yeast oven"]
    prompted = expert.model.encode(texts, prompt="query: ", normalize_embeddings=True)
    assert np.allclose(expert.encode_queries(texts), prompted, atol=1e-5)
    # the base model's folder changed after training (same path, other files): refused
    (folder / "extra.json").write_text("{}")
    with pytest.raises(EncoderMismatchError, match="the model's files changed since"):
        load_expert_encoder(tmp_path / "e")


def test_a_full_expert_is_trained_with_the_prompts_it_encodes_with(minilm, tmp_path, monkeypatch) -> None:
    # until session 43 `full` training forwarded raw query and passage texts, and the published
    # model (which keeps the base's prompts) then encoded with "query: " / "passage: " in front

    from ragroute.experts import train as train_module
    from ragroute.experts.encoder import load_expert_encoder
    from ragroute.experts.train import ExpertTrainParams, train_expert

    folder = _prompted_copy(minilm, tmp_path)
    forwarded: list[list[str]] = []
    inputs = train_module.model_inputs
    monkeypatch.setattr(
        train_module,
        "model_inputs",
        lambda model, texts: forwarded.append(list(texts)) or inputs(model, texts),
    )
    params = ExpertTrainParams(mode="full", epochs=1, batch_size=8, max_queries=8, max_length=32, threads=1)
    train_expert(corpus(), tmp_path / "full", params, base=str(folder), show_progress=False)
    queries, positives, negatives = forwarded[0::3], forwarded[1::3], forwarded[2::3]
    assert queries and all(t.startswith("query: ") for batch in queries for t in batch)
    assert all(t.startswith("passage: ") for batch in positives + negatives for t in batch)
    expert = load_expert_encoder(tmp_path / "full")  # served with the same prompts
    texts = ["telescope galaxy comet"]
    prompted = expert.model.encode(texts, prompt="query: ", normalize_embeddings=True)
    assert np.allclose(expert.encode_queries(texts), prompted, atol=1e-5)


def test_sources_of_one_collection_holding_other_documents_are_warned_about(
    tmp_path, hashing_encoder
) -> None:
    """A BM25 index over another corpus given `corpus:` of the dense index: fusion merged its hit of
    id d0 (a baking note) into the dense index's d0 (an orbit note), and nothing said so (session 43)."""
    import warnings

    import yaml

    from ragroute.errors import SourceWarning
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    docs = corpus(4)
    orbit = [Document(id=f"d{i}", text=d.text) for i, d in enumerate(docs[:4])]
    baking = [Document(id=f"d{i}", text=d.text) for i, d in enumerate(docs[4:7])]
    save_index(build_index(orbit, "dense", encoder=hashing_encoder), tmp_path / "dense")
    save_index(build_index(orbit, "bm25"), tmp_path / "same")
    save_index(build_index(baking, "bm25"), tmp_path / "other")
    sources = {
        "base": {"index": "dense"},
        "e": {"index": "dense"},
        "bm25": {"index": "same", "corpus": "dense"},
    }
    config = tmp_path / "routing.yaml"
    config.write_text(yaml.safe_dump({"sources": sources, "router": {"kind": "fixed"}}))
    with warnings.catch_warnings():  # one index, or a BM25 index over the same documents: nothing to say
        warnings.simplefilter("error", SourceWarning)
        load_routing(config, encoder=hashing_encoder)
    sources["bm25"]["index"] = "other"
    config.write_text(yaml.safe_dump({"sources": sources, "router": {"kind": "fixed"}}))
    said = (
        r"sources 'base' and 'bm25' are one collection \(.*dense\) but hold different documents "
        r"\(4 and 3 ids, 1 in only one\)"
    )
    with pytest.warns(SourceWarning, match=said):
        load_routing(config, encoder=hashing_encoder)


def test_domain_pilots_fit_one_temperature_whatever_order_the_domains_come_in() -> None:
    """Without documents each domain's calibration stand-ins were drawn from one generator run across
    the domains in the order given: the same domains listed in another order fitted another
    temperature (until session 49)."""
    labels = ["expert-med", "expert-law", "expert-tax"]
    domains = {
        "expert-med": domain_vectors(0, 40, 1, spread=0.9),
        "expert-law": domain_vectors(1, 60, 2, spread=0.9),
        "expert-tax": domain_vectors(2, 50, 3, spread=0.9),
    }
    reordered = {name: domains[name] for name in reversed(list(domains))}
    first = PilotRouter.from_domains(labels, domains, encoder=FixedDim(), calibration_docs=7)
    second = PilotRouter.from_domains(labels, reordered, encoder=FixedDim(), calibration_docs=7)
    assert first.temperature == second.temperature
    probe = np.vstack([np.eye(8)[0], (np.eye(8)[1] + np.eye(8)[2]) / np.sqrt(2)])
    routes = [[d.routes for d in r.route_many(["a", "b"], query_vectors=probe)] for r in (first, second)]
    assert routes[0] == routes[1]


def test_mining_a_full_experts_hard_negatives_draws_no_bar_off_a_terminal(monkeypatch, capfd) -> None:
    """Until session 52 the query encoding that mines a ``full`` expert's hard negatives left its
    progress bar to sentence-transformers, which draws one wherever its logger is at INFO (an
    application's log set up with ``logging.basicConfig(level=INFO)``): a bar in a log file, even
    with show_progress=False. It follows the one rule now (:mod:`ragroute.progress`)."""
    import logging

    from ragroute.encode.resolve import resolve_model
    from ragroute.encode.sentence_transformers import load_sentence_transformer
    from ragroute.experts.train import _mine_hard_negatives

    monkeypatch.delenv("RAGROUTE_PROGRESS", raising=False)
    model = load_sentence_transformer(resolve_model("all-MiniLM-L6-v2").path)
    docs = corpus(20)
    queries = cut_pseudo_queries(docs, max_queries=20)
    position = {d.id: i for i, d in enumerate(docs)}
    vectors = np.random.default_rng(0).normal(size=(len(docs), 384)).astype(np.float32)
    logger = logging.getLogger("sentence_transformers")
    before = logger.level
    logger.setLevel(logging.INFO)
    try:
        capfd.readouterr()
        negatives = _mine_hard_negatives(model, queries, position, vectors, 0)  # stderr: no terminal
        assert len(negatives) == len(queries) and "it/s" not in capfd.readouterr().err
        assert _mine_hard_negatives(model, queries, position, vectors, 0, show_progress=False) == negatives
        assert "it/s" not in capfd.readouterr().err
    finally:
        logger.setLevel(before)
