"""Property-based tests (hypothesis, deterministic), round 2: invariants of components round 1
(``test_properties.py``) left alone.

* the exposure ledger, for any sequence of admits (callers in several spellings, sources, documents,
  clock advances): what is shown and withheld, ``distinct`` and the alerts are a brute-force
  model's: distinct documents shown within the sliding window, a hard stop never lets a caller past
  its budget with new documents and always shows what it has seen, alerts fire when the caller
  reaches ``alert_at`` x budget, at most once per window;
* through a pipeline with a hard stop: a collection's size for a caller counts the documents whose
  labels it meets through a source it may read (two sources over one index: one collection),
  counted again after an add, and ``distinct`` counts what the caller was returned;
* scopes: any router (fixed, prototype) and fusion over dense, BM25 and hybrid sources with labels on
  sources and documents returns no hit the caller may not read and names no hidden document or
  source in the result or trace; a scoped dense or BM25 search is the unscoped ranking with the
  unreadable documents left out;
* ``retrieve_many`` answers as ``retrieve`` one query at a time;
* documents (ids of any characters; unicode, nested, numpy and tuple metadata; one deleted and added
  again) survive ``save_index`` / ``load_index`` as documented;
* a trained router (logreg, mlp) saved and loaded routes as the fitted one, batch or single; a kNN
  router's batch equals its single routes;
* the skill router: a shuffled catalogue routes alike (ties aside), ``route_many`` equals ``route``,
  it abstains exactly when ``p_applies < threshold``; a scoped (dense) route equals the route over a
  catalogue of the visible skills alone, near-duplicates included;
* a graph grown with ``add`` equals the graph built at once (without synonym edges), and walks alike
  after a save and load;
* paragraph chunks keep their document's text in order within ``max_words`` and name their parent,
  through a pipeline too;
* ``ragroute query`` / ``ragroute route`` ``--json`` end in one line of JSON (``splitlines``) for any
  text ``check_query`` takes, and in a one-line error for any other.

The bugs they found have plain regression tests below (docstrings "until session 44").
``PROP_N`` (an environment variable) sets how many examples each property tries (40 by default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from conftest import HashingEncoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pipeline import FixedRouter

from ragroute.errors import InvalidArgumentError, InvalidQueryError, check_query
from ragroute.exposure import ALL_SOURCES, ExposureBudget, ExposureLedger
from ragroute.graph.build import GraphParams
from ragroute.index.build import build_index
from ragroute.index.docstore import saved_form
from ragroute.index.io import load_index, save_index
from ragroute.pipeline import Pipeline, RoutingOptions
from ragroute.route.features import QueryFeatures
from ragroute.route.knn import KnnRouter
from ragroute.route.prototype import PrototypeRouter
from ragroute.route.sources import Source
from ragroute.route.trained import TrainedRouter
from ragroute.scopes import labels_of, scoped_filters, visible
from ragroute.skills.index import SkillIndexParams
from ragroute.skills.records import Catalogue, Skill
from ragroute.skills.router import STAGE1_FEATURES, AbstentionModel, SkillRouter
from ragroute.types import Document, Hit

FAST = settings(
    max_examples=int(os.environ.get("PROP_N", "40")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)




# --------------------------------------------------------------------------- exposure ledger


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


SIZES = {"a": 40, "b": 7}
# the spellings of one caller (whitespace around it, Unicode NFC) are one caller
CALLERS = {
    "alice": "alice",
    " alice": "alice",
    "bob": "bob",
    "": "",
    "Jos\u00e9": "Jos\u00e9",
    "Jose\u0301\n": "Jos\u00e9",
}

admits = st.lists(
    st.tuples(
        st.sampled_from(sorted(CALLERS)),
        st.lists(st.tuples(st.sampled_from(sorted(SIZES)), st.integers(0, 9)), max_size=6),
        st.sampled_from(
            [0.0, 0.0, 1.0, 5.0, 10.0, 10.5, 20.0, 30.0]
        ),  # the clock's advance first (window 20)
    ),
    min_size=1,
    max_size=25,
)


@FAST
@given(
    per=st.sampled_from(["source", "pipeline"]),
    min_documents=st.integers(1, 6),
    hard_stop=st.booleans(),
    alert_at=st.sampled_from([0.5, 0.75, 1.0]),
    script=admits,
)
def test_exposure_ledger_matches_a_brute_force_window(per, min_documents, hard_stop, alert_at, script):
    window = 20.0
    budget = ExposureBudget(
        per=per,
        max_fraction=0.1,
        min_documents=min_documents,
        window_s=window,
        alert_at=alert_at,
        hard_stop=hard_stop,
    )
    clock = _Clock()
    alerts = []
    ledger = ExposureLedger(budget, sizes=SIZES, on_alert=alerts.append, clock=clock)

    def bucket(source):
        return ALL_SOURCES if per == "pipeline" else source

    def limit(b):
        return budget.limit(sum(SIZES.values()) if b == ALL_SOURCES else SIZES[b])

    shown_at: dict[tuple[str, str], dict[tuple[str, str], float]] = {}  # (caller, bucket) -> doc -> last
    alerted_at: dict[tuple[str, str], float] = {}

    def in_window(key):
        return {d for d, t in shown_at.get(key, {}).items() if t >= clock.now - window}

    for caller, hits, advance in script:
        clock.now += advance
        who = CALLERS[caller]
        before = len(alerts)
        shown, step = ledger.admit(caller, [Hit(f"d{i}", 1.0, s) for s, i in hits])
        expected_shown, expected_alerts = [], []
        for s, i in hits:
            key = (who, bucket(s))
            current = in_window(key)
            doc = (s, f"d{i}")
            if doc not in current and len(current) >= limit(key[1]) and hard_stop:
                continue  # withheld: new, and the budget is spent
            shown_at.setdefault(key, {})[doc] = clock.now
            expected_shown.append((s, f"d{i}"))
            armed = key not in alerted_at or alerted_at[key] < clock.now - window
            if len(in_window(key)) >= alert_at * limit(key[1]) and armed:
                alerted_at[key] = clock.now
                expected_alerts.append(key)
        assert [(h.source, h.doc_id) for h in shown] == expected_shown
        assert step.detail["withheld"] == len(hits) - len(expected_shown)
        fired = alerts[before:]
        assert [(a.caller, ALL_SOURCES if per == "pipeline" else a.source) for a in fired] == expected_alerts
        for who_ in set(CALLERS.values()):
            for s in SIZES:
                key = (who_, bucket(s))
                n = len(in_window(key))
                assert ledger.distinct(who_, s) == n
                if hard_stop:
                    assert n <= limit(key[1])


# --------------------------------------------------------------------------- scopes in a pipeline

LABELS = ["red", "green", "blue"]
access_values = st.sampled_from([None, "red", ["green"], "red, blue", ["blue", "green"], [], "", "blue"])
SCOPE_WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"]


@st.composite
def labelled_docs(draw, prefix):
    n = draw(st.integers(1, 7))
    docs = []
    for i in range(n):
        words = draw(st.lists(st.sampled_from(SCOPE_WORDS), min_size=1, max_size=5))
        access = draw(access_values)
        meta = {} if access is None and draw(st.booleans()) else {"access": access}
        docs.append(Document(id=f"{prefix}q{i}x", text=" ".join(words), metadata=meta))
    return docs


def _visible_doc(doc, scopes):
    return visible(labels_of((doc.metadata or {}).get("access")), scopes)


@FAST
@given(
    corpora_=st.tuples(labelled_docs("den"), labelled_docs("lex"), labelled_docs("hyb")),
    source_access=st.lists(st.sampled_from([None, "red", "green", "blue"]), min_size=3, max_size=3),
    scopes=st.lists(st.sampled_from(LABELS), max_size=3, unique=True),
    probs=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    max_routes=st.integers(1, 3),
    query=st.lists(st.sampled_from(SCOPE_WORDS), min_size=1, max_size=3).map(" ".join),
    k=st.integers(1, 8),
    router_kind=st.sampled_from(["fixed", "prototype"]),
    fusion=st.sampled_from(["auto", "rrf", "calibrated"]),
)
def test_a_scoped_pipeline_returns_and_traces_only_what_the_caller_may_read(
    corpora_, source_access, scopes, probs, max_routes, query, k, router_kind, fusion
):
    """Any router selection over a dense, a BM25 and a hybrid source with access labels on sources
    and documents: no hit the caller may not read, and no hidden document id or source name
    anywhere in the result or its trace."""
    encoder = HashingEncoder(dim=32)
    names = ["xsrcden", "xsrclex", "xsrchyb"]  # names found nowhere else: any mention is a leak
    methods = ["dense", "bm25", "hybrid"]
    sources = [
        Source(
            name,
            build_index(docs, method, encoder=encoder, name=name),
            access=frozenset() if access is None else frozenset({access}),
        )
        for name, method, docs, access in zip(names, methods, corpora_, source_access)
    ]
    if sum(probs) == 0:
        probs = [1.0, 0.0, 0.0, 0.0]
    router = (
        FixedRouter(dict(zip([*names, "none"], probs)))
        if router_kind == "fixed"
        else PrototypeRouter(sources, encoder)
    )
    options = RoutingOptions(threshold=0.0, max_routes=max_routes, fusion=fusion)
    pipeline = Pipeline(sources, router, encoder=encoder, options=options)
    result = pipeline.retrieve(query, k=k, scopes=scopes)
    readable_sources = {s.name for s in sources if visible(s.access, scopes)}
    hidden_ids = {
        d.id
        for s, docs in zip(sources, corpora_)
        for d in docs
        if s.name not in readable_sources or not _visible_doc(d, scopes)
    }
    by_id = {d.id: d for docs in corpora_ for d in docs}
    for hit in result.hits:
        assert hit.source in readable_sources, hit
        assert hit.doc_id not in hidden_ids, hit
        assert _visible_doc(by_id[hit.doc_id], scopes)
    text = json.dumps(result.to_dict(), default=str)
    for doc_id in hidden_ids:
        assert doc_id not in text, doc_id
    for name in set(names) - readable_sources:
        assert name not in text, name


@FAST
@given(
    docs=labelled_docs("one"),
    method=st.sampled_from(["dense", "bm25"]),
    scopes=st.lists(st.sampled_from(LABELS), max_size=3, unique=True),
    query=st.lists(st.sampled_from(SCOPE_WORDS), min_size=1, max_size=3).map(" ".join),
    k=st.integers(1, 8),
)
def test_a_scoped_search_is_the_unscoped_search_restricted_to_what_the_caller_may_read(
    docs, method, scopes, query, k
):
    """A routed query to one source with scopes returns the index's own (unscoped) ranking with the
    documents the caller may not read left out, cut at k."""
    encoder = HashingEncoder(dim=32)
    index = build_index(docs, method, encoder=encoder, name="one")
    everything = index.search(query, k=len(docs))
    by_id = {d.id: d for d in docs}
    wanted = [h.doc_id for h in everything if _visible_doc(by_id[h.doc_id], scopes)][:k]
    pipeline = Pipeline([Source("one", index)], FixedRouter({"one": 1.0, "none": 0.0}))
    got = [h.doc_id for h in pipeline.retrieve(query, k=k, scopes=scopes).hits]
    direct = [h.doc_id for h in index.search(query, k=k, filters=scoped_filters(None, scopes))]
    assert direct == wanted
    assert got == wanted


# --------------------------------------------------------------------------- document store

valid_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    valid_text,
    st.integers(-100, 100).map(np.int64),
    st.integers(-100, 100).map(np.int8),
    st.floats(-1e6, 1e6, width=32).map(np.float32),
    st.booleans().map(np.bool_),
)
meta_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(valid_text, inner, max_size=3),
    ),
    max_leaves=8,
)
odd_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)


@FAST
@given(
    ids=st.lists(odd_ids, min_size=1, max_size=5, unique=True),
    metas=st.lists(st.dictionaries(valid_text, meta_values, max_size=3), min_size=5, max_size=5),
    redo=st.integers(0, 4),
)
def test_documents_survive_a_save_and_load_as_documented(tmp_path_factory, ids, metas, redo):
    """Ids of any characters and metadata (unicode, nested, numpy scalars, tuples) come back from
    ``save_index`` / ``load_index`` as :func:`saved_form` reads them (numpy as Python, tuples as
    lists); a document deleted and added again under its id holds its new text and metadata."""
    docs = [Document(id=i, text=f"common word{n}", metadata=metas[n]) for n, i in enumerate(ids)]
    index = build_index(docs, "bm25", name="t")
    again = docs[redo % len(docs)]
    index.delete([again.id])
    renewed = Document(id=again.id, text="renewed common", metadata={"v": metas[(redo + 1) % 5]})
    index.add([renewed])
    expected = {d.id: d for d in docs}
    expected[again.id] = renewed
    path = tmp_path_factory.mktemp("docstore") / "index"
    save_index(index, path)
    back = load_index(path)
    assert [d.id for d in back.documents] == [d.id for d in index.documents]
    for doc in back.documents:
        assert doc.text == expected[doc.id].text
        assert _plain(doc.metadata) == saved_form(expected[doc.id].metadata)
    assert back.store.get(again.id).text == "renewed common"
    assert index.store.next_iid == back.store.next_iid  # iids of deleted documents stay retired


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize(
    "doc_id, metadata", [("a\ud800", {}), ("a", {"k": ["\udcff"]}), ("a", {"\ud800": 1})]
)
def test_saving_an_id_or_metadata_that_is_not_valid_unicode_is_refused_in_one_line(
    tmp_path, doc_id, metadata
):
    """Until session 44 ``save_index`` raised a bare ``UnicodeEncodeError`` from writing
    ``docs.jsonl`` for a document whose id or metadata held a lone surrogate (the index took it)."""
    index = build_index([Document(id=doc_id, text="hello", metadata=metadata)], "bm25", name="t")
    with pytest.raises(InvalidArgumentError, match=r"not valid Unicode \(.*surrogate|undecodable byte"):
        save_index(index, tmp_path / "index")
    save_index(build_index([Document(id="b", text="hello")], "bm25", name="t"), tmp_path / "ok")
    assert [d.id for d in load_index(tmp_path / "ok").documents] == ["b"]


# --------------------------------------------------------------------------- routers

ROUTE_TEMPLATES = {
    "maps": "where is the {w} near {v}",
    "code": "how do I fix the {w} error in {v}",
    "no": "tell me a joke about {w} and {v}",
}
ROUTE_WORDS = ["bridge", "tower", "river", "parser", "socket", "kernel", "garden", "market", "café", "東京"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Per model kind: a fitted trained router, the same saved and loaded, and a kNN router."""
    return {model: _fitted(model, tmp_path_factory.mktemp(model)) for model in ("logreg", "mlp")}


