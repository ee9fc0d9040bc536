"""One pipeline answering in several threads while another thread adds, deletes and saves documents
(docs/reliability.md, the row "one pipeline serves several threads ..."; docs/architecture.md,
"Anything kept that was read from an index's documents").

``test_concurrency.py`` races searches of one index; this file races whole pipelines: dense, BM25
and hybrid sources, routed by the prototype, confidence and ensemble routers, with filters, caller
scopes and an exposure ledger, through ``retrieve`` and ``retrieve_many``. Each reader checks what
holds whatever the interleaving:

* every hit is a document of its source that was there at some moment of the call: added before
  the call returned, not deleted before it began (a document never changes while held, so its
  text and metadata are that document's);
* hits are distinct, at most ``k``, scores finite, in fused order (scores.md), ranks 1..n;
* no hit, and no source in the answer or trace, that the caller's scopes forbid; every hit meets
  the query's filter;
* the trace's ``scores`` step names the scale of every source a hit came from (scores.md);
* a decision's route probabilities sum to 1; the only exceptions are none at all (no documented
  error applies to these queries);
* after the writer finishes, every reader's answer is that of a twin pipeline given the same
  edits with no query in between (the writer ends with a change of more than a quarter, so every
  fitted scale is fitted again: docs/architecture.md; not a pipeline built afresh on the final
  documents, whose confidence router would fit another temperature, which edits keep).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from conftest import HashingEncoder

from ragroute.exposure import ExposureBudget, ExposureLedger
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.route.sources import Source
from ragroute.scopes import labels_of
from ragroute.types import Document

TOPICS = {
    "den": "telescope star galaxy orbit planet comet nebula",
    "lex": "bread flour yeast oven butter sauce knife",
    "hyb": "printer laptop password network vpn email driver",
}
COMMON = ["report", "notes", "summary"]
METHODS = {"den": "dense", "lex": "bm25", "hyb": "hybrid"}
QUERIES = [
    "telescope galaxy",
    "bread oven butter",
    "printer vpn password",
    "report summary",
    "comet knife email",
    "star notes",
]
ROUTERS: dict[str, dict[str, Any]] = {
    "prototype": {"kind": "prototype", "threshold": 0.1, "max_routes": 3},
    "confidence": {"kind": "confidence", "threshold": 0.1, "max_routes": 3},
    "ensemble": {
        "kind": "ensemble",
        "members": ["prototype", "confidence"],
        "threshold": 0.1,
        "max_routes": 3,
    },
}
# (scopes, filters) a reader asks with; None: no filter
ASKS: list[tuple[list[str], dict[str, Any] | None]] = [
    ([], None),
    (["hr"], None),
    (["hr", "eng"], {"tier": "gold"}),
    (["eng"], {"tier": ["gold", "silver"]}),
]
K = 5


def _doc(name: str, i: int, seed: int) -> Document:
    rng = np.random.default_rng(seed)
    words = list(rng.choice(TOPICS[name].split(), size=6)) + list(rng.choice(COMMON, size=2))
    metadata: dict[str, Any] = {"tier": ["gold", "silver", "bronze"][i % 3]}
    if i % 4 == 1:
        metadata["access"] = "hr"
    elif i % 4 == 2:
        metadata["access"] = ["hr", "eng"]
    return Document(id=f"{name}-{i}", text=" ".join(words), metadata=metadata)


def _initial(name: str, n: int = 24) -> list[Document]:
    return [_doc(name, i, seed=1000 * len(name) + i) for i in range(n)]


class Log:
    """When each document was added (the add began) and deleted (the delete returned), on one clock
    that readers read too."""

    def __init__(self, docs: dict[str, list[Document]]) -> None:
        self.lock = threading.Lock()
        self.clock = 0
        self.text: dict[tuple[str, str], str] = {}
        self.meta: dict[tuple[str, str], dict[str, Any]] = {}
        self.added_at: dict[tuple[str, str], int] = {}
        self.deleted_at: dict[tuple[str, str], int] = {}
        for name, items in docs.items():
            for d in items:
                self._know(name, d)
                self.added_at[(name, d.id)] = 0

    def _know(self, name: str, doc: Document) -> None:
        self.text[(name, doc.id)] = doc.text
        self.meta[(name, doc.id)] = dict(doc.metadata)

    def tick(self) -> int:
        with self.lock:
            self.clock += 1
            return self.clock

    def adding(self, name: str, docs: Sequence[Document]) -> None:
        with self.lock:
            self.clock += 1
            for d in docs:
                self._know(name, d)
                self.added_at[(name, d.id)] = self.clock

    def deleted(self, name: str, ids: Sequence[str]) -> None:
        with self.lock:
            self.clock += 1
            for i in ids:
                self.deleted_at[(name, i)] = self.clock


def _visible(labels: Any, scopes: Sequence[str]) -> bool:
    """config.md: a document is visible when it has no labels or one of them is a caller's scope."""
    held = labels_of(labels)
    return not held or bool(held & set(scopes))


