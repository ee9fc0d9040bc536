"""The confidence router's score probe: scores only, through an HNSW graph for large flat dense
sources, exact for restricted queries, and never out of date after the index changes."""

import numpy as np
import pytest

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.index.dense import DenseIndex
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.route.confidence import ConfidenceConfig, ConfidenceRouter
from ragroute.route.score_probe import GRAPH_MIN_DOCUMENTS, ProbeQueries, SourceProbe
from ragroute.route.sources import Source
from ragroute.scopes import ACCESS_KEY
from ragroute.types import Document, read_only

DIM = 64


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def large(hashing_encoder):
    """A flat dense index over GRAPH_MIN_DOCUMENTS + 500 unit vectors in 40 clusters (as
    embeddings of documents on a few dozen topics are); every tenth document is labelled
    ``secret`` (readable only by callers holding that scope)."""
    n = GRAPH_MIN_DOCUMENTS + 500
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, DIM))
    vectors = unit(centres[rng.integers(0, 40, n)] + 0.5 * rng.normal(size=(n, DIM)))
    docs = [
        Document(id=f"d{i}", text=f"doc {i}", metadata={ACCESS_KEY: "secret"} if i % 10 == 0 else {})
        for i in range(n)
    ]
    index = DenseIndex(hashing_encoder, name="large")
    index.add_vectors(docs, vectors)
    return index, vectors


def queries_near(encoder, vectors, rows, *, scopes=None, filters=None):
    rng = np.random.default_rng(1)
    contexts = []
    for row in rows:
        context = QueryContext(f"q{row}", scopes=scopes, filters=filters)
        context.set_vector(encoder, unit(vectors[row][None] + 0.05 * rng.normal(size=(1, DIM)))[0])
        contexts.append(context)
    return contexts


def exact_top(vectors, query, n, allowed=None):
    scores = vectors @ query
    if allowed is not None:
        scores = scores[allowed]
    return float(np.sort(scores)[::-1][:n].mean())


def test_the_graph_reads_the_same_top_scores_as_the_exact_scan(large, hashing_encoder):
    index, vectors = large
    graph = SourceProbe(index, k=10)
    exact = SourceProbe(index, k=10, probe="exact")
    assert (graph.kind, exact.kind) == ("graph", "scores")
    contexts = queries_near(hashing_encoder, vectors, range(0, 2500, 50), scopes=["secret"])
    batch = ProbeQueries(contexts)
    from_graph, from_scan = graph.top_scores(batch, 3), exact.top_scores(batch, 3)
    truth = [exact_top(vectors, c.vector(hashing_encoder), 3) for c in contexts]
    assert from_scan == pytest.approx(truth, abs=1e-5)
    # float16 storage moves a cosine by ~1e-3; a missed neighbour would move it by far more
    assert np.abs(from_graph - from_scan).max() < 5e-3


def test_a_probe_is_built_alike_every_time(large, hashing_encoder):
    index, vectors = large
    batch = ProbeQueries(queries_near(hashing_encoder, vectors, range(0, 2500, 25), scopes=["secret"]))
    first = SourceProbe(index, k=10).top_scores(batch, 3)
    assert np.array_equal(first, SourceProbe(index, k=10).top_scores(batch, 3))


def test_a_caller_scope_that_hides_documents_is_scored_exactly_over_what_it_may_read(large, hashing_encoder):
    index, vectors = large
    probe = SourceProbe(index, k=10)
    secret_rows = list(range(0, 2500, 100))  # queries next to documents the caller may not read
    contexts = queries_near(hashing_encoder, vectors, secret_rows)  # no scopes: public only
    got = probe.top_scores(ProbeQueries(contexts), 3)
    public = np.array([i % 10 != 0 for i in range(len(vectors))])
    for context, score in zip(contexts, got):
        query = context.vector(hashing_encoder)
        assert score == pytest.approx(exact_top(vectors, query, 3, public), abs=1e-5)
        assert score < exact_top(vectors, query, 3) - 1e-3  # the hidden neighbour is not read


