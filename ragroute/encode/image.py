"""The image slot: image corpora indexed by caption, and CLIP-style encoders for one text-image space.

Two ways to make images retrievable:

* by caption (no image model): :func:`image_documents` turns a folder of images
  into :class:`~ragroute.types.Document` s of modality ``"image"`` whose text is
  the caption (a sidecar ``NAME.txt``, else the alt text stored in the file,
  else the file name), so the normal BM25 / dense / hybrid indexes and every
  text router work on them unchanged;
* by pixels: :func:`load_image_encoder` loads a CLIP-style sentence-transformers
  model (a name in the offline Hugging Face cache, or a local folder; a plain
  transformers ``CLIPModel`` folder works too) as an :class:`ImageEncoder`. It is
  an ordinary text :class:`~ragroute.encode.base.Encoder` (queries, documents)
  plus :meth:`ImageEncoder.encode_images`, embedding into the same space, so a
  text query can be scored against image embeddings.

Everything is offline; heavy libraries load only when an encoder does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import check_batch_size, check_texts, l2_normalize, want_progress
from ragroute.encode.resolve import ResolvedModel, resolve_model
from ragroute.errors import CorpusFormatError, ModelNotFoundError, RagrouteError
from ragroute.types import Document

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
"""File suffixes (lower case) that :func:`image_documents` treats as images."""

_ALT_KEYS = ("alt", "Alt", "description", "Description", "caption", "Caption", "Title", "title", "comment")
_EXIF_IMAGE_DESCRIPTION = 270


class ImageEncoder:
    """A CLIP-style model: a text encoder (queries, documents) plus :meth:`encode_images`.

    Texts and images land in one space of width ``dim``; every output is float32
    and L2-normalised, so inner product is cosine similarity across modalities.
    """

    backend = "torch"

    def __init__(
        self,
        model: ResolvedModel | str | os.PathLike[str],
        *,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        from ragroute.encode.sentence_transformers import embedding_dimension, load_sentence_transformer

        self.resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
        self.model_id = self.resolved.model_id
        # the model folder's content digest, recorded by artifacts as for text encoders (an image
        # model retrained in place was accepted by its indexes until session 38)
        self.weights = self.resolved.content_digest()
        self.cache_variant = self.weights
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.model = load_sentence_transformer(self.resolved.path, device=device)
        if not _supports_images(self.model):
            raise ModelNotFoundError(
                f"encoder {self.resolved.requested!r} is not an image-text model "
                f"(modalities: {', '.join(_modalities(self.model)) or 'text'})"
            )
        self.dim = embedding_dimension(self.model)

    # -- text --------------------------------------------------------------------------------
    def _encode_texts(self, texts: Sequence[str], batch_size: int, show_progress: bool | None) -> np.ndarray:
        items = check_texts(texts)
        check_batch_size(batch_size)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(items, batch_size, show_progress)

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed query texts into the shared text-image space."""
        return self._encode_texts(texts, batch_size, show_progress)

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed document texts (e.g. captions) into the shared text-image space."""
        return self._encode_texts(texts, batch_size, show_progress)

    # -- images ------------------------------------------------------------------------------
    def encode_images(
        self, images: Sequence[Any], *, batch_size: int = 32, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed images (file paths or PIL images) into the same space as the texts.

        A path that cannot be read as an image raises :class:`RagrouteError` naming it.
        """
        if isinstance(images, (str, os.PathLike)):
            raise TypeError("images must be a sequence of paths or PIL images, not a single path")
        check_batch_size(batch_size)
        items = [_as_pil(image) for image in images]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(items, batch_size, show_progress)

    def _encode(self, items: list[Any], batch_size: int, show_progress: bool | None) -> np.ndarray:
        out = self.model.encode(
            items,
            batch_size=batch_size,
            show_progress_bar=want_progress(show_progress, len(items)),
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return l2_normalize(out)

    def describe(self) -> dict[str, Any]:
        """What an index manifest records about this encoder."""
        return {
            "model_id": self.model_id,
            "backend": self.backend,
            "dim": self.dim,
            "modalities": ["text", "image"],
            "weights": self.weights,
        }

    def __repr__(self) -> str:
        return f"ImageEncoder(model_id={self.model_id!r}, dim={self.dim})"


def load_image_encoder(
    name_or_path: str | os.PathLike[str], *, device: str = "cpu", threads: int | None = None
) -> ImageEncoder:
    """Load a CLIP-style encoder by name (offline Hugging Face cache) or local folder.

    Raises :class:`ModelNotFoundError` (one line) when the model is not available
    offline, cannot be loaded, or does not embed images.
    """
    return ImageEncoder(resolve_model(name_or_path), device=device, threads=threads)


def _modalities(model: Any) -> list[str]:
    found = getattr(model, "modalities", None)
    if found is not None:
        return [str(m) for m in found]
    # sentence-transformers < 5.4: CLIP models are built from a CLIPModel module
    if any(type(module).__name__ == "CLIPModel" for module in model):
        return ["text", "image"]
    return ["text"]


def _supports_images(model: Any) -> bool:
    return "image" in _modalities(model)


def _as_pil(image: Any) -> Any:
    """An RGB PIL image from a path or a PIL image; one-line RagrouteError for unreadable paths."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"expected an image path or a PIL image, got {type(image).__name__}")
    path = Path(image)
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except FileNotFoundError:
        raise RagrouteError(f"image {path} not found") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for unreadable files
        raise RagrouteError(f"cannot read image {path}: {type(exc).__name__}") from None


# --------------------------------------------------------------------------- caption corpora


def image_documents(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Document]:
    """One :class:`Document` (modality ``"image"``) per image file of ``folder``, text = its caption.

    The caption is the sidecar ``NAME.txt`` next to ``NAME.png`` (or ``NAME.png.txt``)
    when there is one, else the alt text / description stored in the image
    (PNG text chunks, JPEG comment, EXIF ImageDescription), else the file name
    with separators turned into spaces. Ids are the paths relative to ``folder``;
    ``metadata`` holds ``path`` (absolute) and ``caption_source`` (``sidecar``,
    ``alt`` or ``filename``). Index them with any text index.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CorpusFormatError(f"{root}: no such image folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CorpusFormatError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    docs = []
    for path in files:
        caption, source = image_caption(path)
        docs.append(
            Document(
                id=path.relative_to(root).as_posix(),
                text=caption,
                title="",
                metadata={"path": str(path.resolve()), "caption_source": source},
                modality="image",
            )
        )
    return docs


def image_caption(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(caption, source)`` of one image file: sidecar text, stored alt text, or file name."""
    path = Path(path)
    for sidecar in (path.with_suffix(".txt"), path.with_name(path.name + ".txt")):
        if sidecar.is_file():
            text = " ".join(sidecar.read_text(encoding="utf-8", errors="replace").split())
            if text:
                return text, "sidecar"
    alt = _stored_alt_text(path)
    if alt:
        return alt, "alt"
    return " ".join(re.split(r"[\s_\-.]+", path.stem)).strip() or path.name, "filename"


def _stored_alt_text(path: Path) -> str:
    """Alt text / description embedded in the image file, or ``""`` (unreadable files give ``""``)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            info = dict(image.info)
            exif = image.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    except Exception:  # noqa: BLE001 - a caption is optional; the file name is the fallback
        return ""
    values = [info.get(key) for key in _ALT_KEYS] + [exif]
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return ""


__all__ = ["IMAGE_SUFFIXES", "ImageEncoder", "image_caption", "image_documents", "load_image_encoder"]
