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


def row_products(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``queries @ rows.T`` (float32 unless either is float64), each query's row computed as it is
    when that query is alone: numpy's ``einsum`` loop sums every product in one order whatever the
    batch, on one thread. A BLAS product does not: a one-query product (gemv) and a batch's (gemm)
    round differently in the last bits, so a task routed alone and in a batch got other scores and
    probabilities, and tied skills or documents ranked in another order (until session 52).

    It also keeps a product of one query with a large matrix off BLAS, whose woken worker threads
    spin for a long while and take a core from what the query does next: at 10,000 skills the
    cross-encoder over 20 candidates took 156 ms after a BLAS product and 76 ms without one on 2
    cores, while the product itself costs 1.0 ms here instead of 0.4 ms (a batch's, ~10 x a BLAS
    product's on 2 cores)."""
    queries, rows = np.atleast_2d(np.asarray(queries)), np.asarray(rows)
    dtype = np.result_type(queries.dtype, rows.dtype, np.float32)
    return np.einsum(
        "qd,nd->qn",
        np.ascontiguousarray(queries, dtype=dtype),
        np.ascontiguousarray(rows, dtype=dtype),
    )
