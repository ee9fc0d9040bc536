"""Indexes searched in several threads while another adds and deletes documents: every search sees
one version of the documents (the store's readers-writer lock, ragroute.index.rwlock)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.index.build import build_index
from ragroute.index.dense import DenseIndex, DenseParams
from ragroute.route.score_probe import ProbeQueries, SourceProbe
from ragroute.scopes import labels_of
from ragroute.types import Document

WORDS = ["printer", "laptop", "password", "network", "vpn", "email", "driver", "payroll", "ledger", "audit"]


def _docs(prefix: str, n: int, start: int = 0) -> list[Document]:
    rng = np.random.default_rng(start)
    return [
        Document(
            id=f"{prefix}{i}",
            text=" ".join(rng.choice(WORDS, size=8)),
            metadata={"access": "hr"} if i % 3 == 0 else {},
        )
        for i in range(start, start + n)
    ]


def _race(index, search, seconds: float = 1.0) -> list[str]:
    """Search in three threads while a fourth adds one document and deletes another, repeatedly;
    the problems seen (exceptions, hits a caller without scopes may not read)."""
    problems: list[str] = []
    stop = time.monotonic() + seconds

    def reader(seed: int) -> None:
        while time.monotonic() < stop:
            try:
                for hit in search(seed):
                    if labels_of(hit.metadata.get("access")):
                        problems.append(f"leak {hit.doc_id}")
            except Exception as exc:  # noqa: BLE001 - what the test counts
                problems.append(f"{type(exc).__name__}: {exc}")

    def writer() -> None:
        i = 0
        try:
            while time.monotonic() < stop:
                index.add(_docs("new", 1, start=1000 + i))
                # the document just added, or (while there are any) one of the first ones
                index.delete([f"new{1000 + i}"] if i % 2 or i // 2 >= 300 else [f"d{i // 2}"])
                i += 1
        except Exception as exc:  # noqa: BLE001 - what the test counts
            problems.append(f"writer: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)] + [
        threading.Thread(target=writer)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a thread never finished (deadlock)"
    return problems


@pytest.mark.parametrize("method", ["bm25", "hybrid", "dense"])
def test_scoped_searches_during_adds_and_deletes_see_one_version(hashing_encoder, method):
    """The access mask of the old document list was served after a write (a document labelled hr
    returned to a caller without scopes), and positions of one list built hits of another."""
    index = build_index(_docs("d", 300), method, encoder=hashing_encoder, name="x")

    def search(seed: int):
        context = QueryContext(" ".join(WORDS[seed : seed + 3]))  # no scopes: public documents only
        return index.search_contexts([context], 10)[0]

    assert _race(index, search) == []


@pytest.mark.parametrize("factory", ["hnsw", "flat"])
def test_dense_searches_and_the_confidence_probe_during_inserts(hashing_encoder, factory):
    """faiss crashed (SIGSEGV) when an HNSW index was searched during an insert; the confidence
    probe (an HNSW graph over a flat index of 2,000+ documents) read masks of another version."""
    index = DenseIndex(hashing_encoder, DenseParams(factory=factory))
    index.add(_docs("d", 2100))
    probe = SourceProbe(index, k=10)
    assert probe.kind == ("graph" if factory == "flat" else "scores")

    def search(seed: int):
        context = QueryContext(" ".join(WORDS[seed : seed + 3]))
        probe.top_scores(ProbeQueries([context]), 3)
        return index.search_contexts([context], 10)[0]

    assert _race(index, search) == []


def test_changing_an_index_from_inside_its_own_search_is_one_line(hashing_encoder):
    index = build_index(_docs("d", 20), "bm25", name="x")
    with index.store.reading(), pytest.raises(RagrouteError, match="cannot be changed from inside a search"):
        index.add(_docs("new", 1, start=50))
    index.add(_docs("new", 1, start=50))  # after the search: fine
    assert "new50" in index.store


def test_a_hybrid_search_in_two_phases_during_writes_neither_deadlocks_nor_mixes_versions(
    hashing_encoder, monkeypatch
):
    """The second phase held the store's read lock while it waited for the first phase's scan in a
    pool thread: with writers first, the scan waited behind a writer, the writer behind the search
    (a pause of DEFER_S each time, here long enough to fail the test)."""
    from concurrent.futures import ThreadPoolExecutor

    from ragroute.index import rwlock

    monkeypatch.setattr(rwlock, "DEFER_S", 60.0)

    index = build_index(_docs("d", 300), "hybrid", encoder=hashing_encoder, name="x")
    pool = ThreadPoolExecutor(2)

    def search(seed: int):
        context = QueryContext(" ".join(WORDS[seed : seed + 3]))
        return index.start_contexts([context], 10, pool.submit)()[0]

    try:
        assert _race(index, search) == []
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a deadlock fails the test, not the run


def _until(condition, seconds: float = 5.0) -> bool:
    stop = time.monotonic() + seconds
    while not condition() and time.monotonic() < stop:
        time.sleep(0.005)
    return condition()


def test_a_waiting_writer_goes_before_new_readers(monkeypatch):
    """With readers first, searches that kept overlapping held an add back for ever."""
    from ragroute.index import rwlock

    monkeypatch.setattr(rwlock, "DEFER_S", 30.0)
    lock = rwlock.ReadWriteLock()
    order: list[str] = []
    release = threading.Event()

    def first_reader() -> None:
        with lock.reading():
            release.wait(10)

    def writer() -> None:
        with lock.writing():
            order.append("writer")

    def late_reader() -> None:
        with lock.reading():
            order.append("reader")

    threads = [threading.Thread(target=f) for f in (first_reader, writer, late_reader)]
    threads[0].start()
    assert _until(lambda: lock._readers == 1)
    threads[1].start()
    assert _until(lambda: lock._waiting == 1)
    threads[2].start()
    time.sleep(0.2)
    assert order == []  # the late reader waits behind the writer, the writer behind the first reader
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["writer", "reader"]


def test_a_reader_waited_for_by_a_reader_is_not_held_back_for_ever(monkeypatch):
    """A thread holding a read that waits for another thread's new read (work handed to a pool
    inside a search) would wait with a waiting writer for ever: the new read defers for DEFER_S."""
    from ragroute.index import rwlock

    monkeypatch.setattr(rwlock, "DEFER_S", 0.1)
    lock = rwlock.ReadWriteLock()
    wrote = threading.Event()

    def writer() -> None:
        with lock.writing():
            wrote.set()

    with lock.reading():
        w = threading.Thread(target=writer)
        w.start()
        assert _until(lambda: lock._waiting == 1)
        helper_read = threading.Event()

        def helper() -> None:
            with lock.reading():
                helper_read.set()

        h = threading.Thread(target=helper)
        h.start()
        h.join(5)
        assert helper_read.is_set() and not wrote.is_set()
    w.join(5)
    assert wrote.is_set()


def _add_within(index, seconds: float) -> tuple[bool, threading.Thread]:
    """Add document ``new5000`` to ``index`` in a thread: whether it finished within ``seconds``."""
    adder = threading.Thread(target=index.add, args=(_docs("new", 1, start=5000),))
    adder.start()
    adder.join(seconds)
    return not adder.is_alive(), adder


@pytest.mark.parametrize("method", ["bm25", "dense"])
def test_an_add_is_not_starved_by_searches_that_keep_overlapping(hashing_encoder, method):
    index = build_index(_docs("d", 2000), method, encoder=hashing_encoder, name="x")
    stop = threading.Event()

    def reader(seed: int) -> None:
        context = QueryContext(" ".join(WORDS[seed : seed + 3]))
        while not stop.is_set():
            index.search_contexts([context], 10)

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in readers:
        t.start()
    try:
        time.sleep(0.1)
        added, _ = _add_within(index, 10)
    finally:
        stop.set()
        for t in readers:
            t.join(30)
    assert added, "the add waited 10 s behind searches"
    assert "new5000" in index.store


@pytest.mark.parametrize("method", ["dense", "hybrid", "graph"])
@pytest.mark.parametrize("call", ["search_many", "search_contexts"])
def test_an_add_does_not_wait_for_a_search_s_query_encoding(hashing_encoder, method, call):
    """Queries are encoded before a search takes the read lock: an add goes ahead while a slow
    query encoding is in flight (it waited for the whole encoding when that ran under the lock)."""
    if method == "graph":
        from ragroute.graph.index import GraphIndex

        index = GraphIndex.build(_docs("d", 50), encoder=hashing_encoder, name="x")
    else:
        index = build_index(_docs("d", 50), method, encoder=hashing_encoder, name="x")
    encoding, release = threading.Event(), threading.Event()
    plain = hashing_encoder.encode_queries

    def slow_encode_queries(texts, **kwargs):
        encoding.set()
        release.wait(10)
        return plain(texts, **kwargs)

    hashing_encoder.encode_queries = slow_encode_queries
    query = "printer network vpn"
    search = {
        "search_many": lambda: index.search_many([query], 5),
        "search_contexts": lambda: index.search_contexts([QueryContext(query)], 5),
    }[call]
    results: list = []
    searcher = threading.Thread(target=lambda: results.append(search()))
    searcher.start()
    adder = None
    try:
        assert encoding.wait(10)
        added, adder = _add_within(index, 5)
    finally:
        release.set()
        searcher.join(10)
        if adder is not None:
            adder.join(10)
    assert added, "the add waited for a query encoding"
    assert "new5000" in index.store
    assert len(results) == 1 and len(results[0][0]) == 5
