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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import check_batch_size, check_texts, l2_normalize, want_progress
from ragroute.encode.resolve import ResolvedModel, resolve_model
from ragroute.errors import CorpusFormatError, ModelNotFoundError, RagrouteError, has_visible_text
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

        A path that cannot be read as an image, or a PIL image whose pixels cannot be decoded (a
        truncated file), raises :class:`RagrouteError` naming it.
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
    """An RGB PIL image from a path or a PIL image, its pixels loaded; a one-line RagrouteError for
    an unreadable path or a PIL image whose pixels cannot be decoded (until session 51 a PIL image
    opened from a truncated or corrupt file was handed on lazily, and the model's encode raised a
    raw OSError traceback)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        name = getattr(image, "filename", "") or "(a PIL image)"
        try:
            image.load()
            return _to_rgb(image)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for undecodable pixels
            raise RagrouteError(f"cannot read image {name}: {type(exc).__name__}") from None
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"expected an image path or a PIL image, got {type(image).__name__}")
    path = Path(image)
    try:
        with Image.open(path) as opened:
            rgb = _to_rgb(opened)
            return rgb.copy() if rgb is opened else rgb  # loaded before the file closes
    except FileNotFoundError:
        raise RagrouteError(f"image {path} not found") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for unreadable files
        raise RagrouteError(f"cannot read image {path}: {type(exc).__name__}") from None


def _to_rgb(image: Any) -> Any:
    """``image`` as 8-bit RGB. 16-bit greyscale (mode ``I;16*``, or ``I`` as 16-bit PNGs open) is
    scaled down to 8 bits: Pillow's ``convert("RGB")`` clips every value above 255, so a 16-bit
    PNG was embedded as a white square (until session 42)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        if image.mode.startswith("I;16") or (values.size and values.max() > 255):
            values = values // 257  # 0..65535 onto 0..255
        grey = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    return image.convert("RGB")


# --------------------------------------------------------------------------- caption corpora


def image_documents(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Document]:
    """One :class:`Document` (modality ``"image"``) per image file of ``folder``, text = its caption.

    The caption is the sidecar ``NAME.png.txt`` or ``NAME.txt`` next to ``NAME.png``
    (the first with a visible character, in that order: ``NAME.txt`` is shared by ``NAME.png``
    and ``NAME.jpg``; UTF-8, a BOM dropped) when there is one, else the alt text / description
    stored in the image (PNG text chunks, JPEG comment, EXIF ImageDescription), else the file name
    with separators turned into spaces. Ids are the paths relative to ``folder``;
    ``metadata`` holds ``path`` (absolute) and ``caption_source`` (``sidecar``,
    ``alt`` or ``filename``). Index them with any text index. Hidden files and
    folders (``.name``, e.g. macOS ``._photo.jpg``) are passed over, as in a text
    folder; any other file (neither an image nor the caption sidecar of one: ``notes.md``, a
    sidecar whose image is missing) is not read and is named in one
    :class:`~ragroute.loaders.common.CorpusWarning`. A file that Pillow cannot open (corrupt, not
    an image, over Pillow's decompression-bomb limit) keeps its document, captioned by sidecar or file
    name, and is named in one :class:`~ragroute.loaders.common.CorpusWarning`; so is a sidecar that
    cannot be read (not UTF-8, a link to a file outside ``folder``, unreadable), passed over for the
    next caption source, and a link that is not followed (broken, or to a folder).
    """
    from ragroute.loaders.common import CorpusWarning, name_a_few

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CorpusFormatError(f"{root}: no such image folder")
    paths = _visible_paths(root, recursive)  # one walk: the images and the links passed over
    files = _image_files(paths)
    if not files:
        raise CorpusFormatError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    docs, unreadable = [], []
    sidecars: list[str] = []
    for path in files:
        problems: list[str] = []
        caption, source = _caption(path, problems, sidecars, root)
        if problems:
            unreadable.append(f"{path.relative_to(root).as_posix()}: {problems[0]}")
        docs.append(
            Document(
                id=path.relative_to(root).as_posix(),
                text=caption,
                title="",
                metadata={"path": str(path.resolve()), "caption_source": source},
                modality="image",
            )
        )
    if unreadable:
        count = len(unreadable)
        warnings.warn(
            f"{root}: {count} image file{'' if count == 1 else 's'} Pillow cannot read, kept with "
            f"captions from sidecar or file name ({name_a_few(unreadable)})",
            CorpusWarning,
            stacklevel=2,
        )
    if sidecars:  # a Latin-1 or UTF-16 sidecar was the caption, mangled (until session 45)
        sidecars = list(dict.fromkeys(sidecars))  # NAME.txt is read for NAME.png and NAME.jpg
        count = len(sidecars)
        warnings.warn(
            f"{root}: {count} caption sidecar{'' if count == 1 else 's'} not read, captions taken from "
            f"the next source ({name_a_few(sidecars)})",
            CorpusWarning,
            stacklevel=2,
        )
    others = _files_not_read(root, paths, files)
    if others:  # notes.md or a sidecar of a missing image was passed over without a word (until session 55)
        count = len(others)
        warnings.warn(
            f"{root}: {count} file{'' if count == 1 else 's'} not read, neither an image nor the caption "
            f"sidecar of one ({name_a_few(others)})",
            CorpusWarning,
            stacklevel=2,
        )
    links = _links_not_followed(root, paths, recursive)
    if links:  # broken links and links to folders were passed over unsaid (until session 45)
        count = len(links)
        warnings.warn(
            f"{root}: {count} link{'' if count == 1 else 's'} not followed, broken or to a folder "
            f"({name_a_few(links)})",
            CorpusWarning,
            stacklevel=2,
        )
    return docs


