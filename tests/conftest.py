"""Shared fixtures. Tests never touch the network or ../shared/data."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Commands and loaders without --cache-dir use the per-user cache folder; in tests that is the
# repository's warm indexes/.cache (as the minilm fixture), never the user's ~/.cache/ragroute.
REPO_CACHE = Path(__file__).resolve().parents[1] / "indexes" / ".cache"
os.environ.setdefault("RAGROUTE_CACHE", str(REPO_CACHE))
Path(os.environ["RAGROUTE_CACHE"]).mkdir(parents=True, exist_ok=True)

from hypothesis import HealthCheck, settings  # noqa: E402

from ragroute.types import Document  # noqa: E402

#: The property rounds' hypothesis settings (``test_properties_r4.py`` on): the same examples on
#: every run, no deadline (a build may take a while), fixtures shared across examples.
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class HashingEncoder:
    """A deterministic bag-of-words encoder (feature hashing): it implements the
    ``Encoder`` protocol and ranks by word overlap, so index mechanics can be tested
    without loading a neural model.
    """

    backend = "hashing"

    def __init__(self, dim: int = 64, model_id: str = "test/hashing") -> None:
        self.dim = dim
        self.model_id = model_id
        self.calls = 0

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim
                out[row, bucket] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: Any = None):
        return self._encode(texts)

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: Any = None):
        return self._encode(texts)

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}


def count_tokenized(monkeypatch, module) -> list[int]:
    """Replace ``module.tokenize_many`` by a wrapper that records how many texts each call
    tokenizes (the list returned): what incremental counting tests read."""
    calls: list[int] = []
    real = module.tokenize_many

    def counting(texts, config=None):
        texts = list(texts)
        calls.append(len(texts))
        return real(texts, config)

    monkeypatch.setattr(module, "tokenize_many", counting)
    return calls


def untimed(value: Any) -> Any:
    """``value`` (a decision's or route's ``to_dict``) without its timings (every ``ms`` key), to
    compare two traces of one query."""
    if isinstance(value, dict):
        return {key: untimed(item) for key, item in value.items() if key != "ms"}
    if isinstance(value, list):
        return [untimed(item) for item in value]
    return value


@contextlib.contextmanager
def lock_held_elsewhere(lock_file: Path) -> Iterator[None]:
    """Hold the writer lock ``lock_file`` in another thread for the body (another thread's lock is
    another open file: it excludes this thread as another process would)."""
    import threading

    from ragroute.store.locks import writer_lock

    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with writer_lock(lock_file, "another writer"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


def replace_published_file(artifact: Path, name: str, content: bytes) -> None:
    """Write ``content`` as file ``name`` of the artifact's published build with a matching checksum
    (manifest and pointer re-signed): a wrong file that the store's checks let through."""
    import json

    from ragroute.store.artifact import published_path
    from ragroute.store.manifest import canonical_checksum, sha256_file

    build = published_path(artifact)
    target = build / name
    if target.exists():
        target.chmod(0o644)
    target.write_bytes(content)
    path = build / "manifest.json"
    path.chmod(0o644)
    data = json.loads(path.read_text())
    data["files"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))
    pointer = artifact / "CURRENT"
    pointer.chmod(0o644)
    pointer.write_text(json.dumps({"build": data["build"], "manifest_sha256": sha256_file(path)}))


def occupied_out(root: Path, held: str, artifact: tuple[str, str, str, str]) -> tuple[Path, str]:
    """An ``--out`` a long command must refuse before any work, and the start of the error it gives:
    ``held`` ``"artifact"`` (another family's: ``artifact`` is its family, kind, one file of it, and
    how the error names what it holds), ``"folder"`` (a folder of the user's files) or ``"under a
    file"`` (a path under a regular file)."""
    out = root / "out"
    if held == "artifact":
        from ragroute.store import write_artifact

        family, kind, name, holds = artifact
        with write_artifact(out, family, kind) as pending:
            (pending.path / name).write_bytes(b"")
        return out, f"refusing to replace {out}: it holds {holds}"
    if held == "folder":
        out.mkdir()
        (out / "mine.txt").write_text("mine")
        return out, f"refusing to overwrite {out}: it exists and is not a ragroute artifact"
    (root / "notes.txt").write_text("mine")
    out = root / "notes.txt" / "out"
    return out, f"cannot write an artifact at {out}: {root / 'notes.txt'} is a file, not a folder"


@pytest.fixture
def hashing_encoder() -> HashingEncoder:
    return HashingEncoder()


TOPICS = {
    "astro": "telescope star galaxy orbit planet comet nebula",
    "cook": "bread flour yeast oven butter sauce knife",
    "it": "printer laptop password network vpn email driver",
}


