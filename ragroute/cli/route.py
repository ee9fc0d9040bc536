"""``ragroute route``: route a query with a routing config, and fit routers from labelled queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click

from ragroute.cli.common import CONTEXT, counted, exclusive_options, format_hit, open_encoder, refuse_options
from ragroute.cli.options import (
    BACKENDS,
    CONFIG_CACHE_HELP,
    FiniteFloatRange,
    backend_option,
    cache_dir_option,
    encoder_option,
    filter_option,
    parse_filters,
    scope_option,
    store_matchable,
    text_argument,
)
from ragroute.cli.output import emit_json
from ragroute.display import compared_digits, terminal_text
from ragroute.errors import RagrouteError, check_query
from ragroute.route.features import DEFAULT_HASHED_DIM
from ragroute.types import Decision


class _DefaultToAsk(click.Group):
    """``ragroute route CONFIG QUERY`` means ``ragroute route ask CONFIG QUERY``, options first or
    not (``ragroute route --json CONFIG QUERY``): the group has no options but its help."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["ask", *args]
        return super().parse_args(ctx, args)


@click.group("route", cls=_DefaultToAsk, context_settings=CONTEXT)
def route_group() -> None:
    """Route queries across sources: `ragroute route CONFIG "query"` prints the decision and hits
    (it runs `ragroute route ask`: its options, -k, --scope, --filter, --json..., are in `ragroute route ask
    --help`); `ragroute route fit` trains a router from labelled queries.
    """


def format_decision(decision: Decision) -> list[str]:
    """The decision as readable lines: chosen routes, probabilities, what decided, the trace (a
    rule's or signal's ``description`` in quotes, beside its name: free text may hold commas)."""
    ranked = sorted(decision.routes.items(), key=lambda kv: -kv[1])
    select = next((step.detail for step in reversed(decision.trace) if step.stage == "select"), {})
    lines = [
        f"decision: {', '.join(decision.chosen) or '(nothing)'}   decided by {decision.decided_by}",
        "  routes: "
        + ", ".join(f"{name} {_route_p(p, select, i == 0)}" for i, (name, p) in enumerate(ranked)),
    ]
    for step in decision.trace:
        detail = ", ".join(f"{k}={_short(_quoted(k, v))}" for k, v in step.detail.items())
        lines.append(f"  {step.stage}: {detail}")
    return [terminal_text(line) for line in lines]


def _route_p(p: float, select: dict[str, Any], best: bool) -> str:
    """A route's probability to three digits, or as many more as it takes not to read across the
    select step's ``threshold`` (or, for the best route, ``hedge_below``) printed beside it: 0.29996
    read 0.300 beside threshold=0.3 and was not queried (until session 43)."""
    digits = 3
    limits = [select.get("threshold"), select.get("hedge_below") if best else None]
    for limit in limits:
        if isinstance(limit, (int, float)) and not isinstance(limit, bool):
            n = compared_digits(p, limit, 3, raw_threshold=True)
            if n is None:  # no rounding keeps the order: the value as it is
                return repr(p)
            digits = max(digits, n)
    return f"{p:.{digits}f}"


def _quoted(key: str, value: Any) -> Any:
    """A ``description`` (free text, which may hold commas) in JSON quotes; other values as given."""
    return json.dumps(value, ensure_ascii=False) if key == "description" and isinstance(value, str) else value


def _short(value: Any, limit: int = 140) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@route_group.command("ask")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("query", callback=text_argument)
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Hits to return.")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Encoder backend [default: the config's, else auto].",
)
@cache_dir_option(CONFIG_CACHE_HELP)
@scope_option
@filter_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: decision and hits.")
def ask_command(
    config: Path,
    query: str,
    k: int,
    backend: str | None,
    cache_dir: Path | None,
    scopes: tuple[str, ...],
    filters: tuple[str, ...],
    as_json: bool,
) -> None:
    """Route QUERY with the sources, router and rules of CONFIG; print the decision and hits."""
    from ragroute.context import QueryContext
    from ragroute.route.config import load_routing

    query = check_query(query)
    parsed = parse_filters(filters)  # a malformed --filter fails before anything loads
    routed = load_routing(config, backend=backend, cache_dir=cache_dir)
    parsed = store_matchable(parsed, [source.retriever for source in routed.sources])
    result = routed.retrieve(QueryContext.of(query, filters=parsed or None, scopes=list(scopes)), k)
    if as_json:
        emit_json({"query": query, **result.to_dict()})
        return
    click.echo(terminal_text(f"query: {query}"))
    for line in format_decision(result.decision):
        click.echo(line)
    for hit in result.hits:
        click.echo(format_hit(hit))


def _labelled_queries(
    queries: Path | None, beir_root: Path | None, split: str
) -> tuple[list[str], list[str]]:
    """Texts and labels from a LABELS file (first label of a list) or from BEIR folders (label = folder)."""
    from ragroute.route.labels import beir_labelled_queries, read_labelled_queries

    queries, beir_root = exclusive_options(
        {"queries": queries, "beir_root": beir_root},
        "give exactly one of --queries FILE or --beir-root FOLDER",
        required=True,
    )
    if beir_root is not None:
        return beir_labelled_queries(beir_root, split)
    refuse_options(("split",), "to --queries (it names the qrels split of --beir-root)")
    return read_labelled_queries(queries)


