import faiss
import numpy as np
import pytest

from ragroute.errors import EmptyQueryError, RagrouteError
from ragroute.index.dense import DenseIndex, DenseParams
from ragroute.types import Document


def brute_force(encoder, docs, query, k):
    doc_vecs = encoder.encode_documents([d.full_text() for d in docs])
    scores = doc_vecs @ encoder.encode_queries([query])[0]
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[:k]
    return [docs[i].id for i in order], scores[order]


def test_flat_matches_brute_force(hashing_encoder, small_docs):
    index = DenseIndex.build(small_docs, hashing_encoder, name="src")
    hits = index.search("telescope galaxy orbit", k=5)
    expected_ids, expected_scores = brute_force(hashing_encoder, small_docs, "telescope galaxy orbit", 5)
    assert [h.score for h in hits] == pytest.approx(list(expected_scores), abs=1e-5)
    assert set(h.doc_id for h in hits) == set(expected_ids)
    assert all(h.source == "src" and h.doc_id.startswith("astro") for h in hits)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]


def test_metadata_filter_restricts_results(hashing_encoder, small_docs):
    index = DenseIndex.build(small_docs, hashing_encoder)
    hits = index.search("telescope galaxy orbit", k=5, filters={"topic": "cook"})
    assert hits and all(h.metadata["topic"] == "cook" for h in hits)
    both = index.search("telescope", k=30, filters={"topic": ["cook", "it"]})
    assert {h.metadata["topic"] for h in both} == {"cook", "it"}


@pytest.mark.parametrize("factory", ["flat", "hnsw"])
def test_add_and_delete_keep_ids_stable(hashing_encoder, small_docs, factory):
    index = DenseIndex.build(small_docs[:20], hashing_encoder, DenseParams(factory=factory))
    before = {h.doc_id: h.score for h in index.search("bread flour yeast", k=20)}
    index.add(small_docs[20:])
    assert len(index) == 30
    assert index.delete(["cook-0", "cook-1"]) == 2
    after = index.search("bread flour yeast", k=30)
    ids = [h.doc_id for h in after]
    assert "cook-0" not in ids and "cook-1" not in ids
    for hit in after:
        if hit.doc_id in before:
            assert hit.score == pytest.approx(before[hit.doc_id], abs=1e-5)
    # iids are never reused: a re-added document gets a fresh one
    index.add([Document(id="cook-0", text="bread bread bread")])
    assert index.search("bread", k=1)[0].doc_id == "cook-0"
    assert index.store.next_iid == 31
    assert index.store.iids[-1] == 30


def test_delete_unknown_and_duplicate_add_raise(hashing_encoder, small_docs):
    index = DenseIndex.build(small_docs, hashing_encoder)
    with pytest.raises(RagrouteError, match="unknown document id"):
        index.delete(["nope"])
    with pytest.raises(RagrouteError, match="duplicate document id"):
        index.add([small_docs[0]])


def test_ivfpq_recall_reasonable():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32)).astype(np.float32)
    vectors = centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    class Fixed:
        model_id, backend, dim = "test/fixed", "fixed", 32

        def describe(self):
            return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}

    docs = [Document(id=f"d{i}", text="x") for i in range(3000)]
    exact = DenseIndex(Fixed(), DenseParams(factory="flat"))
    exact.add_vectors(docs, vectors)
    approx = DenseIndex(Fixed(), DenseParams(factory="ivfpq", pq_m=8, ivf_nprobe=32))
    approx.add_vectors(docs, vectors)
    assert isinstance(faiss.downcast_index(approx.faiss_index.index), faiss.IndexIVFPQ)
    queries = vectors[:50]
    truth = exact.search_vectors(queries, 10)
    found = approx.search_vectors(queries, 10)
    overlap = np.mean([len({h.doc_id for h in a} & {h.doc_id for h in b}) / 10 for a, b in zip(truth, found)])
    assert overlap > 0.5


def test_ivfpq_refuses_tiny_corpus(hashing_encoder, small_docs):
    with pytest.raises(RagrouteError, match="ivfpq needs at least"):
        DenseIndex.build(small_docs, hashing_encoder, DenseParams(factory="ivfpq"))


def test_empty_query_and_bad_factory(hashing_encoder, small_docs):
    index = DenseIndex.build(small_docs, hashing_encoder)
    with pytest.raises(EmptyQueryError):
        index.search("   ")
    with pytest.raises(RagrouteError, match="unknown dense index type"):
        DenseParams(factory="annoy")