def _fitted(model: str, folder: Path):
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for label, template in ROUTE_TEMPLATES.items():
        for _ in range(12):
            texts.append(template.format(w=rng.choice(ROUTE_WORDS), v=rng.choice(ROUTE_WORDS)))
            labels.append(label)
    encoder = HashingEncoder(dim=32)
    router = TrainedRouter.fit(
        texts, labels, encoder, none_label="no", model=model, hidden=8, features=QueryFeatures(hashed_dim=64)
    )
    router.save(folder / "router")
    loaded = TrainedRouter.load(folder / "router", encoder=encoder)
    knn = KnnRouter(texts, labels, encoder, k=3)
    return router, loaded, knn


route_queries = st.lists(
    st.one_of(
        st.lists(st.sampled_from(ROUTE_WORDS + ["where", "fix", "joke", "?"]), min_size=1, max_size=6).map(
            " ".join
        ),
        st.text(
            st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp")), min_size=1, max_size=12
        ),
    ),
    min_size=1,
    max_size=5,
)


@FAST
@given(model=st.sampled_from(["logreg", "mlp"]), queries=route_queries)
def test_a_saved_and_loaded_router_routes_as_the_fitted_one_batch_or_single(fitted, model, queries):
    router, loaded, knn = fitted[model]
    assert loaded.labels == router.labels
    np.testing.assert_array_equal(loaded.logits(queries), router.logits(queries))
    batch = router.route_many(queries)
    again = loaded.route_many(queries)
    for query, decision, twin in zip(queries, batch, again):
        assert decision.routes == twin.routes and decision.chosen == twin.chosen
        single = router.route(query)
        assert single.routes.keys() == decision.routes.keys()
        for label, p in decision.routes.items():
            assert single.routes[label] == pytest.approx(p, abs=1e-9)
    for query, decision in zip(queries, knn.route_many(queries)):
        single = knn.route(query)
        assert single.routes == pytest.approx(decision.routes, abs=1e-6)


