"""BM25 persistence: the on-disk files of a :class:`~ragroute.index.bm25_scoring.BM25Scorer`.

A scorer is stored as a ``.npz`` CSR matrix (:data:`MATRIX_FILE`) and a JSON
vocabulary of terms and idf values (:data:`VOCAB_FILE`); nothing is pickled. Its
statistics (``k1``, ``b``, ``epsilon``, document and token counts, ``avgdl``,
``average_idf``, ``nnz``) go into the artifact manifest of whatever holds the
scorer (an index, or the scorer saved on its own), not into a header of its own.
Vocabulary files written by ragroute 0.1 carried those statistics in a header;
they are still read; one whose header names a newer format version says to upgrade
ragroute, in the words every artifact uses. Reading validates everything and raises
:class:`IndexFormatError` naming the bad file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ragroute.errors import IndexFormatError
from ragroute.store.arrays import numpy_read
from ragroute.store.manifest import newer_format_message

__all__ = [
    "MATRIX_FILE",
    "STATISTICS",
    "VOCAB_FILE",
    "compact_matrix",
    "load_scorer_parts",
    "save_scorer_parts",
]

MATRIX_FILE = "bm25_matrix.npz"
VOCAB_FILE = "bm25_vocab.json"
_FORMAT = "ragroute-bm25"
_FORMAT_VERSION = 1


STATISTICS = ("k1", "b", "epsilon", "n_docs", "total_tokens", "avgdl", "average_idf", "nnz")


def save_scorer_parts(
    directory: Path | str, matrix: sp.csr_array, vocab: Mapping[str, int], idf: np.ndarray
) -> list[str]:
    """Write a scorer's matrix and vocabulary into an existing directory; return the file names."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexFormatError(f"cannot save BM25 index: {directory} is not a directory")
    sp.save_npz(directory / MATRIX_FILE, matrix, compressed=False)
    terms = [""] * len(vocab)
    for term, tid in vocab.items():
        terms[tid] = term
    with open(directory / VOCAB_FILE, "w", encoding="utf-8") as fh:
        json.dump({"terms": terms, "idf": idf.tolist()}, fh, ensure_ascii=False, separators=(",", ":"))
    return [MATRIX_FILE, VOCAB_FILE]


def load_scorer_parts(
    directory: Path | str, statistics: Mapping[str, Any] | None = None
) -> tuple[sp.csr_array, dict[str, int], np.ndarray, dict[str, Any]]:
    """Read the files written by :func:`save_scorer_parts`; raise :class:`IndexFormatError` naming a bad file.

    ``statistics`` come from the manifest that lists the files; without them the
    vocabulary must be a 0.1 file that carries them itself. Returns ``(matrix,
    vocab, idf, params)``, ``params`` being the scorer's keyword arguments (``k1``,
    ``b``, ``epsilon``, ``avgdl``, ``average_idf``, ``total_tokens``).
    """
    directory = Path(directory)
    meta = _read_vocab(directory / VOCAB_FILE, statistics)
    matrix = _read_matrix(directory / MATRIX_FILE, len(meta["terms"]), meta["n_docs"], meta["nnz"])
    vocab = {term: i for i, term in enumerate(meta["terms"])}
    if len(vocab) != len(meta["terms"]):
        raise IndexFormatError(f"{directory / VOCAB_FILE}: duplicate terms in the vocabulary")
    params = {key: meta[key] for key in ("k1", "b", "epsilon", "avgdl", "average_idf", "total_tokens")}
    return matrix, vocab, np.asarray(meta["idf"], dtype=np.float64), params