def image_files(root: Path, *, recursive: bool = False) -> list[Path]:
    """The image files (by suffix) of the folder ``root``, hidden ones excepted, sorted by path."""
    return _image_files(_visible_paths(root, recursive))


def _visible_paths(root: Path, recursive: bool) -> list[Path]:
    """Every path in the folder ``root`` (and below it with ``recursive``) but hidden ones
    (``.name`` anywhere in the path below ``root``)."""
    pattern = "**/*" if recursive else "*"
    return [
        p for p in root.glob(pattern) if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _image_files(paths: list[Path]) -> list[Path]:
    """The image files (by suffix) among ``paths``, sorted."""
    return sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _files_not_read(root: Path, paths: list[Path], images: list[Path]) -> list[str]:
    """The files among ``paths`` that are neither one of ``images`` nor the caption sidecar
    (``NAME.png.txt``, ``NAME.txt``) of one: relative posix paths, sorted."""
    kept = set(images)
    for image in images:
        kept.update((image.with_name(image.name + ".txt"), image.with_suffix(".txt")))
    return sorted(p.relative_to(root).as_posix() for p in paths if p not in kept and p.is_file())


def _links_not_followed(root: Path, paths: list[Path], recursive: bool) -> list[str]:
    """The links among ``paths`` that :func:`image_files` passes over: broken links to image files
    and, in a recursive walk, links to folders (not walked) and other broken links; relative posix
    paths, sorted."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in paths
        if p.is_symlink() and not p.is_file() and (recursive or p.suffix.lower() in IMAGE_SUFFIXES)
    )


def image_caption(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(caption, source)`` of one image file: sidecar text, stored alt text, or file name (a
    sidecar that is not UTF-8 or cannot be read is passed over)."""
    return _caption(Path(path), [], [], None)


def _caption(path: Path, problems: list[str], sidecars: list[str], root: Path | None) -> tuple[str, str]:
    """:func:`image_caption`, appending to ``problems`` why the file could not be opened and to
    ``sidecars`` the sidecars not read and why (with ``root``: those linking outside it too)."""
    for sidecar in (path.with_name(path.name + ".txt"), path.with_suffix(".txt")):
        if sidecar.is_file():
            text = _sidecar_text(sidecar, sidecars, root)
            if has_visible_text(text):
                _stored_alt_text(path, problems)  # only to name an unreadable image
                return text, "sidecar"
    alt = _stored_alt_text(path, problems)
    if has_visible_text(alt):  # a PNG text chunk of NULs was the caption (until session 45)
        return alt, "alt"
    name = " ".join(re.split(r"[\s_\-.]+", path.stem)).strip()
    return (name if has_visible_text(name) else path.name), "filename"


def _sidecar_text(sidecar: Path, sidecars: list[str], root: Path | None) -> str:
    """The caption text of ``sidecar`` (UTF-8, a BOM dropped, blanks collapsed), or ``""`` with the
    reason appended to ``sidecars`` when it links outside ``root`` or cannot be read or decoded."""
    from ragroute.loaders.common import BadRecord, decode_utf8_file, links_outside

    name = sidecar.relative_to(root).as_posix() if root is not None else str(sidecar)
    if root is not None and links_outside(sidecar, root):
        sidecars.append(f"{name}: a link to a file outside the folder")
        return ""
    try:
        text = decode_utf8_file(sidecar.read_bytes())
    except BadRecord as exc:
        sidecars.append(f"{name}: {exc}")
        return ""
    except OSError as exc:
        sidecars.append(f"{name}: cannot be read ({exc.strerror or exc})")
        return ""
    return " ".join(text.split())


def _stored_alt_text(path: Path, problems: list[str]) -> str:
    """Alt text / description embedded in the image file, or ``""``; a file Pillow cannot open
    gives ``""`` and appends the reason (the exception's type) to ``problems``."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # only the header and metadata are read, never the pixels: no bomb to warn about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                info = dict(image.info)
                exif = image.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for unreadable files
        problems.append(type(exc).__name__)
        return ""
    values = [info.get(key) for key in _ALT_KEYS] + [exif]
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return ""


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageEncoder",
    "image_caption",
    "image_documents",
    "image_files",
    "load_image_encoder",
]