# --------------------------------------------------------------------------- skill router

SKILL_WORDS = [
    "weather",
    "city",
    "forecast",
    "send",
    "message",
    "crime",
    "rate",
    "stock",
    "price",
    "book",
    "flight",
]


@st.composite
def skill_catalogues(draw):
    n = draw(st.integers(2, 9))
    skills = []
    for i in range(n):
        words = draw(st.lists(st.sampled_from(SKILL_WORDS), min_size=1, max_size=4))
        body = draw(st.lists(st.sampled_from(SKILL_WORDS), max_size=4))
        # a word of its own: no two skills embed alike (exact dense ties would go by catalogue order)
        skills.append(Skill(f"sk{i}", f"tool{i}", " ".join(words) + f" uniq{i}", " ".join(body)))
    return skills


def _groups(skills, tol=1e-9):
    """The returned skills as (score, ids) groups of (nearly) equal scores, best first."""
    groups: list[tuple[float, set[str]]] = []
    for s in skills:
        if groups and abs(groups[-1][0] - s.score) <= tol * max(1.0, abs(s.score)):
            groups[-1][1].add(s.id)
        else:
            groups.append((s.score, {s.id}))
    return groups


@FAST
@given(
    skills=skill_catalogues(),
    order=st.randoms(use_true_random=False),
    method=st.sampled_from(["hybrid", "bm25", "dense"]),
    fusion=st.sampled_from(["fixed", "rrf", "adaptive"]),
    tasks=st.lists(
        st.lists(st.sampled_from(SKILL_WORDS), min_size=1, max_size=4).map(" ".join), min_size=1, max_size=4
    ),
    k=st.integers(1, 5),
    coef=st.lists(st.floats(-3, 3), min_size=4, max_size=4),
    threshold=st.floats(0.05, 0.95),
)
def test_skill_routes_do_not_depend_on_catalogue_order_or_batching(
    skills, order, method, fusion, tasks, k, coef, threshold
):
    """With ``overlap="keep"``: a shuffled catalogue routes every task to the same skills with the same
    scores (ties aside), ``route_many`` equals ``route`` one task at a time, and the route abstains
    exactly when ``p_applies < threshold``."""
    model = AbstentionModel(list(STAGE1_FEATURES), coef, 0.1, [0.5, 0.1, 1.0, 1.0], [0.2, 0.1, 1.0, 1.0])
    shuffled = skills[:]
    order.shuffle(shuffled)
    encoder = HashingEncoder(dim=32)
    params = SkillIndexParams(fusion=fusion)
    routers = [
        SkillRouter.build(
            Catalogue(c),
            encoder,
            params,
            method=method,
            overlap="keep",
            abstention=model,
            threshold=threshold,
        )
        for c in (skills, shuffled)
    ]
    a, b = (r.route_many(tasks, k) for r in routers)
    for task, ra, rb in zip(tasks, a, b):
        one = routers[0].route(task, k)
        assert [(s.id, s.score) for s in one.skills] == [(s.id, s.score) for s in ra.skills]
        assert one.p_applies == ra.p_applies and one.abstain == ra.abstain
        for route in (ra, rb):
            assert route.abstain == (route.p_applies < threshold)
        assert rb.p_applies == pytest.approx(ra.p_applies, abs=1e-9)
        if fusion == "rrf" and method == "hybrid":
            continue  # rrf ranks tied scores by catalogue position (documented: rrf_scores)
        ga, gb = _groups(ra.skills), _groups(rb.skills)
        assert len(ra.skills) == len(rb.skills) == min(k, len(skills))
        assert [s for s, _ in ga] == pytest.approx([s for s, _ in gb], abs=1e-9)
        assert [ids for _, ids in ga[:-1]] == [ids for _, ids in gb[:-1]]  # the last group may be cut