def compact_matrix(matrix: sp.csr_array) -> sp.csr_array:
    """Use int32 indices and indptr when they fit (smaller, and faster to gather)."""
    limit = np.iinfo(np.int32).max
    if matrix.nnz < limit and max(matrix.shape) < limit:
        matrix = sp.csr_array(
            (matrix.data, matrix.indices.astype(np.int32), matrix.indptr.astype(np.int32)),
            shape=matrix.shape,
        )
    return matrix


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_vocab(path: Path, statistics: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        raise IndexFormatError(f"BM25 index file missing: {path}") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8 or JSON, a huge number
        raise IndexFormatError(f"{path}: unreadable BM25 vocabulary ({exc})") from None
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{path}: not a ragroute BM25 vocabulary file")
    where: Path | str = path
    if "format" in meta:  # a 0.1 file (the statistics are in its own header), or a newer one's
        if meta.get("format") != _FORMAT:
            raise IndexFormatError(f"{path}: not a ragroute BM25 vocabulary file")
        version = meta.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > _FORMAT_VERSION:
            # the one line every artifact says of a newer format; until session 47 this file said
            # "... is not supported (expected 1)", as of a damaged one, and not to upgrade ragroute
            raise IndexFormatError(newer_format_message(str(path), version, _FORMAT_VERSION, "BM25 "))
        if isinstance(version, bool) or version != _FORMAT_VERSION:  # `true` == 1 read as 1 until session 47
            raise IndexFormatError(
                f"{path}: BM25 format version {version!r} is not supported (expected {_FORMAT_VERSION})"
            )
    elif statistics is None:
        raise IndexFormatError(f"{path}: no BM25 statistics given for this vocabulary (manifest lacks them)")
    else:
        meta = {**dict(statistics), **meta}
        where = f"{path} (statistics from the manifest)"
    numbers = ("k1", "b", "epsilon", "avgdl", "average_idf")
    integers = ("n_docs", "total_tokens", "nnz")
    bad = [key for key in numbers if not _is_number(meta.get(key))]
    bad += [key for key in integers if not _is_count(meta.get(key))]
    terms, idf = meta.get("terms"), meta.get("idf")
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        bad.append("terms")
    idf_ok = isinstance(idf, list) and isinstance(terms, list) and len(idf) == len(terms)
    if not (idf_ok and all(map(_is_number, idf or []))):
        bad.append("idf")
    if bad:
        raise IndexFormatError(
            f"{where}: missing or invalid {'field' if len(bad) == 1 else 'fields'} {', '.join(bad)}"
        )
    return meta


def _read_matrix(path: Path, n_terms: int, n_docs: int, nnz: int) -> sp.csr_array:
    def read() -> tuple[Any, tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
        with np.load(path, allow_pickle=False) as npz:
            shape = tuple(int(x) for x in npz["shape"])
            return npz["format"].item(), shape, npz["data"], npz["indices"], npz["indptr"]

    try:
        fmt, shape, data, indices, indptr = numpy_read(read)
    except FileNotFoundError:
        raise IndexFormatError(f"BM25 index file missing: {path}") from None
    except Exception as exc:  # zipfile, numpy and OS errors all mean a corrupt file here
        raise IndexFormatError(f"{path}: unreadable BM25 matrix ({type(exc).__name__}: {exc})") from None
    if fmt not in (b"csr", "csr"):
        raise IndexFormatError(f"{path}: expected a CSR matrix, found {fmt!r}")
    if shape != (n_terms, n_docs):
        raise IndexFormatError(
            f"{path}: matrix shape {shape} does not match the vocabulary's ({n_terms}, {n_docs})"
        )
    ok = (
        data.dtype == np.float64
        and data.ndim == indices.ndim == indptr.ndim == 1
        and indices.dtype.kind == "i"
        and indptr.dtype.kind == "i"
        and data.shape[0] == indices.shape[0] == nnz
        and indptr.shape[0] == n_terms + 1
    )
    if ok:
        ok = (
            int(indptr[0]) == 0
            and int(indptr[-1]) == nnz
            and bool(np.all(np.diff(indptr) >= 0))
            and (nnz == 0 or (int(indices.min()) >= 0 and int(indices.max()) < n_docs))
            and bool(np.all(np.isfinite(data)))
        )
    if not ok:
        raise IndexFormatError(f"{path}: corrupt BM25 matrix (inconsistent arrays)")
    return compact_matrix(sp.csr_array((data, indices, indptr), shape=shape))
