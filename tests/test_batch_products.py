"""A query's embedding products are the same alone and in a batch (session 52): a one-query BLAS
product (gemv) and a batch's (gemm) round differently in the last bits, so the skill router's dense
scores, the prototype router's probabilities and the gate's example-bank signals of a query
moved with the batch it was in, and tied skills ranked in another order. The encoder here gives
dense vectors (the hashing encoder's few equal coordinates sum exactly, hiding the rounding)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from conftest import HashingEncoder, untimed
from test_gate import FLAGS, TEXTS
from test_skills_batch_invariance import WORDS

from ragroute.encode.base import row_products
from ragroute.gate import TrainedGate
from ragroute.index.build import build_index
from ragroute.route.prototype import PrototypeConfig, PrototypeRouter
from ragroute.route.sources import Source
from ragroute.skills import Skill
from ragroute.skills.index import SkillIndexParams
from ragroute.skills.router import SkillRouter
from ragroute.types import Document


class DenseWordEncoder(HashingEncoder):
    """Each word a fixed random unit-scale vector, a text their normalised sum (dense floats)."""

    def _encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                seed = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
                out[row] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


ENCODER = DenseWordEncoder(dim=384)
RNG = np.random.default_rng(1)
QUERIES = [" ".join(RNG.choice(WORDS, int(RNG.integers(1, 6)))) for _ in range(25)]
QUERIES += QUERIES[:2]  # a batch holding duplicates


def test_a_row_of_products_is_the_same_alone_and_in_a_batch():
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((24, 384)).astype(np.float32)
    rows = rng.standard_normal((600, 384)).astype(np.float32)
    batch = row_products(queries, rows)
    assert batch.dtype == np.float32 and batch.shape == (24, 600)
    for i in range(len(queries)):
        assert np.array_equal(row_products(queries[i], rows)[0], batch[i])
    assert np.allclose(batch, queries @ rows.T, atol=1e-4)


def body(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, 9))


def test_a_batch_of_tasks_ranks_skills_as_each_task_alone():
    """27 tasks over 40 skills: until session 52 a batch of 8 or more went through BLAS, and two
    skills tied for one task alone came in the other order in the batch (6e-8 apart)."""
    catalogue = [
        Skill(
            f"s{i}", f"{RNG.choice(WORDS)}{i}", " ".join(RNG.choice(WORDS, 5)), " ".join(RNG.choice(WORDS, 9))
        )
        for i in range(40)
    ]
    for method in ("dense", "hybrid"):
        router = SkillRouter.build(catalogue, ENCODER, SkillIndexParams(fusion="fixed"), method=method)
        batch = router.route_many(QUERIES, 5)
        for task, routed in zip(QUERIES, batch):
            alone = router.route(task, 5)
            assert [(s.id, s.score) for s in alone.skills] == [(s.id, s.score) for s in routed.skills]
            assert (alone.p_applies, alone.abstain) == (routed.p_applies, routed.abstain)


def _docs(prefix: str, seed: int) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [Document(f"{prefix}{i}", " ".join(rng.choice(WORDS, 8))) for i in range(40)]


SOURCES = [
    Source(name, build_index(_docs(name, seed), "bm25", name=name), description=name)
    for seed, name in enumerate(("forms", "charts", "mail"))
]
ROUTERS = {
    "prototype": lambda: PrototypeRouter(SOURCES, ENCODER, PrototypeConfig()),
    "prototype-bank-dim": lambda: PrototypeRouter(SOURCES, ENCODER, PrototypeConfig(bank_dim=8)),
}


@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_a_router_decides_a_query_in_a_batch_as_alone(kind):
    router = ROUTERS[kind]()
    batch = router.route_many(QUERIES)
    assert [untimed(router.route(q).to_dict()) for q in QUERIES] == [untimed(d.to_dict()) for d in batch]


@pytest.mark.parametrize("signal", ["knn_vote", "bank_margin"])
def test_a_gate_reads_a_query_in_a_batch_as_alone(signal):
    gate = TrainedGate.fit(TEXTS, FLAGS, ENCODER, signals=[signal], C=1.0)
    queries = TEXTS[::2] + QUERIES[:6]
    batch = gate.gate_many(queries)
    for query, decided in zip(queries, batch):
        alone = gate.gate_many([query])[0]
        assert (alone.action, alone.probability, alone.signals) == (
            decided.action,
            decided.probability,
            decided.signals,
        )
