"""``ragroute bench ...``: the benchmark commands (options, progress and output).

The measuring, scoring and report formatting live in :mod:`ragroute.evaluation`
(one ``bench_*`` module per benchmark); these commands parse options, call them
and print. Each command is registered by name in :data:`ragroute.registry.BENCHMARKS`
as ``ragroute.cli.bench:<name>_command``, which is how the ``bench`` group finds it.
A :class:`~ragroute.errors.RagrouteError` prints one line ``error: ...`` and exits
with status 2, also when a command is invoked on its own (as the tests do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import exclusive_options, one_line_errors, refuse_options, yield_to_command_line
from ragroute.cli.graph import LLM_ONLY, llm_extractor, llm_option, say_llm_work
from ragroute.cli.options import (
    SEED,
    FiniteFloatRange,
    NameOrPath,
    backend_option,
    bench_encoder_options,
    bench_json_option,
    cache_dir_option,
    data_root_option,
    encoder_option,
    name_list,
    plot_option,
    rerank_backend_option,
    reranker_option,
    resolve_reranker,
    split_option,
    train_device_option,
)
from ragroute.cli.output import emit_json, save_plot
from ragroute.encode.resolve import DEFAULT_ENCODER
from ragroute.errors import RagrouteError
from ragroute.evaluation import (
    bench_bm25,
    bench_corpus_routing,
    bench_dense,
    bench_encode,
    bench_indexes,
    bench_route_labels,
    bench_tatqa,
)
from ragroute.registry import EXTRACTORS, FUSIONS

#: why ``--folds`` of corpus-routing and experts is refused: it sets the cross-validation that runs
#: only when the routers are fitted on the split they are scored on
FOLDS_NEED_TRAIN_SPLIT = (
    "unless --train-split equals --split (the folds of cross-validation on that split; "
    "without --train-split no router is fitted, with another split they are fitted on it)"
)

#: ``--candidates`` of the benchmarks that rerank stage 1 (rerank, skills)
candidates_option = click.option(
    "--candidates",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Stage-1 candidates the reranker re-orders.",
)
#: ``--latency-queries`` of the benchmarks that time one query at a time (skills, gate)
latency_queries_option = click.option(
    "--latency-queries",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Queries run one at a time to measure latency.",
)


@click.command("bm25")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    metavar="BEIR_DIR",
    help="Folder with corpus.jsonl and queries.jsonl (BEIR layout) to measure besides the synthetic corpus.",
)
@click.option(
    "--synthetic-docs",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    help="Documents in the synthetic Zipfian corpus; 0 skips it.",
)
@click.option(
    "--synthetic-queries",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Queries for the synthetic corpus.",
)
@click.option(
    "--max-queries", type=click.IntRange(min=1), default=None, help="Use at most N queries per corpus."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the synthetic corpus.")
@click.option(
    "--min-time",
    "min_time_s",
    type=FiniteFloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Repeat each timed pass over the queries for at least this many seconds.",
)
@bench_json_option
@one_line_errors
def bm25_command(
    data_dir: Path | None,
    synthetic_docs: int,
    synthetic_queries: int,
    max_queries: int | None,
    seed: int,
    min_time_s: float,
    as_json: bool,
) -> None:
    """Measure ragroute's BM25 scorer against rank-bm25 (exactness and speed) and bm25s (speed).

    Every corpus is tokenized once with ragroute's tokenizer and indexed by each
    system. Reported per corpus: MAX_ABS_DIFF, the largest |ours - rank_bm25
    BM25Okapi| over full score vectors (all queries, or the first 20 on corpora
    over 20,000 documents, where rank-bm25 runs only a few queries per second);
    top-10 queries per second for ours (one query at a time, and top_k_many),
    rank-bm25 and bm25s (if installed; it scores a slightly different BM25 in
    float32); SPEEDUP_VS_RANK_BM25 = ours one-query-at-a-time q/s / rank-bm25
    q/s, both on rank-bm25's queries (the first 20 on those large corpora); and index
    build times. With --json the last line is one JSON object whose top-level
    max_abs_diff is the max over corpora and speedup_vs_rank_bm25 the min.

    The synthetic corpus has 50-150-word documents and 2-6-word queries drawn from
    one Zipf law over 50,000 words, so queries include very common words.

    A --data folder without queries.jsonl is one error line before anything is measured; one
    that is there is read strictly: a bad line or an empty file is one error line, never skipped.
    """
    result = bench_bm25.run_bm25_bench(
        data_dir,
        synthetic_docs=synthetic_docs,
        synthetic_queries=synthetic_queries,
        max_queries=max_queries,
        seed=seed,
        min_time_s=min_time_s,
        log=lambda msg: click.echo(msg, err=True),
    )
    if not result["corpora"]:
        raise RagrouteError("nothing was measured (no --data, and --synthetic-docs is 0)")
    click.echo(bench_bm25.format_table(result))
    if as_json:
        emit_json(result)


@click.command("encode")
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="BEIR_DIR",
    default=(Path("../shared/data/glasgow/med"), Path("../shared/data/glasgow/cran")),
    show_default=True,
    help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/dev.tsv); repeat for several collections.",
)
@click.option("--max-docs", type=click.IntRange(min=1), default=None, help="Use only the first N documents.")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(bench_encode.BACKENDS),
    help="Backend to measure (repeatable; default: all). torch fp32 always runs as the baseline.",
)
@click.option(
    "--model", type=NameOrPath(), default=DEFAULT_ENCODER, show_default=True, help="Encoder name or folder."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Texts encoded per batch."
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Timed runs of every slice per backend (interleaved); the best of each slice counts.",
)
@click.option(
    "--slice-docs",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Documents per timed slice (all backends take turns on each slice).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Threads per backend (default: cores)."
)
@cache_dir_option()
@bench_json_option
@one_line_errors
def encode_command(
    data_dirs: tuple[Path, ...],
    max_docs: int | None,
    backends: tuple[str, ...],
    model: str,
    batch_size: int,
    repeats: int,
    slice_docs: int,
    threads: int | None,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Compare encoder backends: passages/s, speedup over torch fp32, cosine to torch, nDCG@10.

    Each backend (torch fp32 is the baseline) encodes every document of every
    --data collection (title and text as an index encodes them), slice by slice, taking turns so
    background load hits all alike; nDCG@10 comes from exact inner-product
    search over the full corpus. A backend's quality holds when its nDCG@10 is
    at most 0.005 below torch on every collection; it meets the goal when it
    is also >= 2x torch passages/s. Progress goes to stderr; with --json the
    last stdout line is the result as one JSON object.
    """
    result = bench_encode.run_encode_bench(
        list(data_dirs),
        max_docs,
        backends=backends or bench_encode.BACKENDS,
        model=model,
        batch_size=batch_size,
        repeats=repeats,
        slice_docs=slice_docs,
        cache_dir=cache_dir,
        threads=threads,
        log=lambda msg: click.echo(msg, err=True),
    )
    if not result["backends"]:
        raise RagrouteError("nothing measured: no readable --data folder")
    click.echo(bench_encode.format_table(result))
    if as_json:
        emit_json(result)