@route_group.command("fit")
@click.option(
    "--queries",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labelled queries, JSONL with 'text' and 'label' (a list label counts as its first item).",
)
@click.option(
    "--beir-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Or: a folder of BEIR folders; each query's label is the folder it comes from.",
)
@click.option(
    "--split", default="dev", show_default=True, help="With --beir-root: which qrels split's queries."
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Router folder to write (a build holding manifest.json and router_weights.npz; no pickle).",
)
@encoder_option("Encoder of the query vectors the router learns from (routing configs must use the same).")
@backend_option
@cache_dir_option()
@click.option(
    "--none-label",
    default=None,
    help="The label that means 'answer without retrieval' [default: no or no_tool when the labels "
    "hold one of them, as gate fit reads them; '' for none].",
)
@click.option(
    "--model",
    type=click.Choice(["logreg", "mlp"]),
    default="logreg",
    show_default=True,
    help="Classifier over the query features: logistic regression, or a small MLP.",
)
@click.option(
    "--hashed-dim",
    type=click.IntRange(min=0),
    default=DEFAULT_HASHED_DIM,
    show_default=True,
    help="Buckets of hashed word 1-2-gram and character 3-5-gram features (0: off).",
)
@click.option(
    "--C",
    "C",
    type=FiniteFloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Inverse regularisation strength (logreg: C; mlp: an L2 penalty of 1/C).",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=None,
    help="Hidden units of --model mlp [default: 256, TrainedRouter's].",
)
def fit_command(
    queries: Path | None,
    beir_root: Path | None,
    split: str,
    out_dir: Path,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    none_label: str | None,
    model: Literal["logreg", "mlp"],
    hashed_dim: int,
    C: float,
    hidden: int | None,
) -> None:
    """Train a router (query embedding + cheap features + hashed n-grams -> calibrated route
    probabilities) from labelled queries, and save it for `router: {kind: trained, model: DIR}`
    in a routing config.
    """
    from ragroute.errors import IndexFormatError
    from ragroute.route.features import QueryFeatures
    from ragroute.route.trained import (
        ARTIFACT_FAMILY,
        DEFAULT_HIDDEN,
        ROUTER_FILE,
        WEIGHTS_FILE,
        TrainedRouter,
    )
    from ragroute.store import check_writable

    if model != "mlp":
        refuse_options(("hidden",), "to --model logreg (it sets the MLP's hidden layer)")
    # before the queries are encoded and the router trained (until session 53: only when saving it)
    check_writable(out_dir, ARTIFACT_FAMILY, IndexFormatError, supersedes=(ROUTER_FILE, WEIGHTS_FILE))
    texts, labels = _labelled_queries(queries, beir_root, split)
    none_label, said = _none_label(none_label, labels)
    enc = open_encoder(encoder, backend, cache_dir)
    router = TrainedRouter.fit(
        texts,
        labels,
        enc,
        none_label=none_label,
        model=model,
        features=QueryFeatures(hashed_dim=hashed_dim),
        C=C,
        hidden=hidden if hidden is not None else DEFAULT_HIDDEN,
    )
    path = router.save(out_dir)
    click.echo(
        f"trained a {model} router on {counted(len(texts), 'query', 'queries')}, "
        f"labels {', '.join(router.labels)}{said} -> {path}"
    )


def _none_label(given: str | None, labels: list[str]) -> tuple[str | None, str]:
    """The label read as 'answer without retrieval', and the words that say so when it was not
    given: ``no`` or ``no_tool`` when the labels hold one of them (the labels ``gate fit`` reads as
    answer-directly), none when they hold neither; ``''`` given: none."""
    from ragroute.route.base import NONE_ROUTE
    from ragroute.route.labels import is_answer_label

    if given is not None:
        return given or None, ""
    found = sorted({x for x in labels if is_answer_label(x) and x != NONE_ROUTE})
    if len(found) > 1:
        raise RagrouteError(
            f"the labels hold {' and '.join(found)}, which both may mean 'answer without retrieval': "
            "give --none-label LABEL (or --none-label '' to keep them routes)"
        )
    if not found:
        return None, ""
    if NONE_ROUTE in labels:  # both mean it: refused by TrainedRouter as "reserved" (until session 50)
        raise RagrouteError(
            f"the labels hold {found[0]!r} and {NONE_ROUTE!r}, which both mean 'answer without retrieval' "
            f"({NONE_ROUTE!r} is the no-retrieval route): give those queries one label, or give "
            f"--none-label {NONE_ROUTE} to keep {found[0]!r} a route"
        )
    return found[0], f" ({found[0]!r} read as 'answer without retrieval': --none-label '' keeps it a route)"
