"""Property-based tests (hypothesis, deterministic), round 7: gates, the skill router and expert
routers saved and loaded.

* a trained gate saved and loaded decides as the fitted one (probabilities, actions, reasons,
  signals), a batch as its queries one at a time; an operating point picked for a retrieval rate
  gives that rate on the training queries (within one query, ties aside); a decision's shown
  probability and threshold (``probability``, ``signals["threshold"]``, the reason's numbers)
  read in the order the action says;
* a threshold gate retrieves exactly when its value is at or past the cut, its probability monotone
  in the value; :mod:`ragroute.display` never shows a value across the threshold it is compared with;
* the skill router: ``route_many`` equals ``route`` (ids, scores, abstention, trace), ``k``
  respected, ids distinct, scores non-increasing (for ``diversify``: within the skills kept and
  within those moved behind); ``collapse`` returns one skill per duplicate group and ``diversify``
  with every skill the same skills as ``keep``; a saved and loaded router routes alike; a
  catalogue with skills added, in any order, routes alike (ties aside);
* pilot and quality routers saved and loaded route alike; a pilot file whose experts do not match
  (owners out of range, experts missing from the sources) fails at load in one line.

The bugs they found are pinned by ``@example`` s: a trained gate's trace threshold rounded to 6
digits alone read equal to a probability on its other side; a threshold gate retrieved for a value
a hair below its ``above`` cut (the probability rounded to 0.5 under a large ``scale``).
"""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
from conftest import PROPERTY_SETTINGS, HashingEncoder, untimed
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ragroute.display import shown_numbers, shown_pair, shown_value
from ragroute.errors import IndexFormatError, RagrouteError
from ragroute.gate.signals import GateSignal
from ragroute.gate.trained import ThresholdGate, TrainedGate
from ragroute.route.expert_gains import ExpertGains, check_labels
from ragroute.route.expert_quality import QualityRouter
from ragroute.route.pilot import PilotRouter
from ragroute.skills.index import SkillIndex, SkillIndexParams
from ragroute.skills.records import Catalogue, Skill
from ragroute.skills.router import SkillRouter

SETTINGS = PROPERTY_SETTINGS
FEW = settings(SETTINGS, max_examples=6)
SOME = settings(SETTINGS, max_examples=15)

# --------------------------------------------------------------------------- gates

NEED = ["who", "founded", "zorblat", "population", "capital", "ceo", "released", "album"]
KNOWN = ["what", "is", "two", "plus", "hello", "thanks", "poem", "joke"]
GATE_SIGNALS = ["knn_vote", "bank_margin", "complexity"]


@st.composite
def gate_examples(draw, min_size=8, max_size=14):
    """Texts that need retrieval (words of NEED) or not (words of KNOWN), a few mixed, with at
    least three of each kind."""
    n = draw(st.integers(min_size, max_size))
    y = [i % 2 == 0 for i in range(n)]
    texts = []
    for flag in y:
        words = draw(st.lists(st.sampled_from(NEED if flag else KNOWN), min_size=2, max_size=5))
        if draw(st.integers(0, 4)) == 0:
            words.append(draw(st.sampled_from(KNOWN if flag else NEED)))
        texts.append(" ".join(words))
    return texts, y


def _fit(texts, y, **kwargs):
    return TrainedGate.fit(texts, y, HashingEncoder(), signals=GATE_SIGNALS, C=1.0, **kwargs)


def _decided(decisions):
    return [(d.action, d.probability, d.reason, d.signals, d.depth, d.steps) for d in decisions]


