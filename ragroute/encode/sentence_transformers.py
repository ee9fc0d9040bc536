"""The ``torch`` backend: a sentence-transformers model run by PyTorch in fp32."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import (
    PromptedEncoder,
    check_batch_size,
    check_texts,
    default_prompt,
    encoder_prompts,
    l2_normalize,
    want_progress,
)
from ragroute.encode.resolve import DEFAULT_ENCODER, ResolvedModel, resolve_model, set_offline_env
from ragroute.errors import ModelNotFoundError, first_line


def load_sentence_transformer(path: Path, device: str = "cpu", **kwargs: Any) -> Any:
    """Load a local sentence-transformers folder offline; one-line :class:`ModelNotFoundError` on failure."""
    set_offline_env()
    check_embedding_model(path)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # The weight-loading bar is noise on every CLI call; ragroute shows its own bars for long work.
    transformers_logging.disable_progress_bar()
    model_kwargs = dict(kwargs.pop("model_kwargs", None) or {})
    if str(device).startswith("cpu") and not {"dtype", "torch_dtype"} & model_kwargs.keys():
        import torch

        # fp32 on the CPU, what the torch backend is documented to run, whatever dtype the weights
        # were saved in: sentence-transformers loads them as saved, and a model saved in fp16 ran
        # in fp16 on the CPU until session 56 (slower there, and less exact)
        model_kwargs["dtype"] = torch.float32
    try:
        model = SentenceTransformer(
            str(path), device=device, local_files_only=True, model_kwargs=model_kwargs, **kwargs
        )
    except Exception as exc:  # noqa: BLE001 - any load failure is reported as one line
        raise ModelNotFoundError(f"cannot load encoder from {path}: {first_line(exc)}") from exc
    check_vocabulary(model, path)
    check_weights_loaded(model, path)
    return model


def _json_object(file: Path) -> dict[str, Any]:
    """The JSON object in ``file``, or ``{}`` when it is missing or not a readable object (what
    loads the model then says what is wrong with it)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_embedding_model(path: Path) -> None:
    """Refuse a folder holding a model that scores rather than embeds: a sentence-transformers
    model of another kind (``model_type`` ``CrossEncoder``, as a reranker is saved, or
    ``SparseEncoder``), or a plain transformers sequence classifier (a cross-encoder saved without
    sentence-transformers' files). sentence-transformers converts such a model with a log line,
    mean-pooling a backbone trained to score pairs or terms, and it was accepted as an encoder
    whose vectors place nothing."""
    kind = _json_object(path / "config_sentence_transformers.json").get("model_type") or "SentenceTransformer"
    if kind != "SentenceTransformer":
        raise ModelNotFoundError(
            f"cannot load encoder from {path}: it holds a {kind} model, not a sentence embedding model "
            "(a reranker scores pairs of texts; name an embedding model)"
        )
    if (path / "modules.json").is_file():
        return
    architectures = [str(a) for a in _json_object(path / "config.json").get("architectures") or []]
    if architectures and all(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelNotFoundError(
            f"cannot load encoder from {path}: it holds a {architectures[0]} (a cross-encoder or "
            "classifier), not a sentence embedding model; name an embedding model"
        )


def _loader_marks_loaded_weights() -> bool:
    """Whether this transformers marks every weight it reads from a checkpoint (``_is_hf_initialized``,
    transformers 5's loader), so that an unmarked one is a weight the files did not hold."""
    return importlib.util.find_spec("transformers.core_model_loading") is not None


def check_weights_loaded(
    model: Any, path: Path, *, lead: str | None = None, unused: Sequence[str] = ("pooler",)
) -> None:
    """Refuse a model whose weights files lack some of its weights (those under ``unused``, the
    pooler that sentence embeddings do not read, aside): transformers gives the missing ones fresh
    random values and only prints a load report, so an incomplete weights file, or a checkpoint of
    another architecture whose tensors are named otherwise, embedded into a random space, another at
    every load. ``lead`` begins the error (default ``cannot load encoder from PATH``; a reranker,
    whose classifier reads the pooler, names itself and passes ``unused=()``)."""
    from transformers import PreTrainedModel

    if not _loader_marks_loaded_weights():
        return
    weights: dict[int, tuple[str, Any]] = {}  # by identity: a model inside another counts once
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            for name, parameter in module.named_parameters():
                weights.setdefault(id(parameter), (name, parameter))
    missing = [
        name
        for name, parameter in weights.values()
        if not getattr(parameter, "_is_hf_initialized", False) and not set(unused) & set(name.split("."))
    ]
    if missing:
        lead = lead or f"cannot load encoder from {path}"
        raise ModelNotFoundError(
            f"{lead}: {len(missing)} of the {len(weights)} weights of its model "
            f"are not in its weights files (e.g. {missing[0]}) and would be random: is a weights file "
            "incomplete, or from another model?"
        )


def check_vocabulary(model: Any, path: Path, *, lead: str | None = None) -> None:
    """Refuse a model whose tokenizer knows nothing but its special tokens: a folder without its
    tokenizer files loads (transformers builds a tokenizer of the five special tokens), and every
    word became ``[UNK]``, vectors of nothing, without an error (until session 38). ``lead`` begins
    the error (default ``cannot load encoder from PATH``)."""
    tokenizer = getattr(model, "tokenizer", None)
    try:
        size = len(tokenizer) if tokenizer is not None else None
    except TypeError:  # a processor (an image model's) without a length: not a text tokenizer
        return
    special = set(getattr(tokenizer, "all_special_tokens", None) or ())
    if size is not None and size <= len(special):
        lead = lead or f"cannot load encoder from {path}"
        raise ModelNotFoundError(
            f"{lead}: its tokenizer knows only its {size} special tokens "
            "(are its tokenizer files, tokenizer.json or vocab.txt, missing?)"
        )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Load a transformers model without its weight-loading bar and its notices (a cross-encoder's
    fresh head is reported "MISSING" by design); errors still show. The verbosity is restored."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    before = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(before)


def embedding_dimension(model: Any) -> int:
    """The sentence embedding width of a loaded sentence-transformers model."""
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        getter = getattr(model, name, None)
        if getter is not None:
            dim = getter()
            if dim:
                return int(dim)
    return int(model.encode(["dimension probe"], convert_to_numpy=True).shape[1])


class SentenceTransformerEncoder(PromptedEncoder):
    """Encoder backend ``"torch"``: sentence-transformers in fp32, L2-normalised float32 output.

    sentence-transformers already sorts each call's texts by length before
    batching (and restores the order), so padding waste is small.
    """

    backend = "torch"

    def __init__(
        self,
        model: ResolvedModel | str | os.PathLike[str] = DEFAULT_ENCODER,
        *,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
        self.model_id = self.resolved.model_id
        # cached vectors are keyed by the folder's contents, not its file times (an edit that kept
        # sizes and times reused vectors of the old weights until session 38)
        self.weights = self.resolved.content_digest()
        self.cache_variant = self.weights
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.model = load_sentence_transformer(self.resolved.path, device=device)
        self.dim = embedding_dimension(self.model)
        self._max_seq_length = int(self.model.max_seq_length or 0)
        prompts = dict(getattr(self.model, "prompts", None) or {})
        # sentence-transformers puts the default prompt before texts given none: the truncation
        # count reads it too (until session 50 it counted the texts bare)
        default = default_prompt(prompts, getattr(self.model, "default_prompt_name", None))
        self._set_model_prompts(*encoder_prompts(prompts, default))

    def _encode(
        self, texts: Sequence[str], prompt: str, batch_size: int, show_progress: bool | None
    ) -> np.ndarray:
        items = check_texts(texts)
        check_batch_size(batch_size)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            items,
            prompt=prompt or None,
            batch_size=batch_size,
            show_progress_bar=want_progress(show_progress, len(items)),
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return l2_normalize(out)

    def fast_tokenizer(self) -> Any | None:
        """A copy of the model's backend (``tokenizers``) tokenizer that reads as this encoder does
        (no padding; truncation at ``max_seq_length``, the rest kept in each encoding's
        ``overflowing``), or None for a slow tokenizer. The backend tokenizer itself keeps whatever
        truncation and padding its last call (or its ``tokenizer.json``) set: all-MiniLM-L6-v2's
        truncates at 128 until the model first encodes, and until session 43 a build with
        ``--backend torch`` counted its documents of 129 to 256 tokens as truncated."""
        backend = getattr(getattr(self.model, "tokenizer", None), "backend_tokenizer", None)
        if not callable(getattr(backend, "encode_batch", None)):
            return None
        tokenizer: Any = copy.deepcopy(backend)
        tokenizer.no_padding()
        if self.max_seq_length > 0:
            tokenizer.enable_truncation(max_length=self.max_seq_length)
        else:
            tokenizer.no_truncation()
        return tokenizer

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder(model_id={self.model_id!r}, dim={self.dim})"
