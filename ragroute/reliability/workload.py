"""What the reliability harnesses build and ask: tiny corpora, labelled queries, artifacts, probes.

Everything here is generated from a seed (no data files, no network). :func:`build_artifact`
writes one artifact of each kind the harnesses cover through the library, with
:class:`WordHashEncoder` (a deterministic bag-of-words encoder, so no model is loaded) or any
encoder given; :func:`answer` loads an artifact of any family and returns what it answers to
:data:`PROBE_QUERIES` as plain JSON-able data, so "answers identically" is an exact comparison.
:func:`ragroute_argv` runs the real command line in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.types import Document

TOPICS = {
    "astro": "telescope star galaxy orbit planet comet nebula quasar eclipse meteor",
    "cook": "bread flour yeast oven butter sauce knife pastry simmer dough",
    "it": "printer laptop password network vpn email driver router firewall backup",
    "law": "contract court appeal statute tenant lease damages verdict clause judge",
}

PROBE_QUERIES = (
    "telescope orbit of a comet",
    "bread dough in the oven",
    "reset the vpn password",
    "appeal against the court verdict",
    "galaxy printer lease",
)

ARTIFACT_KINDS = ("bm25", "dense", "hybrid", "graph", "router", "gate", "skills", "scorer")
"""Artifacts :func:`build_artifact` writes without loading a model."""

MODEL_ARTIFACT_KINDS = ("reranker", "expert")
"""Artifacts :func:`build_artifact` trains from the bundled MiniLM (tiny settings, still seconds)."""


class HashedEncoder:
    """The ``Encoder`` protocol over one map ``_encode(texts) -> rows`` for queries and documents alike
    (the harnesses' tiny encoders, which load no model)."""

    backend = "hashed"
    dim: int
    model_id: str

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: Any = None) -> Any:
        """Query vectors (the same map as documents)."""
        return self._encode(texts)

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: Any = None
    ) -> Any:
        """Document vectors."""
        return self._encode(texts)

    def describe(self) -> dict[str, Any]:
        """The encoder identity recorded in manifests."""
        return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}


class WordHashEncoder(HashedEncoder):
    """A deterministic bag-of-words encoder (words hashed into ``dim`` buckets, L2-normalised).

    Ranks by word overlap and loads nothing, so artifacts that embed text can be built and loaded
    in milliseconds.
    """

    backend = "hashing"

    def __init__(self, dim: int = 64, model_id: str = "test/hashing") -> None:
        self.dim = dim
        self.model_id = model_id

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def corpus_records(seed: int, n: int = 40, *, prefix: str = "d") -> list[dict[str, str]]:
    """``n`` documents over :data:`TOPICS` (``id``, ``title``, ``text``), different for each seed.

    Each text names a person and a place, so the graph extractor finds phrases to link.
    """
    rng = random.Random(seed)
    topics = list(TOPICS)
    people = ["Ada Brennan", "Tomas Kell", "Mira Osk", "Ivo Strand", "Lena Varne", "Oren Hale"]
    places = ["Kellow", "Marlby", "Tarn Hill", "Osric Bay", "Varne Cross"]
    records = []
    for i in range(n):
        topic = topics[(i + seed) % len(topics)]
        words = TOPICS[topic].split()
        body = " ".join(rng.choice(words) for _ in range(14))
        person, place = rng.choice(people), rng.choice(places)
        text = f"{person} lives in {place}. {body.capitalize()}. {person} met the {topic} group in {place}."
        records.append({"id": f"{prefix}{i}", "title": f"{topic} {i}", "text": text, "topic": topic})
    return records


def documents(records: Sequence[Mapping[str, str]]) -> list[Document]:
    """:func:`corpus_records` as documents (the topic in the metadata)."""
    return [
        Document(id=r["id"], text=r["text"], title=r["title"], metadata={"topic": r["topic"]})
        for r in records
    ]


def labelled_queries(seed: int, n: int = 48) -> list[dict[str, str]]:
    """Queries labelled with their topic (``text``, ``label``); about a quarter are ``none``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 4 == 3:
            a, b = rng.randrange(2, 20), rng.randrange(2, 20)
            rows.append({"text": f"what is {a} plus {b}", "label": "none"})
            continue
        topic = rng.choice(list(TOPICS))
        words = rng.sample(TOPICS[topic].split(), 3)
        rows.append({"text": f"how does the {' '.join(words)} work", "label": topic})
    return rows


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _skills(seed: int) -> Any:
    from ragroute.skills.records import Catalogue, Skill

    skills = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(3):
            body = " ".join(vocab[(i + j + seed) % len(vocab)] for j in range(12))
            skills.append(
                Skill(id=f"{topic}-{i}", name=f"{topic} tool {i}", description=f"{topic} helper", body=body)
            )
    return Catalogue(skills)


def skill_rows(seed: int) -> list[dict[str, Any]]:
    """:func:`_skills`' catalogue of ``seed`` as rows of the SKILLS JSONL format."""
    return [
        {"_id": s.id, "name": s.name, "description": s.description, "body": s.body}
        for s in _skills(seed).skills
    ]


def write_labelled_skills(folder: Path, seed: int, n: int = 48) -> Path:
    """A labelled SKILLS folder (``skills.jsonl``, ``queries.jsonl``, ``qrels/dev.tsv``) of ``n``
    queries, each judging one skill of its topic relevant: what ``ragroute rerank train`` reads."""
    write_jsonl(folder / "skills.jsonl", skill_rows(seed))
    rng = random.Random(seed)
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    topics = list(TOPICS)
    for i in range(n):
        topic = topics[i % len(topics)]
        queries.append(
            {"_id": f"q{i}", "text": f"a tool for {' '.join(rng.sample(TOPICS[topic].split(), 3))}"}
        )
        qrels.append(f"q{i}\t{topic}-{i % 3}\t1")
    write_jsonl(folder / "queries.jsonl", queries)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "dev.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