def test_metadata_filters_are_scored_exactly_too(large, hashing_encoder):
    index, vectors = large
    index.delete([])  # nothing changes
    wanted = {f"d{i}" for i in range(1, 2500, 7)}
    for doc in index.store.documents:  # held metadata is read-only: swapped in place here, and
        object.__setattr__(doc, "metadata", read_only({**doc.metadata, "keep": doc.id in wanted}))
    index.store._content_changed()  # what an add or delete would signal
    contexts = queries_near(
        hashing_encoder, vectors, range(1, 2500, 70), scopes=["secret"], filters={"keep": True}
    )
    got = SourceProbe(index, k=10).top_scores(ProbeQueries(contexts), 3)
    allowed = np.array([f"d{i}" in wanted for i in range(len(vectors))])
    for context, score in zip(contexts, got):
        assert score == pytest.approx(
            exact_top(vectors, context.vector(hashing_encoder), 3, allowed), abs=1e-5
        )


def test_the_graph_follows_added_and_deleted_documents(large, hashing_encoder):
    index, vectors = large
    probe = SourceProbe(index, k=10)
    query = unit(np.random.default_rng(5).normal(size=(1, DIM)))
    context = QueryContext("new", scopes=["secret"])
    context.set_vector(hashing_encoder, query[0])
    before = probe.top_scores(ProbeQueries([context]), 1)[0]
    assert before < 0.9
    index.add_vectors([Document(id="twin", text="twin")], query)
    assert probe.top_scores(ProbeQueries([context]), 1)[0] == pytest.approx(1.0, abs=5e-3)
    index.delete(["twin"])
    assert probe.top_scores(ProbeQueries([context]), 1)[0] == pytest.approx(before, abs=5e-3)


def test_small_sources_and_exact_routers_scan(sources):
    router = ConfidenceRouter(sources)
    assert {p["kind"] for p in router.calibration["probes"].values()} == {"scores"}


def test_an_unknown_probe_is_one_line_naming_the_choices(sources):
    with pytest.raises(RagrouteError, match=r"unknown confidence probe 'fast'; choose one of: auto, exact"):
        ConfidenceRouter(sources, ConfidenceConfig(probe="fast"))
    with pytest.raises(RagrouteError, match="probe_ef_search must be a positive integer"):
        ConfidenceRouter(sources, ConfidenceConfig(probe_ef_search=0))


def test_a_routing_config_chooses_the_probe(large, hashing_encoder, sources):
    index, _ = large
    all_sources = [*sources, Source("large", index)]
    kinds = {}
    for probe in ("auto", "exact"):
        pipeline = pipeline_from_settings(
            all_sources, {"kind": "confidence", "probe": probe}, encoder=hashing_encoder
        )
        kinds[probe] = pipeline.router.calibration["probes"]["large"]["kind"]
    assert kinds == {"auto": "graph", "exact": "scores"}


def test_queries_routed_in_several_threads_build_the_graph_once(large, hashing_encoder, monkeypatch):
    import threading

    from ragroute.route import score_probe

    index, vectors = large
    builds = []
    real = score_probe.ProbeGraph.build

    def slow_build(dense):
        builds.append(1)
        threading.Event().wait(0.2)  # long enough for every thread to arrive while it builds
        return real(dense)

    monkeypatch.setattr(score_probe.ProbeGraph, "build", slow_build)
    probe = SourceProbe(index, k=10)
    batches = [ProbeQueries(queries_near(hashing_encoder, vectors, [i], scopes=["secret"])) for i in range(4)]
    results = [None] * 4

    def run(i):
        results[i] = probe.top_scores(batches[i], 1)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and all(r is not None and r[0] > 0.9 for r in results)


@pytest.fixture
def graph_builds(monkeypatch) -> list[int]:
    """One entry per probe graph built from here on (``ProbeGraph.build`` counted, then run)."""
    from ragroute.route import score_probe

    builds: list[int] = []
    real = score_probe.ProbeGraph.build
    monkeypatch.setattr(score_probe.ProbeGraph, "build", lambda dense: builds.append(1) or real(dense))
    return builds


