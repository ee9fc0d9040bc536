"""Saving and loading index directories, and every way loading can go wrong."""

import json

import pytest
from conftest import HashingEncoder

from ragroute.errors import EncoderMismatchError, IndexFormatError
from ragroute.index.build import build_index
from ragroute.index.docstore import DocumentStore
from ragroute.index.io import load_index, read_index_manifest, save_index
from ragroute.store import write_artifact
from ragroute.store.artifact import published_path
from ragroute.store.manifest import MANIFEST_NAME, canonical_checksum, sha256_file
from ragroute.types import Document


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_round_trip_gives_identical_results(tmp_path, hashing_encoder, small_docs, method):
    index = build_index(small_docs, method, encoder=hashing_encoder, name="demo")
    manifest = save_index(index, tmp_path / "idx")
    assert manifest.family == "index" and manifest.kind == method and manifest.params["documents"] == 30
    assert "docs.jsonl" in manifest.files and all(len(f["sha256"]) == 64 for f in manifest.files.values())
    loaded = load_index(tmp_path / "idx", hashing_encoder)
    for query in ["telescope orbit", "bread yeast oven", "printer driver"]:
        want = [(h.doc_id, round(h.score, 5)) for h in index.search(query, k=8)]
        got = [(h.doc_id, round(h.score, 5)) for h in loaded.search(query, k=8)]
        assert got == want
    assert loaded.search("telescope", k=1)[0].source == "demo"


def test_hybrid_fuses_and_explains(hashing_encoder, small_docs):
    index = build_index(small_docs, "hybrid", encoder=hashing_encoder)
    hits = index.search("printer vpn", k=5)
    assert hits[0].doc_id.startswith("it")
    assert hits[0].explain["fusion"] == "rrf" and {"bm25", "dense"} <= hits[0].explain.keys()


def test_dense_add_delete_survive_save(tmp_path, hashing_encoder, small_docs):
    index = build_index(small_docs[:25], "dense", encoder=hashing_encoder)
    index.delete(["astro-0"])
    save_index(index, tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", hashing_encoder)
    loaded.add(small_docs[25:] + [Document(id="astro-0", text="comet comet")])
    assert loaded.store.next_iid == 31  # the deleted document's id 0 was not reused
    assert loaded.search("comet", k=1)[0].doc_id == "astro-0"


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_an_emptied_index_saves_and_loads_back_empty_and_takes_new_documents(
    tmp_path, hashing_encoder, small_docs, method
):
    """Until session 44 an emptied BM25 or hybrid index could not be saved ("BM25 index ... holds no
    documents: there is nothing to save") while an emptied dense one could, so a user who deleted
    every document could not persist that and the old build, documents and all, stayed current."""
    index = build_index(small_docs, method, encoder=hashing_encoder, name="kb")
    save_index(index, tmp_path / "kb")  # the full build, which the empty one replaces
    assert index.delete([d.id for d in small_docs]) == len(small_docs)
    manifest = save_index(index, tmp_path / "kb")
    assert manifest.params["documents"] == 0
    assert published_path(tmp_path / "kb").joinpath("docs.jsonl").read_text(encoding="utf-8") == ""
    loaded = load_index(tmp_path / "kb", hashing_encoder)
    assert type(loaded) is type(index) and len(loaded) == 0
    assert loaded.search("telescope orbit", k=5) == [] and loaded.search_many(["printer", "bread"], k=3) == [
        [],
        [],
    ]
    loaded.add(small_docs[:10])
    fresh = build_index(small_docs[:10], method, encoder=hashing_encoder, name="kb")
    for query in ["telescope orbit", "bread yeast oven"]:
        want = [(h.doc_id, round(h.score, 5)) for h in fresh.search(query, k=5)]
        assert [(h.doc_id, round(h.score, 5)) for h in loaded.search(query, k=5)] == want
    # and the refilled index saves and loads as any other
    save_index(loaded, tmp_path / "kb")
    again = load_index(tmp_path / "kb", hashing_encoder)
    assert [h.doc_id for h in again.search("bread yeast oven", k=5)] == [
        h.doc_id for h in fresh.search("bread yeast oven", k=5)
    ]


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        load_index(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        IndexFormatError,
        match=r"holds no ragroute artifact \(no CURRENT file; if it holds "
        r"documents, build an index from it first: ragroute build .*empty --out DIR\)",
    ):
        load_index(tmp_path / "empty")


def test_truncated_manifest(tmp_path, small_docs):
    save_index(build_index(small_docs, "bm25"), tmp_path / "idx")
    path = published_path(tmp_path / "idx") / MANIFEST_NAME
    path.write_text(path.read_text()[:50])
    with pytest.raises(IndexFormatError, match="corrupt") as info:
        load_index(tmp_path / "idx")
    assert "\n" not in str(info.value)


def test_missing_and_corrupt_files(tmp_path, hashing_encoder, small_docs):
    save_index(build_index(small_docs, "hybrid", encoder=hashing_encoder), tmp_path / "idx")
    (published_path(tmp_path / "idx") / "dense.faiss").unlink()
    with pytest.raises(IndexFormatError, match="dense.faiss of the published build is missing"):
        load_index(tmp_path / "idx", hashing_encoder)
    save_index(build_index(small_docs, "hybrid", encoder=hashing_encoder), tmp_path / "idx")
    docs = published_path(tmp_path / "idx") / "docs.jsonl"
    data = bytearray(docs.read_bytes())
    data[10] ^= 0x01
    docs.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="docs.jsonl is corrupt"):
        load_index(tmp_path / "idx", hashing_encoder)