def build_artifact(kind: str, target: Path, *, seed: int = 0, encoder: Any = None) -> Path:
    """Write an artifact of ``kind`` (see :data:`ARTIFACT_KINDS`) at ``target`` from ``seed``'s data."""
    encoder = encoder or WordHashEncoder()
    if kind in ("bm25", "dense", "hybrid", "graph"):
        from ragroute.index.build import build_index
        from ragroute.index.io import save_index

        docs = documents(corpus_records(seed))
        method_encoder = None if kind == "bm25" else encoder
        save_index(build_index(docs, kind, encoder=method_encoder, name=target.name), target)
    elif kind == "router":
        from ragroute.route.features import QueryFeatures
        from ragroute.route.trained import TrainedRouter

        rows = labelled_queries(seed)
        router = TrainedRouter.fit(
            [r["text"] for r in rows],
            [r["label"] for r in rows],
            encoder,
            none_label="none",
            features=QueryFeatures(hashed_dim=64),
        )
        router.save(target)
    elif kind == "gate":
        from ragroute.gate.trained import TrainedGate

        rows = labelled_queries(seed)
        gate = TrainedGate.fit(
            [r["text"] for r in rows],
            [r["label"] != "none" for r in rows],
            encoder,
            signals=["knn_vote", "rarity", "complexity"],
        )
        gate.save(target)
    elif kind == "skills":
        from ragroute.skills.index import SkillIndexParams
        from ragroute.skills.router import SkillRouter

        SkillRouter(_skills(seed), encoder=encoder, params=SkillIndexParams(fusion="fixed")).save(target)
    elif kind == "scorer":
        from ragroute.index.bm25_scoring import BM25Scorer

        tokens = [r["text"].lower().split() for r in corpus_records(seed)]
        BM25Scorer.fit(tokens).save(target)
    elif kind == "reranker":
        from ragroute.rerank.train import Pair, PairSet, TrainParams, train_reranker

        records = corpus_records(seed, 8)
        pairs = [
            Pair(" ".join(r["text"].split()[4:8]), other["text"], float(r is other))
            for r in records
            for other in records[:4]
        ]
        rerank_params = TrainParams(layers=1, max_length=32, epochs=1, batch_size=8, threads=1)
        train_reranker(PairSet(train=pairs, calibration=pairs), target, rerank_params, name=target.name)
    elif kind == "expert":
        from ragroute.experts.train import ExpertTrainParams, train_expert

        expert_params = ExpertTrainParams(epochs=1, batch_size=8, max_queries=16, threads=1)
        train_expert(documents(corpus_records(seed, 60)), target, expert_params, name=target.name)
    else:
        raise ValueError(f"unknown artifact kind {kind!r}")
    return target


def answer(path: Path, encoder: Any = None, queries: Sequence[str] = PROBE_QUERIES) -> Any:
    """What the artifact at ``path`` answers to ``queries``, as plain data (exact floats).

    Loads it through its family's loader (``ragroute.store.load_artifact``), so every check of
    the store runs; raises what loading raises.
    """
    from ragroute.store import load_artifact, open_snapshot

    manifest = open_snapshot(path, verify=False).manifest
    family = manifest.family
    if family == "index":
        index = load_artifact(path, encoder=encoder)
        return [[[h.doc_id, h.score] for h in index.search(q, k=5)] for q in queries]
    if family == "router":
        router = load_artifact(path, encoder=encoder)
        return [[d.chosen, sorted(d.routes.items())] for d in router.route_many(list(queries))]
    if family == "gate":
        gate = load_artifact(path, encoder=encoder)
        return [float(p) for p in gate.probabilities(list(queries))]
    if family == "skills":
        router = load_artifact(path, encoder=encoder)
        return [[[s.id, s.score] for s in r.skills] for r in router.route_many(list(queries), 3)]
    if family == "scorer":
        scorer = load_artifact(path)
        return [scorer.get_scores(q.lower().split()).tolist() for q in queries]
    if family == "reranker":
        reranker = load_artifact(path, backend="torch")
        texts = [r["text"] for r in corpus_records(0, 6)]
        return [[float(x) for x in reranker.score(q, texts)] for q in queries]
    if family == "expert":
        expert = load_artifact(path, base_encoder=encoder)
        return np.asarray(expert.encode_queries(list(queries))).round(5).tolist()
    raise ValueError(f"no probe for artifact family {family!r}")


def ragroute_argv(*args: str) -> list[str]:
    """The command line that runs ``ragroute ARGS`` in a fresh interpreter (this one's)."""
    return [sys.executable, "-c", "from ragroute.cli import main; main()", *args]


#: the exit status a harness's ``ragroute`` command is given when it was still running after its
#: timeout (killed): 124, as ``timeout(1)`` says it
HUNG = 124


def run_ragroute(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    """Run ``ragroute ARGS`` to completion in a subprocess (stdout and stderr captured). One still
    running after ``timeout`` seconds is killed and returned with exit status :data:`HUNG` and
    ``hung: killed after N s`` as its stderr: a hung command fails its case, and never hangs the
    harness (the race and corruption harnesses waited on theirs without a limit until session 50)."""
    argv = ragroute_argv(*args)
    try:
        return subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped it
        return subprocess.CompletedProcess(argv, HUNG, "", f"hung: killed after {timeout:g} s")
