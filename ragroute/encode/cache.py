"""An on-disk embedding cache, so rebuilding an index never re-encodes unchanged text.

Vectors live in one SQLite file (``embeddings.sqlite``) as raw float32 blobs,
keyed by the embedding *space* (``model_id``, backend, the encoder's
``cache_variant`` and kind) and the SHA-256 of the text; nothing is pickled.
int8 and fp32 vectors are kept apart because they differ slightly.

Every row carries a digest of its space, key, width and vector: a row whose
digest does not match (a flipped bit on disk, a row written by a ragroute
without digests) is never used; the text is encoded again and the row
replaced, and a corrupt row is reported once as a :class:`CacheWarning`. A
cache file SQLite cannot read at all is a one-line :class:`RagrouteError`
naming the file to delete.

A cache that cannot be written (a read-only image, a folder of another user) costs speed, never a
query: the vectors already there are read (the file opened read-only) and new ones are not stored;
when the file cannot even be opened, encoding runs without it. Either is said once, as a
:class:`CacheWarning` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import check_texts
from ragroute.encode.base import Encoder
from ragroute.errors import RagrouteError, one_line
from ragroute.store.locks import crash_point

CACHE_FILE = "embeddings.sqlite"
_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    space TEXT NOT NULL,
    key BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    digest BLOB,
    PRIMARY KEY (space, key)
) WITHOUT ROWID
"""


