"""``ragroute eval``: score an index against a BEIR collection's judgements."""

from __future__ import annotations

import time
from pathlib import Path

import click
from tqdm.auto import tqdm

from ragroute.cli.common import encoder_for_index
from ragroute.cli.options import encoder_options
from ragroute.cli.output import emit_json
from ragroute.evaluation.metrics import evaluate_run


def ranked_parent_ids(hits: list) -> list[str]:
    """Judged ids of a ranking: chunks count as their parent document, first occurrence wins."""
    return list(dict.fromkeys(h.parent_id or h.doc_id for h in hits))


EVAL_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "hit@1", "hit@10", "full_chain_recall@10")


@click.command("eval")
@click.option("--index", "index_dir", required=True, type=click.Path(path_type=Path), help="Index directory.")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.",
)
@click.option("--split", default="dev", show_default=True, help="Which qrels/<split>.tsv to score against.")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="How many hits to retrieve per query (>= the largest metric cutoff).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@encoder_options(None)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the metrics as one JSON object on the last line."
)
def eval_command(
    index_dir: Path,
    data_dir: Path,
    split: str,
    depth: int,
    batch_size: int,
    encoder: str | None,
    backend: str,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Run every judged query of --data/--split against --index and report nDCG@10,
    Recall@10/100, MRR@10, Hit@1/10 and full-chain recall@10.
    """
    from ragroute.index.io import load_index, read_index_manifest
    from ragroute.loaders import load_beir

    dataset = load_beir(data_dir, split=split)
    recorded = read_index_manifest(index_dir, verify=False)
    model = encoder_for_index(recorded, index_dir, encoder, backend, cache_dir)
    index = load_index(index_dir, model)
    manifest = index.manifest
    queries = dataset.queries
    run: dict[str, list[str]] = {}
    start = time.perf_counter()
    for offset in tqdm(range(0, len(queries), batch_size), desc="queries", unit="batch", leave=False):
        batch = queries[offset : offset + batch_size]
        for query, hits in zip(batch, index.search_many([q.text for q in batch], depth)):
            run[query.id] = ranked_parent_ids(hits)
    elapsed = time.perf_counter() - start
    result = evaluate_run(run, dataset.qrels, EVAL_METRICS)
    result.update(
        {
            "index": str(index_dir),
            "kind": manifest.kind,
            "data": str(data_dir),
            "split": split,
            "queries_per_s": round(len(queries) / elapsed, 2) if elapsed else None,
        }
    )
    if as_json:
        for name in EVAL_METRICS:
            click.echo(f"{name:>22}: {result[name]:.4f}")
        emit_json(result)
        return
    click.echo(f"{index_dir} ({manifest.kind}) on {data_dir} [{split}], {result['queries']} queries")
    for name in EVAL_METRICS:
        click.echo(f"{name:>22}: {result[name]:.4f}")
