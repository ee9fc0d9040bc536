"""Caches under the per-user folder are verified or rebuilt: embedding vectors, ONNX exports, int8 copies."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import lock_held_elsewhere

import ragroute.encode.resolve as resolve
from ragroute.encode import onnx_export, onnx_quantize
from ragroute.encode.cache import CachedEncoder, CacheWarning, EmbeddingCache
from ragroute.encode.onnx_session import FP32_FILE, META_FILE, file_digests, lock_file, write_meta
from ragroute.encode.resolve import ResolvedModel
from ragroute.errors import RagrouteError

TEXTS = [f"passage {i} about telescopes and bread" for i in range(12)]


def _cached(tmp_path, hashing_encoder) -> tuple[CachedEncoder, np.ndarray]:
    encoder = CachedEncoder(hashing_encoder, EmbeddingCache.in_dir(tmp_path))
    return encoder, encoder.encode_documents(TEXTS)


def test_a_flipped_bit_in_a_cached_vector_is_never_used(tmp_path, hashing_encoder):
    encoder, expected = _cached(tmp_path, hashing_encoder)
    db = sqlite3.connect(tmp_path / "embeddings.sqlite")
    key, blob = db.execute("SELECT key, vec FROM embeddings LIMIT 1").fetchone()
    flipped = bytearray(blob)
    flipped[5] ^= 0x10
    db.execute("UPDATE embeddings SET vec = ? WHERE key = ?", (bytes(flipped), key))
    db.commit()
    again = CachedEncoder(hashing_encoder, EmbeddingCache.in_dir(tmp_path))
    with pytest.warns(CacheWarning, match="1 cached vectors failed their checksum"):
        got = again.encode_documents(TEXTS)
    np.testing.assert_array_equal(got, expected)
    assert (again.hits, again.misses) == (len(TEXTS) - 1, 1)
    repaired = CachedEncoder(hashing_encoder, EmbeddingCache.in_dir(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(repaired.encode_documents(TEXTS), expected)
    assert repaired.misses == 0


def test_rows_without_a_digest_are_encoded_again(tmp_path, hashing_encoder):
    _encoder, expected = _cached(tmp_path, hashing_encoder)
    db = sqlite3.connect(tmp_path / "embeddings.sqlite")
    db.execute("UPDATE embeddings SET digest = NULL")  # rows of a ragroute without digests
    db.commit()
    again = CachedEncoder(hashing_encoder, EmbeddingCache.in_dir(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(again.encode_documents(TEXTS), expected)
    assert again.misses == len(TEXTS)


def test_bit_flips_in_the_cache_file_give_right_vectors_or_a_one_line_error(tmp_path, hashing_encoder):
    _encoder, expected = _cached(tmp_path, hashing_encoder)
    path = tmp_path / "embeddings.sqlite"
    original = path.read_bytes()
    rng = random.Random(3)
    outcomes = {"right": 0, "error": 0}
    for position in rng.sample(range(len(original)), 40):
        data = bytearray(original)
        data[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        for extra in tmp_path.glob("embeddings.sqlite-*"):
            extra.unlink()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CacheWarning)
                got = CachedEncoder(hashing_encoder, EmbeddingCache.in_dir(tmp_path)).encode_documents(TEXTS)
        except RagrouteError as exc:
            assert "\n" not in str(exc) and "embeddings.sqlite" in str(exc)
            outcomes["error"] += 1
            continue
        np.testing.assert_array_equal(got, expected)  # never a wrong vector
        outcomes["right"] += 1
    assert sum(outcomes.values()) == 40


# ---------------------------------------------------------------------- ONNX exports


def _fake_model(tmp_path: Path) -> ResolvedModel:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"weights")
    return ResolvedModel(model_id="test/fake", path=folder, requested="test/fake")


def _fake_export(resolved: ResolvedModel, layout: dict[str, Any], out: Path) -> None:
    (out / FP32_FILE).write_bytes(b"onnx graph " * 10)
    (out / "tokenizer.json").write_text("{}")
    meta = {"format": 1, "model_id": resolved.model_id, "fingerprint": resolved.fingerprint()}
    meta["weights"] = resolved.content_digest()
    meta["files"] = file_digests(out, [FP32_FILE, "tokenizer.json"])
    write_meta(out / META_FILE, meta)


def test_a_corrupt_onnx_export_is_exported_again_and_debris_is_cleaned(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(onnx_export, "_export_into", lambda *args: calls.append(1) or _fake_export(*args))
    resolved = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    target = onnx_export.ensure_export(resolved, cache)
    assert calls == [1] and (target / FP32_FILE).is_file()
    # what killed exports leave: a half-written temporary export and a moved-aside one
    (cache / f".{target.name}.tmp-dead").mkdir()
    (cache / f".{target.name}.tmp-dead" / FP32_FILE).write_bytes(b"half")
    (cache / f".{target.name}.stale.1.2").mkdir()
    (target / ".int8.abc.onnx").write_bytes(b"half an int8 model")
    assert onnx_export.ensure_export(resolved, cache) == target and calls == [1]
    assert sorted(p.name for p in cache.iterdir()) == sorted([target.name, lock_file(target).name])
    assert not list(target.glob(".int8.*"))
    # debris of a *running* export (the lock is held) is left alone
    (cache / f".{target.name}.tmp-live").mkdir()
    with lock_held_elsewhere(lock_file(target)):
        assert onnx_export.remove_export_debris(target)
        assert (cache / f".{target.name}.tmp-live").is_dir()
    assert onnx_export.remove_export_debris(target)
    assert not (cache / f".{target.name}.tmp-live").exists()
    # a flipped bit in the exported model is never used: it is exported again
    model = bytearray((target / FP32_FILE).read_bytes())
    model[3] ^= 1
    (target / FP32_FILE).write_bytes(bytes(model))
    assert onnx_export.ensure_export(resolved, cache, verify_model=False) == target and calls == [1]
    with pytest.warns(CacheWarning, match="model.onnx does not match its checksum"):
        onnx_export.ensure_export(resolved, cache)
    assert calls == [1, 1] and (target / FP32_FILE).read_bytes() == b"onnx graph " * 10


def test_an_export_without_checksums_gets_them_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "_export_into", _fake_export)
    resolved = _fake_model(tmp_path)
    target = onnx_export.ensure_export(resolved, tmp_path / "cache")
    meta = json.loads((target / META_FILE).read_text())
    recorded, weights = meta.pop("files"), meta.pop("weights")
    del meta["meta_sha256"]
    (target / META_FILE).write_text(json.dumps(meta))  # as written before exports had checksums
    monkeypatch.setattr(onnx_export, "_export_into", lambda *a: pytest.fail("must not export again"))
    assert onnx_export.ensure_export(resolved, tmp_path / "cache") == target
    meta = json.loads((target / META_FILE).read_text())
    assert meta["files"] == recorded and meta["weights"] == weights and "meta_sha256" in meta


def test_an_edited_model_folder_or_export_metadata_is_exported_again(tmp_path, monkeypatch):
    """An export is current for the model folder's contents, not its file sizes and times (an edit
    keeping both, as cp -p or rsync -a do, reused the stale export); metadata that does not match
    its own digest (pooling edited to cls) was used as it stood (until session 38)."""
    calls = []
    monkeypatch.setattr(onnx_export, "_export_into", lambda *args: calls.append(1) or _fake_export(*args))
    resolved = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    target = onnx_export.ensure_export(resolved, cache)
    weights = resolved.path / "weights.bin"
    stat = weights.stat()
    weights.write_bytes(b"WEIGHTS")  # same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time
    fresh = ResolvedModel(model_id="test/fake", path=resolved.path, requested="test/fake")
    assert fresh.fingerprint() == resolved.fingerprint()  # file times and sizes cannot tell
    monkeypatch.setattr(resolve, "_CONTENT_DIGESTS", {})  # as another process reads the folder
    assert onnx_export.ensure_export(fresh, cache) == target and calls == [1, 1]
    meta = json.loads((target / META_FILE).read_text())
    (target / META_FILE).write_text(json.dumps({**meta, "pooling": ["cls"]}))
    with pytest.warns(CacheWarning, match="does not match its checksum"):
        onnx_export.ensure_export(fresh, cache)
    assert calls == [1, 1, 1]


def test_a_corrupt_int8_model_is_quantised_again(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "_export_into", _fake_export)
    target = onnx_export.ensure_export(_fake_model(tmp_path), tmp_path / "cache")
    quantised = []

    def fake_quantize(model_dir: Path) -> Path:
        quantised.append(1)
        (model_dir / onnx_quantize.INT8_FILE).write_bytes(b"int8 graph")
        meta = json.loads((model_dir / META_FILE).read_text())
        info = {"format": 1, "fingerprint": meta["fingerprint"], "fp32_ffn_out_layers": 0}
        info.update(file_digests(model_dir, [onnx_quantize.INT8_FILE])[onnx_quantize.INT8_FILE])
        (model_dir / onnx_quantize.INT8_META_FILE).write_text(json.dumps(info))
        return model_dir / onnx_quantize.INT8_FILE

    monkeypatch.setattr(onnx_quantize, "quantize_int8", fake_quantize)
    assert not onnx_quantize.int8_ready(target)
    onnx_quantize.ensure_int8(target)
    assert quantised == [1] and onnx_quantize.int8_ready(target)
    onnx_quantize.ensure_int8(target)
    assert quantised == [1]
    (target / onnx_quantize.INT8_FILE).write_bytes(b"int8 grapH")  # same size, one bit differs
    assert not onnx_quantize.int8_ready(target)
    onnx_quantize.ensure_int8(target)
    assert quantised == [1, 1] and (target / onnx_quantize.INT8_FILE).read_bytes() == b"int8 graph"


def _unwritable_sqlite(monkeypatch) -> None:
    """SQLite as on a read-only image (or a cache folder of another user): a read-write open fails,
    a read-only URI open works (running as root, chmod alone blocks nothing)."""
    connect = sqlite3.connect

    def read_only(database, *args, **kwargs):
        if not kwargs.get("uri"):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr("ragroute.encode.cache.sqlite3.connect", read_only)


def test_a_cache_that_cannot_be_written_is_read_and_queries_still_run(tmp_path, hashing_encoder, monkeypatch):
    """Every query that encoded failed ("embedding cache ... is unusable") when the cache folder was
    read-only or another user's, even with every vector already in it."""
    built, vectors = _cached(tmp_path, hashing_encoder)
    built.cache.close()
    _unwritable_sqlite(monkeypatch)
    with pytest.warns(
        CacheWarning, match=r"cannot be written \(attempt to write a readonly database\): its vectors"
    ):
        cache = EmbeddingCache.in_dir(tmp_path)
    encoder = CachedEncoder(hashing_encoder, cache)
    again = encoder.encode_documents(TEXTS[:3] + ["a text never cached"])
    assert cache.mode == "read-only" and encoder.hits == 3 and encoder.misses == 1
    np.testing.assert_array_equal(again[:3], vectors[:3])
    assert cache.put_many("space", [(b"k", np.ones(4))]) == 0 and cache.count() == len(TEXTS)
    with pytest.raises(RagrouteError, match="read-only here: nothing to clear"):
        cache.clear()


