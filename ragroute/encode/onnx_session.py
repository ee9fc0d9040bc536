"""Running an ONNX export with onnxruntime: the export folder's files and the inference loop.

An export folder (see :mod:`ragroute.encode.onnx_export`) holds ``model.onnx``,
``tokenizer.json`` and ``ragroute_onnx.json`` (:data:`FP32_FILE`,
:data:`TOKENIZER_FILE`, :data:`META_FILE`). :class:`Runner` runs one of its graphs
in an onnxruntime CPU session (:func:`make_session`): it tokenises, batches texts
of similar length, pools the token states in numpy like sentence-transformers
(:func:`pool`) and L2-normalises. :func:`agreement` scores a graph against
reference embeddings of :data:`PROBE_TEXTS`, the check that export and int8
quantisation apply to what they write; :func:`umask_mode` and :func:`quiet` are
the file and logging helpers both of those steps share.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.cpus import usable_cpus
from ragroute.encode._common import l2_normalize
from ragroute.errors import RagrouteError

FORMAT_VERSION = 1
META_FILE = "ragroute_onnx.json"
FP32_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"

MAX_BATCH_TOKENS = 2048
"""fp32: a batch holds at most ``batch_size`` texts and at most this many (padded) tokens.

Small batches of similar length beat big ones on CPU (the activations stay in
cache): on 2 cores, 256-token passages ran fastest 4-8 to a batch.
"""

PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "What are the effects of maternal glucose levels on the fetus?",
    "Boundary layer flow over a flat plate at supersonic speeds was measured in the wind tunnel.",
    "hi",
    "",
    "Émile Zola wrote « J'accuse » in 1898 — über naïve café, 東京 and Ωmega.",
    "SELECT * FROM users WHERE id = 42; -- numbers 3.14159, 2.71828 and 1e-9",
    "correlation between maternal and fetal plasma levels of glucose and free fatty acids . " * 30,
    "Retrieval-augmented generation decides when to look things up.",
    "A B C D E F G",
)


def umask_mode(mode: int) -> int:
    """``mode`` minus the process umask (mkdtemp/mkstemp create 0700/0600 entries)."""
    umask = 0o022
    with contextlib.suppress(OSError, ValueError, IndexError):  # Linux: read it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return mode & ~umask


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter/optimiser chatter (tracer warnings, fusion logs)."""
    loggers = [logging.getLogger(name) for name in ("onnxruntime", "onnx", "root", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def file_digests(folder: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"bytes", "sha256"}}`` for files of an export folder (recorded in its metadata)."""
    from ragroute.store.manifest import sha256_file

    return {
        name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
        for name in names
    }


def first_bad_file(folder: Path, files: dict[str, Any]) -> str | None:
    """The first of ``files`` (as :func:`file_digests` records them) missing or changed in ``folder``."""
    from ragroute.store.manifest import sha256_file

    for name, info in files.items():
        path = folder / name
        if not isinstance(info, dict) or not path.is_file() or path.stat().st_size != info.get("bytes"):
            return name
        if sha256_file(path) != info.get("sha256"):
            return name
    return None


def lock_file(model_dir: Path) -> Path:
    """The lock file serialising exports and quantisations of the export folder ``model_dir``."""
    return model_dir.parent / f".{model_dir.name}.lock"


#: the key under which a metadata file holds the digest of the rest of itself
META_DIGEST = "meta_sha256"


def _meta_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != META_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Replace an export's metadata file atomically, with the digest of its content in it (the
    file says how the vectors are pooled and prompted: an edited one was used as it stood until
    session 38)."""
    meta[META_DIGEST] = _meta_digest(meta)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def read_meta(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (an export's metadata), or ``None`` when it is missing, unreadable
    or does not match the digest it holds (one written before digests has none: read as it is)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if META_DIGEST in meta and meta[META_DIGEST] != _meta_digest(meta):
        return None
    return meta


def make_session(model_file: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session: all graph optimisations, intra-op threads = cores, and worker
    threads that sleep instead of spinning between runs.

    onnxruntime's default spin-wait keeps a worker busy after each run, taking a core from whatever
    the query does next: a skill route (int8 ONNX query encoder, then a torch cross-encoder over 20
    candidates) took 144 ms with spinning and 97 ms without on 2 cores; one query's encoding costs
    4.9 instead of 3.8 ms.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads or usable_cpus())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def pool(hidden: np.ndarray, mask: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Pool ``(batch, seq, dim)`` token states under a right-padded ``mask`` like sentence-transformers."""
    hidden = hidden.astype(np.float32, copy=False)
    m = mask.astype(np.float32)[:, :, None]
    lengths = mask.sum(axis=1).astype(np.int64)
    parts: list[np.ndarray] = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(np.where(m > 0, hidden, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            summed = (hidden * m).sum(axis=1)
            count = np.maximum(m.sum(axis=1), 1e-9)
            parts.append(summed / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            weights = m * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
            parts.append((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            parts.append(hidden[np.arange(hidden.shape[0]), np.maximum(lengths - 1, 0)])
        else:  # pragma: no cover - read_layout rejects unknown modes
            raise RagrouteError(f"unsupported pooling mode {mode!r}")
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


class Runner:
    """Tokenise, batch by length, run a session, pool and normalise."""

    def __init__(self, model_dir: Path, meta: dict[str, Any], model_file: Path, threads: int | None) -> None:
        from tokenizers import Tokenizer

        self.meta = meta
        self.tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        max_len = int(meta["max_seq_length"])
        if max_len > 0:
            self.tokenizer.enable_truncation(max_length=max_len)
        else:
            self.tokenizer.no_truncation()
        self.pad_id = int(meta.get("pad_id") or 0)
        self.max_tokens = MAX_BATCH_TOKENS
        self.max_texts: int | None = None  # cap on texts per session call, whatever batch_size says
        self.pooling = list(meta["pooling"])
        self.session = make_session(model_file, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def run_batch(self, encodings: Sequence[Any]) -> np.ndarray:
        lengths = [len(e.ids) for e in encodings]
        width = max(1, *lengths)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, (enc, n) in enumerate(zip(encodings, lengths, strict=True)):
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feed_all = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {name: feed_all[name] for name in self.inputs}
        hidden = self.session.run([self.output], feed)[0]
        return pool(hidden, mask, self.pooling)

    def encode(self, texts: list[str], batch_size: int, progress: bool, dim: int) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="Encoding", unit="text")
        try:
            # Tokenise a window at a time, then run the window longest-first so that
            # every batch holds texts of similar length (little padding).
            window = max(batch_size * 32, 2048)
            for start in range(0, len(texts), window):
                encodings = self.tokenizer.encode_batch(texts[start : start + window])
                lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
                order = np.argsort(-lengths, kind="stable")
                b = 0
                while b < len(order):
                    # Longest first, so the first text sets the padded width of the batch.
                    count = min(batch_size, max(1, self.max_tokens // max(1, int(lengths[order[b]]))))
                    if self.max_texts:
                        count = min(count, self.max_texts)
                    idx = order[b : b + count]
                    out[start + idx] = self.run_batch([encodings[i] for i in idx])
                    b += len(idx)
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(out)


def agreement(
    model_dir: Path,
    meta: dict[str, Any],
    model_file: Path,
    reference: np.ndarray,
    max_texts: int | None = None,
) -> float:
    """Worst cosine between ``model_file``'s probe embeddings and ``reference``."""
    runner = Runner(model_dir, meta, model_file, threads=None)
    runner.max_texts = max_texts
    got = runner.encode(list(PROBE_TEXTS), batch_size=4, progress=False, dim=int(meta["dim"]))
    return float(np.min(np.sum(got * l2_normalize(reference), axis=1)))
