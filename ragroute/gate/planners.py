"""Planners of the step-wise controller: what to ask next, or the final answer.

A planner's :meth:`~Planner.plan` reads the :class:`PlanState` (the question, the
steps taken so far with their sub-questions, hits and answers, the query's
metadata) and returns a :class:`Plan`: ``ask`` a sub-question, or ``answer``.

* :class:`ScriptedPlanner`: a fixed list of sub-questions; ``#1``, ``#2``... are
  replaced by that step's answer (the step's own answer when one was produced,
  else its top hit's title; a step with neither ends the run, its ``#N`` unfilled); then
  the answer.
* :class:`DecompositionPlanner`: the sub-questions of the query's
  ``question_decomposition`` metadata (MuSiQue), ``#N`` replaced by step N's gold
  answer from the same metadata when present (else as the scripted planner does):
  an oracle planner, which measures the retrieval side alone. MuSiQue's relation
  form ``#1 >> spouse`` is read as ``spouse of #1``.
* :class:`LLMPlanner`: asks any llama-index LLM, with a JSON protocol
  (``{"action": "search", "query": ...}`` / ``{"action": "answer", "answer": ...}``)
  and a line protocol as second chance (``SEARCH: ...`` / ``ANSWER: ...``); a JSON answer cut
  short by a token limit still counts when its action and value were complete. An LLM
  that errors, times out, answers with nothing readable or with an empty answer, or asks a
  sub-question that is no query (:func:`~ragroute.errors.check_query`: empty, invisible
  characters only, a lone surrogate) makes the step fall back
  to ``fallback`` (by default :class:`QuestionOncePlanner`: the whole question once,
  then answer), and the plan says why (it goes in the trace).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ragroute.errors import InvalidQueryError, RagrouteError, check_query, has_visible_text, lone_surrogate
from ragroute.graph.extract_llm import parse_json
from ragroute.llm.calls import complete_safely
from ragroute.route.folds import normalized_text
from ragroute.types import Hit

ASK, ANSWER = "ask", "answer"
_REFERENCE = re.compile(r"#(\d+)")


@dataclass
class StepRecord:
    """One step of a step-wise run: its sub-question, what the gate did, hits, answer."""

    index: int
    question: str
    action: str = "retrieve"  # retrieve / answer (the gate let the model answer) / stop
    hits: list[Hit] = field(default_factory=list)
    answer: str = ""
    answer_from: str = ""  # llm / top_hit / gold / ""
    gate: dict[str, Any] | None = None
    sources: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # why its retrieval failed (the step then has no evidence, or lacks a source's)
    note: str = ""  # why a step the model was to answer produced nothing (no hits, no answer)

    @property
    def retrieved(self) -> bool:
        return self.action == "retrieve"

    def to_dict(self, text_chars: int = 200) -> dict[str, Any]:
        return {
            "step": self.index,
            "question": self.question,
            "action": self.action,
            "answer": self.answer,
            "answer_from": self.answer_from,
            "sources": list(self.sources),
            "gate": self.gate,
            "plan": self.plan,
            **({"error": self.error} if self.error else {}),
            **({"note": self.note} if self.note else {}),
            "hits": [
                {
                    "doc_id": h.doc_id,
                    "source": h.source,
                    "score": round(float(h.score), 6),
                    "rank": h.rank,
                    "title": h.title,
                    "text": h.text[:text_chars],
                }
                for h in self.hits
            ],
        }


@dataclass
class PlanState:
    """What a planner sees: the question, the steps so far, the query's metadata, the budget left."""

    question: str
    steps: list[StepRecord]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    steps_left: int | None = None


@dataclass
class Plan:
    """``ask`` a sub-question (``question``) or ``answer`` (``answer``; may be ""), and why."""

    action: str
    question: str = ""
    answer: str = ""
    planner: str = ""
    reason: str = ""
    fallback: str | None = None  # why the planner fell back (None: it did not)
    raw: str | None = None  # the LLM's answer, for the trace
    #: where ``answer`` comes from: ``llm`` (the planner's LLM, or a step's answerer), ``gold``
    #: (the query's metadata), ``script``, ``top_hit`` (a step's top hit stands in), "" (none)
    answer_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "planner": self.planner}
        if self.action == ASK:
            out["question"] = self.question
        else:
            out["answer"] = self.answer
            out["answer_from"] = self.answer_from
        for key in ("reason", "fallback", "raw"):
            value = getattr(self, key)
            if value:
                out[key] = value[:300] if isinstance(value, str) else value
        return out


