"""Audit of the modality and granularity paths: image folders read by caption, granularity views,
collapsing hits to their parents, and their indexes saved and loaded."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragroute.chunking import chunk_documents
from ragroute.encode.image import image_documents
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.loaders.common import CorpusWarning
from ragroute.rerank.parents import ParentsReranker
from ragroute.route.sources import Source, collapse_to_parents, granularity_views
from ragroute.types import Document, Hit

Image = pytest.importorskip("PIL.Image")
PngImagePlugin = pytest.importorskip("PIL.PngImagePlugin")


def _png(path: Path, description: str | None = None) -> None:
    info = None
    if description is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("Description", description)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (20, 40, 60)).save(path, format="PNG", pnginfo=info)


def _load(folder: Path, **kwargs) -> tuple[list[Document], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = image_documents(folder, **kwargs)
    return docs, [str(w.message) for w in caught if issubclass(w.category, CorpusWarning)]


# --------------------------------------------------------------------------- image captions


def test_a_sidecar_not_in_utf8_is_named_and_passed_over(tmp_path):
    """A Latin-1 or UTF-16 sidecar was the caption, decoded with replacement characters (UTF-16:
    NULs between the letters), without a word."""
    _png(tmp_path / "cafe.png", description="a cup of coffee")
    (tmp_path / "cafe.txt").write_bytes("café crème".encode("latin-1"))
    _png(tmp_path / "wide.PNG")
    (tmp_path / "wide.PNG.txt").write_text("a wide caption", encoding="utf-16")
    docs, said = _load(tmp_path)
    by_id = {d.id: (d.text, d.metadata["caption_source"]) for d in docs}
    assert by_id == {"cafe.png": ("a cup of coffee", "alt"), "wide.PNG": ("wide", "filename")}
    assert len(said) == 1, said
    assert "2 caption sidecars not read" in said[0]
    assert "cafe.txt: invalid UTF-8 on line 1" in said[0] and "wide.PNG.txt: the file is UTF-16" in said[0]


def test_a_shared_sidecar_not_in_utf8_is_named_once(tmp_path):
    _png(tmp_path / "photo.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.jpg")
    (tmp_path / "photo.txt").write_bytes(b"caf\xe9")
    docs, said = _load(tmp_path)
    assert [d.text for d in docs] == ["photo", "photo"]
    assert len(said) == 1 and said[0].count("photo.txt") == 1 and "1 caption sidecar not read" in said[0]


def test_a_sidecar_byte_order_mark_is_not_part_of_the_caption(tmp_path):
    """A sidecar saved by Notepad (UTF-8 with a BOM) had the BOM glued to its first word, so a BM25
    search for that word missed the image."""
    _png(tmp_path / "ship.png")
    (tmp_path / "ship.txt").write_text("\ufefflighthouse at dusk", encoding="utf-8")
    docs, said = _load(tmp_path)
    assert said == [] and docs[0].text == "lighthouse at dusk"
    index = build_index(docs, "bm25", name="photos")
    assert [h.doc_id for h in index.search("lighthouse", 1)] == ["ship.png"]


def test_an_invisible_caption_falls_through_to_the_next_source(tmp_path):
    """A PNG text chunk of NULs or a sidecar of zero-width spaces was the caption: a document with
    nothing to match (dropped when chunked), where the file name was a caption."""
    _png(tmp_path / "red_fox.png", description="\x00\x00")
    _png(tmp_path / "blue-whale.png", description="a whale in the deep")
    (tmp_path / "blue-whale.txt").write_text("\u200b \u200b", encoding="utf-8")
    docs, said = _load(tmp_path)
    assert said == []
    assert [(d.id, d.text, d.metadata["caption_source"]) for d in docs] == [
        ("blue-whale.png", "a whale in the deep", "alt"),
        ("red_fox.png", "red fox", "filename"),
    ]
    assert len(chunk_documents(docs, "paragraph")) == 2


def test_a_sidecar_linking_outside_the_folder_is_not_read(tmp_path):
    """A folder corpus leaves out links to files outside it (``pw.txt -> /etc/passwd``); a caption
    sidecar that is such a link was read and indexed as the image's caption."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the launch code is 0000", encoding="utf-8")
    folder = tmp_path / "photos"
    _png(folder / "pw.png")
    os.symlink(secret, folder / "pw.txt")
    docs, said = _load(folder)
    assert [d.text for d in docs] == ["pw"]
    assert len(said) == 1 and "pw.txt: a link to a file outside the folder" in said[0]