def test_added_documents_join_the_graph_and_deleted_ones_leave_it_without_a_rebuild(
    large, hashing_encoder, graph_builds, monkeypatch
):
    from ragroute.route import score_probe

    index, vectors = large
    builds = graph_builds
    probe = SourceProbe(index, k=10)
    rng = np.random.default_rng(9)
    twins = unit(rng.normal(size=(3, DIM)))
    contexts = []
    for i, twin in enumerate(twins):
        context = QueryContext(f"twin {i}", scopes=["secret"])
        context.set_vector(hashing_encoder, twin)
        contexts.append(context)
    before = probe.top_scores(ProbeQueries(contexts), 1)
    assert len(builds) == 1 and before.max() < 0.9
    for i, twin in enumerate(twins):  # one document at a time, as live ingestion adds them
        index.add_vectors([Document(id=f"twin{i}", text="twin")], twin[None])
        assert probe.top_scores(ProbeQueries(contexts[i : i + 1]), 1)[0] == pytest.approx(1.0, abs=5e-3)
    index.delete(["twin0", "twin1"])
    after = probe.top_scores(ProbeQueries(contexts), 1)
    assert after[:2] == pytest.approx(before[:2], abs=5e-3) and after[2] == pytest.approx(1.0, abs=5e-3)
    assert len(builds) == 1  # followed, not rebuilt
    # deleting more than REBUILD_DEAD_SHARE of the documents rebuilds it (a tenth here, so that the
    # source keeps more than GRAPH_MIN_DOCUMENTS), and what is left is still read right
    monkeypatch.setattr(score_probe, "REBUILD_DEAD_SHARE", 0.1)
    index.delete([f"d{i}" for i in range(1, 2500, 8)])
    exact = SourceProbe(index, k=10, probe="exact")
    batch = ProbeQueries(queries_near(hashing_encoder, vectors, range(1, 2500, 60), scopes=["secret"]))
    assert np.abs(probe.top_scores(batch, 3) - exact.top_scores(batch, 3)).max() < 5e-3
    assert len(builds) == 2


def test_the_graph_reads_the_top_n_of_the_k_the_exact_scan_reads(large, hashing_encoder):
    # until session 54 the graph read the top n scores where k < n, the scan the top k: a large
    # source's confidence averaged more (lower) scores than a small one's
    index, vectors = large
    batch = ProbeQueries(queries_near(hashing_encoder, vectors, range(3, 2500, 90), scopes=["secret"]))
    graph, exact = SourceProbe(index, k=2), SourceProbe(index, k=2, probe="exact")
    assert graph.kind == "graph" and exact.kind == "scores"
    assert np.abs(graph.top_scores(batch, 6) - exact.top_scores(batch, 6)).max() < 5e-3


def test_the_graph_is_rebuilt_once_the_deleted_are_exactly_the_documented_share(
    large, hashing_encoder, graph_builds, monkeypatch
):
    # "rebuilt once they are a quarter of it": until session 54 only more than that share was
    from ragroute.route import score_probe

    index, vectors = large
    builds = graph_builds
    monkeypatch.setattr(score_probe, "REBUILD_DEAD_SHARE", 0.1)  # keeps the source above the threshold
    probe = SourceProbe(index, k=10)
    batch = ProbeQueries(queries_near(hashing_encoder, vectors, range(1, 2500, 60), scopes=["secret"]))
    probe.top_scores(batch, 3)
    assert len(builds) == 1 and len(probe._graph.iids) == 2500
    index.delete([f"d{i}" for i in range(249)])
    probe.top_scores(batch, 3)
    assert len(builds) == 1  # 249 of 2,500: below a tenth, followed
    index.delete(["d249"])  # 250 of 2,500: a tenth exactly
    probe.top_scores(batch, 3)
    assert len(builds) == 2 and len(probe._graph.iids) == 2250 and not probe._graph.dead.any()