# --------------------------------------------------------------------------- graph index

NAMES = ["Ada Brennan", "Kellow", "Varne River", "Otto Lind", "Dressel", "Amber Lake", "Marl Hills", "Paris"]
VERBS = ["was born in", "flows through", "is near", "studied in", "meets"]


@st.composite
def passages(draw):
    n = draw(st.integers(2, 7))
    docs = []
    for i in range(n):
        sentences = []
        for _ in range(draw(st.integers(1, 3))):
            a, b = draw(st.sampled_from(NAMES)), draw(st.sampled_from(NAMES))
            sentences.append(f"{a} {draw(st.sampled_from(VERBS))} {b}.")
        docs.append(Document(id=f"p{i}", title=draw(st.sampled_from(NAMES)), text=" ".join(sentences)))
    return docs


@pytest.mark.filterwarnings("ignore::UserWarning")
@FAST
@given(
    docs=passages(),
    cut=st.integers(1, 6),
    synonyms=st.booleans(),
    query=st.lists(st.sampled_from(NAMES + VERBS), min_size=1, max_size=3).map(" ".join),
)
def test_a_graph_grown_with_add_is_the_graph_built_at_once_and_survives_a_reload(
    tmp_path_factory, docs, cut, synonyms, query
):
    """Without synonym edges (``synonym_k=0``; old links are never recomputed by ``add``, so with
    them only the new phrases' links agree), a graph built over a prefix of the passages and grown
    with ``add`` holds the phrases, facts, weights and walks of the graph built over all of them;
    a save and load gives the same walks."""
    encoder = HashingEncoder(dim=32)
    cut = min(cut, len(docs) - 1)
    params = GraphParams(synonym_k=10 if synonyms else 0, synonym_threshold=0.9)
    whole = build_index(docs, "graph", encoder=encoder, name="kg", graph_params=params)
    grown = build_index(docs[:cut], "graph", encoder=encoder, name="kg", graph_params=params)
    grown.add(docs[cut:])
    k = len(docs)
    if not synonyms:
        a, b = whole.tables, grown.tables
        assert a.phrases == b.phrases
        assert abs(a.adjacency - b.adjacency).max() < 1e-6 if a.adjacency.nnz or b.adjacency.nnz else True
        np.testing.assert_array_equal(a.fact_subject, b.fact_subject)
        np.testing.assert_array_equal(a.fact_object, b.fact_object)
        assert (a.fact_passages != b.fact_passages).nnz == 0
        np.testing.assert_array_equal(a.phrase_passages, b.phrase_passages)
        assert _walk(grown, query, k) == _walk(whole, query, k)
    path = tmp_path_factory.mktemp("graph") / "kg"
    save_index(grown, path)
    back = load_index(path, encoder=encoder)
    assert _walk(back, query, k) == _walk(grown, query, k)


