"""The step-wise controller: plan a sub-question, gate it, route and retrieve it, repeat.

:class:`StepwiseController` runs one question as a loop::

    plan = planner.plan(state)            # ask a sub-question, or answer
    if answer: done (complete, unless a step's retrieval failed, a Pipeline's source included:
                 then incomplete, the failures counted in the final trace step and on each
                 step's ``error``; or a step the model was to answer got no answer: incomplete,
                 counted as ``empty_steps``, the step's ``note`` says so)
    if the step budget is spent: done (incomplete: what it has is returned)
    gate the sub-question                 # any Gate (optional); context.step / history set
      stop   -> done (stopped by the gate)
      answer -> no retrieval for this step (the answerer, if any, answers from the model)
      retrieve (depth: k) -> the retriever (a Pipeline: routed, fused, reranked; or any retriever)
    the step's answer                     # the answerer LLM reading the hits (optional),
                                          # else the planner's #N uses the top hit
    evidence accumulates

Every part is optional but the planner and the retriever. A planner or answerer whose
LLM fails falls back and says so; the run never raises for an LLM's failure (a sub-question
that is no query, e.g. empty or a lone surrogate, ends the run with the reason in the trace;
the LLM planner falls back on one). When the final answerer fails, the planner's answer is
kept, else a step's answer (its top hit's title when no LLM answered) stands in. The whole
run is one :class:`StepwiseResult`: the steps (sub-question, gate decision, sources,
hits, answer), the evidence (the union of the steps' hits), the final answer,
``complete`` and ``stopped_by``, retrieval calls, and one trace of
:class:`~ragroute.types.TraceStep` s (``plan``, ``gate``, ``retrieve``, ``step-answer``,
``final``), each step's pipeline decision included.

:func:`interleave` is how the steps' rankings become one ranking (what
``ragroute bench stepwise`` cuts at 5): round robin over the steps' rankings, first
occurrence wins.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ragroute.context import QueryContext, check_cancelled, checked_metadata
from ragroute.errors import (
    InvalidArgumentError,
    InvalidQueryError,
    check_batch,
    check_filter_keys,
    check_k,
    check_query,
    error_summary,
    has_visible_text,
    is_finite_number,
    lone_surrogate,
)
from ragroute.gate.planners import (
    ANSWER,
    ASK,
    Plan,
    Planner,
    PlanState,
    StepRecord,
    step_answer,
    step_answer_from,
)
from ragroute.index.base import metadata_keys_of
from ragroute.index.docstore import FIELD_KEYS
from ragroute.llm.calls import Reply, complete_safely
from ragroute.pipeline.stages import gate_decisions
from ragroute.route.base import NONE_ROUTE
from ragroute.route.sources import check_hit, hits_of
from ragroute.types import Hit, TraceStep

#: what the ``final-answer`` trace step says stands in when the answerer fails, by ``answer_from``
STAND_INS = {
    "": "no answer",
    "top_hit": "a step's top hit stands in",
    "llm": "a step's LLM answer stands in",
}

#: the longest step or final answer kept (an answer is a short span; longer text is cut, marked)
ANSWER_CHARS = 200

ANSWER_PROMPT = """Answer the question from the passages, in a few words.
If they do not say, answer from what you know.
{passages}
Question: {question}
Answer:"""


def interleave(rankings: Sequence[Sequence[Hit]], k: int | None = None) -> list[Hit]:
    """One ranking from several: rank 1 of every list in order, then rank 2, ...; a document
    already taken (by its source's collection and ``parent_id or doc_id``) is skipped; cut at ``k``
    (``k < 1``: none)."""
    out: list[Hit] = []
    if k is not None and k < 1:
        return out
    seen: set[tuple[str, str]] = set()
    depth = max((len(r) for r in rankings), default=0)
    for position in range(depth):
        for ranking in rankings:
            if position < len(ranking):
                hit = ranking[position]
                # ids are unique within a source: doc-0 of two sources is two documents (one was
                # dropped until session 37); sources over one collection (an expert set's experts,
                # config sources naming one index or corpus) hold the same documents: one found by
                # two experts in two steps was two pieces of evidence until session 49
                key = (_collection(hit), hit.parent_id or hit.doc_id)
                if key not in seen:
                    seen.add(key)
                    out.append(hit)
                    if k is not None and len(out) >= k:
                        return out
    return out


def _collection(hit: Hit) -> str:
    """The documents ``hit`` is one of: its source's collection (``explain["collection"]``, which a
    :class:`~ragroute.route.sources.Source` over a shared collection stamps), else its source."""
    collection = hit.explain.get("collection") if isinstance(hit.explain, Mapping) else None
    return str(collection) if collection else hit.source


@dataclass
class StepwiseResult:
    """One step-wise run; see the module docstring."""

    question: str
    steps: list[StepRecord]
    answer: str
    complete: bool
    stopped_by: str  # planner / budget / gate / error
    trace: list[TraceStep] = field(default_factory=list)
    ms: float = 0.0
    #: where ``answer`` comes from: ``llm`` (the planner's or answerer's LLM, or a step's answerer
    #: taken by a planner that fell back), ``gold``, ``script``, ``top_hit`` (a step's top hit
    #: stands in: no LLM answered), or "" (no answer)
    answer_from: str = ""

    @property
    def retrieval_calls(self) -> int:
        return sum(1 for step in self.steps if step.retrieved)

    @property
    def skipped(self) -> list[StepRecord]:
        """Steps the gate did not send to retrieval (answered by the model)."""
        return [step for step in self.steps if step.action == "answer"]

    def evidence(self, k: int | None = None) -> list[Hit]:
        """The union of the steps' hits, interleaved (see :func:`interleave`), cut at ``k``."""
        return interleave([step.hits for step in self.steps], k)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "answer_from": self.answer_from,
            "complete": self.complete,
            "stopped_by": self.stopped_by,
            "retrieval_calls": self.retrieval_calls,
            "steps": [step.to_dict() for step in self.steps],
            "evidence": [h.doc_id for h in self.evidence()],
            "ms": self.ms,
            "trace": [step.to_dict() for step in self.trace],
        }


