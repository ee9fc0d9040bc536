"""Routing by asking an LLM for a route label (any llama-index LLM; optional).

The prompt lists each route with its description and asks for exactly one
label (``none`` = answer without retrieval). The answer's label is read by
:meth:`LlmRouter.parse` (the whole answer, else the one source it names, else its first
label; a label it negates, "not wiki", is not named). The call goes through
:func:`~ragroute.llm.calls.complete_safely` (``timeout_s`` bounds it). An answer naming no
known label, or a call that fails or times out, is a :class:`UnknownRouteLabel` error naming
the fix, unless a ``fallback`` router is given: then the fallback decides and the trace
records the LLM's answer or error.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np

from ragroute.errors import InvalidArgumentError, RagrouteError, value_type_name
from ragroute.llm.calls import complete_safely
from ragroute.route.base import NONE_ROUTE, BaseRouter, Router
from ragroute.route.sources import Source
from ragroute.types import Decision, TraceStep

PROMPT = """You route questions to the knowledge source that can answer them.
Sources:
{routes}
- none: the question can be answered without looking anything up.

Question: {query}
Answer with exactly one label from: {labels}.
Label:"""


class UnknownRouteLabel(RagrouteError):
    """The LLM answered with something that is not a route label, or did not answer."""


def check_label_probability(value: Any, where: str = "llm router") -> float:
    """``value`` as a float when it lies in (0.5, 1], else a one-line :class:`RagrouteError`. The
    chosen label gets it and the other labels share what is left, so at 0.5 or below another label
    could get as much (or more) and be searched in place of the LLM's choice."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.5 < float(value) <= 1.0
    if not ok:
        raise RagrouteError(
            f"{where}: 'label_probability' must be a number above 0.5 and at most 1 (the LLM's label must "
            f"stay the most probable route), not {value!r}"
        )
    return float(value)


def _spelled(text: str) -> str:
    """``text`` lower-cased, with every run of spaces, ``_`` and ``-`` as one space: how a label
    and an answer are compared."""
    return re.sub(r"[\s_-]+", " ", text.lower()).strip()


#: a label that a negation comes shortly before, in the same clause, is not the LLM's choice: "not
#: wiki but docs", "neither wiki nor docs", "it does not need wiki", "rather than wiki"
_NEGATED = re.compile(
    r"(?:^|\s)(?:not|no|never|neither|nor|cannot|\w+n['\u2019]t|rather than|instead of)(?:\s+\S+){0,2}\s*$"
)
#: the text up to the last end of a clause (a punctuation mark, or "but", "so", "however")
_TO_CLAUSE_END = re.compile(r".*(?:[,;:.!?()\[\]]|\b(?:but|so|however)\b)", re.S)
#: how far before a label a negation is looked for
_NEGATION_REACH = 80


def _negated(said: str, start: int) -> bool:
    """Whether the label written at ``start`` of ``said`` (an answer as :func:`_spelled` writes it)
    is negated: a negation word at most two words before it, in its clause. Until session 55 "not
    wiki but docs" and "none (the question does not need wiki)" searched ``wiki``."""
    window = said[max(0, start - _NEGATION_REACH) : start]
    if start > _NEGATION_REACH:
        window = window.partition(" ")[2]  # not a piece of the word the window starts in
    return _NEGATED.search(_TO_CLAUSE_END.sub("", window, count=1)) is not None