def _walk(index, query, k):
    return [(h.doc_id, round(h.score, 6)) for h in index.search(query, k=k)]


# --------------------------------------------------------------------------- CLI --json

CLI_TOPICS = {
    "astro": ["Comets grow an ion tail pushed by the solar wind.", "Telescopes gather light with mirrors."],
    "cook": ["Knead bread dough until smooth.", "Whisk oil slowly into egg yolk for mayonnaise."],
}


@pytest.fixture(scope="module")
def cli_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for topic, texts in CLI_TOPICS.items():
        docs = [Document(id=f"{topic}-{i}", text=t) for i, t in enumerate(texts)]
        save_index(build_index(docs, "bm25", name=topic), root / "indexes" / topic)
    config = root / "routing.yaml"
    config.write_text(
        "sources:\n"
        "  astro: {index: indexes/astro, description: Astronomy and space.}\n"
        "  cook: {index: indexes/cook, description: Cooking and recipes.}\n"
        "router: {kind: prototype, threshold: 0.3, max_routes: 2}\n"
    )
    return root, config


cli_queries = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
    st.text(st.characters(codec="ascii"), min_size=1, max_size=20),
    st.lists(
        st.sampled_from(
            ["solar", "wind", "bread", "égg", "東京", "--json", "-k", "\t", "\u200b", "\x85", "a\u2028b"]
        ),
        min_size=1,
        max_size=4,
    ).map(" ".join),
)