def test_a_source_that_grows_past_the_threshold_moves_to_the_graph_and_back(hashing_encoder, sources):
    import json

    from ragroute.route.ensemble import EnsembleRouter

    n = GRAPH_MIN_DOCUMENTS - 100
    rng = np.random.default_rng(3)
    index = DenseIndex(hashing_encoder, name="growing")
    index.add_vectors(
        [Document(id=f"g{i}", text=f"g {i}") for i in range(n)], unit(rng.normal(size=(n, DIM)))
    )
    router = ConfidenceRouter([*sources, Source("growing", index)])
    assert router.calibration["probes"]["growing"]["kind"] == "scores"
    assert router.route("galaxy telescope orbit").trace[0].detail["probes"]["growing"] == "scores"
    index.add_vectors([Document(id=f"h{i}", text="h") for i in range(200)], unit(rng.normal(size=(200, DIM))))
    decision = router.route("galaxy telescope orbit")
    assert decision.trace[0].detail["probes"]["growing"] == "graph"
    assert router.describe()["probes"]["growing"]["kind"] == "graph"  # calibration keeps what it saw
    assert router.calibration["probes"]["growing"]["kind"] == "scores"
    growing = router.probes[-1]
    assert growing._graph is not None
    index.delete([f"h{i}" for i in range(200)])
    assert router.route("galaxy telescope orbit").trace[0].detail["probes"]["growing"] == "scores"
    assert growing._graph is None  # its memory is given back
    described = EnsembleRouter([router]).describe()
    assert described["members"][0]["probes"]["growing"]["kind"] == "scores"
    json.dumps(described)


def test_documents_added_one_by_one_wait_in_an_exact_tail_then_join_the_graph_in_one_batch(
    large, hashing_encoder
):
    from ragroute.route.score_probe import tail_limit

    index, vectors = large
    probe = SourceProbe(index, k=10)
    rng = np.random.default_rng(11)
    context = QueryContext("first", scopes=["secret"])
    context.set_vector(hashing_encoder, unit(rng.normal(size=(1, DIM)))[0])
    probe.top_scores(ProbeQueries([context]), 1)
    first = probe._graph
    in_graph = first.index.ntotal
    limit = tail_limit(in_graph)
    extra = unit(rng.normal(size=(limit, DIM)))
    extra[0] = context.vector(hashing_encoder)  # the query's twin, added first
    index.add_vectors([Document(id="e0", text="e")], extra[:1])
    assert probe.top_scores(ProbeQueries([context]), 1)[0] == pytest.approx(1.0, abs=1e-5)  # exact
    assert probe._graph.index is first.index and len(probe._graph.tail_iids) == 1
    assert len(first.tail_iids) == 0  # a graph is never changed: queries holding it read it whole
    index.delete(["e0"])
    assert probe.top_scores(ProbeQueries([context]), 1)[0] < 0.9 and len(probe._graph.tail_iids) == 0
    index.add_vectors([Document(id=f"e{i}", text="e") for i in range(1, limit)], extra[1:limit])
    index.add_vectors([Document(id="twin", text="e")], extra[:1])
    assert probe.top_scores(ProbeQueries([context]), 1)[0] == pytest.approx(1.0, abs=5e-3)
    merged = probe._graph
    assert merged.index.ntotal == in_graph + limit and len(merged.tail_iids) == 0
    assert first.index.ntotal == in_graph  # inserted into a copy


def test_a_source_that_grows_by_more_than_a_quarter_is_calibrated_again(hashing_encoder, small_docs):
    """The per-source score scale was fitted once: a BM25 source grown tenfold with long documents
    kept its old scale and drew queries that a router calibrated on its documents now sends elsewhere."""
    from ragroute.index.build import build_index

    science = build_index(
        [d for d in small_docs if d.metadata["topic"] == "astro"], "dense", encoder=hashing_encoder
    )
    helpdesk = build_index([d for d in small_docs if d.metadata["topic"] == "it"], "bm25")
    sources = [Source("science", science), Source("helpdesk", helpdesk)]
    router = ConfidenceRouter(sources)
    temperature = router.config.temperature
    helpdesk.add([Document(id=f"new-{i}", text="printer " + "filler words here " * 30) for i in range(80)])
    fresh = ConfidenceRouter(sources, ConfidenceConfig(temperature=temperature))
    query = "printer laptop telescope"
    assert router.route(query).signals["z"] == fresh.route(query).signals["z"]
    assert router.config.temperature == temperature  # the temperature is kept
