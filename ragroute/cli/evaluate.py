"""``ragroute eval``: score an index, or the pipeline of a routing config, against a BEIR collection."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import counted, exclusive_options, given_options, load_index_for, refuse_options
from ragroute.cli.options import BACKEND_HELP, ENCODER_HELP, backend_option, cache_dir_option, encoder_option
from ragroute.cli.output import emit_json
from ragroute.errors import RagrouteError

EVAL_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "hit@1", "hit@10", "full_chain_recall@10")
#: the largest metric cutoff: fewer hits per query would score Recall@100 on fewer hits
DEEPEST = max(int(name.rsplit("@", 1)[1]) for name in EVAL_METRICS)


@click.command("eval")
@click.option("--index", "index_dir", default=None, type=click.Path(path_type=Path), help="Index directory.")
@click.option(
    "--config",
    "config",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A routing config: score the whole pipeline it describes instead of one index.",
)
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.",
)
@click.option("--split", default="dev", show_default=True, help="Which qrels/<split>.tsv to score against.")
@click.option(
    "--strict",
    is_flag=True,
    help="A bad line, a dangling qrels id or a (query, document) pair judged twice is an error instead of "
    "a warning (and a skipped line, or the last of the pair's scores kept).",
)
@click.option(
    "--depth",
    type=click.IntRange(min=DEEPEST),
    default=DEEPEST,
    show_default=True,
    help=f"How many hits to retrieve per query (at least the largest metric cutoff, {DEEPEST}: fewer would "
    f"score Recall@{DEEPEST} on fewer hits; a chunk index is searched deeper until its hits hold that many "
    "documents).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Queries encoded per batch.",
)
@encoder_option(ENCODER_HELP[:-1] + " [default: the one the index was built with].", None)
# with --config the config's backend: and cache_dir: are the defaults (load_routing's): until
# session 55 the help said auto and the per-user cache folder for --config too
@partial(
    backend_option,
    help_text=BACKEND_HELP[:-1] + " [default: auto; with --config, the config's backend:, else auto].",
    show_default=False,
)
@cache_dir_option(
    "Embedding cache and exported ONNX models [default: with --config, the config's cache_dir:, else "
    "$RAGROUTE_CACHE, else $XDG_CACHE_HOME/ragroute, else ~/.cache/ragroute]."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the metrics as one JSON object on the last line."
)
def eval_command(
    index_dir: Path | None,
    config: Path | None,
    data_dir: Path,
    split: str,
    strict: bool,
    depth: int,
    batch_size: int,
    encoder: str | None,
    backend: str,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Run every judged query of --data/--split against --index (or the pipeline of --config) and
    report nDCG@10, Recall@10/100, MRR@10, Hit@1/10 and full-chain recall@10 (hits of chunks are
    judged as their parent documents).

    A line of --data that cannot be read is skipped with a warning per file, and one more warning
    says how many records were skipped and how many judged queries the metrics then cover. A qrels
    id naming no query or document is kept and warned about (a judged query missing from
    queries.jsonl is not scored), and so is a pair judged on two lines (the last score counts).
    --strict makes each of these one error line instead. A split that leaves no query to score is
    always one.
    """
    from ragroute.context import QueryContext
    from ragroute.evaluation.evaluators import RetrievalEvaluator
    from ragroute.evaluation.metrics import is_scorable
    from ragroute.loaders import load_beir

    index_dir, config = exclusive_options(
        {"index_dir": index_dir, "config": config},
        "give exactly one of --index INDEX_DIR or --config ROUTING.yaml",
        required=True,
    )
    dataset = load_beir(data_dir, split=split, on_error="raise" if strict else "skip")
    if not dataset.queries:  # every metric would read 0.0 over no query
        raise RagrouteError(f"{data_dir}: split {split!r} judges no query of queries.jsonl: nothing to score")
    # a query judged only with grade 0 (or below) has no relevant document: it is not scored (see
    # is_scorable), so it is neither counted in "queries" nor, alone, something to score
    scored_queries = sum(is_scorable(dataset.qrels[q.id]) for q in dataset.queries)
    if not scored_queries:
        raise RagrouteError(
            f"{data_dir}: split {split!r} judges no query of queries.jsonl relevant to a document "
            "(every score is 0 or below): nothing to score"
        )
    if dataset.report.n_skipped:
        # the loader warned once per file (lines and reasons); this says what it does to the scores:
        # the queries scored of those that could be (a query judged only with grade 0 is neither;
        # until session 50 both were counted: "cover 4 of 5" where 2 of 3 were scored)
        n = dataset.report.n_skipped
        judged = sum(is_scorable(rels) for rels in dataset.qrels.values())
        of = (
            counted(judged, "judged query", "judged queries")
            if judged == len(dataset.qrels)
            else f"the {counted(judged, 'query', 'queries')} judged relevant to a document"
        )
        click.echo(
            f"warning: {n} bad record{'s' if n != 1 else ''} of {data_dir} skipped: the metrics cover "
            f"{scored_queries} of {of} (--strict refuses such data)",
            err=True,
        )
    if config is not None:
        from ragroute.route.config import load_routing

        refuse_options(("encoder",), "to --config (the routing config names its encoder: its 'encoder:' key)")
        # the config's backend: unless one is given; a typed `--backend auto` too (until session 55
        # it read as not given, and the config's `backend: torch` ran)
        typed = bool(given_options("backend"))
        retriever: Any = load_routing(
            config, backend=None if backend == "auto" and not typed else backend, cache_dir=cache_dir
        )
        target, kind = str(config), "pipeline"
        listed = [list(getattr(source, "documents", None) or []) for source in retriever.sources]
        # a source that lists nothing (a framework's retriever) leaves it unknown: nothing is said
        held = None if not all(listed) else [doc for docs in listed for doc in docs]
        _warn_if_unjudgeable(held, dataset.qrels, config, data_dir)
    else:
        # the encoder picked from the manifest of the build loaded (see load_index_for)
        retriever = load_index_for(index_dir, encoder, backend, cache_dir)
        target, kind = str(index_dir), retriever.manifest.kind
        stored = getattr(getattr(retriever, "store", None), "documents", None)
        _warn_if_unjudgeable(stored, dataset.qrels, index_dir, data_dir)
    evaluator = RetrievalEvaluator(
        [QueryContext(q.text, id=q.id) for q in dataset.queries], dataset.qrels, metrics=EVAL_METRICS, k=depth
    )
    scored = evaluator(retriever, batch_size=batch_size, progress=None)
    result = {
        **scored.metrics,
        "queries": scored_queries,
        ("config" if config is not None else "index"): target,
        "kind": kind,
        "data": str(data_dir),
        "split": split,
        "queries_per_s": scored.queries_per_s,
    }
    if not as_json:
        unscored = len(dataset.queries) - scored_queries
        left_out = f" ({unscored} judged with no relevant document, not scored)" if unscored else ""
        queries = counted(scored_queries, "query", "queries")
        click.echo(f"{target} ({kind}) on {data_dir} [{split}], {queries}{left_out}")
    for name in EVAL_METRICS:
        click.echo(f"{name:>22}: {result[name]:.4f}")
    if as_json:
        emit_json(result)


def _warn_if_unjudgeable(
    documents: Any, qrels: Mapping[str, Mapping[str, int]], index_dir: Path, data: Path
) -> None:
    """All-zero metrics from an index (or a --config's sources: since session 36) that holds none of
    the judged ``documents`` (the wrong --index for this --data) say nothing about retrieval: name
    the mismatch on stderr. ``None`` or none: the documents are unknown, nothing is said."""
    if not documents:
        return
    held = {doc.id for doc in documents} | {doc.parent_id for doc in documents if doc.parent_id}
    judged = {doc_id for rels in qrels.values() for doc_id, grade in rels.items() if grade > 0}
    if judged and not judged & held:
        click.echo(
            f"warning: {index_dir} holds none of the {counted(len(judged), 'document')} "
            f"judged relevant in {data}: "
            "every metric will be 0 (was it built from this corpus?)",
            err=True,
        )