@FAST
@given(text=cli_queries, command=st.sampled_from(["query", "route"]))
def test_cli_json_output_ends_in_one_line_of_json_or_a_one_line_error(
    cli_workspace, monkeypatch, text, command
):
    """``ragroute query INDEX TEXT --json`` and ``ragroute route CONFIG TEXT --json``: a text
    ``check_query`` takes ends the output in one line of valid JSON (exit 0); one it refuses is a
    one-line error (exit != 0), never a traceback."""
    from click.testing import CliRunner

    from ragroute.cli import main

    root, config = cli_workspace
    monkeypatch.setattr("ragroute.encode.load_encoder", lambda *_a, **_k: HashingEncoder(dim=32))
    target = str(root / "indexes" / "astro") if command == "query" else str(config)
    result = CliRunner().invoke(main, [command, "--json", target, "--", text], catch_exceptions=False)
    try:
        check_query(text)
    except InvalidQueryError:
        assert result.exit_code != 0
        assert "Traceback" not in result.output
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
        return
    assert result.exit_code == 0, result.output
    last = result.stdout.rstrip("\n").splitlines()[-1]
    json.loads(last)


# --------------------------------------------------------------------------- chunking

CHUNK_WORDS = ["comet", "tail", "solar", "wind.", "bread", "dough!", "mirror", "light?", "東京", "é"]


@st.composite
def chunk_corpora(draw):
    docs = []
    for i in range(draw(st.integers(1, 4))):
        paragraphs = [
            " ".join(draw(st.lists(st.sampled_from(CHUNK_WORDS), min_size=1, max_size=14)))
            for _ in range(draw(st.integers(1, 4)))
        ]
        doc_id = draw(st.sampled_from([f"d{i}", f"d{i}#p0", f"x{i}#s1"]))
        docs.append(Document(id=doc_id, text="\n\n".join(paragraphs), title=f"T{i}", metadata={"n": i}))
    return docs


@FAST
@given(
    docs=chunk_corpora(),
    max_words=st.integers(1, 12),
    min_words=st.integers(0, 6),
    query=st.lists(st.sampled_from(CHUNK_WORDS), min_size=1, max_size=3).map(" ".join),
)
def test_paragraph_chunks_keep_every_word_once_and_name_their_parent_through_a_pipeline(
    docs, max_words, min_words, query
):
    """Paragraph chunks of a document hold its text in order, each at most ``max_words`` (no
    tables here), with unique ids ``f"{parent}#p{i}"`` and the parent's metadata; a routed pipeline
    over an index of the chunks returns hits whose ``parent_id`` names a document of the corpus."""
    from ragroute.chunking import chunk_documents, word_count

    chunks = chunk_documents(docs, "paragraph", max_words=max_words, min_words=min_words)
    assert len({c.id for c in chunks}) == len(chunks)
    by_id = {d.id: d for d in docs}
    for doc in docs:
        mine = [c for c in chunks if c.parent_id == doc.id]
        assert [c.id for c in mine] == [f"{doc.id}#p{i}" for i in range(len(mine))]
        # every character once, in order (a run of CJK characters may be cut between two of them)
        assert "".join("".join(c.text.split()) for c in mine) == "".join(doc.text.split())
        for c in mine:
            assert word_count(c.text) <= max_words
            assert c.metadata["n"] == doc.metadata["n"] and c.metadata["chunk_index"] == int(
                c.id.rsplit("#p", 1)[1]
            )
    index = build_index(chunks, "bm25", name="chunks")
    pipeline = Pipeline([Source("chunks", index)], FixedRouter({"chunks": 1.0, "none": 0.0}))
    for hit in pipeline.retrieve(query, k=5).hits:
        assert hit.parent_id in by_id and hit.doc_id.startswith(f"{hit.parent_id}#p")