@FEW
@given(
    data=gate_examples(),
    probes=st.lists(
        st.lists(st.sampled_from(NEED + KNOWN), min_size=1, max_size=4).map(" ".join), min_size=1, max_size=4
    ),
)
def test_a_saved_trained_gate_decides_as_the_fitted_one(tmp_path_factory, data, probes):
    texts, y = data
    gate = _fit(texts, y)
    folder = tmp_path_factory.mktemp("gate") / "g"
    gate.save(folder)
    loaded = TrainedGate.load(folder, HashingEncoder())
    queries = [*texts[:4], *probes]
    assert np.array_equal(loaded.probabilities(queries), gate.probabilities(queries))
    batch = gate.gate_many(queries)
    assert _decided(loaded.gate_many(queries)) == _decided(batch)
    assert _decided([gate.gate_many([q])[0] for q in queries]) == _decided(batch)
    for rate in (0.3, 0.7):
        a = gate.with_operating_point(retrieval_rate=rate)
        b = loaded.with_operating_point(retrieval_rate=rate)
        assert a.threshold == b.threshold
        assert _decided(a.gate_many(queries)) == _decided(b.gate_many(queries))


@FEW
@given(
    data=gate_examples(),
    rates=st.lists(st.sampled_from([0.1, 0.25, 0.5, 0.6, 0.75, 0.9]), min_size=1, max_size=3),
)
def test_a_retrieval_rate_holds_on_the_queries_it_was_picked_on(data, rates):
    texts, y = data
    gate = _fit(texts, y)
    probs = gate.probabilities(texts)
    n = len(texts)
    for rate in rates:
        decisions = gate.with_operating_point(retrieval_rate=rate).gate_many(texts)
        retrieved = sum(d.action == "retrieve" for d in decisions)
        # ties aside: the rate is within one query of the block of probabilities tied at the threshold
        threshold = gate.with_operating_point(retrieval_rate=rate).threshold
        above, tied = int((probs > threshold).sum()), int((probs >= threshold).sum())
        assert retrieved == tied
        assert above - 1 <= rate * n <= tied + 1, (rate, retrieved, above, n)


@SOME
@given(data=gate_examples(min_size=8, max_size=8), delta=st.floats(-2e-6, 2e-6), digits=st.integers(-9, -5))
@example(
    data=(
        [
            "who founded zorblat",
            "what is two",
            "capital album",
            "hello thanks",
            "ceo who",
            "joke poem",
            "population released",
            "plus is",
        ],
        [True, False] * 4,
    ),
    delta=4e-7,
    digits=-7,
)
def test_a_gate_decision_never_reads_across_its_threshold(data, delta, digits):
    texts, y = data
    gate = _fit(texts, y)
    p = float(gate.probabilities(texts[:1])[0])
    for t in (p + delta, p + delta * 10 ** (digits + 6), p):
        t = min(max(t, 0.0), 1.0)
        decision = gate.with_operating_point(threshold=t).gate_many(texts[:1])[0]
        retrieve = decision.action == "retrieve"
        assert retrieve == (p >= t)
        shown_t = decision.signals["threshold"]
        assert (decision.probability >= shown_t) == retrieve, (p, t, decision.probability, shown_t)
        p_text, t_text = re.search(
            r"p_retrieve ([\d.e+-]+) [<>]=? threshold ([\d.e+-]+)", decision.reason
        ).groups()
        assert (float(p_text) >= float(t_text)) == retrieve, decision.reason


class NumberSignal(GateSignal):
    """The first word of the query read as a number: a signal whose value a test sets."""

    kind = "number"
    primary = "value"

    @property
    def names(self):
        return ["value"]

    def values(self, contexts, vectors):
        return np.array([[float(c.text.split()[0])] for c in contexts], dtype=np.float64)


FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(
    cut=FINITE,
    offsets=st.lists(st.floats(-1e-3, 1e-3, allow_nan=False), min_size=1, max_size=6),
    scale=st.sampled_from([1e-6, 0.01, 1.0, 10.0, 1e4, 1e8]),
    above=st.booleans(),
)
@example(cut=3.0, offsets=[-4.440892098500626e-16, 0.0, 4.4e-16], scale=10.0, above=True)
@example(cut=3.0, offsets=[-4.440892098500626e-16, 0.0, 4.4e-16], scale=10.0, above=False)
def test_a_threshold_gate_flips_exactly_at_its_cut(cut, offsets, scale, above):
    values = sorted(
        {cut + o for o in offsets} | {cut, np.nextafter(cut, -math.inf), np.nextafter(cut, math.inf)}
    )
    gate = ThresholdGate(
        NumberSignal(), above=cut if above else None, below=None if above else cut, scale=scale
    )
    decisions = gate.gate_many([repr(float(v)) for v in values])
    probs = gate.probabilities([repr(float(v)) for v in values])
    for v, d in zip(values, decisions):
        wanted = v >= cut if above else v <= cut
        assert (d.action == "retrieve") == wanted, (v, cut, scale, d.probability, d.reason)
    steps = np.diff(probs)
    assert (steps >= 0).all() if above else (steps <= 0).all()


PROBS = st.one_of(st.floats(0, 1), st.sampled_from([0.5, 0.49996, 0.99987, 0.9999, 0.1 + 0.2, 0.3]))


@SETTINGS
@given(value=PROBS, threshold=PROBS, digits=st.integers(1, 6))
def test_numbers_beside_a_threshold_never_read_across_it(value, threshold, digits):
    v_text, t_text = shown_pair(value, threshold, digits)
    assert (float(v_text) < float(t_text)) == (value < threshold), (value, threshold, v_text, t_text)
    shown = shown_value(value, threshold, digits)
    assert (shown < threshold) == (value < threshold)
    assert abs(shown - value) <= 0.5 * 10**-digits + 1e-12
    shown_v, shown_t = shown_numbers(value, threshold, digits)
    assert (shown_v < shown_t) == (value < threshold) and (shown_v >= shown_t) == (value >= threshold)


# --------------------------------------------------------------------------- skill router

SKILL_WORDS = [
    "pdf",
    "invoice",
    "weather",
    "forecast",
    "email",
    "send",
    "calendar",
    "meeting",
    "chart",
    "plot",
    "translate",
    "french",
    "search",
    "web",
    "stock",
    "price",
]
SKILL_TEXT = st.lists(st.sampled_from(SKILL_WORDS), min_size=2, max_size=5).map(" ".join)
TASKS = st.lists(
    st.lists(st.sampled_from([*SKILL_WORDS, "the", "zzz"]), min_size=1, max_size=4).map(" ".join),
    min_size=1,
    max_size=4,
)


@st.composite
def skill_catalogues(draw, min_size=3, max_size=8):
    """Skills over a small vocabulary; some copied under another id (near-duplicate groups)."""
    n = draw(st.integers(min_size, max_size))
    skills = []
    for i in range(n):
        if skills and draw(st.integers(0, 3)) == 0:
            copy = draw(st.sampled_from(skills))
            skills.append(Skill(f"s{i}", copy.name, copy.description, copy.body, {}))
        else:
            skills.append(Skill(f"s{i}", f"tool {i}", draw(SKILL_TEXT), draw(SKILL_TEXT), {}))
    return skills


def _params():
    return SkillIndexParams(fusion="fixed")


def _full(route):
    return (
        [(s.id, s.score, list(s.duplicates), s.rank) for s in route.skills],
        route.abstain,
        route.p_applies,
        untimed(route.to_dict(trace=True)),
    )


