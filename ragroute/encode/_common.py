"""Small helpers shared by the encoder backends."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROGRESS_THRESHOLD = 1000
"""``show_progress=None`` shows a progress bar only for jobs longer than this many texts."""


def want_progress(show_progress: bool | None, n: int) -> bool:
    """Resolve the tri-state ``show_progress`` flag for a job of ``n`` texts."""
    return n > PROGRESS_THRESHOLD if show_progress is None else bool(show_progress)


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, rejecting a bare string (a common slip) and non-strings."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
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


def document_prompt(prompts: dict[str, str]) -> str:
    """The document prompt sentence-transformers' ``encode_document`` would use."""
    for name in ("document", "passage", "corpus"):
        if name in prompts:
            return prompts[name] or ""
    return ""


def query_prompt(prompts: dict[str, str]) -> str:
    """The query prompt sentence-transformers' ``encode_query`` would use."""
    return prompts.get("query") or ""