def _unwritable(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because the file or its folder cannot be written (or opened) here,
    rather than because the file is busy or broken."""
    text = str(exc).lower()
    return any(
        words in text
        for words in ("readonly database", "read-only", "unable to open database file", "disk i/o error")
    )


class CacheWarning(UserWarning):
    """Cached vectors failed their digest and were encoded again."""


class CacheFileError(RagrouteError):
    """A cache file (the embedding cache, the graph extractor's LLM answers) that SQLite cannot use."""


#: what Python's sqlite3 raises for a cache file it cannot use: SQLite's own errors, and a bare
#: UnicodeDecodeError where SQLite's message quotes a schema damaged into bytes that are not UTF-8
SQLITE_FAILURES = (sqlite3.Error, UnicodeDecodeError)


def cache_file_error(what: str, path: Path, exc: sqlite3.Error | UnicodeDecodeError) -> CacheFileError:
    """The one line for a cache file SQLite refused (``what``: ``"embedding cache"``...): a file that
    is no database, or a damaged one (a schema SQLite cannot even quote), is to be deleted; any other
    refusal (locked, unwritable) is said as SQLite says it."""
    if isinstance(exc, UnicodeDecodeError):
        exc = sqlite3.DatabaseError("malformed database schema")
    reason = one_line(str(exc))
    if type(exc) is sqlite3.DatabaseError:  # not a lock or I/O problem: the file itself is bad
        return CacheFileError(
            f"{what} {path} is corrupt ({reason}); delete it (it is rebuilt on the next run)"
        )
    return CacheFileError(f"{what} {path} is unusable: {reason}")


def row_digest(space: str, key: bytes, dim: int, vec: bytes) -> bytes:
    """The digest stored with a cached vector (BLAKE2b-128 of space, key, width and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (space.encode("utf-8", "surrogatepass"), key, str(dim).encode(), vec):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.digest()


def text_key(text: str) -> bytes:
    """SHA-256 digest of the UTF-8 text (surrogates kept, so no text is unhashable)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """float32 vectors in SQLite, keyed by ``(space, sha256(text))``.

    Safe to share between threads (one connection behind a lock) and between
    processes (WAL journal, busy timeout). Use :meth:`in_dir` for the standard
    ``<cache_dir>/embeddings.sqlite`` location.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self.rejected = 0
        #: ``"read-write"``, ``"read-only"`` (vectors read, none stored) or ``"off"`` (not used)
        self.mode = "read-write"
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except (OSError, sqlite3.OperationalError) as exc:  # not writable here: read what is there
            if isinstance(exc, sqlite3.OperationalError) and not _unwritable(exc):
                raise self._unusable(exc) from None
            self._open_read_only(exc)

    def _open(self) -> None:
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(embeddings)")}
            if "digest" not in columns:  # written by a ragroute without digests: its rows are re-encoded
                try:
                    self._conn.execute("ALTER TABLE embeddings ADD COLUMN digest BLOB")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process added it meanwhile
                        raise
            self._conn.commit()
        except sqlite3.OperationalError:
            self._close_quietly()
            raise  # the caller decides: not writable here, or unusable
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise self._unusable(exc) from None
        except UnicodeDecodeError as exc:  # a schema damaged into non-UTF-8 text
            self._close_quietly()
            raise self._unusable(exc) from None

    def _open_read_only(self, why: BaseException) -> None:
        """The cache file opened read-only (``immutable``: nothing can write it here), or no cache."""
        reason = one_line(str(why))
        if self.path.is_file():
            try:
                uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
                self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
                self._conn.execute("SELECT key, dim, vec, digest FROM embeddings LIMIT 1").fetchall()
            except SQLITE_FAILURES:
                self._close_quietly()
            else:
                self.mode = "read-only"
                warnings.warn(
                    f"embedding cache {self.path} cannot be written ({reason}): its vectors are read, "
                    "new ones are not stored (RAGROUTE_CACHE or --cache-dir for a writable one)",
                    CacheWarning,
                    stacklevel=3,
                )
                return
        self.mode = "off"
        warnings.warn(
            f"embedding cache {self.path} cannot be used ({reason}): encoding without it "
            "(RAGROUTE_CACHE or --cache-dir for a writable one)",
            CacheWarning,
            stacklevel=3,
        )

    def _close_quietly(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _unusable(self, exc: sqlite3.DatabaseError | UnicodeDecodeError) -> RagrouteError:
        return cache_file_error("embedding cache", self.path, exc)

    @classmethod
    def in_dir(cls, cache_dir: str | Path) -> EmbeddingCache:
        """The cache file ``embeddings.sqlite`` inside ``cache_dir``."""
        return cls(Path(cache_dir).expanduser() / CACHE_FILE)

    def get_many(self, space: str, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """The cached vectors among ``keys`` whose digest checks (entries of another width are ignored)."""
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        corrupt = 0
        with self._lock:
            self._check_open()
            if self._conn is None:  # mode "off"
                return found
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                try:
                    rows = self._conn.execute(
                        f"SELECT key, dim, vec, digest FROM embeddings WHERE space = ? AND key IN ({marks})",
                        (space, *chunk),
                    ).fetchall()
                except sqlite3.DatabaseError as exc:
                    raise self._unusable(exc) from None
                for key, row_dim, blob, digest in rows:
                    if not isinstance(blob, bytes):  # a damaged record (a TypeError until session 49)
                        corrupt += 1
                        continue
                    if row_dim != dim or len(blob) != 4 * dim:
                        continue
                    if digest != row_digest(space, bytes(key), row_dim, bytes(blob)):
                        corrupt += digest is not None  # rows without a digest are only re-encoded
                        continue
                    found[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
            self.rejected += corrupt  # under the lock: threads reading at once each count theirs
        if corrupt:
            warnings.warn(
                f"embedding cache {self.path}: {corrupt} cached vectors failed their checksum; encoded again",
                CacheWarning,
                stacklevel=2,
            )
        return found

    def put_many(self, space: str, items: Iterable[tuple[bytes, np.ndarray]]) -> int:
        """Store ``(key, vector)`` pairs (replacing existing ones); returns how many."""
        rows = []
        for key, vec in items:
            arr = np.ascontiguousarray(vec, dtype=np.float32).reshape(-1)
            blob = arr.tobytes()
            dim = int(arr.shape[0])
            rows.append((space, key, dim, blob, row_digest(space, bytes(key), dim, blob)))
        if rows:
            with self._lock:
                self._check_open()
                if self.mode != "read-write" or self._conn is None:
                    return 0  # said once when the cache was opened
                try:
                    with self._conn:
                        self._conn.executemany(
                            "INSERT OR REPLACE INTO embeddings (space, key, dim, vec, digest) "
                            "VALUES (?, ?, ?, ?, ?)",
                            rows,
                        )
                except sqlite3.OperationalError as exc:
                    # the disk or quota full, an I/O error, the file made read-only, locked past the
                    # timeout: the vectors are computed, only not stored (until session 53 the
                    # command failed, "embedding cache ... is unusable: database or disk is full")
                    self.mode = "read-only"
                    warnings.warn(
                        f"embedding cache {self.path} cannot store vectors ({one_line(str(exc))}): "
                        "its vectors are read, new ones are not stored",
                        CacheWarning,
                        stacklevel=2,
                    )
                    return 0
                except sqlite3.DatabaseError as exc:
                    raise self._unusable(exc) from None
            crash_point("embedding cache: vectors stored")
        return len(rows)

    def count(self, space: str | None = None) -> int:
        """Number of cached vectors (in one space, or in all)."""
        with self._lock:
            self._check_open()
            if self._conn is None:
                return 0
            try:
                if space is None:
                    return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
                query = "SELECT COUNT(*) FROM embeddings WHERE space = ?"
                return int(self._conn.execute(query, (space,)).fetchone()[0])
            except sqlite3.DatabaseError as exc:  # a bare sqlite3 traceback until session 43
                raise self._unusable(exc) from None

    def __len__(self) -> int:
        return self.count()

    def clear(self, space: str | None = None) -> None:
        """Forget every vector (in one space, or in all)."""
        with self._lock:
            self._check_open()
            if self.mode != "read-write" or self._conn is None:
                raise RagrouteError(f"embedding cache {self.path} is {self.mode} here: nothing to clear")
            try:
                with self._conn:
                    if space is None:
                        self._conn.execute("DELETE FROM embeddings")
                    else:
                        self._conn.execute("DELETE FROM embeddings WHERE space = ?", (space,))
            except sqlite3.DatabaseError as exc:
                raise self._unusable(exc) from None

    def close(self) -> None:
        """Close the file; a read or write of the cache after it (an encode through a
        :class:`CachedEncoder` still running included) is a one-line error naming the cache. One in
        progress finishes first (until session 42 the threads still encoding failed with
        ``'NoneType' object has no attribute 'execute'``, later encodes with a bare
        ``AssertionError``, and ``count()`` answered 0)."""
        with self._lock:
            self._closed = True
            self._close_quietly()

    def _check_open(self) -> None:
        """Raise when :meth:`close` ran (called holding the lock)."""
        if self._closed:
            raise RagrouteError(
                f"embedding cache {self.path} is closed: open it again (EmbeddingCache(path)) to use it"
            )

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"


class CachedEncoder:
    """Wraps an :class:`~ragroute.encode.base.Encoder`; documents are encoded only when not cached.

    Queries pass straight through (they are rarely repeated, and caching them
    would grow the file without bound). ``describe()`` is the wrapped
    encoder's, so an index built through the cache is indistinguishable from
    one built without it. ``hits`` and ``misses`` count documents.
    """

    def __init__(self, encoder: Encoder, cache: EmbeddingCache) -> None:
        self.encoder = encoder
        self.cache = cache
        self.model_id = encoder.model_id
        self.backend = encoder.backend
        self.dim = encoder.dim
        self.hits = 0
        self.misses = 0

    @property
    def cache_variant(self) -> str:
        """The wrapped encoder's (query contexts key their vectors by it too, as
        :func:`ragroute.context.encoder_key` says), read at each call: prompts set on the wrapped
        encoder after wrapping change it."""
        return str(getattr(self.encoder, "cache_variant", "") or "")

    @property
    def space(self) -> str:
        """The cache space of the documents' vectors: it names the exact weights too
        (``cache_variant``: a digest of the model files, plus the quantisation recipe and the int8
        file's digest, and the prompts where a caller set others than the model's), so retrained or
        re-quantised weights under the same model_id never get stale vectors."""
        return f"{self.model_id}|{self.backend}|{self.cache_variant}|document"

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode queries with the wrapped encoder (not cached)."""
        return self.encoder.encode_queries(texts, batch_size=batch_size, show_progress=show_progress)

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode documents, reusing cached vectors and storing the new ones."""
        items = check_texts(texts)
        keys = [text_key(text) for text in items]
        space = self.space
        cached = self.cache.get_many(space, keys, self.dim)
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, items, strict=True):
            if key not in cached and key not in missing:
                missing[key] = text
        fresh: Mapping[bytes, np.ndarray] = {}
        if missing:
            vectors = self.encoder.encode_documents(
                list(missing.values()), batch_size=batch_size, show_progress=show_progress
            )
            fresh = dict(zip(missing.keys(), np.asarray(vectors, dtype=np.float32), strict=True))
            self.cache.put_many(space, fresh.items())
        self.hits += sum(1 for key in keys if key in cached)
        self.misses += len(missing)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            out[row] = cached[key] if key in cached else fresh[key]
        return out

    def describe(self) -> dict[str, Any]:
        """The wrapped encoder's description (the cache does not change the embedding space)."""
        return self.encoder.describe()

    @property
    def max_seq_length(self) -> int | None:
        """The wrapped encoder's; setting it is refused there, not kept here to no effect."""
        return getattr(self.encoder, "max_seq_length", None)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.encoder.max_seq_length = value  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # Reached only for attributes not set in __init__ (e.g. fast_tokenizer).
        if name == "encoder":
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {self.cache!r})"
