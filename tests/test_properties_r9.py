"""Property-based tests (hypothesis, deterministic), round 9: the external vector stores (Qdrant in
memory and on disk, LanceDB on disk: whichever is installed) against the exact flat ``DenseIndex``
as the oracle, on the same vectors and the same operations.

Random small corpora (ids that look alike: case, spaces, quotes, unicode; text metadata with some
integers, booleans, floats, nulls and lists; access labels in every spelling; parent ids) go
through random sequences of ``add`` (text through a hashing encoder), ``add_vectors`` (vectors on a
small grid, so exact ties are common), ``delete`` (present, missing and repeated ids), adding a
deleted id again, a document replaced (deleted, and another added: the count kept), an add or a
delete whose write to the store fails part way, and a save and load through the artifact store.
After every step:

* both indexes hold the same documents, and the store one vector per document;
* every search (``k`` from 1 to past the collection; no filter, a value, a list of values, an
  empty list, ``modality``, ``parent_id``, ``access``, a key some or no document carries, values
  of other types, a caller's scope) returns the oracle's hits: the same scores rank by rank
  (within 1e-5), each hit a document the filter admits with that score, no hit twice, the
  document as added; up to ties, whose order the docs leave to Qdrant (docs/scores.md, "Ties");
* where the oracle refuses, the store refuses too; where the store alone refuses, it is one of the
  refusals docs/scaling.md documents (a boolean, float or null value, a key holding lists);
* every refusal is one line of a ragroute error, and a refused or failed change (a duplicate id,
  an unknown id, any change to a saved collection) leaves both indexes as they were.

The bugs it found have plain regression tests below.
``PROP_N`` (an environment variable) sets how many examples each property tries (40 by default).
"""

from __future__ import annotations

import importlib.util
import itertools
import os

import numpy as np
import pytest
from conftest import PROPERTY_SETTINGS, HashingEncoder
from hypothesis import given, settings
from hypothesis import strategies as st

from ragroute.errors import InvalidArgumentError, RagrouteError
from ragroute.index.dense import DenseIndex
from ragroute.index.external import StoreParams
from ragroute.index.io import load_index, save_index
from ragroute.registry import INDEX_KINDS
from ragroute.scopes import scoped_filters
from ragroute.types import Document

SETTINGS = settings(PROPERTY_SETTINGS, max_examples=int(os.environ.get("PROP_N", "40")))

DIM = 8
IDS = ["a", "A", "a ", " a", "a-1", "a_1", "a.1", "1", "01", "é", "e\u0301", "a'b", 'a"b', "a,b"]
KEYS = ["k", "K", "k.x", "k x", "n"]
TEXTS = ["x", "X", "x ", "", "1", "O'Brien", "a,b", "é"]
SCALARS = TEXTS + [1, 0, True, 1.5, 2.0, None]
LABELS = ["hr", "fin", "ops"]
WORDS = ["star", "bread", "vpn", "oven", "comet", "ink"]

STORES = [
    pytest.param(
        kind,
        on_disk,
        marks=pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"no {module}"),
        id=f"{kind}-{'disk' if on_disk else 'memory'}",
    )
    for kind, module, on_disk in (
        ("qdrant", "qdrant_client", False),
        ("qdrant", "qdrant_client", True),
        ("lancedb", "lancedb", True),
    )
]

METADATA = st.fixed_dictionaries(
    {},
    optional={
        **{key: st.one_of(st.sampled_from(TEXTS), st.sampled_from(SCALARS)) for key in KEYS},
        "tags": st.lists(st.sampled_from(TEXTS), max_size=2),
        "access": st.one_of(
            st.sampled_from(LABELS),
            st.just("hr, fin"),
            st.just(""),
            st.lists(st.sampled_from(LABELS), max_size=2),
        ),
    },
)
# a replacement document may hold a list under "n", which the others hold scalars under
LISTED = st.builds(
    lambda metadata, items: {**metadata, "n": items},
    METADATA,
    st.lists(st.sampled_from(TEXTS[:3]), min_size=1, max_size=2),
)
DOC_ID = st.one_of(st.sampled_from(IDS), st.builds("{}{}".format, st.sampled_from(IDS), st.integers(0, 40)))