class StepwiseController:
    """Plans, gates, retrieves and accumulates evidence within a step budget.

    ``planner``: a :class:`~ragroute.gate.planners.Planner`; ``retriever``: a
    :class:`~ragroute.pipeline.Pipeline` (its decision per step goes in the trace) or any
    retriever (``search_contexts`` / ``search_many``); ``gate``: any
    :class:`~ragroute.pipeline.stages.Gate` (optional); ``max_steps``: the most retrieval
    steps (sub-questions) of one run; ``k``: hits per step (a gate's depth overrides it: the
    ``retrieve`` trace step says ``k`` asked and ``depth`` applied); both at least 1, else
    :class:`~ragroute.errors.InvalidArgumentError`;
    ``answerer``: an LLM answering each sub-question from its hits, and the question when
    the budget runs out (optional; ``answer_timeout_s`` bounds each call).
    """

    def __init__(
        self,
        planner: Planner,
        retriever: Any,
        *,
        gate: Any = None,
        max_steps: int = 4,
        k: int = 5,
        answerer: Any = None,
        answer_timeout_s: float | None = None,
        passage_chars: int = 400,
    ) -> None:
        self.planner = planner
        self.retriever = retriever
        self.gate = gate
        self.max_steps = check_k(max_steps, "max_steps")
        self.k = check_k(k)  # k=0 retrieved nothing and the step counted as one without evidence
        self.answerer = answerer
        self.answer_timeout_s = answer_timeout_s
        self.passage_chars = passage_chars

    # ------------------------------------------------------------------ the loop

    def run(
        self, question: str | QueryContext, *, metadata: Mapping[str, Any] | None = None
    ) -> StepwiseResult:
        """Answer one question step by step: plan, gate, retrieve, until the budget or the gate stops."""
        start = time.perf_counter()
        root = QueryContext.of(question)
        # a filter key no document carries is refused before any step, as a pipeline refuses it (a
        # step's failed retrieval is recorded, not raised: the run would answer from nothing)
        if root.filters:
            check_filter_keys(root.filters, metadata_keys_of(self.retriever, root.scopes), FIELD_KEYS)
        meta = dict(root.metadata)
        meta.update(checked_metadata(metadata))
        steps: list[StepRecord] = []
        trace: list[TraceStep] = []
        answer, answer_from, complete, stopped_by = "", "", False, "budget"
        stopped: dict[str, Any] = {}  # the sub-question a gate stopped, and why
        while True:
            check_cancelled()  # an awaited run whose caller gave up makes no more LLM calls
            state = PlanState(root.text, steps, meta, steps_left=self.max_steps - len(steps))
            plan = self._plan(state, trace)
            if plan is None:
                stopped_by = "error"
                break
            if plan.action == ANSWER:
                # an LLM's answer is cut as the answerer's are (a planner's ran on for pages, lines kept)
                said = clipped(plan.answer) if plan.answer_from == "llm" else plan.answer
                answer, complete, stopped_by = said, True, "planner"
                answer_from = plan.answer_from if plan.answer else ""
                break
            if len(steps) >= self.max_steps:
                trace.append(
                    TraceStep(
                        "budget",
                        {
                            "max_steps": self.max_steps,
                            "wanted": plan.question,
                            "reason": f"step budget spent ({self.max_steps} steps): returning what was found",
                        },
                    )
                )
                break
            step = StepRecord(index=len(steps), question=plan.question, plan=plan.to_dict())
            context = QueryContext(
                plan.question,
                id=f"{root.id}#{step.index + 1}" if root.id else f"step{step.index + 1}",
                filters=root.filters,
                scopes=root.scopes,
                caller=root.caller,  # each step counts against the asking caller's exposure budget
                step=step.index,
                history=[{"step": s.index, "query": s.question, "answer": s.answer} for s in steps],
                metadata=meta,
            )
            # between a step's stages as between a pipeline's: the plan may have been a long LLM
            # call, and a search cancelled inside a Pipeline is recorded as the step's error, after
            # which the answerer was asked for an answer nobody awaited (until session 51)
            check_cancelled()
            depth = self.k
            if self.gate is not None:
                decision = self._gate(context, trace, step)
                if decision is not None:
                    if decision.action == "stop":
                        step.action = "stop"
                        steps.append(step)
                        stopped_by, stopped = "gate", _stop_of(step)
                        break
                    if decision.action != "retrieve":
                        step.action = "answer"
                    depth = decision.depth or self.k
            if step.action == "retrieve":
                self._retrieve(context, step, depth, trace)
                if step.action == "stop":  # the pipeline's own gate stopped it
                    steps.append(step)
                    stopped_by, stopped = "gate", _stop_of(step)
                    break
            check_cancelled()
            self._answer_step(step, trace)
            steps.append(step)
        steps = [s for s in steps if s.action != "stop"]
        failed = sum(1 for s in steps if s.error)
        # a step the model was to answer (no retrieval) whose answerer gave nothing: no evidence,
        # no answer; the run read "complete" on it, its answer taken from another step
        empty = sum(1 for s in steps if s.note)
        if failed or empty:  # an answer without the evidence a step went to fetch is not a complete one
            complete = False
        if not complete and self.answerer is not None:
            check_cancelled()
            final = self._final_answer(root.text, steps, trace, answer)
            if final:
                answer, answer_from = final, "llm"
            elif not answer:  # the planner's answer is kept; else a step's stands in, as the docs say
                answer, answer_from = _stand_in(steps)
                trace[-1].detail["fallback"] = STAND_INS.get(answer_from, "a step's answer stands in")
        trace.append(
            TraceStep(
                "final",
                {
                    "answer": answer,
                    "answer_from": answer_from,
                    "complete": complete,
                    "stopped_by": stopped_by,
                    "steps": len(steps),
                    "retrieval_calls": sum(s.retrieved for s in steps),
                    **({"retrieval_errors": failed} if failed else {}),
                    **({"empty_steps": empty} if empty else {}),
                    # the stopped step is no step of the result: until session 56 its sub-question
                    # and the gate's reason were only in the gate's (or the pipeline's) trace step
                    **({"stopped": stopped} if stopped else {}),
                },
            )
        )
        ms = round((time.perf_counter() - start) * 1000, 3)
        return StepwiseResult(root.text, steps, answer, complete, stopped_by, trace, ms, answer_from)

    def run_many(
        self, questions: Sequence[str | QueryContext], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> list[StepwiseResult]:
        """One :meth:`run` per question; ``metadata``, when given, one mapping per question."""
        questions = check_batch(questions)
        if metadata is not None:
            metadata = check_batch(metadata, "metadata")
            if len(metadata) != len(questions):  # a shorter list raised a bare IndexError mid-batch
                raise InvalidArgumentError(
                    "metadata must hold one mapping per question: "
                    f"{len(metadata)} for {len(questions)} questions"
                )
            for i, item in enumerate(metadata):  # all before the first run, as the count is
                checked_metadata(item, f"metadata[{i}]")
        return [
            self.run(q, metadata=None if metadata is None else metadata[i]) for i, q in enumerate(questions)
        ]

    # ------------------------------------------------------------------ parts

    def _plan(self, state: PlanState, trace: list[TraceStep]) -> Plan | None:
        try:
            plan = self.planner.plan(state)
            # a planner returning None, or an answer of None, raised AttributeError out of run
            # (until session 43): a planner bug, which ends the run recorded as the others do
            if not isinstance(plan, Plan):
                raise TypeError(f"the planner returned {type(plan).__name__}, not a Plan")
            # any other action was taken for "ask" (until session 56): Plan("Answer", answer=...)
            # ended the run as an "unusable sub-question: query is empty", Plan("search") was asked
            if plan.action not in (ASK, ANSWER):
                raise ValueError(f"the planner's action is {plan.action!r}, not {ASK!r} or {ANSWER!r}"[:200])
            if plan.action == ANSWER and not isinstance(plan.answer, str):
                raise TypeError(f"the planner's answer is {type(plan.answer).__name__}, not text")
        except Exception as exc:  # noqa: BLE001 - a planner bug or bad metadata ends the run, recorded
            trace.append(
                TraceStep(
                    "plan",
                    {
                        "step": len(state.steps),
                        "planner": getattr(self.planner, "name", "?"),
                        "error": error_summary(exc),
                    },
                )
            )
            return None
        if plan.action != ANSWER:
            try:  # a sub-question that is no query raised out of run (EmptyQueryError), steps lost
                plan.question = check_query(plan.question)
            except InvalidQueryError as exc:
                trace.append(
                    TraceStep(
                        "plan",
                        {
                            "step": len(state.steps),
                            **plan.to_dict(),
                            "error": f"unusable sub-question: {exc}",
                        },
                    )
                )
                return None
        trace.append(TraceStep("plan", {"step": len(state.steps), **plan.to_dict()}))
        return plan

    def _gate(self, context: QueryContext, trace: list[TraceStep], step: StepRecord) -> Any:
        gate_start = time.perf_counter()
        try:
            # checked as the pipeline's gate stage checks it: a decision to "skip" (or "Retrieve")
            # skipped retrieval, and a None in the list raised out of run (until session 43)
            # a `retrieval` signal given no router reads the pipeline's it retrieves through
            decision = gate_decisions(self.gate, [context], getattr(self.retriever, "router", None))[0]
        except Exception as exc:  # noqa: BLE001 - a failing gate means: retrieve (the safe side)
            detail = {
                "step": step.index,
                "gate": getattr(self.gate, "name", "?"),
                "action": "retrieve",
                "error": error_summary(exc),
                "reason": "gate failed: retrieving",
            }
            step.gate = detail
            trace.append(TraceStep("gate", detail))
            return None
        # the decision's signals (values, top contributions, threshold, fallback ...), as the
        # pipeline's gate step records them; until session 36 only the fallback was kept
        signals = dict(decision.signals) if isinstance(decision.signals, Mapping) else {}
        detail = {
            **{key: value for key, value in signals.items() if key != "ms"},
            "step": step.index,
            "gate": getattr(self.gate, "name", "?"),
            "action": decision.action,
            # a gate that computed none (NaN: an LLM gate's stop at max_steps or on a repeated
            # sub-query) leaves it out, as the pipeline's gate step does: until session 55 this
            # wrote NaN, and json.dumps(result.to_dict(), allow_nan=False) raised
            **({"p_retrieve": decision.probability} if is_finite_number(decision.probability) else {}),
            "reason": decision.reason,
            **({"depth": decision.depth} if decision.depth else {}),
            **({"steps": decision.steps} if decision.steps else {}),
            "ms": round((time.perf_counter() - gate_start) * 1000, 4),
        }
        step.gate = detail
        trace.append(TraceStep("gate", detail))
        return decision

    def _retrieve(self, context: QueryContext, step: StepRecord, depth: int, trace: list[TraceStep]) -> None:
        start = time.perf_counter()
        # k: the depth asked of the retriever; depth: the one applied (a Pipeline's gate may cut it)
        detail: dict[str, Any] = {"step": step.index, "query": context.text, "k": depth, "depth": depth}
        try:
            hits = self._search(context, step, depth, detail)
        except Exception as exc:  # noqa: BLE001 - a failing retriever or router: no evidence, recorded
            hits = []
            detail["error"] = step.error = error_summary(exc)
        # each step's own copies: a retriever that hands out the same Hit objects again (a cache of
        # its own) had an earlier step's hits relabelled with the later step until session 44
        hits = [replace(hit, explain={**hit.explain, "step": step.index}) for hit in hits]
        step.hits = list(hits)
        detail.update(
            sources=step.sources,
            hits=[h.doc_id for h in hits],
            top_score=round(float(hits[0].score), 6) if hits else None,
            ms=round((time.perf_counter() - start) * 1000, 3),
        )
        trace.append(TraceStep("retrieve", detail))

    def _search(
        self, context: QueryContext, step: StepRecord, depth: int, detail: dict[str, Any]
    ) -> list[Hit]:
        """One step's hits; a pipeline's own gate or route ``none`` turns the step into an answer."""
        if not hasattr(self.retriever, "retrieve_contexts"):
            named = getattr(self.retriever, "name", "")
            hits = hits_of(self.retriever, [context], depth)[0]
            # checked as a Source checks its retriever's (a Pipeline's are): a hit whose text is None
            # or whose score is no number raised out of run until session 49, the steps taken lost
            for hit in hits:
                check_hit(hit, named or type(self.retriever).__name__)
            step.sources = sorted({h.source for h in hits if h.source}) or [named]
            return hits
        result = self.retriever.retrieve_contexts([context], depth)[0]  # a Pipeline: routed, own trace
        detail["decision"] = result.decision.to_dict()
        step.sources = [name for name in result.decision.chosen if name != NONE_ROUTE]
        gated = result.decision.trace[0].detail if result.decision.trace else {}
        if result.decision.trace and result.decision.trace[0].stage == "gate":
            step.gate = {"step": step.index, **{k: v for k, v in gated.items() if k != "values"}}
            if gated.get("action") in ("answer", "stop"):  # the pipeline's gate: no retrieval
                step.action = gated["action"]
                detail["gate"] = gated["action"]
            elif gated.get("depth"):  # the pipeline's gate cut the depth (the trace said k asked)
                detail["depth"] = gated["depth"]
        if step.action == "retrieve" and NONE_ROUTE in result.decision.chosen and not step.sources:
            step.action = "answer"  # routed to `none` (a rule or the router): nothing was retrieved
            detail["route"] = NONE_ROUTE
        # a Pipeline catches a source's failure and records it in its own trace: the step then
        # lacks that source's evidence (it read as a complete step: a wrong answer, exit 0)
        errors = [
            f"{t.detail.get('source', '?')}: {t.detail['error']}"
            for t in result.decision.trace
            if t.stage == "retrieve" and t.detail.get("error")
        ]
        if errors:
            detail["error"] = step.error = "; ".join(errors)
        return result.hits

    def _passages(self, hits: Sequence[Hit]) -> str:
        lines = []
        for i, hit in enumerate(hits[:3], 1):
            text = " ".join(hit.text.split())[: self.passage_chars]
            # one line per passage, its title too: a title holding "\nQuestion: ..." put a question
            # of its own on a line of the prompt until session 49
            title = " ".join(hit.title.split())
            lines.append(f"[{i}] {title}: {text}" if title else f"[{i}] {text}")
        return "\n".join(lines) if lines else "(no passages)"

    def _answer_step(self, step: StepRecord, trace: list[TraceStep]) -> None:
        if self.answerer is None:
            return
        prompt = ANSWER_PROMPT.format(passages=self._passages(step.hits), question=step.question)
        reply = _valid(complete_safely(self.answerer, prompt, timeout_s=self.answer_timeout_s))
        text = clipped(reply.text)
        detail: dict[str, Any] = {"step": step.index, "ms": reply.ms}
        if reply.ok and text:
            step.answer, step.answer_from = text, "llm"
            detail.update(answer=text, mean_logprob=reply.mean_logprob)
        else:
            step.answer_from = "top_hit" if step.hits else ""
            detail.update(
                error=reply.error or "empty answer",
                fallback="the top hit stands for the step's answer" if step.hits else "no answer",
            )
            if step.action == "answer":  # no retrieval and no answer: the step produced nothing
                step.note = (
                    "no retrieval (left to the model) and no answer came back: this step produced nothing"
                )
                detail["note"] = step.note
        trace.append(TraceStep("step-answer", detail))

    def _final_answer(
        self,
        question: str,
        steps: Sequence[StepRecord],
        trace: list[TraceStep],
        planned: str = "",
    ) -> str:
        """The answerer's answer to the whole question from the steps' top hits ("" when it fails
        or answers nothing: the ``final-answer`` trace step then says why, and keeps ``planned``,
        the planner's answer, when there is one; the caller otherwise puts a step's in)."""
        hits = interleave([s.hits for s in steps], 3)
        prompt = ANSWER_PROMPT.format(passages=self._passages(hits), question=question)
        reply = _valid(complete_safely(self.answerer, prompt, timeout_s=self.answer_timeout_s))
        text = clipped(reply.text) if reply.ok else ""
        detail: dict[str, Any] = {"from": "answerer", "ms": reply.ms}
        if text:
            detail["answer"] = text
        else:
            detail["error"] = reply.error or "empty answer"
            if planned:
                detail["fallback"] = "the planner's answer is kept"
        trace.append(TraceStep("final-answer", detail))
        return text


def _valid(reply: Reply) -> Reply:
    """``reply``, or a failed one when its text is not valid text (a lone surrogate, which no UTF-8
    output can print: `ragroute ask` raised UnicodeEncodeError with a traceback until session 43),
    or has nothing in it but invisible characters (zero-width spaces, controls: it was the step's
    answer, filled in for ``#N``, and the run's, "complete", as the planner's empty answer is not)."""
    if not reply.ok:
        return reply
    problem = lone_surrogate(reply.text)
    if problem is not None:
        return Reply(ms=reply.ms, error=f"the answer is not valid text: {problem}")
    if reply.text.strip() and not has_visible_text(reply.text):
        return Reply(ms=reply.ms, error=f"the LLM answered with nothing ({reply.text[:40]!r})")
    return reply


def _stop_of(step: StepRecord) -> dict[str, Any]:
    """What the ``final`` trace step says of a step a gate stopped: its sub-question and the reason."""
    gate = step.gate or {}
    return {
        "step": step.index,
        "question": step.question,
        "gate": gate.get("gate", "?"),
        "reason": str(gate.get("reason") or "no reason given"),
    }


def _stand_in(steps: Sequence[StepRecord]) -> tuple[str, str]:
    """The latest step's answer that there is (its LLM answer, else its top hit's title) and where
    it comes from (``("", "")`` when no step has one)."""
    for step in reversed(steps):
        value = step_answer(step)
        if value:
            return value, step_answer_from(step)
    return "", ""


def clipped(text: str, limit: int = ANSWER_CHARS) -> str:
    """An LLM's answer on one line, at most ``limit`` characters (``…`` marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