def _matches(metadata: dict[str, Any], filters: dict[str, Any] | None) -> bool:
    if not filters:
        return True
    for key, want in filters.items():
        wanted = want if isinstance(want, list) else [want]
        if metadata.get(key) not in wanted:
            return False
    return True


def _check(result: Any, *, log: Log, begun: int, ended: int, scopes, filters, hidden: set[str]) -> list[str]:
    problems: list[str] = []
    hits = result.hits
    ids = [(h.source, h.doc_id) for h in hits]
    if len(set(ids)) != len(ids):
        problems.append(f"repeated hits {ids}")
    if len(hits) > K:
        problems.append(f"{len(hits)} hits for k={K}")
    # scores.md: fusion orders the hits (``explain["fused"]``); a hit's score is its similarity
    order = [h.explain.get("fused", h.score) for h in hits]
    if not all(math.isfinite(h.score) for h in hits) or any(a < b for a, b in zip(order, order[1:])):
        problems.append(f"scores not finite or fused values increasing: {order}")
    if [h.rank for h in hits] != list(range(1, len(hits) + 1)):
        problems.append(f"ranks {[h.rank for h in hits]}")
    for h in hits:
        key = (h.source.removeprefix("sec-"), h.doc_id)  # sec-den: a view of den
        if key not in log.text:
            problems.append(f"unknown hit {key}")
            continue
        added, deleted = log.added_at[key], log.deleted_at.get(key)
        if added > ended:
            problems.append(f"{key} added after the call returned")
        if deleted is not None and deleted < begun:
            problems.append(f"{key} deleted before the call began")
        if h.text != log.text[key] or {k: v for k, v in h.metadata.items() if k in ("tier", "access")} != {
            k: v for k, v in log.meta[key].items()
        }:
            problems.append(f"{key} is not its document: {h.text!r} {h.metadata}")
        if not _visible(h.metadata.get("access"), scopes):
            problems.append(f"leak: {key} {h.metadata.get('access')} for scopes {scopes}")
        if not _matches(h.metadata, filters):
            problems.append(f"{key} {h.metadata} fails the filter {filters}")
    decision = result.decision
    # scores.md: the trace of every query has a ``scores`` step with each source's scale
    scales = [step.detail for step in decision.trace if step.stage == "scores"]
    if hits and (len(scales) != 1 or not {h.source for h in hits} <= set(scales[0])):
        problems.append(f"scales of {sorted({h.source for h in hits})} not all in the trace: {scales}")
    named = set(decision.chosen) | set(decision.routes) | {h.source for h in hits}
    if named & hidden:
        problems.append(f"hidden source named: {named & hidden}")
    if repr(decision.trace).count("sec-") and "hr" not in scopes:
        problems.append("hidden source named in the trace")
    # routes are rounded to 6 digits; the unrounded log-probabilities, where the router has them
    logs = decision.log_routes()
    total = sum(math.exp(v) for v in logs.values()) if logs else sum(decision.routes.values())
    if decision.routes and not math.isclose(total, 1.0, abs_tol=1e-9 if logs else 1e-5):
        problems.append(f"route probabilities sum to {total}: {decision.routes}")
    return problems


