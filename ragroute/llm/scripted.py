"""A llama-index LLM that answers from a script: for tests, notebooks and dry runs.

``ScriptedLLM(rules={"substring": reply})`` answers with the reply of the first rule
whose key occurs in the prompt; other prompts get ``replies`` in turn (the last reply
repeats when the list runs out, or they cycle with ``cycle=True``), else ``default``.
A reply that is an exception *instance* is raised (an LLM
that errors); ``delay_s`` sleeps before answering (an LLM that times out);
``logprobs`` (one float per token, or a list of them per reply) are returned in
``CompletionResponse.logprobs`` and ``additional_kwargs["token_logprobs"]``, as
:class:`~ragroute.llm.local.LocalLLM` returns them. Every prompt is recorded in
``prompts``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from llama_index.core.base.llms.types import LogProb
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

#: one call at a time reads the script (held only while a reply is picked; a module-level lock,
#: so a scripted LLM still copies and pickles)
_SCRIPT_LOCK = threading.Lock()


class ScriptedLLM(CustomLLM):
    """Answers from ``replies`` (in turn) or ``rules`` (by prompt substring); see the module docstring."""

    replies: list[Any] = Field(default_factory=list)
    rules: dict[str, Any] = Field(default_factory=dict)
    default: Any = ""
    cycle: bool = False
    logprobs: list[Any] | None = None
    delay_s: float = 0.0
    model: str = "scripted"
    prompts: list[str] = Field(default_factory=list)
    calls: int = 0
    turn: int = 0  # replies used so far (calls answered by a rule do not count)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    def generation_settings(self) -> dict[str, Any]:
        """What decides the answers (the script), for caches keyed by what an LLM would answer."""
        return {
            "replies": [repr(r) for r in self.replies],
            "rules": {k: repr(v) for k, v in self.rules.items()},
            "default": repr(self.default),
            "cycle": self.cycle,
            "logprobs": self.logprobs,
        }

    def _pick(self, prompt: str) -> tuple[Any, int]:
        for key, reply in self.rules.items():
            if key in prompt:
                return reply, list(self.rules).index(key)
        if self.replies:
            i = self.turn % len(self.replies) if self.cycle else min(self.turn, len(self.replies) - 1)
            self.turn += 1
            return self.replies[i], i
        return self.default, 0

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        # one call at a time through the script: called from several threads at once (a pipeline's
        # sources, concurrent queries, a call abandoned at its timeout), two calls read the same
        # turn, one reply was given twice and another never
        with _SCRIPT_LOCK:
            self.prompts.append(prompt)
            reply, i = self._pick(prompt)
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            reply = reply(prompt)
        values = None
        if self.logprobs is not None:
            values = (
                self.logprobs[i] if self.logprobs and isinstance(self.logprobs[0], list) else self.logprobs
            )
            values = [float(v) for v in values]
        return CompletionResponse(
            text=str(reply),
            logprobs=None if values is None else [[LogProb(token="", logprob=v, bytes=[])] for v in values],
            additional_kwargs={} if values is None else {"token_logprobs": values},
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen():
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()
