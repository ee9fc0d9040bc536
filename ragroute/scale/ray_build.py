"""Distributed index builds on Ray (``ragroute build --engine ray``; extra ``ragroute[ray]``).

The corpus is cut into consecutive shards; a pool of Ray actors (one CPU and one CPU thread each,
the encoder loaded once per actor) encodes the shards and counts their BM25 terms in parallel; the
driver assembles the same :class:`~ragroute.index.local.LocalIndex` the single-process
:func:`ragroute.index.build.build_index` produces: the same documents in the same order, the
vectors added in one call (so an IVF-PQ index trains on the same sample), and the BM25 scorer
fitted from the shards' merged term counts (:func:`ragroute.index.bm25_counts.merge_term_counts`:
document frequencies and lengths summed over shards), bit for bit the single-process scorer.

Kinds: ``bm25``, ``dense`` and ``hybrid``. Ray is imported only here, and only when a build runs.
Workers must be able to import ragroute (on a cluster: installed on every node) and construct the
encoder: pass the encoder itself when it pickles, or ``encoder_factory``, a picklable callable
that loads it on the worker (the CLI passes :func:`ragroute.encode.load_encoder` with the model
name, the resolved backend, ``threads=1`` and no embedding cache).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from ragroute.cpus import usable_cpus
from ragroute.encode.base import Encoder
from ragroute.encode.truncation import warn_truncated
from ragroute.errors import RagrouteError, check_batch, check_k
from ragroute.index.bm25_counts import TermCounts, count_terms, merge_term_counts
from ragroute.index.bm25_scoring import BM25Scorer
from ragroute.index.bm25_tokenize import TokenizerConfig, tokenize_many
from ragroute.index.build import check_documents
from ragroute.index.dense import DenseIndex, DenseParams
from ragroute.index.docstore import DocumentStore, check_have_text
from ragroute.index.hybrid import FusionParams, HybridIndex
from ragroute.index.lexical import BM25Index, BM25Params
from ragroute.index.local import LocalIndex
from ragroute.types import Document

__all__ = [
    "ENGINES",
    "RAY_KINDS",
    "build_graph_ray",
    "build_index_ray",
    "encode_on_ray",
    "graphs_identical",
    "indexes_identical",
    "measure_build_throughput",
    "ray_session",
]

#: build engines of ``ragroute build --engine``
ENGINES = ("local", "ray")
#: index kinds a Ray build makes
RAY_KINDS = ("bm25", "dense", "hybrid")
_T = TypeVar("_T")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROBE_TIMEOUT_S = 5.0
_START_TIMEOUT_S = 300.0
"""Seconds the workers may take to be ready (start, load the encoder) before the build stops."""
_MAX_SHARD = 4096
_SHARDS_PER_WORKER = 4


def _ray() -> Any:
    """Import Ray, or raise a one-line :class:`RagrouteError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RagrouteError("--engine ray needs Ray: pip install 'ragroute[ray]'") from None
    return ray


def _one_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def _ray_failure(ray: Any, exc: BaseException) -> str:
    """One line for a Ray failure. A worker's own exception comes wrapped in a ``RayTaskError``
    whose message starts with Ray's ``ray::_ShardWorker.run() (pid=..., ip=..., actor_id=...)``
    header, in terminal colours: until session 44 that header was all the one line said (an
    encoder that could not load on a worker, an encoding error), never the error itself."""
    cause: BaseException | None = exc
    while isinstance(cause, ray.exceptions.RayTaskError) and isinstance(cause.cause, BaseException):
        cause = cause.cause
    if cause is exc or cause is None:
        if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed:
            # the worker could not even start (its creation task's traceback ends in the error:
            # ragroute, the encoder factory's module... missing on that node)
            lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
            return f"a worker could not start: {lines[-1]}" if lines else _one_line(exc)
        return _one_line(exc)
    if isinstance(cause, RagrouteError):
        return _one_line(cause)
    return f"{type(cause).__name__}: {_one_line(cause)}"


def _probe(address: str) -> None:
    """Refuse, within seconds, a ``host:port`` Ray address nothing listens on (``ray.init`` would
    retry for minutes)."""
    target = address.removeprefix("ray://")
    if address in ("auto", "local") or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise RagrouteError(f"Ray address {address!r} is not HOST:PORT") from None
    try:
        with socket.create_connection((host.strip("[]"), number), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RagrouteError(f"cannot reach the Ray cluster at {address}: {reason}") from None


@contextlib.contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator[float]:
    """Make Ray ready and yield the seconds that took (0.0 when Ray was already initialised).

    With ``address`` it joins that cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``);
    without, it starts a new Ray instance on this machine with ``num_cpus=workers`` (even where a
    cluster already runs here: join that one with ``address="auto"``). Ray is shut down on exit
    only if this call started it. Unreachable clusters and a missing Ray raise
    :class:`RagrouteError` (one line).
    """
    ray = _ray()
    start = time.perf_counter()
    if address:  # checked even when Ray is up, so a wrong address is never silently ignored
        _probe(address)
    if ray.is_initialized():
        if address:  # until session 41 the address was probed, then silently not used
            _warn_other_address(ray, address)
        yield 0.0
        return
    try:
        if address:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        else:  # "local": a new instance even where a cluster runs (joining it failed until session 41)
            ray.init(
                address="local",
                num_cpus=workers or usable_cpus(),
                include_dashboard=False,
                logging_level="WARNING",
                log_to_driver=False,
            )
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
        with contextlib.suppress(Exception):
            ray.shutdown()
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RagrouteError(f"cannot start {where}: {_one_line(exc)}") from None
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()


def _warn_other_address(ray: Any, address: str) -> None:
    """Warn that Ray, already initialised in this process, is used rather than ``address`` (unless
    it is that cluster)."""
    try:
        current = str(ray.get_runtime_context().gcs_address)
    except Exception:
        current = "another address"
    if address.removeprefix("ray://") == current:
        return
    warnings.warn(
        f"Ray is already initialised in this process (at {current}): the work runs there, not at "
        f"{address} (call ray.shutdown() first to use {address})",
        UserWarning,
        stacklevel=4,
    )


class _ShardWorker:
    """One Ray actor: loads the encoder once, then encodes, counts or extracts the shards it is given."""

    def __init__(
        self,
        encoder: Any,
        factory: Callable[[], Encoder] | None,
        tokenizer: TokenizerConfig,
        extractor: Any = None,
    ):
        os.environ["OMP_NUM_THREADS"] = "1"
        self.factory = factory
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.extractor = extractor

    def ready(self, needs_encoder: bool) -> dict[str, Any] | None:
        """Load the encoder now (so model loading is not counted as build time); its description
        (``describe()``, which the driver compares with its own encoder's), None without one."""
        if needs_encoder and self.encoder is None and self.factory is not None:
            self.encoder = self.factory()
        if "torch" in sys.modules:  # one CPU thread per worker
            sys.modules["torch"].set_num_threads(1)
        if not needs_encoder or self.encoder is None:
            return None
        return dict(self.encoder.describe())

    def run(self, texts: list[str], encode: bool, count: bool) -> tuple[np.ndarray | None, TermCounts | None]:
        """The shard's vectors (when ``encode``) and BM25 term counts (when ``count``)."""
        vectors = None
        if encode:
            self.ready(True)
            vectors = np.asarray(self.encoder.encode_documents(texts, show_progress=False), dtype=np.float32)
        counts = count_terms(tokenize_many(texts, self.tokenizer)) if count else None
        return vectors, counts

    def encode(self, texts: list[str], queries: bool) -> np.ndarray:
        """The shard's query (``queries``) or document vectors."""
        self.ready(True)
        encode = self.encoder.encode_queries if queries else self.encoder.encode_documents
        return np.asarray(encode(texts, show_progress=False), dtype=np.float32)

    def extract(self, documents: list[Document]) -> list[Any]:
        """The graph extractor's extractions of the shard's documents, in order."""
        from ragroute.graph.build import extract_passages

        return extract_passages(documents, self.extractor, show_progress=False)


def _shards(texts: Sequence[_T], workers: int, shard_size: int | None) -> list[Sequence[_T]]:
    size = shard_size or max(1, min(_MAX_SHARD, math.ceil(len(texts) / (workers * _SHARDS_PER_WORKER))))
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def _encoder_payload(ray: Any, encoder: Encoder | None, factory: Callable[[], Encoder] | None) -> Any:
    """What each worker receives: nothing when a factory builds the encoder there, else the encoder
    itself (checked to pickle, so the failure names the fix)."""
    if factory is not None:
        try:
            ray.cloudpickle.dumps(factory)
        except Exception as exc:  # until session 48 Ray's multi-line report of the actor's arguments
            name = getattr(factory, "__qualname__", type(factory).__name__)
            raise RagrouteError(
                f"the encoder_factory ({name}) cannot be sent to Ray workers ({_one_line(exc)}); "
                "pass a picklable function that loads the encoder (defined at module level)"
            ) from None
        return None
    if encoder is None:
        return None
    try:
        ray.cloudpickle.dumps(encoder)
    except Exception as exc:
        raise RagrouteError(
            f"the encoder ({type(encoder).__name__}) cannot be sent to Ray workers ({_one_line(exc)}); "
            "pass encoder_factory, a picklable function that loads it"
        ) from None
    return ray.put(encoder)


@contextlib.contextmanager
def _actors(
    ray: Any,
    workers: int,
    encoder: Encoder | None,
    factory: Callable[[], Encoder] | None,
    *,
    encode: bool = True,
    tokenizer: TokenizerConfig | None = None,
    extractor: Any = None,
    timings: dict[str, float],
) -> Iterator[list[Any]]:
    """``workers`` ready :class:`_ShardWorker` actors (as :func:`_ray_job` counted them), their
    encoder loaded when ``encode``; ``timings["workers_start_s"]`` is how long that took. Workers not
    ready within :data:`_START_TIMEOUT_S` (the cluster's CPUs taken by other work) are a one-line
    error. The actors are killed when the block ends, however it ends."""
    start = time.perf_counter()
    payload = _encoder_payload(ray, encoder, factory) if encode else None
    remote = ray.remote(num_cpus=1, max_restarts=0)(_ShardWorker)
    made = [
        remote.remote(payload, factory if encode else None, tokenizer or TokenizerConfig(), extractor)
        for _ in range(workers)
    ]
    try:
        pending = [actor.ready.remote(encode) for actor in made]
        done, waiting = ray.wait(pending, num_returns=len(pending), timeout=_START_TIMEOUT_S)
        if waiting:  # until session 41 the build waited for them forever, saying nothing
            free = ray.available_resources().get("CPU", 0)
            raise RagrouteError(
                f"{len(waiting)} of {workers} Ray workers were not ready after {_START_TIMEOUT_S:.0f} s "
                f"(the cluster has {free:g} CPUs free, and each worker takes one): use fewer --workers, "
                "or free the cluster's CPUs"
            )
        described = ray.get(done)
        if encode and encoder is not None:
            _check_same_encoder(encoder, described)
        timings["workers_start_s"] = time.perf_counter() - start
        yield made
    finally:
        for actor in made:
            with contextlib.suppress(Exception):
                ray.kill(actor)


def _check_same_encoder(encoder: Encoder, described: Sequence[dict[str, Any] | None]) -> None:
    """Refuse, in one line, workers whose encoder describes itself otherwise than the driver's (another
    model, weights, width or length limit: a factory loading another model, a node whose cache holds
    another revision): their vectors would be searched with the driver's query vectors. Until
    session 48 such a build answered, silently wrong."""
    ours = dict(encoder.describe())
    for theirs in described:
        if theirs is None or theirs == ours:
            continue
        keys = [key for key in {**ours, **theirs} if ours.get(key) != theirs.get(key)]
        differ = ", ".join(f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here" for key in keys)
        raise RagrouteError(
            f"a Ray worker's encoder is not this process's ({differ}): its vectors would not match "
            "the queries; load the same model on every node"
        )


def _map(
    actors: list[Any],
    call: Callable[[Any, Any], Any],
    shards: Sequence[Any],
    show_progress: bool | None = False,
    what: str = "shards",
) -> list[Any]:
    """``call(actor, shard)`` (a remote call) over ``shards`` on the actors; results in shard order,
    counted on a progress bar (``show_progress``: as :func:`~ragroute.encode._common.want_progress`
    resolves it for the shards' items; until session 41 ``--progress`` showed nothing on Ray)."""
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    from ragroute.encode._common import want_progress

    shards = list(shards)
    items = sum(len(shard) for shard in shards)
    bar = tqdm(total=items, desc=what, unit="doc", disable=not want_progress(show_progress, items))
    out = []
    with bar:
        for shard, result in zip(shards, ActorPool(actors).map(call, shards)):
            out.append(result)
            bar.update(len(shard))
    return out


@contextlib.contextmanager
def _ray_job(
    address: str | None,
    workers: int | None,
    timings: dict[str, float] | None,
    failed: str,
    shards: int,
) -> Iterator[tuple[Any, dict[str, float], int]]:
    """Ray ready for one job (``ray_session``), with ``timings["startup_s"]`` set: yields the ``ray``
    module, the timings dict and how many workers to start (:func:`_worker_count`; the work is at
    most ``shards`` shards). A Ray failure inside (a worker killed, a cluster lost) becomes the
    one-line :class:`RagrouteError` ``"<failed>: ..."``."""
    # a whole number, numpy's included (until session 49 numpy.int64(2) was refused as "--workers
    # must be at least 1, got np.int64(2)", and 2.5 as if it were below 1)
    workers = None if workers is None else check_k(workers, "--workers")
    ray = _ray()
    out = timings if timings is not None else {}
    shards = max(1, shards)
    # more workers than shards would each load the encoder for nothing, and a local instance given
    # more CPUs than the machine has runs them all on its cores (until session 41: 12 actors, 3.1 GB,
    # for 3 documents on 2 CPUs)
    limits = [(shards, f"the {shards:,} shards of this work")]
    if not address and not ray.is_initialized():
        cpus = usable_cpus()
        limits.append((cpus, f"this machine's {cpus} CPUs (a local Ray instance)"))
    limit, why = min(limits)
    if workers is not None and workers > limit:
        _note(f"--workers {workers} is more than {why}: {limit} started")
        workers = limit
    with ray_session(address, workers) as startup:
        out["startup_s"] = startup
        try:
            yield ray, out, _worker_count(ray, workers, shards, address)
        except ray.exceptions.RayError as exc:
            raise RagrouteError(f"{failed}: {_ray_failure(ray, exc)}") from None


def _note(message: str) -> None:
    """A note on stderr (``warning: ...`` from the command line)."""
    warnings.warn(message, UserWarning, stacklevel=4)


def _worker_count(ray: Any, workers: int | None, shards: int, address: str | None) -> int:
    """``workers`` (default: one per CPU of the cluster, at most one per shard), refused in one line
    when the cluster has fewer CPUs: each worker takes one, so the rest would wait forever (until
    session 41 they did, silently)."""
    total = int(ray.cluster_resources().get("CPU", 0))
    if workers is None:
        return max(1, min(total, shards))
    if workers > total:
        where = f"the Ray cluster at {address}" if address else "the Ray instance"
        raise RagrouteError(
            f"--workers {workers} is more than the {total} CPUs of {where}: each worker takes one "
            f"CPU, so the build would wait for the rest forever; use --workers {max(total, 1)} or fewer"
        )
    return workers


def _encode_shards(actors: list[Any], texts: Sequence[str], queries: bool) -> list[np.ndarray]:
    """The vectors of ``texts`` encoded in shards on the actors, one array per shard, in order."""
    shards = _shards(list(texts), len(actors), None)
    return _map(actors, lambda actor, shard: actor.encode.remote(list(shard), queries), shards)


def encode_on_ray(
    texts: Sequence[str],
    *,
    encoder: Encoder | None = None,
    encoder_factory: Callable[[], Encoder] | None = None,
    queries: bool = False,
    workers: int | None = None,
    address: str | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """The vectors of ``texts`` (document vectors, or query vectors with ``queries``), encoded in
    shards by ``workers`` Ray actors and returned in order: what an expert's training data needs
    (``ragroute expert train --engine ray``). Equal to the encoder's own to 1e-5 (batching differs).

    No texts return at once, without Ray or a worker: an array of shape ``(0, encoder.dim)``, or
    ``(0, 0)`` when only ``encoder_factory`` is given (its width is not known without loading the
    encoder); ``timings`` then reads 0 for each step."""
    texts = check_batch(texts, "texts")  # a bare string was encoded one character at a time
    if encoder is None and encoder_factory is None:
        raise RagrouteError("encode_on_ray needs an encoder or an encoder_factory")
    if not texts:
        # until session 44 Ray started and a worker loaded the encoder to encode nothing, and the
        # result was (0, 0) even when the encoder's width was known
        if timings is not None:
            timings.update(startup_s=0.0, workers_start_s=0.0, build_s=0.0)
        return np.zeros((0, int(getattr(encoder, "dim", 0))), dtype=np.float32)
    with (
        _ray_job(address, workers, timings, "Ray encoding failed", len(texts)) as (ray, out, count),
        _actors(ray, count, encoder, encoder_factory, timings=out) as actors,
    ):
        start = time.perf_counter()
        parts = _encode_shards(actors, texts, queries)
        out["build_s"] = time.perf_counter() - start
    dim = getattr(encoder, "dim", 0)
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), dtype=np.float32)


def build_index_ray(
    documents: Sequence[Document],
    method: str = "hybrid",
    *,
    encoder: Encoder | None = None,
    encoder_factory: Callable[[], Encoder] | None = None,
    bm25_params: BM25Params | None = None,
    dense_params: DenseParams | None = None,
    fusion: FusionParams | None = None,
    name: str = "",
    workers: int | None = None,
    address: str | None = None,
    shard_size: int | None = None,
    timings: dict[str, float] | None = None,
    show_progress: bool | None = None,
) -> LocalIndex:
    """Build what :func:`ragroute.index.build.build_index` builds, with the work spread over
    ``workers`` Ray actors (default: one per CPU of the cluster or of this machine).

    ``method``: ``bm25``, ``dense`` or ``hybrid``. ``encoder`` is the driver's encoder (recorded in
    the manifest, used for queries); workers get a copy of it, or call ``encoder_factory``.
    Ray is started (or the cluster at ``address`` joined) unless it is already initialised.
    ``timings``, when given, receives ``startup_s`` (Ray), ``workers_start_s`` (actors and their
    models), ``build_s`` (sharded work and assembly). ``show_progress``: a bar over the shards'
    documents as they come back (None: as the encoders decide, e.g. ``--progress``). Any Ray
    failure (a worker killed, a cluster lost) raises a one-line :class:`RagrouteError`; nothing is written.
    """
    if method not in RAY_KINDS:
        raise RagrouteError(f"--engine ray builds {', '.join(RAY_KINDS)} indexes, not {method}")
    docs = check_documents(documents)
    # until session 44 a negative size cut no shard at all ("need at least one array to concatenate");
    # a numpy integer is a size (until session 49 it was refused as "must be at least 1")
    shard_size = None if shard_size is None else check_k(shard_size, "shard_size")
    encode = method in ("dense", "hybrid")
    count = method in ("bm25", "hybrid")
    if encode and encoder is None:
        raise RagrouteError(f"a {method} index needs an encoder")
    # refused before any work, as build_index refuses them (until session 41 Ray indexed them)
    check_have_text(docs)
    if encode:
        warn_truncated(docs, encoder)
    bm25 = bm25_params or BM25Params()
    shards = math.ceil(len(docs) / shard_size) if shard_size else len(docs)
    with _ray_job(address, workers, timings, "Ray build failed", shards) as (ray, out, started):
        return _build(ray, docs, method, encode, count, encoder, encoder_factory, bm25,
                      dense_params, fusion, name, started, shard_size, out, show_progress)  # fmt: skip


def _build(
    ray: Any,
    docs: list[Document],
    method: str,
    encode: bool,
    count: bool,
    encoder: Encoder | None,
    factory: Callable[[], Encoder] | None,
    bm25: BM25Params,
    dense_params: DenseParams | None,
    fusion: FusionParams | None,
    name: str,
    workers: int,
    shard_size: int | None,
    timings: dict[str, float],
    show_progress: bool | None = False,
) -> LocalIndex:
    with _actors(
        ray, workers, encoder, factory, encode=encode, tokenizer=bm25.tokenizer, timings=timings
    ) as actors:
        start = time.perf_counter()
        texts = [d.full_text() for d in docs]
        parts = _map(actors, lambda actor, shard: actor.run.remote(list(shard), encode, count),
                     _shards(texts, len(actors), shard_size), show_progress,
                     "encoding" if encode else "counting")  # fmt: skip
    index = _assemble(docs, method, parts, encoder, bm25, dense_params, fusion, name)
    timings["build_s"] = time.perf_counter() - start
    return index


def _assemble(
    docs: list[Document],
    method: str,
    parts: list[tuple[np.ndarray | None, TermCounts | None]],
    encoder: Encoder | None,
    bm25: BM25Params,
    dense_params: DenseParams | None,
    fusion: FusionParams | None,
    name: str,
) -> LocalIndex:
    """The index ``build_index`` would make, from the shards' vectors and term counts (in order)."""
    scorer = merged = None
    if method in ("bm25", "hybrid"):
        merged = merge_term_counts([counts for _, counts in parts if counts is not None])
        scorer = BM25Scorer.from_counts(merged, k1=bm25.k1, b=bm25.b, epsilon=bm25.epsilon)
    if method == "bm25":
        store = DocumentStore()
        store.add(docs)
        # fitted on these documents, keeping their counts (an add tokenizes only what it brings)
        return BM25Index(bm25, store=store, scorer=scorer, name=name, counts=merged)
    assert encoder is not None  # checked by build_index_ray
    vectors = np.concatenate([v for v, _ in parts if v is not None], axis=0)
    dense = DenseIndex(encoder, dense_params, name=name)
    dense.add_vectors(docs, vectors)
    if method == "dense":
        return dense
    lexical = BM25Index(bm25, store=dense.store, scorer=scorer, name=name, counts=merged)
    return HybridIndex(lexical, dense, fusion, name)


class _PoolEncoder:
    """The driver's encoder, with its encoding spread over the Ray actors while the pool is open
    (:func:`build_graph_ray` hands it to the product's graph build); afterwards, or for one text, the
    driver's own encoder. Everything else (``dim``, ``describe``...) is the driver encoder's."""

    def __init__(self, encoder: Encoder, actors: list[Any]) -> None:
        self.local = encoder
        self.actors: list[Any] | None = actors

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def _encode(self, texts: Sequence[str], queries: bool, **kwargs: Any) -> np.ndarray:
        if self.actors is None or len(texts) < 2:
            encode = self.local.encode_queries if queries else self.local.encode_documents
            return np.asarray(encode(list(texts), **kwargs), dtype=np.float32)
        return np.concatenate(_encode_shards(self.actors, texts, queries), axis=0)

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self._encode(texts, True, **kwargs)

    def encode_documents(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self._encode(texts, False, **kwargs)


class _Extracted:
    """A graph extractor whose extractions were made on the Ray actors: it hands them back by
    document id and describes itself as the extractor that made them."""

    def __init__(self, extractor: Any, by_id: dict[str, Any]) -> None:
        self.extractor = extractor
        self.by_id = by_id
        self.name = getattr(extractor, "name", "")

    def describe(self) -> Any:
        return self.extractor.describe()

    def extract(self, document: Document) -> Any:
        return self.by_id[document.id]

    def extract_many(self, documents: Sequence[Document]) -> list[Any]:
        return [self.by_id[d.id] for d in documents]


def build_graph_ray(
    documents: Sequence[Document],
    *,
    encoder: Encoder,
    encoder_factory: Callable[[], Encoder] | None = None,
    extractor: Any = None,
    graph_params: Any = None,
    name: str = "",
    workers: int | None = None,
    address: str | None = None,
    timings: dict[str, float] | None = None,
) -> LocalIndex:
    """The graph index :meth:`GraphIndex.build <ragroute.graph.index.GraphIndex.build>` makes, with
    phrase and fact extraction, passage encoding and phrase encoding spread over ``workers`` Ray
    actors. The driver runs the product's own graph build on the actors' results (phrase table,
    facts, synonym search, adjacency), so the graph is the single-process one: the same phrases,
    facts and edges in the same order; vectors equal to 1e-5 (encoder batching differs), so a
    synonym link whose cosine sits within 1e-5 of the threshold could differ. The extractor must
    pickle (the rule and spaCy extractors do; an LLM extractor holding a client may not).
    ``timings`` as for :func:`build_index_ray`.
    """

    from ragroute.graph.extract import resolve_extractor
    from ragroute.graph.index import GraphIndex

    docs = check_documents(documents)
    chosen = resolve_extractor(extractor)
    try:
        _ray().cloudpickle.dumps(chosen)
    except RagrouteError:
        raise
    except Exception as exc:
        raise RagrouteError(
            f"the graph extractor {getattr(chosen, 'name', chosen)!r} cannot be sent to Ray workers "
            f"({_one_line(exc)}); build this graph with --engine local"
        ) from None
    check_have_text(docs)  # before any work (the graph build refuses them after the extraction)
    warn_truncated(docs, encoder)
    with _ray_job(address, workers, timings, "Ray build failed", len(docs)) as (ray, out, started):
        with _actors(ray, started, encoder, encoder_factory, extractor=chosen, timings=out) as actors:
            start = time.perf_counter()
            pooled = _PoolEncoder(encoder, actors)
            try:
                extracted = _map(
                    actors,
                    lambda actor, shard: actor.extract.remote(list(shard)),
                    _shards(docs, len(actors), None),
                )
                by_id = {d.id: e for d, e in zip(docs, (e for part in extracted for e in part))}
                index = GraphIndex.build(
                    docs,
                    pooled,  # type: ignore[arg-type]
                    graph_params=graph_params,
                    extractor=_Extracted(chosen, by_id),
                    name=name,
                    show_progress=False,
                )
            finally:
                pooled.actors = None  # the pool is closing: back to the driver's encoder
        out["build_s"] = time.perf_counter() - start
        index.dense.encoder = index.encoder = encoder  # queries: the driver's encoder
        return index


def graphs_identical(a: Any, b: Any, *, atol: float = 1e-5) -> bool:
    """Whether two graph indexes hold the same passages (vectors to ``atol``), the same phrase table
    (vectors to ``atol``), facts, and adjacency (the same edges, weights to ``atol``)."""
    if not indexes_identical(a.dense, b.dense, atol=atol) or a.extractor != b.extractor:
        return False
    ta, tb = a.tables, b.tables
    if ta.phrases != tb.phrases or not np.allclose(ta.phrase_vectors, tb.phrase_vectors, atol=atol, rtol=0):
        return False
    if not np.array_equal(np.c_[ta.fact_subject, ta.fact_object], np.c_[tb.fact_subject, tb.fact_object]):
        return False
    if (ta.fact_passages != tb.fact_passages).nnz or ta.adjacency.shape != tb.adjacency.shape:
        return False
    difference = abs(ta.adjacency - tb.adjacency)
    return not difference.nnz or float(difference.max()) <= atol


def indexes_identical(a: LocalIndex, b: LocalIndex, *, atol: float = 1e-5) -> bool:
    """Whether two bm25/dense/hybrid indexes hold the same documents in the same order, the same
    vectors (to ``atol``) and the same BM25 statistics and term contributions (to 1e-9)."""
    if type(a) is not type(b) or [d.id for d in a.documents] != [d.id for d in b.documents]:
        return False
    dense_a, dense_b = getattr(a, "dense", a), getattr(b, "dense", b)
    if isinstance(dense_a, DenseIndex) and isinstance(dense_b, DenseIndex):
        positions = np.arange(len(a))
        va, vb = dense_a.stored_vectors(positions), dense_b.stored_vectors(positions)
        if va is None or vb is None or va.shape != vb.shape or not np.allclose(va, vb, atol=atol, rtol=0):
            return False
    lex_a, lex_b = getattr(a, "bm25", a), getattr(b, "bm25", b)
    if isinstance(lex_a, BM25Index) and isinstance(lex_b, BM25Index):
        sa, sb = lex_a._saved_scorer(), lex_b._saved_scorer()
        if sa is None or sb is None:  # no documents (then both hold none: the ids matched)
            return sa is sb
        if sa.vocab != sb.vocab or sa.statistics().keys() != sb.statistics().keys():
            return False
        if not all(math.isclose(sa.statistics()[k], sb.statistics()[k]) for k in sa.statistics()):
            return False
        difference = abs(sa.matrix - sb.matrix)
        if difference.nnz and float(difference.max()) > 1e-9:
            return False
    return True


def measure_build_throughput(
    documents: Sequence[Document],
    encoder: Encoder,
    workers: Sequence[int],
    *,
    method: str = "dense",
    encoder_factory: Callable[[], Encoder] | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Build throughput of the Ray engine per number of workers, for ``ragroute bench scale``.

    Returns ``build_docs_per_s`` ({workers: documents per second, Ray start-up and worker
    start-up (model loading) excluded}), ``ray_startup_s``, ``workers_start_s`` ({workers:
    seconds}), ``single_process_docs_per_s`` (:func:`build_index` with the encoder as given, its
    own thread count), ``ray_identical`` (every Ray build :func:`indexes_identical` to the
    single-process one), ``documents`` and ``method``. Ray is started once, with as many CPUs as
    the largest worker count (or the cluster at ``address`` is joined).
    """
    from ragroute.index.build import build_index

    docs = list(documents)
    start = time.perf_counter()
    reference = build_index(docs, method, encoder=encoder, show_progress=False)
    single = time.perf_counter() - start
    rates: dict[int, float] = {}
    worker_start: dict[int, float] = {}
    identical = True
    with ray_session(address, max(workers)) as startup:
        for n in workers:
            timings: dict[str, float] = {}
            built = build_index_ray(
                docs, method, encoder=encoder, encoder_factory=encoder_factory, workers=n, timings=timings,
                show_progress=False,
            )  # fmt: skip
            rates[n] = len(docs) / max(timings["build_s"], 1e-9)
            worker_start[n] = timings["workers_start_s"]
            identical = identical and indexes_identical(reference, built)
    return {
        "build_docs_per_s": rates,
        "ray_startup_s": startup,
        "workers_start_s": worker_start,
        "single_process_docs_per_s": len(docs) / max(single, 1e-9),
        "ray_identical": identical,
        "documents": len(docs),
        "method": method,
    }