@FAST
@given(
    corpora_=st.tuples(labelled_docs("one"), labelled_docs("two")),
    # the two sources over one index often differ: a caller reads one document through either
    source_access=st.tuples(
        st.sampled_from(["red", "green", None]),
        st.sampled_from([None, "blue"]),
        st.sampled_from([None, "red", "green", "blue"]),
    ),
    per=st.sampled_from(["source", "pipeline"]),
    queries=st.lists(
        st.tuples(
            st.sampled_from(["ann", "bob"]),
            st.lists(st.sampled_from(LABELS), max_size=2, unique=True),
            st.lists(st.sampled_from(SCOPE_WORDS), min_size=1, max_size=3).map(" ".join),
        ),
        min_size=1,
        max_size=6,
    ),
    edit=st.booleans(),
)
def test_a_pipelines_exposure_budget_counts_what_each_caller_may_read_and_holds(
    corpora_, source_access, per, queries, edit
):
    """Through a pipeline with a hard stop: a collection's size for a caller is the number of its
    documents whose labels the caller meets, through a source it may read (two sources over one
    index are one collection), counted again after an add; a caller is never shown more distinct
    documents of a bucket than its budget."""
    encoder = HashingEncoder(dim=32)
    first = build_index(corpora_[0], "dense", encoder=encoder, name="one")
    second = build_index(corpora_[1], "bm25", name="two")
    labels = [frozenset() if a is None else frozenset({a}) for a in source_access]
    sources = [
        Source("one_dense", first, metadata={"corpus": "one"}, access=labels[0]),
        Source("one_again", first, metadata={"corpus": "one"}, access=labels[1]),
        Source("two", second, access=labels[2]),
    ]
    budget = ExposureBudget(per=per, max_fraction=0.34, min_documents=1, hard_stop=True)
    ledger = ExposureLedger(budget)
    router = FixedRouter({"one_dense": 0.4, "one_again": 0.3, "two": 0.3, "none": 0.0})
    pipeline = Pipeline(sources, router, options=RoutingOptions(threshold=0.0, max_routes=3), exposure=ledger)
    if edit:
        second.add([Document(id="new-1", text="alpha beta", metadata={"access": "red"})])
    docs_of = {"one": list(first.documents), "two": list(second.documents)}
    paths = {"one": [labels[0], labels[1]], "two": [labels[2]]}

    def size(collection, scopes):
        if not any(visible(p, scopes) for p in paths[collection]):
            return 0
        return sum(_visible_doc(d, scopes) for d in docs_of[collection])

    shown: dict[tuple[str, str], set] = {}
    for caller, scopes, query in queries:
        for collection in ("one", "two"):
            bucket = collection if per == "source" else ALL_SOURCES
            want = size(collection, scopes) if per == "source" else size("one", scopes) + size("two", scopes)
            assert (ledger.size(bucket, scopes) or 0) == want, (collection, scopes)
        result = pipeline.retrieve(query, k=4, scopes=scopes, caller=caller)
        for hit in result.hits:
            collection = "two" if hit.source == "two" else "one"
            bucket = collection if per == "source" else ALL_SOURCES
            shown.setdefault((caller, bucket), set()).add((collection, hit.doc_id))
        for (who, bucket), seen in shown.items():
            assert ledger.distinct(who, bucket) == len(seen)
        # the budget of the scopes this query was made with (sizes differ with scopes)
        for (who, bucket), seen in shown.items():
            if who == caller:
                assert len(seen) <= max(
                    budget.limit(ledger.size(bucket, s)) for s in ([], ["red", "green", "blue"], scopes)
                )


@FAST
@given(
    corpora_=st.tuples(labelled_docs("den"), labelled_docs("lex"), labelled_docs("hyb")),
    scopes=st.lists(st.sampled_from(LABELS), max_size=3, unique=True),
    queries=st.lists(
        st.lists(st.sampled_from(SCOPE_WORDS), min_size=1, max_size=3).map(" ".join), min_size=1, max_size=4
    ),
    k=st.integers(1, 6),
    prototype=st.booleans(),
)
def test_retrieve_many_answers_as_retrieve_one_query_at_a_time(corpora_, scopes, queries, k, prototype):
    encoder = HashingEncoder(dim=32)
    sources = [
        Source(name, build_index(docs, method, encoder=encoder, name=name))
        for name, method, docs in zip(["den", "lex", "hyb"], ["dense", "bm25", "hybrid"], corpora_)
    ]
    router = (
        PrototypeRouter(sources, encoder)
        if prototype
        else FixedRouter({"den": 0.5, "lex": 0.3, "hyb": 0.2, "none": 0.0})
    )
    pipeline = Pipeline(sources, router, encoder=encoder, options=RoutingOptions(threshold=0.1, max_routes=3))
    batch = pipeline.retrieve_many(queries, k=k, scopes=scopes)
    for query, result in zip(queries, batch):
        one = pipeline.retrieve(query, k=k, scopes=scopes)
        assert one.decision.chosen == result.decision.chosen
        assert [(h.source, h.doc_id) for h in one.hits] == [(h.source, h.doc_id) for h in result.hits]
        assert [h.score for h in one.hits] == pytest.approx([h.score for h in result.hits], abs=1e-6)


