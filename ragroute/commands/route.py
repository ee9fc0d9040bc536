"""``ragroute route``: route a query with a routing config, and fit routers from labelled queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ragroute.commands.common import format_hit
from ragroute.errors import check_query
from ragroute.types import Decision

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _DefaultToAsk(click.Group):
    """``ragroute route CONFIG QUERY`` means ``ragroute route ask CONFIG QUERY``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["ask", *args]
        return super().parse_args(ctx, args)


@click.group("route", cls=_DefaultToAsk, context_settings=CONTEXT)
def route_group() -> None:
    """Route queries across sources: `ragroute route CONFIG "query"` prints the decision and hits;
    `ragroute route fit` trains a router from labelled queries.
    """


def format_decision(decision: Decision) -> list[str]:
    """The decision as readable lines: chosen routes, probabilities, what decided, the trace."""
    ranked = sorted(decision.routes.items(), key=lambda kv: -kv[1])
    lines = [
        f"decision: {', '.join(decision.chosen) or '(nothing)'}   decided by {decision.decided_by}",
        "  routes: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked),
    ]
    for step in decision.trace:
        detail = ", ".join(f"{k}={_short(v)}" for k, v in step.detail.items())
        lines.append(f"  {step.stage}: {detail}")
    return lines


def _short(value: Any, limit: int = 140) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@route_group.command("ask")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Hits to return.")
@click.option("--backend", default=None, help="Encoder backend [default: the config's, else auto].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: decision and hits.")
def ask_command(config: Path, query: str, k: int, backend: str | None, as_json: bool) -> None:
    """Route QUERY with the sources, router and rules of CONFIG; print the decision and hits."""
    from ragroute.cli import emit_json
    from ragroute.route.config import load_routing

    query = check_query(query)
    routed = load_routing(config, backend=backend)
    result = routed.retrieve(query, k)
    if as_json:
        emit_json({"query": query, **result.to_dict()})
        return
    click.echo(f"query: {query}")
    for line in format_decision(result.decision):
        click.echo(line)
    for hit in result.hits:
        click.echo(format_hit(hit))
