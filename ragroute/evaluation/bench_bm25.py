"""Benchmark of :class:`ragroute.index.bm25_scoring.BM25Scorer` against rank-bm25 and bm25s.

For each corpus (a BEIR-style folder if given, plus a synthetic Zipfian corpus) every
system gets the same token lists from :func:`ragroute.index.bm25_tokenize.tokenize_many`. The
benchmark reports:

* ``max_abs_diff``: the largest ``|ours - rank_bm25.BM25Okapi|`` over the full score
  vectors of the compared queries (all of them, or a sample on big corpora where
  rank-bm25 manages only a few queries per second);
* queries per second for a top-10 search: ours one query at a time (``ours_qps``) and
  through :meth:`~ragroute.index.bm25_scoring.BM25Scorer.top_k_many` (``ours_batch_qps``),
  rank-bm25 (``get_scores`` plus a top-10 selection) and bm25s (``retrieve``, if
  installed; it scores a slightly different BM25, so its ``bm25s_max_abs_diff`` is
  informative, not a bug);
* ``speedup_vs_rank_bm25`` = ours one query at a time / rank-bm25, both on rank-bm25's queries
  (``ours_qps_rank_bm25_queries``: ``ours_qps`` unless rank-bm25 ran a sample), and index build times.

Every rate is taken after one untimed pass over its queries (rank-bm25's computes the reference
scores), repeated for at least ``min_time_s``. Timings are wall-clock on whatever machine runs
this, so they move with its load.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ragroute.errors import CorpusFormatError, RagrouteError
from ragroute.index.bm25_scoring import BM25Scorer
from ragroute.index.bm25_tokenize import TokenizerConfig, tokenize_many
from ragroute.progress import progress_enabled

K = 10
#: Corpora bigger than this get rank-bm25 run on a sample of queries only.
RANK_BM25_FULL_LIMIT = 20_000
RANK_BM25_SAMPLE = 20
SYNTHETIC_VOCAB = 50_000
SYNTHETIC_ZIPF = 1.07
#: bm25s settings closest to BM25Okapi: ATIRE term-frequency part ((k1 + 1) in the
#: numerator) and Robertson idf; it clips negative idf to 0 (BM25Okapi floors it to
#: epsilon * mean idf) and stores float32 scores.
BM25S_PARAMS = {"method": "atire", "idf_method": "robertson"}

Log = Callable[[str], None]


# --------------------------------------------------------------------------- corpora


def missing_data(data_dir: Path) -> str | None:
    """Why ``data_dir`` is not there to be measured (``data missing: ...``), or ``None`` when it is."""
    if not (data_dir / "queries.jsonl").is_file():
        return f"data missing: {data_dir / 'queries.jsonl'} not found"
    return None


def load_beir_texts(data_dir: Path) -> tuple[list[str], list[str]]:
    """Document texts (title and text, as indexes see them) and all query texts of a BEIR folder
    (every split: no qrels are read). Loaded strictly: a missing ``queries.jsonl``, a bad line or an
    empty corpus or query file is one :class:`CorpusFormatError`, never a skipped record."""
    from ragroute.loaders import load_beir

    data_dir = Path(data_dir)
    missing = missing_data(data_dir)
    if missing is not None:
        raise CorpusFormatError(missing)
    dataset = load_beir(data_dir, split=None, on_error="raise")
    if not dataset.corpus or not dataset.queries:
        raise CorpusFormatError(f"{data_dir}: corpus or queries are empty")
    return [d.full_text() for d in dataset.corpus], [q.text for q in dataset.queries]


def _synthetic_words(n: int) -> np.ndarray:
    """``n`` distinct pseudo-words made of consonant-vowel syllables, shortest first.

    Consonant-vowel words never collide with the (English) stopword list.
    """
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: list[str] = []
    length = 2
    while len(words) < n:
        for idx in np.ndindex(*([len(syllables)] * length)):
            words.append("".join(syllables[i] for i in idx))
            if len(words) == n:
                break
        length += 1
    return np.array(words, dtype=object)


def synthetic_corpus(
    n_docs: int, n_queries: int, seed: int = 0, vocab_size: int = SYNTHETIC_VOCAB
) -> tuple[list[str], list[str]]:
    """Documents of 50-150 words and queries of 2-6 words, all drawn from one Zipf law.

    Word rank ``r`` has probability proportional to ``r ** -1.07`` over a
    ``vocab_size``-word vocabulary, so queries include very common words (a heavy
    workload: their postings span much of the corpus). Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    words = _synthetic_words(vocab_size)
    probs = np.arange(1, vocab_size + 1, dtype=np.float64) ** -SYNTHETIC_ZIPF
    probs /= probs.sum()
    lengths = rng.integers(50, 151, size=n_docs)
    ids = rng.choice(vocab_size, size=int(lengths.sum()), p=probs)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs = [" ".join(words[ids[bounds[i] : bounds[i + 1]]]) for i in range(n_docs)]
    q_lengths = rng.integers(2, 7, size=n_queries)
    q_ids = rng.choice(vocab_size, size=int(q_lengths.sum()), p=probs)
    q_bounds = np.concatenate([[0], np.cumsum(q_lengths)])
    queries = [" ".join(words[q_ids[q_bounds[i] : q_bounds[i + 1]]]) for i in range(n_queries)]
    return docs, queries