@FAST
@given(
    data=st.data(),
    overlap=st.sampled_from(["keep", "collapse", "diversify"]),
    scopes=st.lists(st.sampled_from(LABELS), max_size=2, unique=True),
    tasks=st.lists(
        st.lists(st.sampled_from(SKILL_WORDS), min_size=1, max_size=4).map(" ".join), min_size=1, max_size=3
    ),
    k=st.integers(1, 5),
)
def test_a_scoped_skill_route_is_the_route_over_the_visible_skills_alone(data, overlap, scopes, tasks, k):
    """Dense stage 1 (no idf, no tuned weight: nothing kept from the whole catalogue): routing with a
    caller's scopes equals routing over a catalogue of only the skills it may read (ranks, scores,
    near-duplicate groups, the dense abstention signals)."""
    n = data.draw(st.integers(2, 8))
    pool = data.draw(
        st.lists(
            st.lists(st.sampled_from(SKILL_WORDS), min_size=1, max_size=3).map(" ".join),
            min_size=1,
            max_size=4,
        )
    )
    skills = [
        Skill(
            f"sk{i}",
            "tool",
            data.draw(st.sampled_from(pool)),
            "",  # one name: near-duplicates
            metadata={} if (a := data.draw(access_values)) is None else {"access": a},
        )
        for i in range(n)
    ]
    seen = [s for s in skills if visible(labels_of(s.metadata.get("access")), scopes)]
    # the dense signals only: bm25_top_z reads BM25, whose idf stays the whole catalogue's
    model = AbstentionModel(
        ["dense_top", "dense_margin", "dense_top_z"], [1.0, 0.5, -0.3], 0.1, [0.5, 0.1, 1.0], [0.2, 0.1, 1.0]
    )
    encoder = HashingEncoder(dim=32)
    params = SkillIndexParams(fusion="fixed")
    options = {"method": "dense", "overlap": overlap, "abstention": model}
    full = SkillRouter.build(Catalogue(skills), encoder, params, **options)
    for task, scoped in zip(tasks, full.route_many(tasks, k, scopes=scopes)):
        if not seen:
            assert scoped.skills == [] and scoped.abstain
            continue
        alone = SkillRouter.build(Catalogue(seen), encoder, params, **options).route(task, k)
        assert [(s.id, round(s.score, 9), s.duplicates) for s in scoped.skills] == [
            (s.id, round(s.score, 9), s.duplicates) for s in alone.skills
        ]
        assert scoped.p_applies == pytest.approx(alone.p_applies, abs=1e-9)


@pytest.mark.parametrize("text", ["0\x850", "solar\u2028wind", "wind\u2029"])
def test_a_query_holding_a_unicode_line_break_keeps_the_json_on_one_line(cli_workspace, text):
    """Until session 44 ``--json`` wrote NEL (U+0085) and the line / paragraph separators raw inside
    the JSON strings (the query echoed back): ``stdout.splitlines()[-1]`` was half an object."""
    from click.testing import CliRunner

    from ragroute.cli import main

    root, _ = cli_workspace
    result = CliRunner().invoke(main, ["query", str(root / "indexes" / "astro"), text, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["query"] == text.strip()


def test_a_triples_jsonl_file_holding_unicode_line_separators_in_its_strings_reads_whole(tmp_path):
    """Until session 44 ``read_triples`` cut a JSONL file at every line end ``str.splitlines``
    knows: a triple whose subject held U+2028 or U+0085 as written (valid JSON, what
    ``json.dumps(..., ensure_ascii=False)`` writes) became two invalid lines, and the file was refused."""
    from ragroute.graph.triples import read_triples

    path = tmp_path / "triples.jsonl"
    rows = [
        {"subject": "Ada\u2028Brennan", "predicate": "born in", "object": "Kellow"},
        {"subject": "Kellow", "object": "Varne\x85River"},
    ]
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    triples = read_triples(path).triples
    assert [(t.line, t.predicate) for t in triples] == [(1, "born in"), (2, "")]


@pytest.mark.parametrize(
    "skill", [Skill("b\ud800", "tool", "x"), Skill("b", "tool", "x", metadata={"k": "\udcff"})]
)
def test_saving_a_skill_that_is_not_valid_unicode_is_refused_in_one_line(tmp_path, skill):
    """Until session 44 ``SkillIndex.save`` raised a bare ``UnicodeEncodeError`` for a skill whose id
    or metadata held a lone surrogate (the index was built over it), as ``save_index`` did."""
    from ragroute.skills.index import SkillIndex

    index = SkillIndex.build(
        Catalogue([skill, Skill("z", "other", "stock")]),
        HashingEncoder(dim=32),
        SkillIndexParams(fusion="fixed"),
    )
    with pytest.raises(InvalidArgumentError, match=r"not valid Unicode \((lone surrogate|undecodable byte)"):
        index.save(tmp_path / "skills")
