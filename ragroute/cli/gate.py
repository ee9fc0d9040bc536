"""``ragroute gate ...``: fit a retrieval gate on labelled queries, and ask it about one query."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import CONTEXT, counted, exclusive_options, one_line_errors, refuse_options
from ragroute.cli.options import (
    SEED,
    FiniteFloatRange,
    backend_option,
    cache_dir_option,
    encoder_option,
    text_argument,
)
from ragroute.cli.output import emit_json
from ragroute.display import shown_pair, shown_value, terminal_text


@click.group("gate", context_settings=CONTEXT)
def gate_group() -> None:
    """Retrieval gates: retrieve, answer directly, or stop, with a calibrated probability."""


def _encoder(name: str, backend: str, cache_dir: Path | None) -> Any:
    from ragroute.encode import load_encoder

    return load_encoder(name, backend=backend, cache_dir=cache_dir)


@gate_group.command("fit")
@click.argument("train", type=click.Path(path_type=Path), metavar="TRAIN.jsonl")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Gate artifact to write (a new build, published atomically).",
)
@click.option(
    "--signals",
    default=None,
    help="Comma-separated signal kinds [default: knn_vote,bank_margin,rarity,complexity,text_probe; "
    "add tuned_probe to fine-tune a MiniLM classifier on the examples (minutes), see docs/gating.md].",
)
@click.option(
    "--select",
    is_flag=True,
    help="Choose the signals by 5-fold cross-validation on TRAIN.jsonl among the candidate gates "
    "(single-signal gates, the LLM-free signals, the default signals; docs/gating.md): the default "
    "signals are kept unless another candidate's mean AUROC leads by more than 0.001. Not with --signals.",
)
@click.option(
    "--default-threshold",
    type=click.Choice(["prior", "balanced_accuracy"]),
    default="prior",
    show_default=True,
    help="How the default operating point is chosen (see docs/gating.md).",
)
@click.option("--C", "C", default="auto", show_default=True, help="Regularisation: a number, or auto (CV).")
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    # until session 55 the help did not say what happens without it
    help="Stop at this step of a multi-step run, saved with the gate [default: none: the gate never "
    "stops a run for its step count].",
)
@encoder_option("Encoder of the query vectors the gate's signals read (the gate is used with the same).")
@backend_option
@cache_dir_option()
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Seed of the cross-validation folds that choose C.",
)
@one_line_errors
def fit_command(
    train: Path,
    out: Path,
    signals: str | None,
    select: bool,
    default_threshold: str,
    C: str,
    max_steps: int | None,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    seed: int,
) -> None:
    """Fit a calibrated gate on TRAIN.jsonl (LABELS: no / none / no_tool = answer directly, any other
    label = retrieve) and save it to --out. The encoder is loaded only when a signal embeds queries."""
    from ragroute.errors import IndexFormatError, RagrouteError, unknown_keys_message
    from ragroute.gate import DEFAULT_SIGNALS, GATE_SIGNALS, TrainedGate, needs_retrieval
    from ragroute.gate.selection import CANDIDATE_GATES, select_gate
    from ragroute.gate.trained import ARTIFACT_FAMILY, FEW_EXAMPLES
    from ragroute.loaders.labels import check_labels_file
    from ragroute.registry import load_plugins
    from ragroute.route.labels import read_labelled_queries
    from ragroute.store import check_writable

    check_labels_file(train)
    exclusive_options(
        {"signals": signals, "select": select}, "give one of {given}: --select chooses the signals"
    )
    kinds = [s.strip() for s in signals.split(",")] if signals is not None else list(DEFAULT_SIGNALS)
    if not any(kinds):
        raise RagrouteError(
            f"--signals is empty: name at least one signal (without --signals: {', '.join(DEFAULT_SIGNALS)})"
        )
    if not all(kinds):
        raise RagrouteError(
            f"--signals {signals!r} has an empty signal name: separate the kinds by one comma"
        )
    load_plugins()  # an extension's signal kinds
    unknown = [k for k in kinds if k not in GATE_SIGNALS]
    if unknown:
        # the closest kind of each, as a routing config's `gate:` says it (none until session 50)
        raise RagrouteError(unknown_keys_message(unknown, GATE_SIGNALS, "gate signal"))
    try:
        strength: float | str = C if C == "auto" else float(C)
    except ValueError:
        strength = -1.0
    if strength != "auto" and not (math.isfinite(float(strength)) and float(strength) > 0):
        raise RagrouteError(f"--C must be a positive number or auto, not {C!r}")
    if select:  # the candidates' signals
        kinds = list(dict.fromkeys(str(k) for c in CANDIDATE_GATES.values() for k in c["signals"]))
    embeds = any(GATE_SIGNALS[k].uses_encoder for k in kinds)
    if not embeds:  # --cache-dir too: accepted and ignored until session 55, as gate decide refuses it
        refuse_options(
            ("encoder", "backend", "cache_dir"), f"to signals that embed nothing ({', '.join(kinds)})"
        )
    # before the queries are read and encoded (until session 53: only when saving the fitted gate)
    check_writable(out, ARTIFACT_FAMILY, IndexFormatError)
    texts, labels = read_labelled_queries(train)
    enc = _encoder(encoder, backend, cache_dir) if embeds else None
    flags = [needs_retrieval(label) for label in labels]
    options: dict[str, Any] = {"C": strength, "default_threshold": default_threshold, "max_steps": max_steps}
    if select:
        gate = select_gate(texts, flags, enc, seed=seed, **options)
        kinds = [s.kind for s in gate.signals]
        chosen = gate.metrics["selection"]
        leads = ", ".join(f"{name} {value:.4f}" for name, value in chosen["mean_auroc"].items())
        click.echo(f"selected {chosen['chosen']} by cross-validated AUROC ({leads})")
    else:
        gate = TrainedGate.fit(texts, flags, enc, signals=kinds, seed=seed, **options)
    gate.save(out)
    n_answer = sum(not needs_retrieval(label) for label in labels)
    fewest = min(n_answer, len(labels) - n_answer)
    if fewest < FEW_EXAMPLES:
        click.echo(
            f"warning: only {counted(fewest, 'example')} of one kind: the held-out AUROC below is "
            "measured on a handful of them and says little; label more queries of that kind",
            err=True,
        )
    click.echo(
        f"gate saved to {out}: {counted(len(texts), 'query', 'queries')} ({n_answer} answer directly), "
        f"signals {', '.join(kinds)}, "
        f"default threshold {gate.threshold:.4f} ({default_threshold}), "
        f"held-out AUROC {gate.metrics.get('validation_auroc', '-')}"
    )


@gate_group.command("decide")
@click.argument("gate_dir", type=click.Path(path_type=Path), metavar="DIR")
@click.argument("query", callback=text_argument)
@click.option("--threshold", type=FiniteFloatRange(0, 1), default=None, help="Operating point: a threshold.")
@click.option(
    "--retrieval-rate", type=FiniteFloatRange(0, 1), default=None, help="Operating point: a target rate."
)
@click.option(
    "--retrieve-cost",
    type=FiniteFloatRange(min=0),
    default=None,
    help="Operating point: cost of a retrieval relative to a wrong direct answer.",
)
@click.option(
    "--step", type=click.IntRange(min=0), default=0, show_default=True, help="Step of a multi-step run."
)
@backend_option
@cache_dir_option()
@click.option("--json", "as_json", is_flag=True, help="Print the decision as one JSON object.")
@one_line_errors
def decide_command(
    gate_dir: Path,
    query: str,
    threshold: float | None,
    retrieval_rate: float | None,
    retrieve_cost: float | None,
    step: int,
    backend: str,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Decide for one QUERY with the gate saved in DIR: action, probability, reason, signal values."""
    from ragroute.context import QueryContext
    from ragroute.gate import TrainedGate
    from ragroute.store import open_snapshot

    points = {"threshold": threshold, "retrieval_rate": retrieval_rate, "retrieve_cost": retrieve_cost}
    threshold, retrieval_rate, retrieve_cost = exclusive_options(
        points, "give one operating point, not {given}"
    )
    info = open_snapshot(gate_dir, family="gate", verify=False).manifest.encoder
    if not info:  # was accepted and ignored until session 36
        refuse_options(("backend", "cache_dir"), f"to gate {gate_dir}: its signals embed nothing")
    enc = _encoder(info["model_id"], backend, cache_dir) if info else None
    gate = TrainedGate.load(gate_dir, enc)
    if any(point is not None for point in (threshold, retrieval_rate, retrieve_cost)):
        # else the operating point it was saved at (its default one until session 52)
        gate = gate.with_operating_point(
            threshold=threshold, retrieval_rate=retrieval_rate, retrieve_cost=retrieve_cost
        )
    (decision,), probabilities = gate.decide_many([QueryContext.of(query, step=step)])
    # the decision's probability is rounded as its trace's threshold is; beside the gate's exact
    # threshold it is shown to the digits that keep it on its side of that one (until session 56 the
    # rounded one, so that a threshold between the two read "retrieve  p_retrieve=0.0728220
    # threshold=0.0728222")
    p_exact = float(probabilities[0])
    payload = {
        "action": decision.action,
        "p_retrieve": shown_value(p_exact, gate.threshold, 6),
        "threshold": gate.threshold,
        "reason": decision.reason,
        "depth": decision.depth,
        "steps": decision.steps,
        "signals": decision.signals,
    }
    if as_json:
        emit_json(payload)
        return
    p_text, threshold_text = shown_pair(p_exact, gate.threshold, 4)
    click.echo(f"{decision.action}  p_retrieve={p_text}  threshold={threshold_text}")
    click.echo(terminal_text(f"reason: {decision.reason}"))
    for name, value in decision.signals.get("values", {}).items():
        click.echo(f"  {name:<32}{value:>10}")