def test_newer_format_version_names_it(tmp_path, small_docs):
    save_index(build_index(small_docs, "bm25"), tmp_path / "idx")
    path = published_path(tmp_path / "idx") / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["format_version"] = 99
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))
    (tmp_path / "idx" / "CURRENT").write_text(
        json.dumps({"build": data["build"], "manifest_sha256": sha256_file(path)})
    )
    with pytest.raises(IndexFormatError, match="format version 99, newer than this ragroute"):
        read_index_manifest(tmp_path / "idx")


def test_encoder_mismatch(tmp_path, hashing_encoder, small_docs):
    save_index(build_index(small_docs, "dense", encoder=hashing_encoder), tmp_path / "idx")
    with pytest.raises(EncoderMismatchError, match="built with encoder 'test/hashing'"):
        load_index(tmp_path / "idx", HashingEncoder(model_id="test/other"))
    with pytest.raises(EncoderMismatchError, match="dim 64"):
        load_index(tmp_path / "idx", HashingEncoder(dim=32))


def test_failed_build_keeps_previous_index(tmp_path, small_docs):
    target = tmp_path / "idx"
    save_index(build_index(small_docs, "bm25"), target)
    before = read_index_manifest(target)
    with pytest.raises(RuntimeError), write_artifact(target, "index", "bm25") as build:
        (build.path / "docs.jsonl").write_text("half written")
        raise RuntimeError("killed")
    assert read_index_manifest(target).build == before.build
    assert load_index(target).search("telescope", k=1)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    assert [p.name for p in (target / "builds").iterdir()] == [before.build]


def test_killed_build_leftovers_do_not_matter(tmp_path, small_docs):
    target = tmp_path / "idx"
    save_index(build_index(small_docs, "bm25"), target)
    leftover = target / "builds" / ".tmp-abc123"  # what a SIGKILL mid-build leaves behind
    leftover.mkdir()
    (leftover / "docs.jsonl").write_text("partial")
    assert load_index(target).search("bread", k=1)[0].doc_id.startswith("cook")
    save_index(build_index(small_docs[:5], "bm25"), target)
    assert read_index_manifest(target).params["documents"] == 5