@runtime_checkable
class Planner(Protocol):
    name: str

    def plan(self, state: PlanState) -> Plan: ...


def step_answer(step: StepRecord) -> str:
    """What ``#N`` stands for: the step's answer, else its top hit's title (else its first words)."""
    if step.answer:
        return step.answer
    if step.hits:
        top = step.hits[0]
        return top.title or " ".join(top.text.split()[:8])
    return ""


def step_answer_from(step: StepRecord) -> str:
    """Where :func:`step_answer` takes the step's value from: its answer's own source (``llm``,
    ``gold``), ``top_hit``, or "" (nothing)."""
    if step.answer:
        return step.answer_from or "llm"
    return "top_hit" if step.hits else ""


def _answer_from_steps(steps: Sequence[StepRecord]) -> tuple[str, str]:
    """The last step's :func:`step_answer` and :func:`step_answer_from` ("" without steps)."""
    return (step_answer(steps[-1]), step_answer_from(steps[-1])) if steps else ("", "")


def fill_references(text: str, values: Mapping[int, str]) -> str:
    """Replace ``#N`` by ``values[N]`` (references without a value stay as they are)."""
    return _REFERENCE.sub(lambda m: values.get(int(m.group(1)), m.group(0)) or m.group(0), text)


def referenced_values(
    text: str, steps: Sequence[StepRecord], value: Callable[[StepRecord], str] = step_answer
) -> dict[int, str]:
    """``value`` of the steps that ``text`` refers to (``#N``: step ``N``), for :func:`fill_references`.
    Until session 52 planners took every step's value before each step: a hit's whole text was
    split again for each step after it, so a script of n steps took time in n^2 (2,000 steps: 17 s)."""
    wanted = {int(n) for n in _REFERENCE.findall(text)}
    return {step.index + 1: value(step) for step in steps if step.index + 1 in wanted} if wanted else {}


def filled_question(
    text: str, steps: Sequence[StepRecord], value: Callable[[StepRecord], str] = step_answer
) -> str:
    """``text`` with its ``#N`` filled (:func:`fill_references`, :func:`referenced_values`); a
    reference to a step taken that has no value (no answer, no hit) raises
    :class:`~ragroute.errors.RagrouteError`, which ends the run with the reason in its trace: until
    session 53 the ``#1`` was asked as it stood ("Who is the mayor of #1?") and the run read complete,
    its answer the top hit of a sub-question the planner never meant."""
    values = referenced_values(text, steps, value)
    missing = sorted(n for n, found in values.items() if not found)
    if missing:
        named = ", ".join(f"#{n}" for n in missing)
        raise RagrouteError(
            f"sub-question {text!r} needs the answer of {named}, and "
            f"{'that step' if len(missing) == 1 else 'those steps'} found nothing (no answer, no hit): "
            "it cannot be asked"
        )
    return fill_references(text, values)


def relation_as_question(text: str) -> str:
    """MuSiQue's ``subject >> relation`` as ``relation of subject``; other text unchanged."""
    if ">>" not in text:
        return text
    left, _, right = text.partition(">>")
    left, right = left.strip(), right.strip()
    return f"{right} of {left}" if left and right else text


class ScriptedPlanner:
    """Asks ``questions`` in order (``#N`` filled from step N), then answers with the last step's answer."""

    name = "scripted"

    def __init__(self, questions: Sequence[str], answer: str | None = None) -> None:
        self.questions = list(questions)
        self.answer = answer

    def plan(self, state: PlanState) -> Plan:
        i = len(state.steps)
        if i < len(self.questions):
            question = filled_question(self.questions[i], state.steps)
            return Plan(
                ASK,
                question=question,
                planner=self.name,
                reason=f"sub-question {i + 1}/{len(self.questions)}",
            )
        final, source = (
            (self.answer, "script") if self.answer is not None else _answer_from_steps(state.steps)
        )
        return Plan(ANSWER, answer=final, planner=self.name, reason="script done", answer_from=source)


