"""The image slot: a tiny CLIP built offline in tmp, loaded by path; caption corpora from image folders."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest

from ragroute.encode.base import Encoder
from ragroute.encode.image import ImageEncoder, image_caption, image_documents, load_image_encoder
from ragroute.errors import CorpusFormatError, ModelNotFoundError, RagrouteError

PROJECTION_DIM = 16


def _tiny_clip_folder(root: Path) -> Path:
    """A random CLIP (32-wide, 1-layer towers, 32 px images) saved as a sentence-transformers model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPProcessor, CLIPTokenizer
    from transformers import CLIPModel as HFCLIPModel

    try:  # sentence-transformers >= 5.4
        from sentence_transformers.sentence_transformer.modules import CLIPModel as STCLIPModel
    except ImportError:  # older releases
        from sentence_transformers.models import CLIPModel as STCLIPModel

    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in chars:
            vocab[char + suffix] = len(vocab)
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=PROJECTION_DIM,
    )
    torch.manual_seed(0)
    hf_dir = root / "hf"
    HFCLIPModel(config).save_pretrained(hf_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(hf_dir)
    st_dir = root / "st-clip"
    SentenceTransformer(modules=[STCLIPModel(str(hf_dir))]).save(str(st_dir))
    return st_dir


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return _tiny_clip_folder(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def clip_encoder(clip_dir) -> ImageEncoder:
    return load_image_encoder(clip_dir)


def _images():
    from PIL import Image

    rng = np.random.default_rng(0)
    noise = Image.fromarray((rng.random((20, 24, 3)) * 255).astype("uint8"))
    return [Image.new("RGB", (40, 30), (255, 0, 0)), noise]


def _assert_unit_rows(x: np.ndarray, rows: int) -> None:
    assert x.dtype == np.float32 and x.shape == (rows, PROJECTION_DIM)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_texts_and_images_share_one_space(clip_encoder, tmp_path):
    assert isinstance(clip_encoder, Encoder)
    assert clip_encoder.dim == PROJECTION_DIM and clip_encoder.backend == "torch"
    assert clip_encoder.model_id == str(Path(clip_encoder.resolved.path))
    assert clip_encoder.describe()["modalities"] == ["text", "image"]
    # artifacts record the model folder's digest, as for text encoders (none until session 38)
    from ragroute.encode.identity import encoder_record

    assert encoder_record(clip_encoder)["weights"] == clip_encoder.resolved.content_digest()
    images = clip_encoder.encode_images(_images())
    texts = clip_encoder.encode_queries(["a cat", "a dog"])
    _assert_unit_rows(images, 2)
    _assert_unit_rows(texts, 2)
    _assert_unit_rows(clip_encoder.encode_documents(["a red square", "noise"]), 2)
    assert (texts @ images.T).shape == (2, 2)
    assert not np.allclose(images[0], images[1])
    # a path gives the same embedding as the PIL image it holds
    path = tmp_path / "red.png"
    _images()[0].save(path)
    np.testing.assert_allclose(clip_encoder.encode_images([path]), images[:1], atol=1e-5)
    assert clip_encoder.encode_images([]).shape == (0, PROJECTION_DIM)
    assert clip_encoder.encode_queries([]).shape == (0, PROJECTION_DIM)


def test_unreadable_image_is_one_line(clip_encoder, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image", encoding="utf-8")
    with pytest.raises(RagrouteError, match="cannot read image") as info:
        clip_encoder.encode_images([bad])
    assert "\n" not in str(info.value)
    with pytest.raises(RagrouteError, match="not found"):
        clip_encoder.encode_images([tmp_path / "absent.png"])
    with pytest.raises(TypeError):
        clip_encoder.encode_images(str(bad))


def test_a_pil_image_of_a_truncated_file_is_one_line_naming_it(clip_encoder, tmp_path):
    """A PIL image opened (lazily) from a truncated PNG was handed on undecoded: the model's encode
    raised a raw OSError traceback (until session 51)."""
    from PIL import Image

    whole, torn = tmp_path / "whole.png", tmp_path / "torn.png"
    for mode in ("RGB", "L"):
        Image.new(mode, (40, 40), 200).save(whole)
        torn.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with Image.open(torn) as opened, pytest.raises(RagrouteError) as info:
            clip_encoder.encode_images([opened])
        assert str(info.value) == f"cannot read image {torn}: OSError"
    assert clip_encoder.encode_images([Image.open(whole)]).shape == (1, PROJECTION_DIM)


def test_missing_model_is_one_line(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        load_image_encoder(tmp_path / "no-such-model")
    assert "\n" not in str(info.value) and "not found" in str(info.value)


def test_text_only_model_is_refused():
    with pytest.raises(ModelNotFoundError, match="not an image-text model"):
        load_image_encoder("all-MiniLM-L6-v2")


def test_image_documents_captions(tmp_path, hashing_encoder):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8), (0, 0, 0)).save(folder / "cat.png")
    (folder / "cat.txt").write_text("A black cat\nsleeping on a sofa", encoding="utf-8")
    meta = PngInfo()
    meta.add_text("Description", "Quarterly revenue chart for 2019")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(folder / "chart.png", pnginfo=meta)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "red_square-01.jpg")
    (folder / "notes.md").write_text("not an image", encoding="utf-8")

    from ragroute.loaders.common import CorpusWarning

    with pytest.warns(CorpusWarning, match=r"1 file not read, .*\(notes\.md\)"):
        docs = image_documents(folder)
    by_id = {d.id: d for d in docs}
    assert list(by_id) == ["cat.png", "chart.png", "red_square-01.jpg"]
    assert all(d.modality == "image" for d in docs)
    assert by_id["cat.png"].text == "A black cat sleeping on a sofa"
    assert by_id["cat.png"].metadata["caption_source"] == "sidecar"
    assert by_id["chart.png"].text == "Quarterly revenue chart for 2019"
    assert by_id["chart.png"].metadata["caption_source"] == "alt"
    assert by_id["red_square-01.jpg"].text == "red square 01"
    assert Path(by_id["cat.png"].metadata["path"]) == (folder / "cat.png").resolve()
    assert image_caption(folder / "red_square-01.jpg") == ("red square 01", "filename")

    # captions are ordinary text: the normal indexes work on them
    from ragroute.index.build import build_index

    index = build_index(docs, "hybrid", encoder=hashing_encoder)
    hits = index.search("revenue chart", k=1)
    assert hits[0].doc_id == "chart.png" and hits[0].modality == "image"


def test_image_documents_errors(tmp_path):
    with pytest.raises(CorpusFormatError, match="no such image folder"):
        image_documents(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusFormatError, match="no image files"):
        image_documents(tmp_path / "empty")


def test_image_documents_name_unreadable_files_and_pass_over_hidden_ones(tmp_path, monkeypatch):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from ragroute.loaders.common import CorpusWarning

    folder = tmp_path / "images"
    (folder / ".thumbs").mkdir(parents=True)
    meta = PngInfo()
    meta.add_text("Description", "a large chart")
    Image.new("RGB", (8, 8)).save(folder / "big.png", pnginfo=meta)
    Image.new("RGB", (4, 4)).save(folder / ".thumbs" / "big.png")
    (folder / "._big.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 4)
    (folder / "notes.jpg").write_text("not an image", encoding="utf-8")
    (folder / "notes.txt").write_text("meeting notes", encoding="utf-8")
    # 64 pixels: over the limit (Pillow warns) but under twice it (Pillow refuses); only the
    # metadata is read, so no warning and the stored caption is kept
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)
    with pytest.warns(CorpusWarning) as caught:
        docs = image_documents(folder)
    assert [d.id for d in docs] == ["big.png", "corrupt.png", "notes.jpg"]
    assert [d.text for d in docs] == ["a large chart", "corrupt", "meeting notes"]
    assert [str(w.message) for w in caught] == [
        f"{folder}: 2 image files Pillow cannot read, kept with captions from sidecar or file name "
        "(corrupt.png: OSError, notes.jpg: UnidentifiedImageError)"
    ]
    # over twice the limit: Pillow refuses to open it, and it is named
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.warns(CorpusWarning, match=r"3 image files .*big\.png: DecompressionBombError"):
        assert image_documents(folder)[0].text == "big"


def test_image_documents_full_name_sidecar_comes_first(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    (tmp_path / "photo.txt").write_text("shared caption", encoding="utf-8")
    (tmp_path / "photo.png.txt").write_text("the png's own caption", encoding="utf-8")
    by_id = {d.id: d.text for d in image_documents(tmp_path)}
    assert by_id == {"photo.jpg": "shared caption", "photo.png": "the png's own caption"}


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    from ragroute.encode.image import _as_pil

    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[0, 40000], [65535, 257]], dtype=np.uint16)).save(path)
    for image in (path, Image.open(path)):
        rgb = np.asarray(_as_pil(image))
        assert rgb.shape == (2, 2, 3)
        assert rgb[..., 0].tolist() == [[0, 155], [255, 1]]  # was [[0, 255], [255, 255]]


def test_image_modality_corpus_folder_is_read_by_caption(tmp_path):
    from PIL import Image

    from ragroute.corpora import load_corpus_specs
    from ragroute.route.config_check import _corpus_format

    photos = tmp_path / "photos"
    (photos / "pets").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(photos / "cat.png")
    (photos / "cat.txt").write_text("A black cat on a sofa", encoding="utf-8")
    Image.new("RGB", (8, 8)).save(photos / "pets" / "dog.jpg")
    (tmp_path / "corpora.yaml").write_text(
        "corpora:\n"
        "  photos: {path: photos, description: Pet photos., modality: image}\n"
        "  optioned: {path: photos, modality: image, options: {text_column: body}}\n",
        encoding="utf-8",
    )
    spec, optioned = load_corpus_specs(tmp_path / "corpora.yaml")
    # was: the sidecar cat.txt as a document 'cat', the images passed over
    docs = spec.load_documents()
    assert [(d.id, d.text, d.modality) for d in docs] == [
        ("cat.png", "A black cat on a sofa", "image"),
        ("pets/dog.jpg", "dog", "image"),
    ]
    assert _corpus_format(spec) == "images"
    with pytest.raises(RagrouteError, match="folder of images .* takes no loader options"):
        optioned.load_documents()