def test_a_cache_whose_disk_fills_up_while_storing_costs_speed_not_the_build(
    tmp_path, hashing_encoder, monkeypatch
):
    """SQLite says "database or disk is full" (SQLITE_FULL, here through its page limit) when the
    vectors of a build are stored: until session 53 the build failed ("embedding cache ... is
    unusable: database or disk is full"), every text encoded for nothing. Now the vectors are
    used, not stored, said once; the cached ones are still read."""
    from ragroute.cli.testing import invoke
    from ragroute.reliability.faults import tiny_encoders

    built, vectors = _cached(tmp_path, hashing_encoder)
    cache = built.cache
    pages = cache._conn.execute("PRAGMA page_count").fetchone()[0]
    cache._conn.execute(f"PRAGMA max_page_count = {pages}")
    more = [f"a long new passage {i} " * 40 for i in range(50)]
    with pytest.warns(CacheWarning, match=r"cannot store vectors \(database or disk is full\)"):
        got = built.encode_documents(TEXTS[:3] + more)
    np.testing.assert_array_equal(got, hashing_encoder.encode_documents(TEXTS[:3] + more))
    assert cache.mode == "read-only" and cache.count() == len(TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        np.testing.assert_array_equal(built.encode_documents(TEXTS + more[:1])[:-1], vectors)
    # through the command line: the build is published, with a warning
    opened = EmbeddingCache._open

    def full_disk(self):
        opened(self)
        self._conn.execute(f"PRAGMA max_page_count = {self._conn.execute('PRAGMA page_count').fetchone()[0]}")

    monkeypatch.setattr(EmbeddingCache, "_open", full_disk)
    corpus = tmp_path / "notes"
    corpus.mkdir()
    for i, text in enumerate(more):
        (corpus / f"{i}.md").write_text(text)
    with tiny_encoders():
        outcome = invoke(["build", str(corpus), "--out", str(tmp_path / "idx"), "--method", "dense",
                          "--cache-dir", str(tmp_path / "other")])  # fmt: skip
    assert outcome.exit_code == 0, (outcome.stderr, outcome.traceback)
    assert "cannot store vectors (database or disk is full)" in outcome.stderr


def test_a_cache_that_cannot_be_opened_at_all_is_left_out(tmp_path, hashing_encoder, monkeypatch):
    _unwritable_sqlite(monkeypatch)
    with pytest.warns(CacheWarning, match="cannot be used .*: encoding without it"):
        cache = EmbeddingCache.in_dir(tmp_path / "none")
    encoder = CachedEncoder(hashing_encoder, cache)
    np.testing.assert_array_equal(encoder.encode_documents(TEXTS), hashing_encoder.encode_documents(TEXTS))
    assert cache.mode == "off" and encoder.misses == len(TEXTS) and cache.count() == 0


def test_no_home_or_an_unwritable_cache_folder_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    """A uid with no passwd entry (OpenShift) got a RuntimeError traceback from Path.home(); a
    read-only home, "error: /nonexistent: Permission denied" (or an index blamed for it)."""
    from ragroute.encode.resolve import default_cache_dir

    monkeypatch.delenv("RAGROUTE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(
        RagrouteError, match=r"^no cache folder: this user has no home directory .*RAGROUTE_CACHE"
    ):
        default_cache_dir(create=True)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("RAGROUTE_CACHE", str(blocked / "cache"))
    with pytest.raises(RagrouteError, match=r"^cannot create the cache folder .*; set RAGROUTE_CACHE"):
        default_cache_dir(create=True)


def test_a_closed_cache_is_a_one_line_error_also_for_an_encode_in_flight(tmp_path, hashing_encoder):
    """close() while a thread encoded through the cache: that thread failed with ``'NoneType' object
    has no attribute 'execute'``; an encode, count() or clear() after it with a bare AssertionError
    (count() answered 0)."""
    cache = EmbeddingCache.in_dir(tmp_path)
    encoder = CachedEncoder(hashing_encoder, cache)
    encoder.encode_documents(["printer driver"])
    plain = hashing_encoder.encode_documents

    def closed_meanwhile(texts, **kwargs):  # another thread closes the cache between read and write
        cache.close()
        return plain(texts, **kwargs)

    hashing_encoder.encode_documents = closed_meanwhile
    try:
        with pytest.raises(RagrouteError, match="embedding cache .* is closed"):
            encoder.encode_documents(["vpn password"])
    finally:
        hashing_encoder.encode_documents = plain
    for use in (lambda: encoder.encode_documents(["printer driver"]), cache.count, cache.clear):
        with pytest.raises(RagrouteError, match="embedding cache .* is closed"):
            use()
    with EmbeddingCache.in_dir(tmp_path) as again:  # open again: the stored vector is there
        assert again.count() == 1


def test_a_cached_vector_whose_record_lost_its_blob_type_is_encoded_again(tmp_path, hashing_encoder):
    """A flipped bit in a record header can make a vector read back as a number or text: until
    session 49 that was a bare TypeError; now the row fails like a corrupt one and is replaced."""
    _encoder, expected = _cached(tmp_path, hashing_encoder)
    db = sqlite3.connect(tmp_path / "embeddings.sqlite")
    (key,) = db.execute("SELECT key FROM embeddings LIMIT 1").fetchone()
    db.execute("UPDATE embeddings SET vec = 7 WHERE key = ?", (key,))
    db.commit()
    db.close()
    again = CachedEncoder(hashing_encoder, EmbeddingCache.in_dir(tmp_path))
    with pytest.warns(CacheWarning, match="1 cached vectors failed their checksum"):
        np.testing.assert_array_equal(again.encode_documents(TEXTS), expected)
    assert again.misses == 1
    repaired = CachedEncoder(hashing_encoder, EmbeddingCache.in_dir(tmp_path))
    np.testing.assert_array_equal(repaired.encode_documents(TEXTS), expected)
    assert repaired.misses == 0


def test_a_schema_damaged_into_non_utf8_text_is_the_one_line_error(tmp_path, hashing_encoder):
    """SQLite's message for a damaged schema quotes its text; bytes that are not UTF-8 there made
    Python's sqlite3 raise a bare UnicodeDecodeError (until session 49), not the one-line error."""
    _cached(tmp_path, hashing_encoder)[0].cache.close()  # its rows and schema into the file
    path = tmp_path / "embeddings.sqlite"
    data = bytearray(path.read_bytes())
    data[data.index(b"CREATE TABLE embeddings") + len("CREATE TAB")] ^= 0x80  # "L" becomes 0xCC
    path.write_bytes(bytes(data))
    for extra in tmp_path.glob("embeddings.sqlite-*"):
        extra.unlink()
    with pytest.raises(RagrouteError, match=r"embeddings\.sqlite is corrupt .*delete it") as info:
        EmbeddingCache.in_dir(tmp_path)
    assert "\n" not in str(info.value)
