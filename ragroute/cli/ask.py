"""``ragroute ask CONFIG QUESTION``: answer step by step with a routing config's pipeline and an LLM.

The step-wise controller (:class:`~ragroute.gate.controller.StepwiseController`) plans
sub-questions with the LLM, retrieves each through the config's pipeline (its ``gate:``,
``router:`` and ``reranker:`` apply to every sub-question), lets the LLM answer each step
from its hits, and prints the answer, the steps and whether the run completed. The LLM is
the config's ``llm:`` mapping (``{kind: local}`` or ``{kind: scripted, ...}``), else the
offline local SmolLM2 (extra ``ragroute[llm]``); ``--no-llm`` asks the question once
through the pipeline with no LLM at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import counted, one_line_errors, refuse_options
from ragroute.cli.options import (
    BACKENDS,
    CONFIG_CACHE_HELP,
    FiniteFloatRange,
    cache_dir_option,
    filter_option,
    parse_filters,
    scope_option,
    store_matchable,
    text_argument,
)
from ragroute.cli.output import emit_json
from ragroute.display import terminal_text
from ragroute.errors import check_query


@click.command("ask")
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("question", callback=text_argument)
@click.option("--max-steps", type=click.IntRange(min=1), default=4, show_default=True, help="Step budget.")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Hits per step.")
@click.option(
    "--timeout",
    "timeout_s",
    type=FiniteFloatRange(min=0, min_open=True),
    default=None,
    help="Seconds each planning and answering LLM call may take (a config's gate and LLM router "
    "have their own `timeout_s:`).",
)
@click.option(
    "--no-llm",
    is_flag=True,
    help="No planning or answering LLM: the question itself, retrieved once; nothing is answered (the "
    "top hit is shown). A gate or router in CONFIG that uses an LLM still calls it.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Encoder backend [default: the config's, else auto].",
)
@cache_dir_option(CONFIG_CACHE_HELP)
@scope_option
@filter_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="After the printed run, one JSON object on the last line: the whole run and its trace.",
)
@one_line_errors
def ask_command(
    config: Path,
    question: str,
    max_steps: int,
    k: int,
    timeout_s: float | None,
    no_llm: bool,
    backend: str | None,
    cache_dir: Path | None,
    scopes: tuple[str, ...],
    filters: tuple[str, ...],
    as_json: bool,
) -> None:
    """Answer QUESTION step by step: the LLM plans sub-questions, CONFIG's pipeline gates, routes and
    retrieves each, evidence accumulates within the step budget.

    The LLM is CONFIG's `llm:` ({kind: local}, {kind: scripted, ...} or package.module:factory), else
    the offline local SmolLM2-135M (extra ragroute[llm]; tens of seconds per question on a CPU, and
    too small to plan or answer well: docs/gating.md). An LLM call that fails falls back, said in a
    `note:` line."""
    from ragroute.context import QueryContext
    from ragroute.gate.controller import StepwiseController
    from ragroute.gate.planners import LLMPlanner, QuestionOncePlanner
    from ragroute.route.config import RoutingConfig, load_routing

    question = check_query(question)
    if no_llm:  # accepted and ignored until session 50: --no-llm makes no call it could time
        refuse_options(
            ("timeout_s",),
            "to --no-llm (it times the planning and answering LLM calls; a gate or router of CONFIG "
            "that calls an LLM has its own `timeout_s:`)",
        )
        # likewise until session 55: without a planner the question is the one step there is
        refuse_options(("max_steps",), "to --no-llm (it retrieves the question itself, once: one step)")
    parsed = parse_filters(filters)
    routing = RoutingConfig.read(config)  # fails in one line before anything loads
    llm = None
    if not no_llm:
        from ragroute.llm.settings import llm_from_settings

        llm = llm_from_settings(routing.data.get("llm"), where=f"{config}: llm", base=routing.path.parent)
    pipeline = load_routing(config, backend=backend, cache_dir=cache_dir)
    parsed = store_matchable(parsed, [source.retriever for source in pipeline.sources])
    planner = QuestionOncePlanner() if llm is None else LLMPlanner(llm, timeout_s=timeout_s)
    controller = StepwiseController(
        planner, pipeline, max_steps=max_steps, k=k, answerer=llm, answer_timeout_s=timeout_s
    )
    # every step asks as this caller (without --scope: public sources only; until session 38 ask had
    # no --scope, so a source with access labels could never be asked from the command line), with
    # the same --filter
    result = controller.run(QueryContext.of(question, filters=parsed or None, scopes=list(scopes)))
    status = "complete" if result.complete else f"INCOMPLETE (stopped by {result.stopped_by})"
    if result.answer_from == "top_hit":  # no LLM answered: a step's top hit stands in for one
        if llm is None:
            click.echo(terminal_text(f"answer: (none: --no-llm; top hit: {result.answer})"))
        else:
            answer = terminal_text(result.answer)
            click.echo(f"answer: {answer}  (a step's top hit, not the LLM's: no LLM answer came back)")
    elif not result.answer and llm is None and result.retrieval_calls == 0:
        # the gate chose to answer from the model and --no-llm gives none: nothing was answered
        # or retrieved ("answer: (none)" and "complete" read as if the run found nothing); or a rule
        # or the router routed to `none`, said as the gate's choice until session 55 (no gate there)
        gated = any(step.gate and step.gate.get("action") in ("answer", "stop") for step in result.steps)
        chose = "the gate chose the model's own answer" if gated else "the routing chose no retrieval (none)"
        if result.stopped_by == "gate":  # the stopped step is none of result.steps: it read as routing
            chose = "the gate stopped the run"
        click.echo(f"answer: (none: {chose} and --no-llm asks no model; nothing was retrieved)")
    else:
        click.echo(terminal_text(f"answer: {result.answer or '(none)'}"))
    click.echo(
        f"{status}; {counted(len(result.steps), 'step')}, "
        f"{counted(result.retrieval_calls, 'retrieval call')}, "
        f"{result.ms:.0f} ms"
    )
    for step in result.steps:
        gate = f" gate {step.gate['action']}" if step.gate else ""
        where = ", ".join(step.sources) or "-"
        click.echo(terminal_text(f"  step {step.index + 1}: {step.question}  [{step.action}{gate}; {where}]"))
        for hit in step.hits[:3]:
            # on one line: a table's text holds a line per row (its rows read as lines of the run)
            shown = " ".join((hit.title or hit.text).split())
            line = f"      {hit.rank}. {hit.source}:{hit.doc_id}  {hit.score:.3f}  {shown[:60]}"
            click.echo(terminal_text(line))
        if step.answer:
            click.echo(terminal_text(f"      answer: {step.answer}"))
        elif step.answer_from == "top_hit":
            click.echo("      answer: (none from the LLM: its top hit stands in)")
        if step.error:  # a failed retrieval (a Pipeline's source included): the run is incomplete
            click.echo(terminal_text(f"      retrieval failed: {step.error}"))
        if step.note:  # left to the model, and no answer came back
            click.echo(terminal_text(f"      note: {step.note}"))
        for note in llm_fallback_notes(step, result.trace):
            click.echo(terminal_text(f"      note: {note}"))
    for entry in result.trace:
        if entry.stage == "plan" and entry.detail.get("fallback"):
            planned = entry.detail["step"]  # the plan after this many steps: the next step, or the end
            what = f"step {planned + 1}" if planned < len(result.steps) else "the final answer's"
            click.echo(f"  note: {what} planner fell back: {entry.detail['fallback']}")
        elif entry.stage == "plan" and entry.detail.get("error"):
            click.echo(f"  note: the planner failed: {entry.detail['error']}")
        elif entry.stage == "final-answer" and entry.detail.get("error"):
            kept = entry.detail.get("fallback") or "no answer"
            click.echo(f"  note: the final answer's answerer failed: {entry.detail['error']} ({kept})")
        elif entry.stage == "final" and entry.detail.get("stopped"):
            # why the run reads "stopped by gate" (until session 56 said only in --json)
            stop = entry.detail["stopped"]
            said = f"the {stop['gate']} gate stopped the run at sub-question {stop['question']!r}"
            click.echo(terminal_text(f"  note: {said}: {stop['reason']}"))
    if as_json:
        emit_json(result.to_dict())


def llm_fallback_notes(step: Any, trace: Any) -> list[str]:
    """What an LLM gate or LLM router of this step could not do, from the trace: a gate that failed
    (any kind: it then retrieves; until session 56 printed as the gate's choice), the gate's LLM
    signals that failed (and the gate that decided when all did), the router's failed or unreadable
    answer and the router that decided (only ``--json`` said so before: the printed run
    read as if the LLM had gated and routed)."""
    notes = []
    gate = step.gate or {}
    name = gate.get("gate", "llm")
    if gate.get("error"):
        notes.append(f"the {name} gate failed ({gate['error']}): retrieving")
    elif gate.get("fallback"):
        fallback, _, why = str(gate["fallback"]).partition(": ")
        notes.append(f"the {name} gate's LLM signals failed ({why}): the {fallback} gate decided")
    elif isinstance(gate.get("errors"), dict) and gate["errors"]:
        failed = "; ".join(f"{kind}: {error}" for kind, error in gate["errors"].items())
        notes.append(f"the {name} gate decided without these LLM signals: {failed}")
    for entry in trace:
        if entry.stage != "retrieve" or entry.detail.get("step") != step.index:
            continue
        for routed in (entry.detail.get("decision") or {}).get("trace") or []:
            if routed.get("stage") == "router" and routed.get("fallback"):
                said = f", it answered {routed['answer'][:60]!r}" if routed.get("answer") else ""
                notes.append(
                    f"the {routed.get('router', 'llm')} router fell back to {routed['fallback']} "
                    f"({routed.get('error', 'no label')}{said})"
                )
    return notes
