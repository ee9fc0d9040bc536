"""Arrays of an artifact (``.npz``, read without pickle), checked as they are read.

A file can be wrong and still match the checksum its manifest records (written by a buggy writer,
restored by hand): readers check what they read and fail in one line naming the file and what is
wrong rather than with a traceback at query time.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np

from ragroute.errors import IndexFormatError
from ragroute.pyast import parsing

T = TypeVar("T")


def numpy_read(read: Callable[[], T]) -> T:
    """``read()`` (``np.load`` and the reads of its arrays) taking turns with ragroute's other
    parses (:func:`ragroute.pyast.parsing`): numpy parses each array's header with
    ``ast.literal_eval``, and on CPython 3.11 two threads parsing at once may raise a spurious
    ``SystemError`` (until session 50 a thread loading an index while another did read a sound file
    as "unreadable BM25 matrix", in the race harness)."""
    return parsing(read)


def npz_arrays(file: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickle), read under :func:`numpy_read`'s lock; numpy's and
    the operating system's errors as they come (:func:`read_arrays` says them in one line)."""

    def read() -> dict[str, np.ndarray]:
        with np.load(file, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    return numpy_read(read)


def read_arrays(file: str | os.PathLike[str], where: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, or a one-line :class:`IndexFormatError` naming ``where`` when
    it is not one (empty, truncated, another format: its checksum may still be right)."""
    try:
        return npz_arrays(file)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise IndexFormatError(f"{where} is not a readable .npz file ({type(exc).__name__}: {exc})") from None


def check_arrays(
    arrays: Mapping[str, np.ndarray], where: str, shapes: Mapping[str, tuple[int | None, ...]]
) -> None:
    """Each array of ``shapes`` present, numeric and of that shape (``None``: any length); otherwise a
    one-line :class:`IndexFormatError` naming ``where`` and what is wrong."""
    for name, shape in shapes.items():
        if name not in arrays:
            raise IndexFormatError(f"{where} has no array {name!r} (it has {', '.join(arrays) or 'none'})")
        array = arrays[name]
        if array.dtype.kind not in "biuf":
            raise IndexFormatError(f"{where}: array {name!r} holds {array.dtype}, not numbers")
        if array.ndim != len(shape) or any(n is not None and n != m for n, m in zip(shape, array.shape)):
            wanted = "(" + ", ".join("any" if n is None else str(n) for n in shape) + ")"
            raise IndexFormatError(f"{where}: array {name!r} has shape {array.shape}, expected {wanted}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise IndexFormatError(f"{where}: array {name!r} holds NaN or infinite values")