def _docs(metadata):
    return st.tuples(
        DOC_ID,
        metadata,
        st.one_of(st.none(), st.sampled_from(["p", "1"])),  # parent id
        st.lists(st.integers(-2, 2), min_size=DIM, max_size=DIM).filter(any),  # vector on a grid
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),  # text for add()
    )


DOC = _docs(METADATA)
REPLACEMENT = _docs(st.one_of(METADATA, LISTED))
FILTER_VALUE = st.one_of(
    st.sampled_from(SCALARS),
    st.lists(st.sampled_from(SCALARS), max_size=3),
    st.sampled_from(LABELS),
)
FILTERS = st.one_of(
    st.none(),
    st.builds(lambda value: {"n": value}, st.sampled_from(TEXTS[:3])),  # what a replacement's list holds
    st.dictionaries(
        st.sampled_from(KEYS + ["n", "tags", "access", "modality", "parent_id", "absent"]),
        FILTER_VALUE,
        max_size=2,
    ),
)
SEARCH = st.tuples(
    st.lists(st.lists(st.integers(-2, 2), min_size=DIM, max_size=DIM).filter(any), min_size=1, max_size=3),
    st.integers(1, 40),
    FILTERS,
    st.one_of(st.none(), st.lists(st.sampled_from(LABELS), max_size=2)),  # a caller's scopes
)
STEP = st.one_of(
    st.tuples(st.just("add_vectors"), st.lists(DOC, min_size=1, max_size=12, unique_by=lambda d: d[0])),
    st.tuples(st.just("add_vectors"), st.lists(DOC, min_size=2, max_size=4)),  # maybe an id twice
    st.tuples(st.just("add"), st.lists(DOC, min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.lists(DOC_ID, min_size=1, max_size=4)),  # mostly unknown ids
    st.tuples(st.just("delete_present"), st.lists(st.integers(0, 60), min_size=1, max_size=5)),
    st.tuples(st.just("re_add"), st.integers(0, 60)),  # a deleted document added again
    st.tuples(st.just("reload"), st.none()),
    st.tuples(st.just("replace"), st.tuples(st.integers(0, 60), REPLACEMENT)),
    st.tuples(
        st.just("failing_add"),
        st.tuples(st.lists(DOC, min_size=1, max_size=10, unique_by=lambda d: d[0]), st.integers(1, 4)),
    ),
    st.tuples(st.just("failing_delete"), st.lists(st.integers(0, 60), min_size=1, max_size=5)),
)
FIRST = st.tuples(st.just("add_vectors"), st.lists(DOC, min_size=3, max_size=30, unique_by=lambda d: d[0]))

_runs = itertools.count()


def _unit(values) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _document(spec) -> Document:
    doc_id, metadata, parent, _, words = spec
    return Document(id=doc_id, text=" ".join(words), metadata=dict(metadata), parent_id=parent)


def _one_line_error(outcome) -> None:
    assert isinstance(outcome, RagrouteError), repr(outcome)
    assert str(outcome).strip() and "\n" not in str(outcome), repr(outcome)


def _attempt(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - compared and checked by the caller
        return exc


def _store_may_refuse(filters, docs) -> bool:
    """The refusals docs/scaling.md documents for a store alone: a filter value that is not a string
    or an integer (a boolean, a float, a null), or a metadata key some document holds a list under."""
    from ragroute.index.docstore import saved_form

    for key, wanted in (filters or {}).items():
        if key == "@scope":
            continue
        values = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if any(isinstance(v, bool) or not isinstance(saved_form(v), (str, int)) for v in values):
            return True
        if key not in ("modality", "parent_id", "access") and any(
            isinstance(saved_form(d.metadata.get(key)), (list, dict)) for d in docs
        ):
            return True
    return False


class Pair:
    """The oracle (a flat DenseIndex) and a store index, given the same operations."""

    def __init__(self, kind: str, on_disk: bool, folder) -> None:
        self.run = next(_runs)
        self.kind, self.folder = kind, folder
        self.encoder = HashingEncoder(DIM)
        location = str(folder / f"{kind}-store") if on_disk else ":memory:"
        self.flat = DenseIndex(self.encoder)
        self.store = INDEX_KINDS.get(kind)(
            self.encoder, StoreParams(location=location, collection=f"r9-{self.run}", batch_size=3)
        )
        self.published = False
        self.reloads = 0
        self.vectors: dict[str, np.ndarray] = {}  # of the documents added by add_vectors
        self.deleted: list[tuple[Document, np.ndarray]] = []

    # -- the operations --------------------------------------------------------------------
    def add_vectors(self, specs) -> None:
        docs = [_document(s) for s in specs]
        vectors = np.stack([_unit(s[3]) for s in specs])
        if self._change(lambda index: index.add_vectors(docs, vectors)):
            self.vectors.update({d.id: v for d, v in zip(docs, vectors)})

    def add(self, specs) -> None:
        docs = [_document(s) for s in specs]
        self._change(lambda index: index.add(docs))

    def delete(self, ids) -> None:
        held = {d.id: d for d in self.flat.documents}
        vectors = {d.id: self.vectors.get(d.id) for d in self.flat.documents}
        if self._change(lambda index: index.delete(ids)):
            self.deleted += [(held[i], vectors[i]) for i in dict.fromkeys(ids) if vectors.get(i) is not None]

    def delete_present(self, picks) -> None:
        """Delete documents the index holds (repeated when two picks meet)."""
        ids = [d.id for d in self.flat.documents]
        self.delete([ids[p % len(ids)] for p in picks] if ids else ["gone"])

    def re_add(self, pick) -> None:
        """Add a deleted document again (same id, vector and metadata), or a new one."""
        if self.deleted:
            doc, vector = self.deleted[pick % len(self.deleted)]
            self._change(lambda index: index.add_vectors([doc], vector[None, :]))

    def failing_add(self, argument) -> None:
        """``add_vectors`` whose ``nth`` write to the store fails (none when past the last batch)."""
        specs, nth = argument
        docs = [_document(s) for s in specs]
        vectors = np.stack([_unit(s[3]) for s in specs])
        if self._failing("_upsert", nth, lambda index: index.add_vectors(docs, vectors), "write vectors"):
            self.vectors.update({d.id: v for d, v in zip(docs, vectors)})

    def failing_delete(self, picks) -> None:
        """``delete`` of documents the index holds, whose write to the store fails."""
        ids = [d.id for d in self.flat.documents]
        chosen = [ids[p % len(ids)] for p in picks] if ids else ["gone"]
        self._failing("_remove", 1, lambda index: index.delete(chosen), "delete vectors")

    def _failing(self, method: str, nth: int, change, what: str) -> bool:
        if self.published:
            return self._change(change)
        real, calls = getattr(self.store, method), []

        def failing(*args):
            calls.append(args)
            if len(calls) == nth:
                raise OSError("disk full")
            return real(*args)

        before = self._state()
        setattr(self.store, method, failing)
        try:
            got = _attempt(lambda: change(self.store))
        finally:
            delattr(self.store, method)
        if isinstance(got, Exception):  # refused (a duplicate, an unknown id) or failed: nothing done
            _one_line_error(got)
            assert self._state() == before
            assert len(calls) < nth or f"could not {what}: OSError: disk full" in str(got), got
        else:  # every write went through: the oracle takes the same change
            assert len(calls) < nth
            change(self.flat)
        self.check_same()
        return not isinstance(got, Exception)

    def replace(self, argument) -> None:
        """A document updated: one the index holds deleted and a new one added (the count kept)."""
        pick, spec = argument
        ids = [d.id for d in self.flat.documents]
        if ids:
            self.delete([ids[pick % len(ids)]])
        self.add_vectors([spec])

    def reload(self, _=None) -> None:
        folder = self.folder / f"saved{self.run}-{self.reloads}"
        self.reloads += 1
        save_index(self.flat, folder / "flat")
        outcome = _attempt(lambda: save_index(self.store, folder / "store"))
        if isinstance(outcome, Exception):
            _one_line_error(outcome)
            raise AssertionError(f"the store index could not be saved: {outcome}")
        self.flat = load_index(folder / "flat", encoder=self.encoder)
        self.store = load_index(folder / "store", encoder=self.encoder)
        self.published = True

    def _change(self, change) -> bool:
        """Apply ``change`` to both indexes (to the store alone once saved); whether it was done."""
        before = self._state()
        if self.published:  # a saved collection is every reader's: refused, nothing changed
            outcome = _attempt(lambda: change(self.store))
            _one_line_error(outcome)
            assert "a saved index uses it" in str(outcome)
            assert self._state() == before
            return False
        want = _attempt(lambda: change(self.flat))
        got = _attempt(lambda: change(self.store))
        if isinstance(want, Exception):
            _one_line_error(want)
            _one_line_error(got)
            assert type(got) is type(want), (got, want)
            assert self._state() == before  # nothing added or deleted, in either index
        else:
            assert not isinstance(got, Exception), got
            assert got == want  # how many were deleted
        self.check_same()
        return not isinstance(want, Exception)

    # -- the checks -------------------------------------------------------------------------
    def _state(self):
        store_ids = [d.id for d in self.store.documents]
        flat_ids = [d.id for d in self.flat.documents]
        count = self.store._count() if self.store.collection is not None else 0
        return flat_ids, store_ids, count

    def check_same(self) -> None:
        flat_ids, store_ids, count = self._state()
        assert store_ids == flat_ids
        assert count == len(self.store) == len(self.flat)

    def search(self, rows, k, filters, scopes) -> None:
        if scopes is not None:
            filters = scoped_filters(filters, scopes)
        queries = np.stack([_unit(row) for row in rows])
        want = _attempt(lambda: self.flat.search_vectors(queries, k, filters=filters))
        got = _attempt(lambda: self.store.search_vectors(queries, k, filters=filters))
        if isinstance(want, Exception):
            _one_line_error(want)
            _one_line_error(got)
            return
        if isinstance(got, Exception):
            _one_line_error(got)
            assert _store_may_refuse(filters, self.flat.documents), (got, filters)
            return
        assert len(got) == len(want) == len(queries)
        every = self.flat.search_vectors(queries, max(1, len(self.flat)), filters=filters)
        for query_got, query_want, query_every in zip(got, want, every):
            self._same_hits(query_got, query_want, query_every, k, filters)

    def _same_hits(self, got, want, every, k, filters) -> None:
        """The oracle's hits up to ties: the same scores rank by rank, each hit admitted (in the
        oracle's whole ranking) with that score, none twice, the document as added."""
        admitted = {h.doc_id: h.score for h in every}
        assert len(got) == len(want) == min(k, len(admitted)), (got, want)
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
        assert len({h.doc_id for h in got}) == len(got)
        for rank, hit in enumerate(got, 1):
            assert hit.doc_id in admitted, (hit.doc_id, filters)
            assert hit.score == pytest.approx(admitted[hit.doc_id], abs=1e-5)
            assert hit.rank == rank
            document = self.flat.store.get(hit.doc_id)
            assert (hit.text, hit.metadata) == (document.text, document.metadata)

    def drop(self) -> None:
        if self.store.collection is not None:
            self.store.drop_collection()


@pytest.mark.parametrize(("kind", "on_disk"), STORES)
def test_a_store_index_answers_as_the_flat_oracle_after_every_step(tmp_path, kind, on_disk):
    @SETTINGS
    @given(
        st.tuples(FIRST, st.lists(SEARCH, min_size=1, max_size=3)),
        st.lists(st.tuples(STEP, st.lists(SEARCH, min_size=1, max_size=3)), min_size=2, max_size=8),
    )
    def check(first, steps):
        steps = [first, *steps]
        pair = Pair(kind, on_disk, tmp_path)
        try:
            for (operation, argument), searches in steps:
                if operation == "replace":  # the same searches before and after: what changed
                    for search in searches:
                        pair.search(*search)
                getattr(pair, operation)(argument)
                for search in searches:
                    pair.search(*search)
        finally:
            pair.drop()

    check()


@pytest.mark.parametrize(("kind", "on_disk"), STORES)
def test_k_is_checked_as_in_a_local_index(tmp_path, kind, on_disk):
    pair = Pair(kind, on_disk, tmp_path)
    vectors = np.eye(DIM, dtype=np.float32)[:3]
    docs = [Document(id=f"d{i}", text="x") for i in range(3)]
    for index in (pair.flat, pair.store):
        index.add_vectors(docs, vectors)
    for k in (0, -1, 2.5, True, "3"):
        for index in (pair.flat, pair.store):
            with pytest.raises(InvalidArgumentError, match="^k must be"):
                index.search_vectors(vectors[:1], k)
    for index in (pair.flat, pair.store):
        assert [h.doc_id for h in index.search_vectors(vectors[:1], 2.0)[0]][:1] == ["d0"]
        assert len(index.search_vectors(vectors[:1], np.int64(2))[0]) == 2
    pair.drop()


@pytest.mark.parametrize(("kind", "on_disk"), STORES)
def test_an_empty_store_index_is_saved_and_loads_back_empty(tmp_path, kind, on_disk):
    """A store index saved before any document was added (no collection created yet) was saved,
    and loading it failed: "the manifest names no qdrant collection"."""
    pair = Pair(kind, on_disk, tmp_path)
    pair.reload()
    assert len(pair.store) == 0 and pair.store.collection is None
    assert pair.store.search_vectors(np.eye(DIM, dtype=np.float32)[:1], 3) == [[]]
    with pytest.raises(RagrouteError, match="a saved index uses it"):
        pair.store.add_vectors([Document(id="d", text="x")], np.eye(DIM, dtype=np.float32)[:1])


@pytest.mark.parametrize(("kind", "on_disk"), STORES)
def test_a_key_holding_a_list_after_a_delete_and_an_add_is_refused_not_missed(tmp_path, kind, on_disk):
    """Which keys hold lists was kept per document count: after a delete and an add (the count
    kept), a filter on a key that now holds a list in a document was pushed down, and the store
    silently missed that document (the flat index matched it by its items)."""
    pair = Pair(kind, on_disk, tmp_path)
    vectors = np.eye(DIM, dtype=np.float32)
    docs = [Document(id="a", text="x", metadata={"z": 1}), Document(id="b", text="x", metadata={"z": 2})]
    for index in (pair.flat, pair.store):
        index.add_vectors(docs, vectors[:2])
        assert [h.doc_id for h in index.search_vectors(vectors[:1], 5, filters={"z": 1})[0]] == ["a"]
        index.delete(["b"])
        index.add_vectors([Document(id="c", text="x", metadata={"z": [1, 3]})], vectors[2:3])
    assert [h.doc_id for h in pair.flat.search_vectors(vectors[:1], 5, filters={"z": 1})[0]] == ["a", "c"]
    with pytest.raises(RagrouteError, match="'z' holds lists in some documents"):
        pair.store.search_vectors(vectors[:1], 5, filters={"z": 1})
    pair.drop()
