"""A scoped batch of tasks routes exactly as its tasks one at a time (scores, order, ``p_applies``
and the abstention decision), on small random catalogues (property tests)."""

from __future__ import annotations

from conftest import PROPERTY_SETTINGS, HashingEncoder
from hypothesis import given
from hypothesis import strategies as st

from ragroute.skills import Skill
from ragroute.skills.index import SkillIndexParams
from ragroute.skills.router import AbstentionModel, SkillRouter

WORDS = [
    "pdf",
    "fill",
    "form",
    "csv",
    "table",
    "chart",
    "deploy",
    "build",
    "test",
    "merge",
    "split",
    "image",
    "resize",
    "send",
    "mail",
    "event",
]
text = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
task = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
MODEL = AbstentionModel(["dense_top", "bm25_top_z"], [1.0, 0.5], 0.0, [0.3, 1.0], [0.1, 1.0])


@PROPERTY_SETTINGS
@given(
    skills=st.lists(
        st.tuples(st.sampled_from(WORDS), text, text, st.sampled_from([None, None, None, "a", "b"])),
        min_size=9,
        max_size=24,
    ),
    # past 8 tasks too: until session 52 a batch of 8 or more took its dense products through BLAS,
    # whose sums round otherwise in the last bits (ragroute.encode.base.row_products)
    tasks=st.lists(task, min_size=2, max_size=11),
    scopes=st.sampled_from([(), ("a",), ("b",), ("a", "b")]),
    overlap=st.sampled_from(["keep", "diversify", "collapse"]),
    k=st.integers(1, 15),
)
def test_a_scoped_batch_routes_as_its_tasks_one_at_a_time(skills, tasks, scopes, overlap, k):
    """A caller's scopes keep the visible skills' columns of the score rows: until session 50 they
    were taken as ``rows[:, columns]``, a column-major array whose row means and deviations numpy
    sums in another order than one row's, so a scoped batch's z-scores, fused scores and
    p_applies differed in their last bits from the same tasks routed one at a time."""
    catalogue = [
        Skill(f"s{i}", f"{name}{i}", d, b, {} if label is None else {"access": label})
        for i, (name, d, b, label) in enumerate(skills)
    ]
    router = SkillRouter.build(
        catalogue, HashingEncoder(dim=32), SkillIndexParams(fusion="fixed"), abstention=MODEL, overlap=overlap
    )
    batch = router.route_many(tasks, k, scopes=scopes)
    for one_task, routed in zip(tasks, batch):
        alone = router.route(one_task, k, scopes=scopes)
        assert [(s.id, s.score, s.duplicates) for s in alone.skills] == [
            (s.id, s.score, s.duplicates) for s in routed.skills
        ]
        assert (alone.p_applies, alone.abstain) == (routed.p_applies, routed.abstain)
        assert alone.trace[0].detail["candidates"] == routed.trace[0].detail["candidates"]