def test_refuses_to_overwrite_a_non_index_folder(tmp_path, small_docs):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(IndexFormatError, match="refusing to overwrite"):
        save_index(build_index(small_docs, "bm25"), precious)
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("method", ["bm25", "hybrid", "dense"])
def test_an_add_during_a_save_waits_and_the_build_is_one_version(
    tmp_path, hashing_encoder, small_docs, method
):
    """save_index read the manifest, the documents and the index files without holding the store:
    an add landing between them published "docs.jsonl holds 50 documents, manifest says 150" (or,
    for dense, a build that loaded into other answers)."""
    import threading

    index = build_index(small_docs[:20], method, encoder=hashing_encoder)
    real_save = index.store.save
    adder = threading.Thread(target=lambda: index.add(small_docs[20:30]))

    def save_with_an_add_meanwhile(path):
        adder.start()
        adder.join(0.3)  # the add waits for the save's read
        assert adder.is_alive()
        return real_save(path)

    index.store.save = save_with_an_add_meanwhile  # type: ignore[method-assign]
    save_index(index, tmp_path / "idx")
    adder.join(10)
    loaded = load_index(tmp_path / "idx", hashing_encoder)
    assert len(loaded.store) == 20 and len(index.store) == 30
    fresh = build_index(small_docs[:20], method, encoder=hashing_encoder)
    for query in ("telescope galaxy", "bread oven"):
        assert [(h.doc_id, round(h.score, 5)) for h in loaded.search(query, k=5)] == [
            (h.doc_id, round(h.score, 5)) for h in fresh.search(query, k=5)
        ]


def test_a_spurious_ast_error_in_numpys_header_parse_fails_no_load(tmp_path, monkeypatch):
    """numpy parses array headers with ast.literal_eval, and CPython 3.11's AST constructor keeps one
    recursion counter per interpreter: a thread loading an index while another did could meet
    ``SystemError: AST constructor recursion depth mismatch`` on a sound file, which read as
    "unreadable BM25 matrix" (the race harness met it in CI, session 50). Reads of arrays now take
    turns and retry that error; any other SystemError is not retried."""
    import ast

    from ragroute.store.arrays import numpy_read

    docs = [Document(id=f"d{i}", text=f"comet tail number {i} orbit") for i in range(6)]
    encoder = HashingEncoder()
    for method in ("bm25", "dense", "hybrid"):
        save_index(build_index(docs, method, encoder=encoder, name=method), tmp_path / method)
    real = ast.literal_eval
    raced = []

    def racing(text):
        if not raced:
            raced.append(text)
            raise SystemError("AST constructor recursion depth mismatch (before=60, after=57)")
        return real(text)

    for method in ("bm25", "dense", "hybrid"):
        raced.clear()
        monkeypatch.setattr(ast, "literal_eval", racing)
        loaded = load_index(tmp_path / method, **({} if method == "bm25" else {"encoder": encoder}))
        monkeypatch.setattr(ast, "literal_eval", real)
        assert [h.doc_id for h in loaded.search("comet tail number 3", 1)] == ["d3"], method
        assert raced or method == "dense", method  # a dense index's vectors are faiss's own file

    def other():
        raise SystemError("another internal error")

    with pytest.raises(SystemError, match="another"):
        numpy_read(other)


@pytest.mark.parametrize(
    ("rows", "repeated"),
    [
        ('{"iid": 0, "id": "a", "text": "x"}\n{"iid": 1, "id": "a", "text": "y"}\n', "document id 'a'"),
        ('{"iid": 0, "id": "a", "text": "x"}\n{"iid": 0, "id": "b", "text": "y"}\n', "iid 0"),
    ],
    ids=["id", "iid"],
)
def test_a_docs_file_repeating_an_id_or_iid_is_corrupt(tmp_path, rows, repeated):
    """Until session 54 it loaded: one id named two documents (a delete dropped both), and the
    positions of a repeated iid named only the later document, so the earlier was never found."""
    (tmp_path / "docs.jsonl").write_text(rows, encoding="utf-8")
    with pytest.raises(IndexFormatError, match=f"line 2 is corrupt: {repeated} is repeated") as info:
        DocumentStore.load(tmp_path)
    assert "\n" not in str(info.value)