def test_links_not_followed_are_named(tmp_path):
    """A broken link to an image and a link to a folder of images (not walked) were passed over
    without a word."""
    elsewhere = tmp_path / "elsewhere"
    _png(elsewhere / "owl.png")
    folder = tmp_path / "photos"
    _png(folder / "cat.png")
    os.symlink(tmp_path / "gone.png", folder / "dead.png")
    os.symlink(elsewhere, folder / "birds")
    os.symlink(folder / "cat.png", folder / "kitten.png")  # a link to a file inside: read
    docs, said = _load(folder, recursive=True)
    assert [d.id for d in docs] == ["cat.png", "kitten.png"]
    assert said == [f"{folder}: 2 links not followed, broken or to a folder (birds, dead.png)"]
    docs, said = _load(folder)  # not recursive: no folder is walked, only the broken image link
    assert said == [f"{folder}: 1 link not followed, broken or to a folder (dead.png)"]


def test_corrupt_images_with_upper_case_suffixes_are_kept_and_named_once(tmp_path):
    (tmp_path / "BROKEN.JPG").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "BROKEN.txt").write_text("a torn photo", encoding="utf-8")
    (tmp_path / "zero.Png").write_bytes(b"")
    _png(tmp_path / "fine.png", description="a fine picture")
    docs, said = _load(tmp_path)
    assert [(d.id, d.text) for d in docs] == [
        ("BROKEN.JPG", "a torn photo"),
        ("fine.png", "a fine picture"),
        ("zero.Png", "zero"),
    ]
    assert len(said) == 1 and "2 image files Pillow cannot read" in said[0]
    assert "BROKEN.JPG" in said[0] and "zero.Png" in said[0]


_NAME = st.text(alphabet="abcXYZ_-. 1é", min_size=1, max_size=6).filter(
    lambda n: n.strip(" .") == n and n not in (".", "..")
)
_SUFFIX = st.sampled_from([".png", ".PNG", ".jpg", ".JpEg", ".gif", ".txt", ".md"])


@settings(max_examples=25, derandomize=True, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["", "sub/", ".hidden/", "sub/deep/"]), _NAME, _SUFFIX),
        min_size=1,
        max_size=8,
        unique_by=lambda t: (t[0] + t[1] + t[2]).lower(),
    ),
    st.randoms(use_true_random=False),
)
def test_every_image_file_is_one_document_whatever_the_order_it_was_written_in(entries, rnd):
    """Ids are the relative paths, every visible image file is one document (none dropped, none
    twice) and the list is the same whatever order the files were created in."""
    names = [folder + name + suffix for folder, name, suffix in entries]
    images = sorted(
        n
        for n in names
        if Path(n).suffix.lower() in (".png", ".jpg", ".jpeg", ".gif")
        and not any(part.startswith(".") for part in Path(n).parts)
    )
    results = []
    for order in (names, rnd.sample(names, len(names))):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in order:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                if name.lower().endswith((".txt", ".md")):
                    (root / name).write_text("some words", encoding="utf-8")
                else:
                    (root / name).write_bytes(b"not really an image")
            if not images:
                with pytest.raises(Exception, match="no image files"):
                    image_documents(root, recursive=True)
                return
            docs, said = _load(root, recursive=True)
        assert sorted(d.id for d in docs) == images
        assert all(d.modality == "image" and d.text.strip() for d in docs)
        unreadable = [m for m in said if "Pillow cannot read" in m]
        assert len(unreadable) == 1 and f"{len(images)} image file" in unreadable[0]
        results.append([(d.id, d.text) for d in docs])
    assert results[0] == results[1]