@click.command("dense")
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    required=True,
    help="BEIR folder(s) to measure on (repeatable), e.g. ../shared/data/glasgow/npl.",
)
@split_option("Qrels split whose judged queries are searched and scored (qrels/SPLIT.tsv).")
@bench_encoder_options
@bench_json_option
@one_line_errors
def dense_command(
    data_dirs: tuple[Path, ...], split: str, encoder: str, backend: str, cache_dir: Path | None, as_json: bool
) -> None:
    """Compare faiss layouts (flat exact, HNSW, IVF-PQ): build time, queries/s as ratios
    to flat, recall@10 of the exact top-10, nDCG@10, and bytes per vector.

    A --data folder without queries.jsonl is one error line before anything is measured, and so
    are two --data folders of one name (the results are keyed by it); one that is there is read
    strictly: a bad line, a qrels/SPLIT.tsv id naming no query or document, or an empty or absent
    split is one error line, never a skipped record.
    """
    for data_dir in data_dirs:
        if not (Path(data_dir) / "queries.jsonl").is_file():
            raise RagrouteError(
                f"data missing: {data_dir} (expected a BEIR folder; see ../shared/data/README.md)"
            )
    bench_encode.distinct_folder_names(data_dirs)  # results are keyed by folder name
    results = {}
    for data_dir in data_dirs:
        results[Path(data_dir).name] = bench_dense.run_dense_bench(
            Path(data_dir), encoder_name=encoder, backend=backend, cache_dir=cache_dir, split=split
        )
        click.echo(bench_dense.format_dense_report(results[Path(data_dir).name]))
    if as_json:
        emit_json({"collections": results})