@pytest.fixture
def small_docs() -> list[Document]:
    """30 documents in three topics, with metadata for filter tests."""
    rng = np.random.default_rng(7)
    docs = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(10):
            text = " ".join(rng.choice(vocab, size=12))
            docs.append(
                Document(id=f"{topic}-{i}", text=text, title=f"{topic} {i}", metadata={"topic": topic})
            )
    return docs


def shared_id_pipeline(encoder):
    """A pipeline over two sources whose documents share the id H1 (different documents), routed to
    both (a fixed router): what the framework adapters must keep apart."""
    from ragroute.index.build import build_index
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.sources import Source

    def index(name, texts):
        docs = [Document(id=i, text=t, title=f"{name} {i}") for i, t in texts.items()]
        return Source(name, build_index(docs, "dense", encoder=encoder, name=name))

    payroll = index("payroll", {"H1": "payroll salary date", "H2": "payroll salary slip"})
    itpay = index("itpay", {"H1": "payroll laptop invoice", "H9": "payroll salary vpn"})
    return pipeline_from_settings([payroll, itpay], {"kind": "fixed"}, encoder=None)


def topic_sources(docs, encoder, *, extra=None, describe=False):
    """One dense source per topic of ``docs`` (metadata ``topic``: astro, cook, it), each with the
    documents ``extra`` holds for its topic appended last (the others keep their positions)."""
    from ragroute.index.build import build_index
    from ragroute.route.sources import Source

    out = []
    for topic in ("astro", "cook", "it"):
        held = [d for d in docs if d.metadata["topic"] == topic] + list((extra or {}).get(topic, []))
        description = f"documents about {topic}" if describe else ""
        out.append(
            Source(topic, build_index(held, "dense", encoder=encoder, name=topic), description=description)
        )
    return out


@pytest.fixture
def sources(hashing_encoder, small_docs):
    """Three dense sources over ``small_docs``, one per topic (modules may define their own)."""
    return topic_sources(small_docs, hashing_encoder, describe=True)


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2 on torch (no export step), loaded once per test session."""
    from ragroute.encode import load_encoder

    return load_encoder(backend="torch", cache_dir=REPO_CACHE)


class NoneFirst:
    """A routed retriever (``retrieve_contexts``) whose query about a "capital" routes to ``none``
    (no hits) and ends first; every other query is answered by ``index`` and ends later: what the
    framework retrievers' ``*_with_decision`` tests run concurrently."""

    def __init__(self, index):
        self.index, self.sources = index, []

    def retrieve_contexts(self, contexts, k):
        import time

        from ragroute.pipeline.runner import PipelineResult
        from ragroute.types import Decision

        out = []
        for context in contexts:
            if "capital" in context.text:
                time.sleep(0.02)
                out.append(PipelineResult([], Decision(["none"], {"none": 0.9}, decided_by=context.text)))
            else:
                time.sleep(0.2)
                hits = self.index.search(context.text, k)
                out.append(PipelineResult(hits, Decision(["cook"], {"cook": 0.8}, decided_by=context.text)))
        return out


class CancelProbe:
    """A pipeline whose source blocks on the query "second" until released, and a reranker that
    records the queries it reached: what the framework retrievers' cancellation tests run."""

    def __init__(self):
        import threading

        from ragroute.pipeline import Pipeline
        from ragroute.route.fixed import FixedRoutes
        from ragroute.route.sources import Source
        from ragroute.types import Hit

        self.entered, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.reranked: list[str] = []
        probe = self

        class Blocking:
            def search_many(self, queries, k=10, *, filters=None):
                if queries == ["second"]:
                    probe.entered.set()
                    probe.release.wait(10)
                return [[Hit("d1", 1.0, text="kept")] for _ in queries]

        class Counting:
            name = "counting"

            def rerank(self, context, hits, k):
                probe.reranked.append(context.text)
                probe.finished.set()
                return hits[:k]

        self.pipeline = Pipeline([Source("slow", Blocking())], FixedRoutes(["slow"]), reranker=Counting())

    def cancel_midway(self, awaitable_of) -> None:
        """Start ``awaitable_of("second")``, cancel it once its search is inside the source, release
        the source, and return once the cancelled search's thread had a second to go on."""
        import asyncio

        async def run():
            task = asyncio.ensure_future(awaitable_of("second"))
            while not self.entered.is_set():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            self.release.set()  # the search goes on in its thread, to the next stage boundary

        self.finished.clear()
        asyncio.run(run())
        assert not self.finished.wait(1.0)  # the worker thread stopped before the rerank stage