def test_files_neither_images_nor_sidecars_are_named_not_dropped_silently(tmp_path):
    """A text file in an image folder and the sidecar of a missing image were passed over without
    a word (until session 55); the sidecars that are read, or shared, are not named."""
    _png(tmp_path / "cat.png")
    (tmp_path / "cat.txt").write_text("a black cat", encoding="utf-8")
    _png(tmp_path / "sub" / "dog.jpg")
    (tmp_path / "sub" / "dog.jpg.txt").write_text("a brown dog", encoding="utf-8")
    (tmp_path / "ghost.txt").write_text("the caption of an image that is not there", encoding="utf-8")
    (tmp_path / "sub" / "notes.md").write_text("# Notes", encoding="utf-8")
    docs, said = _load(tmp_path, recursive=True)
    assert [(d.id, d.text, d.modality) for d in docs] == [
        ("cat.png", "a black cat", "image"),
        ("sub/dog.jpg", "a brown dog", "image"),
    ]
    assert said == [
        f"{tmp_path}: 2 files not read, neither an image nor the caption sidecar of one "
        "(ghost.txt, sub/notes.md)"
    ]
    docs, said = _load(tmp_path)  # not recursive: only the top folder's files
    assert [d.id for d in docs] == ["cat.png"] and len(said) == 1 and "1 file not read" in said[0]


# --------------------------------------------------------------------------- granularity and parents


_PARENT = st.sampled_from(["a", "b", "a#p1", "c#s0", None])


@st.composite
def _hits(draw):
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "c", "a#p1", "a#p0", "b#s2"]),
                _PARENT,
                st.sampled_from(["wiki/document", "wiki/paragraph", "other"]),
                st.sampled_from([1.0, 0.5, 0.5, 0.25]),
            ),
            max_size=12,
        )
    )
    hits = []
    for doc_id, parent, source, score in rows:
        hit = Hit(doc_id, score, source, parent_id=parent)
        if source.startswith("wiki/"):
            hit.explain = {"collection": "wiki"}
        hits.append(hit)
    return hits


@settings(max_examples=200, derandomize=True, deadline=None)
@given(_hits(), st.integers(1, 15))
def test_collapse_keeps_the_first_hit_of_each_parent_in_order(hits, k):
    def key(h):
        return (h.explain.get("collection") or h.source, h.parent_id or h.doc_id)

    expected, seen = [], set()
    for hit in hits:
        if key(hit) not in seen:
            seen.add(key(hit))
            expected.append(hit)
    expected = expected[:k]
    kept = ParentsReranker().rerank(None, list(hits), k)
    # copies of the hits (the caller's are left as they were since session 51), in that order
    assert [(h.source, h.doc_id, h.score) for h in kept] == [(h.source, h.doc_id, h.score) for h in expected]
    assert not {id(h) for h in kept} & {id(h) for h in hits}
    assert [h.rank for h in kept] == list(range(1, len(kept) + 1))
    assert [h.explain["rerank"]["kept_for"] for h in kept] == [h.parent_id or h.doc_id for h in kept]
    assert len(kept) == min(k, len({key(h) for h in hits}))


def test_views_of_documents_whose_ids_look_like_chunk_ids_collapse_to_their_own_parents():
    """A corpus holding ``a`` and ``a#p1`` (an original id that looks like a chunk of ``a``), at two
    granularities: each document is one hit, and every chunk maps back to the document it was cut
    from."""
    long = " ".join(f"word{i}" for i in range(22))
    docs = [
        Document(id="a", text=f"beta alpha {long}\n\nbeta gamma {long}\n\nbeta delta {long}"),
        Document(id="a#p1", text=f"beta zeta {long}"),
        Document(id="b", text=f"beta omega {long}"),
    ]
    views = granularity_views(
        "wiki", docs, ["document", "paragraph"], lambda u, n: build_index(u, "bm25", name=n)
    )
    paragraph_ids = [d.id for d in views[1].documents]
    assert paragraph_ids == ["a#p0", "a#p1", "a#p2", "a#p1#p0", "b#p0"]
    assert [d.parent_id for d in views[1].documents] == ["a", "a", "a", "a#p1", "b"]
    hits = [h for view in views for h in view.search_many(["beta"], 10)[0]]
    hits.sort(key=lambda h: -h.score)
    kept = collapse_to_parents(hits, 10)
    assert sorted(h.parent_id or h.doc_id for h in kept) == ["a", "a#p1", "b"]
    assert [h.rank for h in kept] == [1, 2, 3]
    assert len(collapse_to_parents(hits, 2)) == 2