@click.command("corpus-routing")
@data_root_option("Folder holding one BEIR folder per source (e.g. ../shared/data/glasgow).")
@split_option("Split whose queries are routed and scored.")
@click.option(
    "--train-split",
    default=None,
    help="Split to fit learned routers on; equal to --split means k-fold cross-validation.",
)
@bench_encoder_options
@click.option(
    "--threshold", type=float, default=None, help="Route probability to be queried [default: the product's]."
)
@click.option("--max-routes", type=int, default=None, help="Most routes queried [default: the product's].")
@click.option(
    "--hedge-below",
    type=float,
    default=None,
    help="Query only the best route when its probability reaches this [default: the product's].",
)
@click.option(
    "--method",
    type=click.Choice(bench_indexes.METHODS),
    default="dense",
    show_default=True,
    help="Retrieval in every source and in the merged index: dense, hybrid (BM25 + dense, RRF) or bm25.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Cross-validation folds when --train-split equals --split (identical query texts share a fold).",
)
@click.option(
    "--fusion",
    type=click.Choice(FUSIONS.names()),
    default=None,
    help="How lists from several routes merge (a registered fusion method) [default: the product's].",
)
@click.option(
    "--descriptions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML mapping source name -> one-sentence description [default: built-in Glasgow ones].",
)
@plot_option
@bench_json_option
@one_line_errors
def corpus_routing_command(
    root: Path,
    split: str,
    train_split: str | None,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    threshold: float | None,
    max_routes: int | None,
    hedge_below: float | None,
    method: str,
    folds: int,
    fusion: str | None,
    descriptions: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Route each query of --split to the collection it came from; compare routers, the merged
    index and the oracle source on accuracy, nDCG@10 and routing latency.
    """
    from ragroute.encode import load_encoder

    if not Path(root).is_dir():
        raise RagrouteError(f"data missing: {root} is not a folder (see ../shared/data/README.md)")
    if train_split != split:
        refuse_options(("folds",), FOLDS_NEED_TRAIN_SPLIT)
    bench_corpus_routing.check_train_split(Path(root), split, train_split)  # before anything is encoded
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    desc = bench_corpus_routing.read_descriptions(descriptions) if descriptions else None
    result = bench_corpus_routing.run_corpus_routing_bench(
        Path(root),
        split,
        train_split,
        enc,
        selection={
            "threshold": threshold,
            "max_routes": max_routes,
            "hedge_below": hedge_below,
            "fusion": fusion,
        },
        folds=folds,
        descriptions=desc,
        method=method,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_corpus_routing.format_report(result))
    if as_json:
        emit_json(result)
    save_plot("corpus-routing", result, plot)


@click.command("route-labels")
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="TRAIN.jsonl",
    help="LABELS file the routers are fitted on.",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="TEST.jsonl",
    help="LABELS file the routers are scored on.",
)
@click.option(
    "--none-label", default="no", show_default=True, help="Label meaning 'answer without retrieval'."
)
@click.option(
    "--routers",
    default=",".join(bench_route_labels.ROUTERS),
    show_default=True,
    help="Comma-separated routers to compare.",
)
@click.option(
    "--none-recall-target",
    type=FiniteFloatRange(0, 1),
    default=bench_route_labels.GOALS["none_recall"],
    show_default=True,
    help="Train-CV none recall that trained_features_hashed_nonebias picks its none_bias for.",
)
@click.option(
    "--latency-queries",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Queries routed one at a time to measure latency.",
)
@encoder_option("Encoder name or folder (default all-MiniLM-L6-v2).", None, "encoder_name")
@cache_dir_option()
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the routers' classifiers.",
)
@bench_json_option
@one_line_errors
def route_labels_command(
    train_path: Path,
    data_path: Path,
    none_label: str,
    routers: str,
    none_recall_target: float,
    latency_queries: int,
    encoder_name: str | None,
    cache_dir: Path | None,
    seed: int,
    as_json: bool,
) -> None:
    """Compare routers fitted on TRAIN.jsonl and scored on TEST.jsonl (LABELS format).

    Per router: ACCURACY, MACRO_F1, NONE_RECALL (recall of --none-label) and
    LATENCY_MS_P50 (one query per call, encoding excluded). Baselines measured in
    the same run: majority class, 5-nearest-neighbour vote on embeddings, and
    logistic regression on embeddings (the issue's baseline, whose reference
    numbers are printed too); ours: TrainedRouter variants. A label given as a
    list counts as its first label. The files must differ: one file given twice, or a test file
    whose every query is in the training file, is refused; a note on stderr counts the test
    queries whose text (case and spacing ignored) is in the training file too.
    """
    from ragroute.encode import load_encoder
    from ragroute.loaders.labels import check_labels_file

    names = name_list(routers, "--routers")
    for path in (train_path, data_path):
        check_labels_file(path)
    bench_route_labels.refuse_same_file(train_path, data_path)

    encoder = load_encoder(encoder_name or DEFAULT_ENCODER, cache_dir=cache_dir)
    result = bench_route_labels.run_route_labels_bench(
        train_path,
        data_path,
        encoder=encoder,
        routers=names,
        none_label=none_label,
        none_recall_target=none_recall_target,
        latency_queries=latency_queries,
        seed=seed,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_route_labels.format_table(result))
    if as_json:
        emit_json(result)


@click.command("tatqa")
@data_root_option(
    "The TAT-QA BEIR folder (corpus_tables.jsonl + corpus_paragraphs.jsonl).",
    Path("../shared/data/tatqa"),
)
@split_option()
@bench_encoder_options
@click.option(
    "--method",
    type=click.Choice(["dense", "hybrid"]),
    default="dense",
    show_default=True,
    help="Index of each source: dense, or BM25 + dense fused by RRF.",
)
@click.option(
    "--threshold", type=float, default=None, help="Route probability to be queried [default: the product's]."
)
@click.option(
    "--fusion",
    type=click.Choice(FUSIONS.names()),
    default=None,
    help="How the tables and text lists merge when both routes are queried [default: the product's].",
)
@click.option(
    "--route-weights",
    type=click.Choice(["even", "probability"]),
    default=None,
    help="Weights of the selected routes' lists in fusion [default: the product's].",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Cross-validation folds of the kNN and trained routers.",
)
@bench_json_option
@one_line_errors
def tatqa_command(
    root: Path,
    split: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    method: str,
    threshold: float | None,
    fusion: str | None,
    route_weights: str | None,
    folds: int,
    as_json: bool,
) -> None:
    """Route TAT-QA questions to tables, text or both; compare routers with the merged index and
    the oracle routes on routing accuracy, Recall@5 and routing latency.
    """
    from ragroute.encode import load_encoder
    from ragroute.pipeline.build import routing_options

    bench_tatqa.load_tatqa(root, split)  # fail fast, before loading a model
    if threshold is not None:
        routing_options({"threshold": threshold})
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_tatqa.run_tatqa_bench(
        root,
        enc,
        split=split,
        method=method,
        threshold=threshold,
        fusion=fusion,
        folds=folds,
        route_weights=route_weights,
    )
    click.echo(bench_tatqa.format_report(result))
    if as_json:
        emit_json(result)


@click.command("graph")
@data_root_option(
    "A multi-hop set in BEIR form (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).",
    Path("../shared/data/musique"),
)
@split_option()
@bench_encoder_options
@click.option(
    "--extractor",
    type=click.Choice(EXTRACTORS.names()),
    default="rules",
    show_default=True,
    help="Graph extractor (registered in ragroute.registry.EXTRACTORS; `llm` asks the LLM of --llm).",
)
@llm_option
@bench_json_option
@one_line_errors
def graph_command(
    root: Path,
    split: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    extractor: str,
    llm_spec: str | None,
    as_json: bool,
) -> None:
    """Multi-hop retrieval: BM25, dense and the graph walk on Recall@2/5 and full-chain recall@5,
    with build times.
    """
    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_graph

    # until session 36 `--extractor llm` was offered and always failed: it had no LLM to ask
    chosen: Any = extractor
    if extractor == "llm":
        chosen = llm_extractor(llm_spec, cache_dir)
    elif llm_spec is not None:
        refuse_options(("llm_spec",), f"to --extractor {extractor}: {LLM_ONLY}")
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_graph.run_graph_bench(
        root, enc, split=split, extractor=chosen, log=lambda msg: click.echo(msg, err=True)
    )
    say_llm_work(chosen)
    click.echo(bench_graph.format_report(result))
    if as_json:
        emit_json(result)


@click.command("rerank")
@data_root_option(
    "A BEIR folder, or a folder of BEIR collections (each scored, then macro-averaged; hidden "
    "`.`/`_` ones left out).",
    Path("../shared/data/glasgow"),
)
@split_option()
@click.option(
    "--model",
    default="rerank/default",
    show_default=True,
    type=NameOrPath(),
    help="Reranker: a `ragroute rerank train` artifact, or a sentence-transformers CrossEncoder (folder or "
    "hub name).",
)
@candidates_option
@rerank_backend_option
@bench_encoder_options
@bench_json_option
@one_line_errors
def rerank_command(
    root: Path,
    split: str,
    model: str,
    candidates: int,
    rerank_backend: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """nDCG@10 of dense and hybrid retrieval with and without the reranker (held-out queries only),
    and of routing over all collections with the reranker re-ordering the fused lists.
    """
    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_rerank

    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_rerank.run_rerank_bench(
        root,
        enc,
        model,
        split=split,
        candidates=candidates,
        backend=rerank_backend,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_rerank.format_report(result))
    if as_json:
        emit_json(result)


@click.command("ppr")
@data_root_option(
    "A folder with a BEIR corpus.jsonl (only the corpus is read).",
    Path("../shared/data/2wiki_corpus"),
)
@bench_encoder_options
@click.option(
    "--add",
    "add_count",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Passages added incrementally to a graph of the others.",
)
@click.option(
    "--queries", type=click.IntRange(min=1), default=30, show_default=True, help="PPR queries per graph."
)
@click.option(
    "--synthetic-nodes",
    type=click.IntRange(min=2),
    default=97_000,
    show_default=True,
    help="Synthetic graph nodes.",
)
@click.option(
    "--synthetic-edges",
    type=click.IntRange(min=2),
    default=1_400_000,
    show_default=True,
    help="Synthetic graph directed edges (half as many undirected ones, stored both ways).",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the resets and the synthetic graph.",
)
@bench_json_option
@one_line_errors
def ppr_command(
    root: Path,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    add_count: int,
    queries: int,
    synthetic_nodes: int,
    synthetic_edges: int,
    seed: int,
    as_json: bool,
) -> None:
    """Graph build time and peak memory, incremental add, and personalized PageRank latency
    against igraph (PRPACK) on the corpus graph and a synthetic 1.4M-edge graph.

    The encoder is loaded without the embedding cache, so the build time includes
    encoding every passage and phrase. With --json the last line is one JSON object:
    ms_per_query, igraph_ms, speedup_vs_igraph and top5_agreement per graph
    ({"2wiki": ..., "synthetic": ...}), build_s, add_100_s (with --add 100) and the goals.
    """
    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_ppr

    if not (Path(root) / "corpus.jsonl").is_file():  # fail fast, before loading a model
        raise RagrouteError(
            f"data missing: {Path(root) / 'corpus.jsonl'} not found (see ../shared/data/README.md)"
        )
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir, use_cache=False)
    result = bench_ppr.run_ppr_bench(
        root,
        enc,
        add=add_count,
        queries=queries,
        synthetic_nodes=synthetic_nodes,
        synthetic_edges=synthetic_edges,
        seed=seed,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_ppr.format_report(result))
    if as_json:
        emit_json(result)


@click.command("skills")
@data_root_option(
    "A folder in the SKILLS layout (skills.jsonl, queries.jsonl, qrels/<split>.tsv).",
    Path("../shared/data/toollens"),
)
@split_option()
@reranker_option(
    "Reranker for the rerank rows (a `ragroute rerank train` artifact or a CrossEncoder folder) "
    "[default: rerank/default; when it has not been trained, an error: give --reranker, or --no-reranker "
    "for the stage-1 rows only]."
)
@click.option("--no-reranker", is_flag=True, help="Stage-1 rows only, even when rerank/default exists.")
@candidates_option
@click.option(
    "--scale",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Skills in the scaled catalogue timed: latency_ms_p50_scaled, and latency_ms_p50_10k when it "
    "holds 10000 (0 skips it).",
)
@latency_queries_option
@click.option(
    "--max-queries", type=click.IntRange(min=1), default=None, help="Score only the first N queries."
)
@click.option(
    "--abstain-data",
    type=click.Path(path_type=Path),
    default=None,
    help="LABELS file (tool / no_tool) to fit (fold 0) and test (fold 1) abstention on "
    "(default: ../metatool_need_tool/dev.jsonl beside a metatool folder).",
)
@click.option(
    "--tune-blend",
    type=click.IntRange(min=10),
    default=None,
    metavar="N",
    help="Also fit the catalogue's rerank blend (`ragroute skills tune`) on up to N fold-0 queries "
    "and add the row hybrid+rerank_tuned, scored on fold 1 only (on a set the reranker never saw, "
    "it is in methods_fold1 alone).",
)
@rerank_backend_option
@bench_encoder_options
@bench_json_option
@one_line_errors
def skills_command(
    root: Path,
    split: str,
    reranker_path: str | None,
    no_reranker: bool,
    candidates: int,
    scale: int,
    latency_queries: int,
    max_queries: int | None,
    abstain_data: Path | None,
    tune_blend: int | None,
    rerank_backend: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Skill selection: BM25, dense, adaptive hybrid, naive RRF, hybrid+rerank and its no-body
    ablation on Hit@1, nDCG@10, MRR@10, Recall@10 and full coverage@5, all through one SkillRouter
    (the one `ragroute skills build` gives); p50 latency of retrieve + rerank, also at 10k skills;
    abstention quality and cost.

    The differences the goals name (hybrid - the better of BM25 and dense, hybrid+rerank - hybrid,
    hybrid+rerank - the better single method) are paired per query, with 95% bootstrap intervals
    (JSON `comparisons`): an interval holding 0 means these queries do not show the gain.

    With a reranker trained by `ragroute rerank train`, only fold-1 queries (held out from its
    training) are scored, for every row.
    """
    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_skills

    skill_set = bench_skills.load_skill_set(root, split)  # fail fast, before loading a model
    reranker_path, no_reranker = yield_to_command_line(
        {"reranker_path": reranker_path, "no_reranker": no_reranker}
    )
    if no_reranker:  # both set the reranker's rows: without one they were dropped in silence
        refuse_options(("tune_blend", "rerank_backend"), "with --no-reranker (they set the reranker's rows)")
    reranker, said = resolve_reranker(  # the rows need one: its absence is an error
        reranker_path, bool(no_reranker), candidates=candidates, backend=rerank_backend, required=True
    )
    click.echo(said, err=True)
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_skills.run_skills_bench(
        root,
        enc,
        split=split,
        reranker=reranker,
        candidates=candidates,
        scale=scale,
        latency_queries=latency_queries,
        max_queries=max_queries,
        abstain_data=abstain_data,
        log=lambda msg: click.echo(msg, err=True),
        skill_set=skill_set,
        tune_blend=tune_blend,
    )
    click.echo(bench_skills.format_report(result))
    if as_json:
        emit_json(result)


@click.command("gate")
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    default=None,
    metavar="TRAIN.jsonl",
    help="LABELS file the gates are fitted on (or use --folds).",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="TEST.jsonl",
    help="LABELS file the gates are scored on (no / none / no_tool = answer directly; a label given "
    "as a list counts as its first label).",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=None,
    help="Instead of --train: N-fold cross-validation on --data (stratified, identical texts together).",
)
@click.option(
    "--gates",
    default=None,
    help="Comma-separated gates to compare [default: all of "
    "logreg_embedding, knn5_embedding, threshold_*, trained_signals, trained_all, and selected "
    "(the choice among those seven made on each fit split alone, by `gate fit --select`'s rule); "
    "threshold_tuned_probe, trained_all_tuned and their *_tuned_soup and *_tuned_ensemble "
    "variants fine-tune a classifier per fit and run only when named].",
)
@latency_queries_option
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the folds and the holdout.",
)
@bench_encoder_options
@plot_option
@bench_json_option
@one_line_errors
def gate_command(
    train_path: Path | None,
    data_path: Path,
    folds: int | None,
    gates: str | None,
    latency_queries: int,
    seed: int,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Retrieval gates (threshold gates over single signals, trained gates over all LLM-free signals)
    against logistic regression and 5-NN on embeddings: AUROC, accuracy and balanced accuracy at each
    gate's default operating point, retrieval rate vs recall of needed retrieval at 5 operating
    points, p50 decision time (encoding excluded). --train and --data must differ: one file given
    twice, or a test file whose every query is in the training file, is refused (use --folds N);
    a note on stderr counts the test queries whose text is in the training file too.
    """
    import torch

    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_gate

    train_path, folds = exclusive_options(
        {"train_path": train_path, "folds": folds}, bench_gate.TRAIN_OR_FOLDS, required=True
    )
    torch.set_num_threads(1)
    from ragroute.loaders.labels import check_labels_file

    for path in (train_path, data_path):
        if path is not None:
            check_labels_file(path)
    names = name_list(gates, "--gates") if gates is not None else list(bench_gate.ALL_GATES)
    bench_route_labels.refuse_same_file(train_path, data_path, bench_gate.FOLDS_INSTEAD)
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_gate.run_gate_bench(
        data_path,
        train_path=train_path,
        folds=folds,
        encoder=enc,
        gates=names,
        latency_queries=latency_queries,
        seed=seed,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_gate.format_report(result))
    if as_json:
        emit_json(result)
    save_plot("gate", result, plot)


@click.command("stepwise")
@data_root_option(
    "A multi-hop set in BEIR form whose queries carry question_decomposition metadata (MuSiQue).",
    Path("../shared/data/musique"),
)
@split_option()
@click.option(
    "--planner",
    type=click.Choice(["decomposition", "llm"]),
    default="decomposition",
    show_default=True,
    help="decomposition: the queries' gold sub-questions (an oracle); llm: the local SmolLM2 plans.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions.")
@click.option(
    "--max-steps", type=click.IntRange(min=1), default=4, show_default=True, help="Step budget per question."
)
@click.option("--graph/--no-graph", default=True, show_default=True, help="Add the graph walk reference row.")
@click.option("--gate/--no-gate", default=True, show_default=True, help="Add a gated step-wise row.")
@bench_encoder_options
@bench_json_option
@one_line_errors
def stepwise_command(
    root: Path,
    split: str,
    planner: str,
    limit: int | None,
    max_steps: int,
    graph: bool,
    gate: bool,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Step-wise retrieval (plan, gate, retrieve per sub-question) against single-shot dense and
    BM25: Recall@5 and full-chain recall@5 of the steps' interleaved top hits, retrieval calls,
    steps, what the gate skipped.
    """
    import torch

    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_stepwise

    torch.set_num_threads(1)
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_stepwise.run_stepwise_bench(
        root,
        enc,
        split=split,
        planner=planner,
        limit=limit,
        max_steps=max_steps,
        graph=graph,
        gate=gate,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_stepwise.format_report(result))
    if as_json:
        emit_json(result)


@click.command("experts")
@data_root_option("Folder holding one BEIR folder per collection (e.g. ../shared/data/glasgow).")
@split_option("Qrels split the rows are reported on.")
@click.option(
    "--train-split",
    default=None,
    help="Split the routers are fitted on (cross-validated when it equals --split) [default: none, and "
    "only the router that reads no labelled query, pilot-domain, is scored].",
)
@click.option(
    "--experts",
    "experts_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("experts/glasgow"),
    show_default=True,
    help="One trained expert per collection (trained where missing, reused otherwise).",
)
@click.option(
    "--folds",
    type=click.IntRange(2),
    default=5,
    show_default=True,
    help="Cross-validation folds when --train-split equals --split.",
)
@click.option("--threshold", type=float, default=None, help="Mixtures: probability needed to add an expert.")
@click.option("--max-routes", type=int, default=None, help="Mixtures: most experts fused.")
@click.option("--fusion", default=None, help="Mixtures: registered fusion method [default: the product's].")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch threads for training.")
@train_device_option("the benchmark's searches and routers")
@bench_encoder_options
@plot_option
@bench_json_option
@one_line_errors
def experts_command(
    root: Path,
    split: str,
    train_split: str | None,
    experts_dir: Path,
    folds: int,
    threshold: float | None,
    max_routes: int | None,
    fusion: str | None,
    threads: int | None,
    device: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Route each query among expert encoders (base, BM25, one trained expert per collection): single
    experts, equal-weight fusion of all, pilot / quality / dataset routers and their mixtures, and the
    dataset and instance oracles, all as macro nDCG@10.
    """
    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_experts
    from ragroute.experts.train import ExpertTrainParams
    from ragroute.training import check_device

    if not Path(root).is_dir():
        raise RagrouteError(f"data missing: {root} is not a folder (see ../shared/data/README.md)")
    if train_split != split:
        refuse_options(("folds",), FOLDS_NEED_TRAIN_SPLIT)
    bench_corpus_routing.check_train_split(Path(root), split, train_split)
    bench_experts.check_training_collections(Path(root), split, train_split)
    check_device(device)  # before the collections are encoded
    mix = {
        key: value
        for key, value in {"threshold": threshold, "max_routes": max_routes, "fusion": fusion}.items()
        if value is not None
    }
    # checked now, not after the collections are encoded and the experts trained (until session 38)
    from ragroute.pipeline.build import routing_options

    routing_options(mix, "--threshold/--max-routes/--fusion")
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir, threads=threads)
    result = bench_experts.run_experts_bench(
        Path(root),
        split,
        train_split,
        enc,
        experts_dir,
        folds=folds,
        mix=mix,
        train_params=ExpertTrainParams(threads=threads, device=device),
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_experts.format_report(result))
    if as_json:
        emit_json(result)
    save_plot("experts", result, plot)


@click.command("scores")
@data_root_option(
    "The Glasgow folder (one BEIR folder per collection); cutoffs are chosen on adi, cacm, cisi, cran.",
    Path("../shared/data/glasgow"),
)
@click.option(
    "--tatqa",
    default=Path("../shared/data/tatqa"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="A second data set the cutoffs are applied to (left out, and said, when missing).",
)
@click.option(
    "--router",
    type=click.Choice(["prototype", "confidence", "centroid"]),
    default="prototype",
    show_default=True,
    help="Training-free router of the pipelines (the routing config default is prototype).",
)
@click.option(
    "--method",
    type=click.Choice(bench_indexes.METHODS),
    default="dense",
    show_default=True,
    help="Every source's index: dense, hybrid (BM25 + dense, RRF) or bm25.",
)
@bench_encoder_options
@plot_option
@bench_json_option
@one_line_errors
def scores_command(
    root: Path,
    tatqa: Path,
    router: str,
    method: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Do score cutoffs transfer? Choose a cutoff for a target recall on some queries, apply it to
    others (other collections, TAT-QA, one- vs several-route queries), for each score meaning
    (``scores: similarity``, the default, and the fusion methods' own values).
    """
    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_scores

    if not Path(root).is_dir():
        raise RagrouteError(f"data missing: {root} is not a folder (see ../shared/data/README.md)")
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_scores.run_scores_bench(
        Path(root), tatqa, enc, router=router, method=method, log=lambda msg: click.echo(msg, err=True)
    )
    click.echo(bench_scores.format_report(result))
    if as_json:
        emit_json(result)
    save_plot("scores", result, plot)


@click.command("reliability")
@click.option("--quick", is_flag=True, help="Short versions of every harness (about a few minutes).")
@click.option(
    "--only",
    "parts",
    multiple=True,
    type=click.Choice(["kill", "corruption", "race", "fuzz", "faults", "scope"]),
    help="Run only these harnesses (repeatable) [default: all].",
)
@click.option(
    "--kill-points",
    type=click.IntRange(min=1),
    default=None,
    help="Kill points per command [default: 52; 6 with --quick].",
)
@click.option(
    "--kill-command",
    "kill_commands",
    multiple=True,
    metavar="COMMAND",
    help="Kill only this command (repeatable; quote names with spaces): build, 'graph build', "
    "'graph add', 'route fit', 'gate fit', 'skills build', 'rerank train', 'expert train' "
    "[default: all; build and 'graph add' with --quick].",
)
@click.option(
    "--kill-method",
    type=click.Choice(["bm25", "dense", "hybrid", "lancedb"]),
    default=None,
    help="Index kind of the killed `build` (lancedb: vectors in a LanceDB folder under the work "
    "folder; a rerun must also leave no collection that no build names) [default: hybrid; bm25 "
    "with --quick].",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the harnesses' files here [default: a temporary folder, removed afterwards].",
)
@bench_json_option
@one_line_errors
def reliability_command(
    quick: bool,
    parts: tuple[str, ...],
    kill_points: int | None,
    kill_commands: tuple[str, ...],
    kill_method: str | None,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """Kill builds at swept points, corrupt every artifact file, read during rebuilds, fuzz the
    loaders, inject CLI faults and probe caller scopes; print each number next to its goal.

    Subprocesses run `ragroute` with the default encoder and the per-user cache folder.
    """
    from ragroute.evaluation import bench_reliability

    if parts and "kill" not in parts:  # a kill option without the kill harness was echoed, then unused
        refuse_options(("kill_points", "kill_commands", "kill_method"), "without --only kill")
    result = bench_reliability.run_reliability_bench(
        quick=quick,
        parts=parts or bench_reliability.PARTS,
        kill_points=kill_points,
        kill_commands=kill_commands or None,
        kill_method=kill_method,
        workdir=workdir,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_reliability.format_report(result))
    if as_json:
        emit_json(result)


@click.command("exposure")
@data_root_option(
    "The Glasgow folder: its collections are the knowledge base, its dev questions the benign users'.",
    Path("../shared/data/glasgow"),
)
@click.option(
    "--users", type=click.IntRange(min=1), default=1000, show_default=True, help="Benign users simulated."
)
@click.option(
    "--max-queries",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Most queries the attack stream sends (it also stops after 150 queries that show nothing new).",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the attack and benign query streams (budgets were set on 0; docs report 1).",
)
@bench_encoder_options
@plot_option
@bench_json_option
@one_line_errors
def exposure_command(
    root: Path,
    users: int,
    max_queries: int,
    seed: int,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Replay an anchor-mutation extraction stream and simulated benign users against exposure budgets:
    how much of the knowledge base leaks before the budget stops the attack, and how many users it stops.
    """
    from ragroute.encode import load_encoder
    from ragroute.evaluation import bench_exposure

    if not Path(root).is_dir():
        raise RagrouteError(f"data missing: {root} is not a folder (see ../shared/data/README.md)")
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    result = bench_exposure.run_exposure_bench(
        Path(root),
        enc,
        users=users,
        max_queries=max_queries,
        seed=seed,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(bench_exposure.format_report(result))
    if as_json:
        emit_json(result)
    save_plot("exposure", result, plot)


SCALE_MIN_SIZE = 1000
"""The smallest corpus size ``bench scale --sizes`` takes (its help says so, its check refuses less)."""
SCALE_MIN_QUERIES = 20
"""The fewest queries ``bench scale --queries`` times: its JSON has a p95 of them (until session 55 it
took 10, a p95 interpolated between the two slowest)."""


@click.command("scale")
@click.option(
    "--sizes",
    default="10000,100000,1000000",
    show_default=True,
    help=f"Comma-separated corpus sizes (synthetic 384-d vectors), each at least {SCALE_MIN_SIZE}.",
)
@click.option(
    "--hnsw-max",
    type=click.IntRange(min=1),
    default=300_000,
    show_default=True,
    help="Largest size HNSW is built at (its build is the slowest: ~25 min per million on 2 cores).",
)
@click.option(
    "--qdrant-max",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    help="Largest size the Qdrant row (embedded, in memory) is measured at; 0 leaves it out.",
)
@click.option(
    "--lancedb-max",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    help="Largest size the LanceDB row (embedded, on disk, exact scan) is measured at; 0 leaves it out.",
)
@click.option(
    "--queries",
    type=click.IntRange(min=SCALE_MIN_QUERIES),
    default=200,
    show_default=True,
    help=f"Queries timed per size (latency_ms_p50 and _p95 over them; at least {SCALE_MIN_QUERIES}).",
)
@click.option(
    "--ray-corpus",
    type=click.Path(path_type=Path),
    default=None,
    help="Also build this corpus with the Ray engine at each --ray-workers count (extra ragroute[ray]).",
)
@click.option("--ray-workers", default="1,2", show_default=True, help="Comma-separated worker counts.")
@click.option(
    "--routing-sources",
    default="2,8,32,128",
    show_default=True,
    help="Route-stage latency of the prototype router over this many generated sources (comma-separated; "
    "empty: skip).",
)
@click.option(
    "--ppr-edges",
    default="10000,100000,1000000,4000000",
    show_default=True,
    help="PPR latency on skewed random graphs of about this many directed edges (comma-separated; "
    "empty: skip).",
)
@click.option(
    "--ray-synthetic",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also check that a Ray build of this many generated documents (hybrid, word-hashing encoder, "
    "2 workers) is identical to the single-process build; 0: skip.",
)
@encoder_option("Encoder of the Ray builds.")
@backend_option
@plot_option
@bench_json_option
@one_line_errors
def scale_command(
    sizes: str,
    hnsw_max: int,
    qdrant_max: int,
    lancedb_max: int,
    queries: int,
    ray_corpus: Path | None,
    ray_workers: str,
    ray_synthetic: int,
    routing_sources: str,
    ppr_edges: str,
    encoder: str,
    backend: str,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Query latency, recall@10 and bytes per vector of each dense layout (flat, HNSW, IVF-PQ, IVF-PQ with
    exact re-ranking, memory-mapped) as the corpus grows.

    --encoder, --backend and --ray-workers set the Ray builds of --ray-corpus and are refused
    without it; the rows left out as asked (--qdrant-max 0, --lancedb-max 0, an empty
    --routing-sources or --ppr-edges) are named on stderr.
    """
    from ragroute.evaluation import bench_scale

    counts = _integers(sizes, "--sizes")
    if not counts or min(counts) < SCALE_MIN_SIZE:
        raise RagrouteError(f"--sizes: give sizes of at least {SCALE_MIN_SIZE}")
    # every option read before the layouts run (until session 36 these three were read after them,
    # an hour at the documented sizes, and --ppr-edges -1 ended in a numpy traceback)
    sources = _integers(routing_sources, "--routing-sources", minimum=1)
    edges = _integers(ppr_edges, "--ppr-edges", minimum=1)
    workers = _integers(ray_workers, "--ray-workers", minimum=1)
    if ray_corpus is None:  # the Ray builds of --ray-corpus are all they set (--ray-synthetic hashes words)
        refuse_options(("ray_workers", "encoder", "backend"), "without --ray-corpus (they build that corpus)")
    left_out = [
        what
        for what, gone in (
            ("the Qdrant row (--qdrant-max 0)", not qdrant_max),
            ("the LanceDB row (--lancedb-max 0)", not lancedb_max),
            ("the routing cost (--routing-sources empty)", not sources),
            ("the PPR cost (--ppr-edges empty)", not edges),
        )
        if gone
    ]
    if left_out:
        click.echo(f"left out as asked: {', '.join(left_out)}", err=True)
    result = bench_scale.run_scale_bench(
        counts,
        layouts=(
            *bench_scale.LAYOUTS,
            *(["qdrant"] if qdrant_max else []),
            *(["lancedb"] if lancedb_max else []),
        ),
        max_size={"hnsw": hnsw_max, "qdrant": qdrant_max, "lancedb": lancedb_max},
        queries=queries,
        log=lambda msg: click.echo(msg, err=True),
    )
    if ray_corpus is not None:
        click.echo(f"Ray builds of {ray_corpus} with {workers} workers ...", err=True)
        ray = bench_scale.ray_throughput(ray_corpus, encoder, backend, workers)
        result.update({key: ray[key] for key in ("build_docs_per_s", "ray_identical")})
        result["ray"] = ray
    if sources:
        click.echo(f"routing over {sources} generated sources ...", err=True)
        result["routing_cost"] = bench_scale.routing_cost(sources)
        result["routing_ms_p50"] = {n: row["ms_p50"] for n, row in result["routing_cost"].items()}
    if edges:
        click.echo(f"PPR on graphs of {edges} edges ...", err=True)
        result["ppr_cost"] = bench_scale.ppr_cost(edges)
        result["ppr_ms_p50"] = {n: row["ms_p50"] for n, row in result["ppr_cost"].items()}
    if ray_synthetic:
        click.echo(f"Ray build of {ray_synthetic:,} generated documents ...", err=True)
        synthetic = bench_scale.ray_synthetic_identity(ray_synthetic)
        result["ray_synthetic"] = synthetic
        result["ray_identical"] = synthetic["identical"] and result["ray_identical"] is not False
    click.echo(bench_scale.format_report(result))
    if as_json:
        emit_json(result)
    save_plot("scale", result, plot)


def _integers(value: str, option: str, *, minimum: int | None = None) -> list[int]:
    """A comma-separated list of integers given to ``option``, each at least ``minimum`` (one-line
    error otherwise)."""
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise RagrouteError(f"{option} {value!r}: give comma-separated integers") from None
    if minimum is not None and any(n < minimum for n in numbers):
        raise RagrouteError(f"{option} {value!r}: give integers of at least {minimum}")
    return numbers