class DecompositionPlanner:
    """The query's ``question_decomposition`` (MuSiQue metadata) as an oracle script; see the module."""

    name = "decomposition"

    def __init__(self, key: str = "question_decomposition", gold_answers: bool = True) -> None:
        self.key = key
        self.gold_answers = gold_answers

    def parts(self, metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
        parts = metadata.get(self.key)
        if not isinstance(parts, list) or not parts:
            raise RagrouteError(
                f"the decomposition planner needs the query's {self.key!r} metadata "
                "(a list of {question, answer} items, as MuSiQue's queries.jsonl has)"
            )
        out = []
        for i, part in enumerate(parts):
            if isinstance(part, str):
                part = {"question": part}
            if not isinstance(part, Mapping) or not str(part.get("question", "")).strip():
                raise RagrouteError(f"{self.key}[{i}] has no 'question'")
            out.append(dict(part))
        return out

    def plan(self, state: PlanState) -> Plan:
        parts = self.parts(state.metadata)
        i = len(state.steps)
        if i < len(parts):

            def value(step: StepRecord) -> str:
                gold = parts[step.index].get("answer") if self.gold_answers else None
                return str(gold) if gold else step_answer(step)

            text = str(parts[i]["question"])
            question = relation_as_question(filled_question(text, state.steps, value))
            return Plan(
                ASK, question=question, planner=self.name, reason=f"decomposition {i + 1}/{len(parts)}"
            )
        final = state.metadata.get("answer") if self.gold_answers else None
        source = "gold" if final else ""
        if not final:
            final, source = _answer_from_steps(state.steps)
        return Plan(
            ANSWER,
            answer=str(final or ""),
            planner=self.name,
            reason="decomposition done",
            answer_from=source,
        )


class QuestionOncePlanner:
    """The whole question as the only sub-question, then the answer (the LLM planner's fallback)."""

    name = "question-once"

    def plan(self, state: PlanState) -> Plan:
        if not state.steps:
            return Plan(ASK, question=state.question, planner=self.name, reason="ask the question itself")
        final, source = _answer_from_steps(state.steps)
        return Plan(ANSWER, answer=final, planner=self.name, reason="one step done", answer_from=source)


PLANNER_PROMPT = """You answer a complex question by searching a document collection,
one simple question at a time.
Question: {question}
{steps}
Reply with JSON only: {{"action": "search", "query": "<the next simple question>"}}
if you need to look something up,
or {{"action": "answer", "answer": "<short answer>"}} if the evidence above answers the question.
JSON:"""

STEP_LINE = "Step {n}: searched {query!r}; found: {evidence}"


def _evidence(step: StepRecord, chars: int) -> str:
    if step.answer:
        return step.answer
    if not step.hits:
        return "(nothing retrieved)" if step.retrieved else "(no retrieval)"
    top = step.hits[0]
    text = " ".join(top.text.split())[:chars]
    title = " ".join(top.title.split())  # on the step's line, as the text (until session 49 not)
    return f"{title}: {text}" if title else text


# [^\S\n]: white space within the line. With \s the line's start and end could each run on over
# the following lines: a reply of 20,000 newlines took 15 s to read (the time grew as its square)
_LINE = re.compile(
    r"^[^\S\n]*(search|query|ask|answer|final answer)[^\S\n]*[:\-]\s*(.+?)[^\S\n]*$", re.I | re.M
)


_FIELD = re.compile(r'["\'](action|query|question|answer)["\']\s*:\s*"((?:[^"\\]|\\.)*)"')


def _unescaped(value: str) -> str:
    """A JSON string's ``value`` (as written between its quotes) with its escapes read, as a whole
    answer's JSON reads them (``\\"``, ``\\n``, ``\\u00fc``); as written when it does not read (until
    session 55 a salvaged sub-question kept them: ``Z\\u00fcrich`` was searched, not ``Zürich``)."""
    try:
        return str(json.loads(f'"{value}"'))
    except ValueError:
        return value


def _salvage(text: str) -> tuple[str, str] | None:
    """Complete ``"key": "value"`` fields of a JSON answer cut short (a token limit): the action
    and its value when both were written before the cut, else None."""
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(text):
        fields.setdefault(key, _unescaped(value).strip())
    action = fields.get("action", "").lower()
    query = fields.get("query") or fields.get("question")
    if action in ("search", "ask", "query", "retrieve") and query:
        return ASK, query
    if action in ("answer", "final", "final_answer") and fields.get("answer"):
        return ANSWER, fields["answer"]
    return None


def parse_plan(text: str) -> tuple[str, str]:
    """``(action, value)`` from an LLM's planning answer (JSON first, then ``SEARCH:``/``ANSWER:``
    lines); raises ``ValueError`` with a short reason when neither is readable."""
    try:
        data = parse_json(text)
    except ValueError as exc:
        data, json_error = None, str(exc)
    else:
        json_error = ""
    if isinstance(data, Mapping):
        action = str(data.get("action", "")).strip().lower()
        query = _given(data, ("query", "question", "search"))
        # a falsy answer is an answer ({"answer": 0}, {"answer": false}): until session 49 `or` passed
        # it over, and the plan read as unparseable
        answer = _given(data, ("answer", "final_answer"))
        if action in ("search", "ask", "query", "retrieve") and isinstance(query, str) and query.strip():
            return ASK, query.strip()
        if action in ("answer", "final", "final_answer", "stop") and answer is not None:
            return ANSWER, str(answer).strip()
        if not action and isinstance(query, str) and query.strip():
            return ASK, query.strip()
        if not action and answer is not None:
            return ANSWER, str(answer).strip()
        json_error = "JSON without a usable action"
    salvaged = _salvage(text)
    if salvaged is not None:
        return salvaged
    match = _LINE.search(text)
    if match:
        kind = match.group(1).lower()
        value = match.group(2).strip().strip('"')
        if value:
            return (ANSWER if "answer" in kind else ASK), value
    raise ValueError(f"unparseable plan ({json_error or 'no JSON'}; no SEARCH:/ANSWER: line)")


def _given(data: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The value of the first of ``keys`` that ``data`` gives (not null, not ``""``), else None: a
    blank answer is kept, for the planner to say the LLM answered with nothing."""
    for key in keys:
        value = data.get(key)
        if value is not None and value != "":
            return value
    return None


class LLMPlanner:
    """Plans with any llama-index LLM; falls back (said in the plan) when the LLM fails."""

    name = "llm"

    def __init__(
        self,
        llm: Any,
        *,
        prompt: str = PLANNER_PROMPT,
        timeout_s: float | None = None,
        fallback: Planner | None = None,
        evidence_chars: int = 200,
    ) -> None:
        self.llm = llm
        self.prompt = prompt
        self.timeout_s = timeout_s
        self.fallback = fallback or QuestionOncePlanner()
        self.evidence_chars = evidence_chars

    def render(self, state: PlanState) -> str:
        lines = [
            STEP_LINE.format(n=s.index + 1, query=s.question, evidence=_evidence(s, self.evidence_chars))
            for s in state.steps
        ]
        steps = "\n".join(lines) if lines else "No searches yet."
        return self.prompt.format(question=state.question, steps=steps)

    @staticmethod
    def _unusable(action: str, value: str, state: PlanState) -> str | None:
        """Why a parsed plan cannot be followed (None when it can): a sub-question that is no query
        (an empty one, invisible characters only, a lone surrogate: it raised out of the run and
        the steps' evidence was lost), or one already asked; an answer with nothing in it (blank or
        invisible: ``{"answer": "  "}`` ended the run "complete" with no answer and no retrieval), or
        one that is not valid text (a lone surrogate)."""
        if action != ASK:
            if not has_visible_text(value):
                return f"the LLM answered with nothing ({value!r})"
            # a "\\ud800" escape in the JSON: no UTF-8 output can print it (`ragroute ask` raised
            # UnicodeEncodeError with a traceback until session 43)
            problem = lone_surrogate(value)
            return None if problem is None else f"the LLM's answer is not valid text: {problem}"
        try:
            check_query(value)
        except InvalidQueryError as exc:
            return f"unusable sub-question {value!r}: {exc}"
        # compared as the gates' stop rule compares sub-queries (NFKC, case-folded, single spaces):
        # with lower case alone, "Where  was X born?" was asked again until the budget ran out, or
        # a config's gate stopped the run on the repeat, incomplete (until session 49)
        if normalized_text(value) in {normalized_text(s.question) for s in state.steps}:
            return f"the LLM repeated sub-question {value!r}"
        return None

    def plan(self, state: PlanState) -> Plan:
        reply = complete_safely(self.llm, self.render(state), timeout_s=self.timeout_s)
        problem = reply.error
        if problem is None:
            try:
                action, value = parse_plan(reply.text)
            except ValueError as exc:
                problem = str(exc)
            else:
                problem = self._unusable(action, value, state)
                if problem is None:
                    return Plan(
                        action,
                        question=check_query(value) if action == ASK else "",
                        answer=value if action == ANSWER else "",
                        planner=self.name,
                        reason="llm",
                        raw=reply.text,
                        answer_from="llm" if action == ANSWER else "",
                    )
        plan = self.fallback.plan(state)
        plan.fallback = problem
        plan.raw = reply.text or None
        plan.planner = f"{self.fallback.name} (fallback from {self.name})"
        return plan