# --------------------------------------------------------------------------- measuring


def _qps(fn: Callable[[], object], n_queries: int, min_time_s: float, warmup: bool = True) -> float:
    """Queries per second of ``fn`` (which runs ``n_queries`` queries), repeated for ``min_time_s``."""
    if n_queries == 0:
        return 0.0
    if warmup:
        fn()
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s or reps >= 1000:
            return n_queries * reps / max(elapsed, 1e-9)


def _max_diff(values: Sequence[float]) -> float:
    """The largest of ``values``, NaN if any is NaN, 0.0 if there are none (until session 55 Python's
    ``max`` took it: a NaN after the first value compares false, so a query whose scores came out
    NaN was dropped and the difference read as small as the others)."""
    return float(np.max(np.asarray(values, dtype=np.float64))) if len(values) else 0.0


def _top_k_dense(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    return top[np.argsort(-scores[top], kind="stable")]


def bench_corpus(
    name: str,
    doc_texts: Sequence[str],
    query_texts: Sequence[str],
    *,
    min_time_s: float = 1.0,
    rank_bm25_sample: int | None = None,
    progress: bool | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Measure one corpus; see the module docstring for what each key means."""
    from rank_bm25 import BM25Okapi

    say = log or (lambda _msg: None)
    config = TokenizerConfig()
    bars = progress_enabled(progress)
    t0 = time.perf_counter()
    doc_tokens = tokenize_many(
        tqdm(doc_texts, desc=f"{name}: tokenize", unit="doc", disable=not bars, leave=False), config
    )
    query_tokens = tokenize_many(query_texts, config)
    tokenize_s = time.perf_counter() - t0
    n_docs, n_queries = len(doc_tokens), len(query_tokens)
    k = min(K, n_docs)

    say(f"{name}: building indexes over {n_docs} documents")
    t0 = time.perf_counter()
    ours = BM25Scorer.fit(doc_tokens)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rank = BM25Okapi(doc_tokens)
    rank_build_s = time.perf_counter() - t0

    # Ours: one query at a time, then batched.
    ours_qps = _qps(lambda: [ours.top_k(q, k) for q in query_tokens], n_queries, min_time_s)
    ours_batch_qps = _qps(lambda: ours.top_k_many(query_tokens, k), n_queries, min_time_s)

    # rank-bm25 (the reference scores): all queries on small corpora, else a sample.
    if rank_bm25_sample is None:
        rank_bm25_sample = n_queries if n_docs <= RANK_BM25_FULL_LIMIT else RANK_BM25_SAMPLE
    sample = query_tokens[: max(1, min(rank_bm25_sample, n_queries))] if n_queries else []
    # the reference scores in an untimed pass, which is also rank-bm25's warm-up: _qps warms ours and
    # bm25s up with one pass before timing them, and until session 55 rank-bm25 was timed on this
    # one cold pass (its first-call costs in its rate alone)
    rank_scores: list[np.ndarray] = []
    for q in tqdm(sample, desc=f"{name}: rank-bm25", unit="q", disable=not bars, leave=False):
        scores = rank.get_scores(q)
        _top_k_dense(scores, k)
        rank_scores.append(scores)

    def rank_pass() -> None:
        for q in sample:
            _top_k_dense(rank.get_scores(q), k)

    rank_qps = _qps(rank_pass, len(sample), min_time_s, warmup=False)
    # the speedups compare the two on the same queries: rank-bm25 runs only the sample on big
    # corpora, so ours is timed on it too (until session 52 ours over every query against rank-bm25
    # over the first 20: a ratio of two different workloads)
    ours_sample_qps, ours_sample_batch_qps = ours_qps, ours_batch_qps
    if len(sample) < n_queries:
        ours_sample_qps = _qps(lambda: [ours.top_k(q, k) for q in sample], len(sample), min_time_s)
        ours_sample_batch_qps = _qps(lambda: ours.top_k_many(sample, k), len(sample), min_time_s)
    max_abs_diff = _max_diff(
        [float(np.max(np.abs(ours.get_scores(q) - ref))) for q, ref in zip(sample, rank_scores)]
    )

    bm25s_result = _bench_bm25s(doc_tokens, query_tokens, sample, rank_scores, k, min_time_s, say)
    result: dict[str, Any] = {
        "docs": n_docs,
        "queries": n_queries,
        "vocab": len(ours.vocab),
        "avg_doc_tokens": round(ours.avgdl, 2),
        "k": k,
        "max_abs_diff": max_abs_diff,
        "diff_queries": len(sample),
        "speedup_vs_rank_bm25": ours_sample_qps / rank_qps if rank_qps else math.inf,
        "batch_speedup_vs_rank_bm25": ours_sample_batch_qps / rank_qps if rank_qps else math.inf,
        "ours_qps": ours_qps,
        "ours_batch_qps": ours_batch_qps,
        "ours_qps_rank_bm25_queries": ours_sample_qps,
        "rank_bm25_qps": rank_qps,
        "rank_bm25_queries": len(sample),
        **bm25s_result,
        "build_s": build_s,
        "rank_bm25_build_s": rank_build_s,
        "tokenize_s": tokenize_s,
    }
    bm25s_qps = result.get("bm25s_qps")
    result["ours_vs_bm25s"] = ours_qps / bm25s_qps if bm25s_qps else None
    return result


def _bench_bm25s(
    doc_tokens: list[list[str]],
    query_tokens: list[list[str]],
    sample: list[list[str]],
    rank_scores: list[np.ndarray],
    k: int,
    min_time_s: float,
    say: Log,
) -> dict[str, Any]:
    empty = {"bm25s_qps": None, "bm25s_max_abs_diff": None, "bm25s_build_s": None}
    try:
        import bm25s
    except ImportError:
        return {**empty, "bm25s_error": "bm25s not installed (pip install bm25s)"}
    try:
        t0 = time.perf_counter()
        model = bm25s.BM25(**BM25S_PARAMS)
        model.index(doc_tokens, show_progress=False)
        build_s = time.perf_counter() - t0
        # bm25s cannot take an empty token list in get_scores; those score 0 everywhere.
        queries = [q if q else [""] for q in query_tokens]
        qps = _qps(lambda: model.retrieve(queries, k=k, show_progress=False), len(queries), min_time_s)
        diffs = [
            float(np.max(np.abs(np.asarray(model.get_scores(q), dtype=np.float64) - ref)))
            for q, ref in zip(sample, rank_scores)
            if q
        ]
    except Exception as exc:  # a third-party comparison must not sink the benchmark
        say(f"bm25s failed: {type(exc).__name__}: {exc}")
        return {**empty, "bm25s_error": f"{type(exc).__name__}: {exc}"}
    return {
        "bm25s_qps": qps,
        "bm25s_max_abs_diff": _max_diff(diffs),
        "bm25s_build_s": build_s,
        "bm25s_variant": "method={method}, idf_method={idf_method}, float32".format(**BM25S_PARAMS),
    }


def run_bm25_bench(
    data_dir: Path | None,
    synthetic_docs: int = 100_000,
    synthetic_queries: int = 200,
    max_queries: int | None = None,
    seed: int = 0,
    *,
    min_time_s: float = 1.0,
    progress: bool | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Benchmark the BM25 scorer on ``data_dir`` (if given) and a synthetic corpus (if > 0 docs).

    A ``data_dir`` without ``queries.jsonl`` is one :class:`RagrouteError`
    (``data missing: ...``) before anything is measured. One that is there is loaded
    strictly: a bad line or an empty file raises :class:`CorpusFormatError` (a skipped line
    would change what is measured).
    Top-level ``max_abs_diff`` is the max over corpora and ``speedup_vs_rank_bm25``
    the min.
    """
    say = log or (lambda _msg: None)
    corpora: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[str, Callable[[], tuple[list[str], list[str]]]]] = []
    if data_dir is not None:
        data_dir = Path(data_dir)
        missing = missing_data(data_dir)
        if missing is not None:  # asked for by name: measuring only the synthetic corpus would hide it
            raise RagrouteError(f"{missing} (see ../shared/data/README.md)")
        jobs.append((data_dir.name or str(data_dir), lambda: load_beir_texts(data_dir)))
    if synthetic_docs > 0:
        jobs.append(("synthetic", lambda: synthetic_corpus(synthetic_docs, synthetic_queries, seed)))
    for name, load in jobs:
        docs, queries = load()
        if max_queries is not None:
            queries = queries[:max_queries]
        corpora[name] = bench_corpus(name, docs, queries, min_time_s=min_time_s, progress=progress, log=say)
    return {
        "max_abs_diff": _max_diff([c["max_abs_diff"] for c in corpora.values()]) if corpora else None,
        "speedup_vs_rank_bm25": min((c["speedup_vs_rank_bm25"] for c in corpora.values()), default=None),
        "k": K,
        "tokenizer": TokenizerConfig().to_dict(),
        "corpora": corpora,
    }


# --------------------------------------------------------------------------- output


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "diff":
        return f"{value:.1e}"
    if kind == "ratio":
        return f"{value:,.1f}x"
    if kind == "s":
        return f"{value:.2f}"
    return f"{value:,.1f}"


ROWS = [
    ("documents", "docs", "int"),
    ("queries (timed)", "queries", "int"),
    ("vocabulary", "vocab", "int"),
    ("max |ours - rank_bm25|", "max_abs_diff", "diff"),
    ("  over queries", "diff_queries", "int"),
    ("ours q/s (one by one)", "ours_qps", "float"),
    ("ours q/s (top_k_many)", "ours_batch_qps", "float"),
    ("rank-bm25 q/s", "rank_bm25_qps", "float"),
    ("  ours on its queries", "ours_qps_rank_bm25_queries", "float"),
    ("bm25s q/s", "bm25s_qps", "float"),
    ("speedup vs rank-bm25", "speedup_vs_rank_bm25", "ratio"),
    ("  batched", "batch_speedup_vs_rank_bm25", "ratio"),
    ("ours / bm25s", "ours_vs_bm25s", "ratio"),
    ("max |bm25s - rank_bm25|", "bm25s_max_abs_diff", "diff"),
    ("build s: ours", "build_s", "s"),
    ("build s: rank-bm25", "rank_bm25_build_s", "s"),
    ("build s: bm25s", "bm25s_build_s", "s"),
    ("tokenize s", "tokenize_s", "s"),
]


def format_table(result: dict[str, Any]) -> str:
    """The benchmark result as a plain-text table, one column per corpus."""
    names = list(result["corpora"])
    width = max([len(label) for label, _, _ in ROWS])
    cols = [max(12, len(n) + 2) for n in names]
    lines = [f"BM25 top-{result['k']} benchmark (same tokenizer for every system)"]
    lines.append(" " * width + "".join(n.rjust(c) for n, c in zip(names, cols)))
    for label, key, kind in ROWS:
        cells = [_fmt(result["corpora"][n].get(key), kind).rjust(c) for n, c in zip(names, cols)]
        lines.append(label.ljust(width) + "".join(cells))
    for name, corpus in result["corpora"].items():
        if corpus.get("bm25s_variant"):
            lines.append(f"bm25s ({name}): {corpus['bm25s_variant']}; scores a slightly different BM25")
        if corpus.get("bm25s_error"):
            lines.append(f"bm25s ({name}): {corpus['bm25s_error']}")
    return "\n".join(lines)