def test_a_pipeline_over_two_modalities_names_the_views_in_its_trace(tmp_path):
    from ragroute.pipeline.build import pipeline_from_settings

    _png(tmp_path / "lighthouse.png", description="a lighthouse at dusk")
    _png(tmp_path / "harbour.png")
    _png(tmp_path / "fishing-boat.png")  # three documents: BM25Okapi's idf is 0 in half of two
    photos = image_documents(tmp_path)
    long = " ".join(f"filler{i}" for i in range(22))
    texts = [
        Document(id="guide", text=f"the lighthouse keeper {long}\n\nthe harbour master {long}"),
        Document(id="boats", text=f"the fishing boats {long}"),
    ]
    views = granularity_views("wiki", texts, ["paragraph"], lambda u, n: build_index(u, "bm25", name=n))
    sources = [Source("photos", build_index(photos, "bm25", name="photos"), modality="image"), *views]
    pipe = pipeline_from_settings(sources, {"kind": "fixed"}, encoder=None, reranker={"kind": "parents"})
    result = pipe.retrieve("lighthouse", k=5)
    assert {(h.source, h.modality) for h in result.hits} == {("photos", "image"), ("wiki/paragraph", "text")}
    assert [h.rank for h in result.hits] == list(range(1, len(result.hits) + 1))
    named = {step.detail.get("source") for step in result.decision.trace if step.stage == "retrieve"}
    assert named == {"photos", "wiki/paragraph"}
    from ragroute.context import QueryContext

    only = pipe.retrieve(QueryContext.of("lighthouse", filters={"modality": "image"}), k=5)
    assert [h.doc_id for h in only.hits] == ["lighthouse.png"]


@pytest.mark.parametrize("method", ["bm25", "dense"])
def test_image_and_chunked_indexes_keep_metadata_parent_and_modality_when_saved(tmp_path, method):
    from conftest import HashingEncoder

    _png(tmp_path / "img" / "owl.png", description="an owl")
    (tmp_path / "img" / "owl.txt").write_text("a snowy owl", encoding="utf-8")
    photos = image_documents(tmp_path / "img")
    long = " ".join(f"w{i}" for i in range(22))
    texts = [
        Document(id="a", text=f"owl {long}\n\nfox {long}", metadata={"topic": "birds"}),
        Document(id="t", text="x | y\n1 | 2", modality="table"),
    ]
    chunks = chunk_documents(texts, "paragraph")
    encoder = HashingEncoder() if method == "dense" else None
    for name, docs in (("photos", photos), ("chunks", chunks)):
        save_index(build_index(docs, method, encoder=encoder, name=name), tmp_path / name)
        back = load_index(tmp_path / name, **({"encoder": encoder} if encoder else {}))
        assert list(back.documents) == docs
        hit = back.search("owl", 1)[0]
        original = next(d for d in docs if d.id == hit.doc_id)
        assert (hit.parent_id, hit.modality, dict(hit.metadata)) == (
            original.parent_id,
            original.modality,
            dict(original.metadata),
        )
    assert [d.parent_id for d in chunks] == ["a", "a", "t"]


@pytest.mark.parametrize("k", [2, 3])
def test_parents_read_deeper_when_one_documents_chunks_fill_the_pool(k):
    """The parents reranker reads 3 x k fused hits; when one document's chunks fill them all,
    collapsing left one hit (until session 45: ``[a#p0]`` for k = 2 and 3 though b and c
    match). The pipeline now reads again, four times as deep, and says so in the trace."""
    from ragroute.pipeline.build import pipeline_from_settings

    long = " ".join(f"filler{i}" for i in range(22))
    strong = "\n\n".join(f"comet comet comet comet tail {i} {long}" for i in range(10))
    texts = [
        Document(id="a", text=strong),
        Document(id="b", text=f"a comet seen once {long} {long}"),
        Document(id="c", text=f"comet {long} {long} {long}"),
        *(Document(id=f"z{i}", text=f"nothing to see here {i} {long}") for i in range(20)),
    ]
    views = granularity_views("sky", texts, ["paragraph"], lambda u, n: build_index(u, "bm25", name=n))
    pipe = pipeline_from_settings(views, {"kind": "fixed"}, encoder=None, reranker={"kind": "parents"})
    result = pipe.retrieve("comet tail", k=k)
    parents = [h.parent_id or h.doc_id for h in result.hits]
    assert parents == ["a", "b", "c"][:k] and len(set(parents)) == k
    rereads = [s.detail for s in result.decision.trace if s.stage == "reread"]
    assert rereads and rereads[0] == {"why": "too few parents", "candidates": 12 * k}
    # a pool that is not full is all there is: no re-read
    assert not [s for s in pipe.retrieve("seen", k=2).decision.trace if s.stage == "reread"]
