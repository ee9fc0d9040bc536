"""The encoder protocol every embedding backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Turns text into float32, L2-normalised row vectors of width ``dim``.

    ``model_id`` names the embedding space (the same for every backend that runs
    the same weights, e.g. torch fp32 and ONNX fp32 of all-MiniLM-L6-v2), so an
    index built with one backend can be queried with another; ``backend`` says
    how it runs. Indexes record ``describe()`` in their manifest and refuse to be
    queried with a different ``model_id`` or ``dim``.
    """

    model_id: str
    backend: str
    dim: int

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray: ...

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...