def _pipeline(indexes: dict[str, Any], router: str, encoder: Any, ledger: ExposureLedger | None = None):
    sources = [Source(name, index) for name, index in indexes.items()]
    # a second view of the dense index, readable with the hr scope only
    sources.append(Source("sec-den", indexes["den"], access=frozenset({"hr"}), metadata={"corpus": "den"}))
    return pipeline_from_settings(sources, ROUTERS[router], encoder=encoder, exposure=ledger)


def _contexts(seed: int) -> list[tuple[list[str], list[str], dict[str, Any] | None]]:
    """(queries, scopes, filters) asks of one reader, in a seeded order."""
    rng = np.random.default_rng(seed)
    asks = []
    for j in rng.permutation(len(ASKS) * 2):
        scopes, filters = ASKS[j % len(ASKS)]
        queries = [QUERIES[int(q)] for q in rng.choice(len(QUERIES), size=2, replace=False)]
        asks.append((queries, scopes, filters))
    return asks


def _ask(pipeline, queries, scopes, filters, *, batch: bool, caller: str):
    from ragroute.context import QueryContext

    if filters is None:
        if batch:
            return pipeline.retrieve_many(queries, K, scopes=scopes, caller=caller)
        return [pipeline.retrieve(q, K, scopes=scopes, caller=caller) for q in queries]
    contexts = [QueryContext(q, filters=filters, scopes=tuple(scopes), caller=caller) for q in queries]
    if batch:
        return pipeline.retrieve_many(contexts, K)
    return [pipeline.retrieve(c, K) for c in contexts]


def _write(indexes: dict[str, Any], rounds: int, *, log: Log | None = None, save_to: Any = None) -> None:
    """The writer's edits, the same every time: per round and source two documents added and one
    deleted (seeded), a save every fourth round; last, half as many documents again added to
    every source (more than a quarter: every fitted scale is fitted again on what is final)."""
    rng = np.random.default_rng(7)
    for r in range(rounds):
        for name in TOPICS:
            new = [_doc(name, 100 + 10 * r + j, seed=50_000 + 100 * r + j) for j in range(2)]
            if log is not None:
                log.adding(name, new)
            indexes[name].add(new)
            fresh = {d.id for d in new}
            alive = [d.id for d in indexes[name].documents if d.id not in fresh]
            gone = [str(x) for x in rng.choice(alive, size=1, replace=False)]
            indexes[name].delete(gone)
            if log is not None:
                log.deleted(name, gone)
        if save_to is not None and r % 4 == 3:
            save_index(indexes[list(TOPICS)[r % 3]], save_to / f"idx{r % 3}")
        if log is not None:
            time.sleep(0.002)
    for name in TOPICS:
        new = [_doc(name, 500 + j, seed=90_000 + j) for j in range(len(indexes[name].documents) // 2)]
        if log is not None:
            log.adding(name, new)
        indexes[name].add(new)


def _race(router: str, tmp_path, *, readers: int = 3, rounds: int = 12) -> None:
    encoder = HashingEncoder(dim=32)
    start = {name: _initial(name) for name in TOPICS}
    indexes = {name: build_index(start[name], METHODS[name], encoder=encoder, name=name) for name in TOPICS}
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=1.0, min_documents=1000))
    pipeline = _pipeline(indexes, router, encoder, ledger)
    log = Log(start)
    problems: list[str] = []
    writing = threading.Event()
    writing.set()
    answers: dict[int, list[Any]] = {}

    def reader(seed: int) -> None:
        asks = _contexts(seed)
        try:
            while writing.is_set():
                for j, (queries, scopes, filters) in enumerate(asks):
                    begun = log.tick()
                    results = _ask(pipeline, queries, scopes, filters, batch=j % 2 == 0, caller=f"c{seed}")
                    ended = log.tick()
                    hidden = set() if "hr" in scopes else {"sec-den"}
                    for result in results:
                        problems.extend(
                            _check(
                                result,
                                log=log,
                                begun=begun,
                                ended=ended,
                                scopes=scopes,
                                filters=filters,
                                hidden=hidden,
                            )
                        )
                    if not writing.is_set():
                        break
            # the writer is done: one more pass, to compare with a fresh pipeline
            answers[seed] = [
                _ask(pipeline, queries, scopes, filters, batch=j % 2 == 0, caller=f"c{seed}")
                for j, (queries, scopes, filters) in enumerate(asks)
            ]
        except Exception as exc:  # noqa: BLE001 - what the test counts
            problems.append(f"reader {seed}: {type(exc).__name__}: {exc}")

    def writer() -> None:
        try:
            _write(indexes, rounds, log=log, save_to=tmp_path)
        except Exception as exc:  # noqa: BLE001 - what the test counts
            problems.append(f"writer: {type(exc).__name__}: {exc}")
        finally:
            writing.clear()

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(readers)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread never finished (deadlock)"
    assert problems == [], sorted(set(problems))[:12]

    # every reader's last answers are those of a pipeline that saw the same edits with no query in
    # between (the confidence router keeps its temperature through edits, so a pipeline built on
    # the final documents may route otherwise: docs/architecture.md), and the final documents
    # are those of that pipeline's indexes
    twin_indexes = {
        name: build_index(start[name], METHODS[name], encoder=encoder, name=name) for name in TOPICS
    }
    fresh = _pipeline(twin_indexes, router, encoder)
    _write(twin_indexes, rounds)
    for name in TOPICS:
        assert [d.id for d in indexes[name].documents] == [d.id for d in twin_indexes[name].documents]
    for seed, got in answers.items():
        for (queries, scopes, filters), results in zip(_contexts(seed), got):
            want = _ask(fresh, queries, scopes, filters, batch=True, caller="fresh")
            for query, a, b in zip(queries, results, want):
                asked = (query, scopes, filters)
                assert a.decision.routes == pytest.approx(b.decision.routes, abs=1e-6), (
                    asked,
                    a.decision.signals,
                )
                assert a.decision.chosen == b.decision.chosen, asked
                assert [(h.source, h.doc_id) for h in a.hits] == [(h.source, h.doc_id) for h in b.hits]
                assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-6)


