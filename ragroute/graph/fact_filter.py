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
        36 ``[]`` and out-of-range numbers dropped every fact, uncounted)."""
        match = _LIST.search(answer)
        if match is None:
            return None
        # a number of more digits than any fact count is out of range as it is: until session 54
        # one of 4,300 digits (an LLM repeating a digit) failed the walk with int()'s ValueError
        numbers = (int(t) for t in re.findall(r"-?\d+", match.group(1)) if len(t) <= 18)
        kept = sorted({n for n in numbers if 0 <= n < count})
        return kept or None

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