@SOME
@given(
    skills=skill_catalogues(),
    tasks=TASKS,
    k=st.integers(1, 9),
    overlap=st.sampled_from(["collapse", "diversify", "keep"]),
)
def test_skill_routes_keep_their_invariants(skills, tasks, k, overlap):
    router = SkillRouter.build(Catalogue(skills), HashingEncoder(), _params(), overlap=overlap)
    group_of = router.index.group_of
    routes = router.route_many(tasks, k)
    assert [_full(r) for r in routes] == [_full(router.route(t, k)) for t in tasks]
    groups = {sid: group_of.get(sid, sid) for sid in (s.id for s in skills)}
    for route in routes:
        ids = [s.id for s in route.skills]
        assert len(ids) == len(set(ids))
        assert [s.rank for s in route.skills] == list(range(1, len(ids) + 1))
        scores = [s.score for s in route.skills]
        if overlap == "collapse":
            assert len({groups[i] for i in ids}) == len(ids)
            assert len(ids) == min(k, len(set(groups.values())))
            for s in route.skills:
                assert all(groups[d] == groups[s.id] for d in s.duplicates)
            assert all(a >= b for a, b in zip(scores, scores[1:]))
        elif overlap == "keep":
            assert len(ids) == min(k, len(skills))
            assert all(a >= b for a, b in zip(scores, scores[1:]))
        else:
            assert len(ids) == min(k, len(skills))
            seen, first, later = set(), [], []
            for s in route.skills:
                (later if groups[s.id] in seen else first).append(s)
                seen.add(groups[s.id])
            assert route.skills == first + later  # moved members behind every other skill
            for part in (first, later):
                assert all(a.score >= b.score for a, b in zip(part, part[1:]))


@SOME
@given(skills=skill_catalogues(), tasks=TASKS)
def test_diversify_over_every_skill_returns_the_skills_keep_returns(skills, tasks):
    index = SkillIndex.build(Catalogue(skills), HashingEncoder(), _params())
    n = len(skills)
    for task in tasks:
        kept = SkillRouter(index, overlap="keep").route(task, n)
        diverse = SkillRouter(index, overlap="diversify").route(task, n)
        collapsed = SkillRouter(index, overlap="collapse").route(task, n)
        assert sorted(s.id for s in diverse.skills) == sorted(s.id for s in kept.skills)
        folded = [s.id for s in collapsed.skills] + [d for s in collapsed.skills for d in s.duplicates]
        assert sorted(folded) == sorted(s.id for s in kept.skills)


@FEW
@given(
    skills=skill_catalogues(),
    tasks=TASKS,
    k=st.integers(1, 5),
    overlap=st.sampled_from(["collapse", "diversify", "keep"]),
)
def test_a_saved_skill_router_routes_as_the_built_one(tmp_path_factory, skills, tasks, k, overlap):
    router = SkillRouter.build(Catalogue(skills), HashingEncoder(), _params(), overlap=overlap)
    folder = tmp_path_factory.mktemp("skills") / "r"
    router.save(folder)
    loaded = SkillRouter.load(folder, encoder=HashingEncoder())
    assert [_full(r) for r in loaded.route_many(tasks, k)] == [_full(r) for r in router.route_many(tasks, k)]


@FEW
@given(
    skills=skill_catalogues(min_size=4),
    extra=st.lists(SKILL_TEXT, min_size=1, max_size=3),
    tasks=TASKS,
    seed=st.integers(0, 1000),
)
def test_skills_added_in_any_order_route_alike(skills, extra, tasks, seed):
    added = [*skills, *(Skill(f"x{i}", f"extra {i}", text, text, {}) for i, text in enumerate(extra))]
    shuffled = list(added)
    random.Random(seed).shuffle(shuffled)
    params = SkillIndexParams(pseudo_queries=len(added), tuning_pool=len(added))
    a = SkillIndex.build(Catalogue(added), HashingEncoder(), params)
    b = SkillIndex.build(Catalogue(shuffled), HashingEncoder(), params)
    assert a.dense_weight == b.dense_weight  # pseudo-queries drawn by id: the same in any order
    for task in tasks:
        ra = SkillRouter(a, overlap="keep").route(task, len(added))
        rb = SkillRouter(b, overlap="keep").route(task, len(added))
        score_a = {s.id: s.score for s in ra.skills}
        score_b = {s.id: s.score for s in rb.skills}
        assert score_a.keys() == score_b.keys()
        assert all(math.isclose(score_a[i], score_b[i], abs_tol=1e-6) for i in score_a)


# --------------------------------------------------------------------------- expert routers