@pytest.mark.parametrize("router", list(ROUTERS))
def test_readers_during_adds_deletes_and_saves_see_one_version(router, tmp_path):
    _race(router, tmp_path)


def test_scales_fitted_again_during_queries_are_never_left_out():
    """A source that keeps moving by more than a quarter: its score scales and fusion statistics
    are fitted again and again while other threads query; every answer names each source's scale
    (a query between another's ``scales = None`` and its new fit once rescored with none)."""
    encoder = HashingEncoder(dim=32)
    start = {name: _initial(name, 12) for name in TOPICS}
    indexes = {name: build_index(start[name], METHODS[name], encoder=encoder, name=name) for name in TOPICS}
    pipeline = _pipeline(indexes, "prototype", encoder)
    extra = {name: [_doc(name, 200 + j, seed=70_000 + j) for j in range(6)] for name in TOPICS}
    problems: list[str] = []
    writing = threading.Event()
    writing.set()

    def reader(seed: int) -> None:
        try:
            while writing.is_set():
                for result in pipeline.retrieve_many(QUERIES, K, scopes=["hr"]):
                    hits = result.hits
                    scales = [s.detail for s in result.decision.trace if s.stage == "scores"]
                    if hits and (len(scales) != 1 or not {h.source for h in hits} <= set(scales[0])):
                        problems.append(f"scales of {sorted({h.source for h in hits})} missing: {scales}")
        except Exception as exc:  # noqa: BLE001 - what the test counts
            problems.append(f"reader {seed}: {type(exc).__name__}: {exc}")

    def writer() -> None:
        try:
            for _ in range(60):
                for name in TOPICS:  # 12 -> 18 -> 12 documents: each a move of more than a quarter
                    indexes[name].add(extra[name])
                time.sleep(0.003)
                for name in TOPICS:
                    indexes[name].delete([d.id for d in extra[name]])
                time.sleep(0.003)
        except Exception as exc:  # noqa: BLE001 - what the test counts
            problems.append(f"writer: {type(exc).__name__}: {exc}")
        finally:
            writing.clear()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings in a short run
    try:
        threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
        threads.append(threading.Thread(target=writer))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(old)
    assert not any(t.is_alive() for t in threads), "a thread never finished (deadlock)"
    assert problems == [], sorted(set(problems))[:12]