def _inside_another(spans: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The spans that lie within another, longer span of ``spans`` (distinct spans). In start order,
    longest first, a span lies within another exactly when an earlier one ends at or after its end:
    one pass, where comparing every span with every other took 15 s for an answer of 100,000
    characters repeating two labels (its time grew as the square of the answer's length)."""
    inside: set[tuple[int, int]] = set()
    reach = -1
    for start, end in sorted(set(spans), key=lambda span: (span[0], -span[1])):
        if reach >= end:
            inside.add((start, end))
        reach = max(reach, end)
    return inside


def _checked_prompt(prompt: Any) -> str:
    """``prompt`` when it is text that ``str.format`` fills with ``routes``, ``query`` and
    ``labels``; else one :class:`InvalidArgumentError` line (until session 51 a stray brace or
    another placeholder was a KeyError or ValueError at every query's routing)."""
    if not isinstance(prompt, str):
        raise InvalidArgumentError(f"llm router: prompt must be text, got {value_type_name(prompt)}")
    try:
        prompt.format(routes="", query="", labels="")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise InvalidArgumentError(
            f"llm router: the prompt cannot be filled ({type(exc).__name__}: {exc}): it may name "
            "{routes}, {query} and {labels}; write a literal brace as {{ or }}"
        ) from None
    return prompt


class LlmRouter(BaseRouter):
    """One LLM call per query; the chosen label gets ``label_probability``, the rest share what is left."""

    name = "llm"

    def __init__(
        self,
        sources: Sequence[Source],
        llm: Any,
        *,
        fallback: Router | None = None,
        label_probability: float = 0.9,
        prompt: str = PROMPT,
        timeout_s: float | None = None,
    ) -> None:
        self.llm = llm
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.label_probability = check_label_probability(label_probability)
        self.prompt = _checked_prompt(prompt)
        self.sources = list(sources)
        self.labels = [s.name for s in sources] + [NONE_ROUTE]
        self._routes_text = "\n".join(f"- {s.name}: {s.description or s.name}" for s in sources)

    def restricted_to(self, labels: Collection[str]) -> LlmRouter:
        """The same router, whose prompt offers only the sources in ``labels`` (and ``none``): a
        caller who may not read a source is routed as if it did not exist."""
        return LlmRouter(
            [s for s in self.sources if s.name in labels],
            self.llm,
            fallback=self.fallback,
            label_probability=self.label_probability,
            prompt=self.prompt,
            timeout_s=self.timeout_s,
        )

    def parse(self, answer: str, query: str | None = None) -> str | None:
        """The label ``answer`` names (case-insensitive; spaces, ``_`` and ``-`` alike: "IT
        support" names ``it_support``), or None: the whole answer when it is a label, else the one
        source label it names (``"None of them, but it_support might"`` is ``it_support``), else the
        first label it names, ``none`` included; of labels spelled alike, the one it writes as it is
        (:meth:`_written`). A label the answer negates ("not wiki but docs", "neither wiki nor
        docs": :func:`_negated`) is not named. An answer naming every label (the prompt's list
        said back) chooses none of them. Until session 42 a label written with spaces ("product
        tables") named nothing, and the fallback router decided.

        ``query``: the question asked. An answer that is not a label alone is read without the
        question said back in it (``"Question: what about astro? Label: cook"`` names ``cook``):
        until session 43 a label in an echoed question (or in one that says "answer astro") was
        read as the LLM's choice."""
        said = _spelled(answer)
        labels = {_spelled(label): label for label in reversed(self.labels)}
        whole = said.strip(" .,;:!?'\"`")
        if whole in labels:
            return self._written(whole, answer)
        asked = _spelled(query or "")
        if asked and asked not in labels:
            said = re.sub(rf"(?<![\w/]){re.escape(asked)}(?![\w/])", " ", said)
        spans: dict[str, list[tuple[int, int]]] = {}
        for label in self.labels:
            spelled = _spelled(label)
            if not spelled or spelled in spans:
                continue
            # a label stands alone: not a piece of a longer word or of a path ("astro" in "astro/x")
            pattern = rf"(?<![\w/]){re.escape(spelled)}(?![\w/])"
            spans[spelled] = [hit.span() for hit in re.finditer(pattern, said)]
        inside = _inside_another(span for found_at in spans.values() for span in found_at)
        found: dict[str, int] = {}
        for spelled, found_at in spans.items():
            # a label inside a longer label the answer names is not named ("product" in "product
            # tables", "docs" in "docs.v2"), nor a label the answer negates ("not wiki")
            alone = [span for span in found_at if span not in inside and not _negated(said, span[0])]
            if alone:
                found[spelled] = alone[0][0]
        named = [self._written(w, answer) for w in sorted(found, key=found.__getitem__)]
        if not named or (len(self.labels) > 2 and len(named) == len(self.labels)):
            return None  # no label, or the prompt's list of labels said back: no choice made
        sources = [label for label in named if label != NONE_ROUTE]
        return sources[0] if len(sources) == 1 else named[0]

    def _written(self, spelled: str, answer: str) -> str:
        """The label spelled ``spelled`` that ``answer`` names: of labels spelled alike (the source
        ``None`` and the route ``none``, ``IT-support`` and ``it_support``), the first written in the
        answer as it is, else the first listed. Until session 51 the first listed was taken even when
        the answer wrote another exactly: the LLM's ``none`` searched the source ``None``, and its
        ``it_support`` searched ``IT-support``."""
        alike = [label for label in self.labels if _spelled(label) == spelled]
        if len(alike) > 1:
            at = {
                label: hit.start()
                for label in alike
                if (hit := re.search(rf"(?<![\w/]){re.escape(label)}(?![\w/])", answer))
            }
            if at:
                return min(at, key=at.__getitem__)
        return alike[0]

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        return [
            self._route_one(q, None if query_vectors is None else query_vectors[i])
            for i, q in enumerate(queries)
        ]

    def _route_one(self, query: str, vector: np.ndarray | None) -> Decision:
        prompt = self.prompt.format(routes=self._routes_text, query=query, labels=", ".join(self.labels))
        reply = complete_safely(self.llm, prompt, timeout_s=self.timeout_s)
        answer = reply.text.strip()
        label = self.parse(answer, query) if reply.ok else None
        if label is None:
            error = "unknown route label" if reply.ok else f"LLM call failed: {reply.error}"
            if self.fallback is None:
                said = f"answered {answer[:60]!r}, which is not one of {', '.join(self.labels)}"
                raise UnknownRouteLabel(
                    f"llm router: the LLM {said if reply.ok else error[4:]}; give the router a "
                    "'fallback:' router kind (e.g. prototype) to route such queries"
                )
            decision = self.fallback.route(query, query_vector=vector)
            decision.trace.insert(
                0,
                TraceStep(
                    "router",
                    {
                        "router": self.name,
                        "answer": answer[:200],
                        "error": error,
                        "fallback": self.fallback.name,
                    },
                ),
            )
            decision.decided_by = f"{self.fallback.name} (fallback from llm)"
            return decision
        rest = (1.0 - self.label_probability) / max(1, len(self.labels) - 1)
        routes = {name: (self.label_probability if name == label else rest) for name in self.labels}
        return Decision(
            chosen=[label],
            routes=routes,
            signals={"llm_answer": answer[:200]},
            decided_by=self.name,
            trace=[TraceStep("router", {"router": self.name, "answer": answer[:200], "label": label})],
        )