@st.composite
def expert_gains(draw, dim=8):
    experts = draw(st.integers(2, 4))
    n = draw(st.integers(6, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    vectors = rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gains = rng.integers(0, 4, size=(n, experts)) / 3.0
    gains[0, 0], gains[0, 1] = 1.0, 0.0  # at least one query with a winner
    return ExpertGains(
        [f"e{j}" for j in range(experts)], [f"query {i} w{i % 3}" for i in range(n)], vectors, gains
    )


class FixedDim:
    model_id, backend, dim = "test/fixed", "hashing", 8


def _routes(decisions):
    return [(d.chosen, d.routes, d.signals, [s.to_dict() for s in d.trace]) for d in decisions]


@SOME
@given(data=expert_gains(), mode=st.sampled_from(["nearest", "mean"]), clusters=st.integers(1, 3))
def test_saved_expert_routers_route_as_the_fitted_ones(tmp_path_factory, data, mode, clusters):
    probe = np.random.default_rng(1).normal(size=(5, 8))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    texts = [f"probe {i}" for i in range(5)]
    folder = tmp_path_factory.mktemp("experts")
    pilot = PilotRouter.fit(data, encoder=FixedDim(), mode=mode, clusters=clusters, warn=False)
    pilot.save(folder / "pilot")
    loaded = PilotRouter.load(folder / "pilot", FixedDim())
    assert _routes(loaded.route_many(texts, query_vectors=probe)) == _routes(
        pilot.route_many(texts, query_vectors=probe)
    )
    quality = QualityRouter.fit(data, encoder=FixedDim())
    quality.save(folder / "quality")
    loaded_q = QualityRouter.load(folder / "quality", FixedDim())
    assert _routes(loaded_q.route_many(texts, query_vectors=probe)) == _routes(
        quality.route_many(texts, query_vectors=probe)
    )


@SETTINGS
@given(
    experts=st.integers(1, 4),
    owners=st.lists(st.integers(-2, 5), min_size=1, max_size=6),
    as_float=st.booleans(),
)
def test_pilot_owners_that_do_not_match_the_experts_fail_at_load_in_one_line(
    tmp_path_factory, experts, owners, as_float
):
    labels = [f"e{j}" for j in range(experts)]
    pilots = np.eye(len(owners), 8, dtype=np.float32)
    owner_array = np.array(owners, dtype=np.float64 if as_float else np.int64)
    router = PilotRouter(labels, pilots, owner_array, encoder=FixedDim())
    router.owners = owner_array  # as a hand-made file would hold them
    folder = tmp_path_factory.mktemp("pilot") / "p"
    router.save(folder)
    fits = not as_float and min(owners) >= 0 and max(owners) < experts
    if fits:
        loaded = PilotRouter.load(folder, FixedDim())
        assert loaded.owners.tolist() == owners
        return
    with pytest.raises(IndexFormatError) as caught:
        PilotRouter.load(folder, FixedDim())
    message = str(caught.value)
    assert "\n" not in message and "owners" in message and str(folder) in message


@SETTINGS
@given(
    fitted=st.lists(
        st.sampled_from(["base", "med", "tax", "bm25", "law"]), min_size=1, max_size=4, unique=True
    ),
    sources=st.lists(st.sampled_from(["base", "med", "tax", "bm25", "law"]), max_size=5, unique=True),
    failed=st.lists(st.sampled_from(["med", "law"]), max_size=2, unique=True),
)
def test_a_router_fitted_on_other_experts_is_refused_in_one_line(fitted, sources, failed):
    failed = [f for f in failed if f not in sources]
    missing = sorted(set(fitted) - set(sources) - set(failed))
    if not missing:
        assert check_labels(fitted, sources, "routing.yaml", failed) == sorted(set(fitted) & set(failed))
        return
    with pytest.raises(RagrouteError) as caught:
        check_labels(fitted, sources, "routing.yaml", failed)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("routing.yaml: ")
    assert all(m in message for m in missing)
