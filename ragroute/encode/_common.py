"""Small helpers shared by the encoder backends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragroute.errors import InvalidArgumentError, lone_surrogate
from ragroute.progress import progress_enabled

PROGRESS_THRESHOLD = 1000
"""``show_progress=None`` shows a progress bar only for jobs longer than this many texts."""


def want_progress(show_progress: bool | None, n: int) -> bool:
    """Resolve the tri-state ``show_progress`` flag for a job of ``n`` texts: an explicit value wins;
    ``None`` shows a bar for jobs over :data:`PROGRESS_THRESHOLD` texts when bars are on
    (:func:`ragroute.progress.progress_enabled`: stderr is a terminal, or ``--progress``)."""
    if show_progress is not None:
        return bool(show_progress)
    return n > PROGRESS_THRESHOLD and progress_enabled()


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, rejecting a bare string (a common slip) and non-strings."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        if not text.isascii():
            problem = lone_surrogate(text)
            if problem is not None:  # the tokenizer's bare TypeError until session 38
                raise InvalidArgumentError(f"texts[{i}] is not valid text: {problem}")
    return out


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def encode_unit_vectors(
    model: Any,
    texts: Sequence[str],
    dim: int,
    *,
    batch_size: int,
    show_progress: bool | None,
    prompt: str = "",
) -> np.ndarray:
    """``texts`` through a loaded sentence-transformers ``model`` (with ``prompt``, none by default)
    as unit-length float32 rows; ``(0, dim)`` for no texts. What encoders wrapping an in-memory
    model (query adapters, tuned probes) share."""
    items = check_texts(texts)
    if not items:
        return np.zeros((0, dim), dtype=np.float32)
    vectors = model.encode(
        items,
        prompt=prompt or None,
        batch_size=batch_size,
        convert_to_numpy=True,
        show_progress_bar=want_progress(show_progress, len(items)),  # bool(None) until session 49: no bar
    )
    return l2_normalize(vectors)


def document_prompt(prompts: dict[str, str]) -> str:
    """The document prompt sentence-transformers' ``encode_document`` would use."""
    for name in ("document", "passage", "corpus"):
        if name in prompts:
            return prompts[name] or ""
    return ""


def query_prompt(prompts: dict[str, str]) -> str:
    """The query prompt sentence-transformers' ``encode_query`` would use."""
    return prompts.get("query") or ""


def default_prompt(prompts: dict[str, str], default_name: str | None) -> str:
    """The prompt a model's ``default_prompt_name`` names (what sentence-transformers puts before
    texts given no prompt), ``""`` without one."""
    return str(prompts.get(default_name) or "") if default_name else ""


def encoder_prompts(prompts: dict[str, str], default: str) -> tuple[str, str]:
    """``(query prompt, document prompt)`` a model's texts are read behind: its ``query`` and
    ``document`` prompts, each else its ``default`` prompt (:func:`default_prompt`)."""
    return query_prompt(prompts) or default, document_prompt(prompts) or default


class PromptedEncoder:
    """Shared surface of the text backends: query/document prompts, then ``_encode``.

    Subclasses set ``model_id``, ``backend``, ``dim``, ``_max_seq_length`` and ``cache_variant``,
    give the model's prompts to :meth:`_set_model_prompts` and implement ``_encode``.
    """

    model_id: str
    backend: str
    dim: int
    _max_seq_length: int
    #: the content digest of the model folder the weights were loaded from, read when they were
    #: (:meth:`~ragroute.encode.resolve.ResolvedModel.content_digest`); None: not from a folder
    weights: str | None = None
    _query_prompt: str = ""
    _document_prompt: str = ""
    _weights_variant: str = ""
    _model_prompts: tuple[str, str] = ("", "")

    def _set_model_prompts(self, query: str, document: str) -> None:
        """The (query, document) prompts the model reads texts behind, as it loaded."""
        self._query_prompt, self._document_prompt = query, document
        self._model_prompts = (query, document)

    @property
    def cache_variant(self) -> str:
        """What names these vectors beside model id and backend (the embedding cache's space and
        the query contexts' keys, :func:`ragroute.context.encoder_key`, read it): the weights (and
        quantisation), and a digest of the prompts where a caller set others than its model's on
        its encoder (until session 51 such an encoder was handed the vectors of the model's own
        prompts, from a query context or the embedding cache)."""
        prompts = (self._query_prompt, self._document_prompt)
        if prompts == self._model_prompts:
            return self._weights_variant
        digest = hashlib.sha256(json.dumps(prompts).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{self._weights_variant}|prompts:{digest}"

    @cache_variant.setter
    def cache_variant(self, value: str) -> None:
        self._weights_variant = str(value)

    @property
    def max_seq_length(self) -> int:
        """How many tokens of a text the model reads (the rest is dropped), fixed when the model
        loads: read-only, as setting it on a loaded encoder would change nothing the model reads
        (until session 44 it could be set, silently to no effect on the vectors)."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: object) -> None:
        raise InvalidArgumentError(
            f"encoder {self.model_id}: max_seq_length is fixed when the model loads "
            f"({self._max_seq_length}); to read more or fewer tokens, save a copy of the model with "
            "another max_seq_length in its sentence_bert_config.json and load that folder"
        )

    def _encode(
        self, texts: Sequence[str], prompt: str, batch_size: int, show_progress: bool | None
    ) -> np.ndarray:
        raise NotImplementedError

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode queries (with the model's ``query`` prompt, if it has one)."""
        return self._encode(texts, self._query_prompt, batch_size, show_progress)

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode documents (with the model's ``document`` prompt, if it has one)."""
        return self._encode(texts, self._document_prompt, batch_size, show_progress)

    def fast_tokenizer(self) -> Any | None:
        """The fast (``tokenizers``) tokenizer that reads this encoder's texts, or None (then
        :meth:`count_truncated` gives a lower bound)."""
        return None

    def count_truncated(self, texts: Sequence[str]) -> tuple[int, int, bool] | None:
        """``(documents, max_seq_length, exact)``: how many of the document ``texts`` (behind the
        document prompt) are longer than this encoder reads, or None when it reads any length
        (:func:`ragroute.encode.truncation.count_truncated`)."""
        from ragroute.encode.truncation import count_truncated

        return count_truncated(
            texts, limit=self.max_seq_length, prompt=self._document_prompt, tokenizer=self.fast_tokenizer()
        )

    def describe(self) -> dict[str, object]:
        """What an index manifest records about this encoder (``weights`` when it was loaded from a
        model folder; see :mod:`ragroute.encode.identity`)."""
        return {
            "model_id": self.model_id,
            "backend": self.backend,
            "dim": self.dim,
            "max_seq_length": self.max_seq_length,
            **({"weights": self.weights} if self.weights else {}),
        }
