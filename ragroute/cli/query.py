"""``ragroute query``: search an index and show the hits with the trace behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import Stopwatch, format_hit, load_index_for
from ragroute.cli.options import encoder_options, filter_option, parse_filters, store_matchable, text_argument
from ragroute.cli.output import emit_json
from ragroute.context import QueryContext
from ragroute.display import terminal_text
from ragroute.errors import check_query
from ragroute.types import TraceStep


@click.command("query")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("text", callback=text_argument)
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Number of hits.")
@encoder_options(None)
@filter_option
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check every file's checksum (and an external store's collection) before searching; "
    "--no-verify skips reading a large index twice.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: hits and trace.")
def query_command(
    index_dir: Path,
    text: str,
    k: int,
    encoder: str | None,
    backend: str,
    cache_dir: Path | None,
    filters: tuple[str, ...],
    verify: bool,
    as_json: bool,
) -> None:
    """Search INDEX_DIR for TEXT and print the top hits and the decision trace."""
    text = check_query(text)
    watch = Stopwatch()
    with watch.time("load_ms"):
        # the encoder picked from the manifest of the build loaded (see load_index_for)
        index = load_index_for(index_dir, encoder, backend, cache_dir, verify=verify)
        manifest = index.manifest
    parsed = parse_filters(filters)
    parsed = store_matchable(parsed, [index])
    with watch.time("search_ms"):
        # as a caller with no scopes, as every CLI command: documents with access labels stay hidden
        hits = index.search_contexts([QueryContext.of(text, filters=parsed or None)], k)[0]
    trace = [
        TraceStep(
            "load",
            {
                "index": str(index_dir),
                "kind": manifest.kind,
                "documents": manifest.params["documents"],
                # the encoder that ran (its backend may differ from the build's: --backend torch on
                # an int8 index), beside what the index recorded: the build's until session 38
                **(
                    {"encoder": index.encoder_info(), "built_with": manifest.encoder}
                    if manifest.encoder
                    else {"encoder": None}
                ),
                "ms": watch.ms["load_ms"],
            },
        ),
        TraceStep(
            "retrieve",
            {
                "method": manifest.kind,
                "k": k,
                "filters": list(filters),
                "hits": len(hits),
                "ms": watch.ms["search_ms"],
                **_fusion_detail(manifest.params),
                **_weightless(index, text),
            },
        ),
    ]
    weightless = _weightless(index, text).get("weightless_terms")
    if not hits and weightless:  # said where a user reads it, not only inside the trace
        click.echo(
            f"warning: no hits: {', '.join(weightless)} weigh nothing in this index (BM25 gives a term in "
            "exactly half of the documents idf 0); add other words",
            err=True,
        )
    elif not hits and callable(terms := getattr(index, "query_terms", None)) and not terms(text):
        click.echo(
            "warning: no hits: the query has no term BM25 reads (stopwords, punctuation and symbols "
            "are left out); add other words",
            err=True,
        )
    if as_json:
        emit_json(
            {
                "query": text,
                "index": str(index_dir),
                "hits": [h.to_dict() for h in hits],
                "trace": [step.to_dict() for step in trace],
            }
        )
        return
    click.echo(terminal_text(f"query: {text}"))
    click.echo(f"score: {_score_meaning(manifest.kind, manifest.params)}")
    for hit in hits:
        click.echo(format_hit(hit))
        if hit.explain:
            parts = [
                f"{name} rank {v['rank']} score {v['score']:.4f}"
                for name, v in hit.explain.items()
                if isinstance(v, dict) and "rank" in v
            ]
            if not parts:  # e.g. a graph walk: its method, seeds and facts
                parts = [f"{key}: {_short(value)}" for key, value in hit.explain.items()]
            click.echo(terminal_text(f"       ({'; '.join(parts)})"))
    click.echo("trace:")
    for step in trace:
        detail = ", ".join(f"{key}={value}" for key, value in step.detail.items())
        click.echo(terminal_text(f"  {step.stage}: {detail}"))


def _short(value: object, limit: int = 90) -> str:
    text = ", ".join(map(str, value[:3])) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _score_meaning(kind: str, params: dict) -> str:
    """What a hit's score is in a search of one index of ``kind`` (its own scores: a routing pipeline
    and the framework retrievers show the encoder's cosine instead, docs/scores.md)."""
    if kind == "hybrid":
        method = (params.get("fusion") or {}).get("method", "rrf")
        return (
            f"the {method} fusion value of BM25 and dense (orders the hits, no meaning across "
            "queries; `ragroute route` and the retrievers show the dense half's cosine)"
        )
    dense = params.get("dense") or {}
    if kind == "dense" and dense.get("factory") == "ivfpq" and not dense.get("refine"):
        # compressed codes: the product read from them, not the cosine (said as the cosine until
        # session 40, 0.6831 where the cosine is 0.6977)
        return "the cosine similarity of query and document as IVF-PQ's compressed codes approximate it"
    return {
        "bm25": "the BM25 (Okapi) score",
        "graph": "the graph walk's personalized PageRank mass",
    }.get(kind, "the cosine similarity of query and document")


def _fusion_detail(params: dict) -> dict:
    fusion = params.get("fusion")
    return {"fusion": fusion} if fusion else {}


def _weightless(index: Any, text: str) -> dict:
    """``weightless_terms`` (BM25 terms with idf 0: in exactly half of the documents) when there are any."""
    terms = getattr(index, "weightless_terms", None)
    found = terms(text) if callable(terms) else []
    return {"weightless_terms": found} if found else {}
