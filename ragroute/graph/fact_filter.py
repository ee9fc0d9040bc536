"""An optional LLM fact filter for the graph walk (HippoRAG 2's recognition memory).

The zero-LLM walk is the product; a deployment with an LLM at hand may set
``graph_index.fact_filter = LLMFactFilter(llm)``: the walk then shows the LLM its
``fact_candidates`` best facts for the query and seeds only from the ones it keeps
(in their original order of score). Any llama-index LLM works (``llm.complete``, called through
:func:`~ragroute.llm.calls.complete_safely`). One call per query; an answer that names no valid
fact number, an LLM that raises or one that does not answer within ``timeout_s`` keeps every
candidate (the walk never loses its seeds, nor the query its answer, to the LLM) and is counted in
:attr:`LLMFactFilter.failures` (the last error in :attr:`LLMFactFilter.last_error`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

PROMPT = """You select the facts that help answer a question.
Question: {query}
Candidate facts (two related phrases each):
{facts}
Answer with the numbers of the useful facts as a JSON list, e.g. [0, 3].
Numbers:"""

_LIST = re.compile(r"\[([^\[\]]*)\]")
#: a number of the list (with its fraction or exponent, so that "1.5" is one number), and the end
#: of the range it starts ("1-3", "1 to 3"), if any
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?:\s*(?:-|\u2013|to)\s*(\d+)(?![.\d]))?")


class LLMFactFilter:
    """Keep the candidate facts an LLM judges useful for the query."""

    name = "llm-fact-filter"

    def __init__(self, llm: Any, *, prompt: str = PROMPT, timeout_s: float | None = 30.0) -> None:
        from ragroute.errors import InvalidArgumentError, RagrouteError, check_setting

        try:  # until session 55 unchecked: 0, a negative number or "5" failed every query's filter
            check_setting(timeout_s, "number", "LLMFactFilter", "timeout_s", positive=True, optional=True)
        except RagrouteError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self.llm = llm
        self.prompt = prompt
        self.timeout_s = timeout_s
        self.calls = 0
        self.failures = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def parse(self, answer: str, count: int) -> list[int] | None:
        """The valid fact numbers in the first ``[...]`` list of ``answer``, in order; None when it
        names none (no list, ``[]``, or only numbers out of range): the walk then keeps every
        candidate, since seeding from no fact would lose the walk's seeds to the LLM (until session
        36 ``[]`` and out-of-range numbers dropped every fact, uncounted). A range names the facts
        it spans (``[1-3]``: 1, 2 and 3); a number that is no whole number (``1.5``, ``1e2``) names
        no fact: until session 55 its digits were read apart (``[1.5]`` kept facts 1 and 5,
        ``[1-3]`` fact 1 alone)."""
        match = _LIST.search(answer)
        if match is None:
            return None
        kept: set[int] = set()
        for first, last in _NUMBER.findall(match.group(1)):
            # a number of more digits than any fact count is out of range as it is: until session 54
            # one of 4,300 digits (an LLM repeating a digit) failed the walk with int()'s ValueError
            if len(first) > 18 or len(last) > 18:
                continue
            value = float(first)
            if value.is_integer():
                low = int(value)
                kept.update(range(max(low, 0), min(int(last) if last else low, count - 1) + 1))
        return sorted(kept) or None

    def __call__(self, query: str, facts: Sequence[Any]) -> list[Any]:
        return self.select(query, facts)[0]

    def select(self, query: str, facts: Sequence[Any]) -> tuple[list[Any], str | None]:
        """The facts the LLM keeps, and None; or every fact and why (the LLM's error, or an answer
        naming no fact), which the walk shows in its hits' ``explain`` (``fact_filter_failed``)."""
        from ragroute.llm.calls import complete_safely

        listed = "\n".join(f"{i}. {fact.subject} | {fact.object}" for i, fact in enumerate(facts))
        reply = complete_safely(
            self.llm, self.prompt.format(query=query, facts=listed), timeout_s=self.timeout_s
        )
        kept = None if reply.error else self.parse(reply.text, len(facts))
        failure = None
        if kept is None:
            failure = reply.error or f"no valid fact number in the answer: {reply.text[:80]!r}"
        with self._lock:
            self.calls += 1
            if failure is not None:
                self.failures += 1
                self.last_error = failure
        if kept is None:
            return list(facts), failure
        return [facts[i] for i in kept], None
