"""Calling any llama-index LLM without letting it sink the query.

:func:`complete_safely` runs ``llm.complete(prompt, **kwargs)`` and returns a
:class:`Reply`: the text, the token log-probabilities when the response carries
them (:func:`token_logprobs`), the time taken, and ``error`` (``"TimeoutError:
no answer within 5.0 s"``, ``"ConnectionError: ..."``) instead of raising. With a
``timeout_s`` the call runs in a thread of its own; a call that overruns is abandoned
(Python cannot kill a thread: it finishes in the background and its answer is
dropped). Each call gets its own thread, started at once: until session 36 the calls
shared a pool of four workers, so four hung calls made every later call time out
without reaching the LLM, and a call queued behind them still ran after its caller
had given up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from ragroute.errors import error_summary, lone_surrogate


class _Overrun(Exception):
    """The call did not finish within its timeout (it goes on in its thread, unheeded)."""


def _call_within(call: Any, timeout_s: float) -> Any:
    """``call()`` in a daemon thread of its own; its result or exception, or :class:`_Overrun`."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as it is
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="ragroute-llm", daemon=True).start()
    # a wait past threading.TIMEOUT_MAX (about 292 years) is refused with an OverflowError: until
    # session 51 a timeout_s of 1e10 (no timeout, in effect) failed every call at once, unanswered
    if not done.wait(min(timeout_s, threading.TIMEOUT_MAX)):
        raise _Overrun
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


LOGPROB_TOLERANCE = 1e-4
"""A token log-probability above this (rounding aside, a log-probability is at most 0) is none: an
LLM reporting raw logits, say (:attr:`Reply.logprob_problem`)."""


@dataclass
class Reply:
    """One LLM answer: ``text`` ("" on error), ``logprobs`` (per generated token, or None when
    the LLM does not expose them), ``ms``, and ``error`` (None when the call succeeded)."""

    text: str = ""
    logprobs: list[float] | None = None
    ms: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: how many tokens the LLM says it generated (None: it does not say)
    tokens: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def logprob_problem(self) -> str | None:
        """Why ``logprobs`` are not log-probabilities (NaN, infinite, or above 0: raw logits, say;
        or not one per token the LLM says it generated), or None when they are (or there are none)."""
        invalid = [v for v in self.logprobs or [] if not math.isfinite(v) or v > LOGPROB_TOLERANCE]
        if not invalid:
            if self.logprobs and self.tokens is not None and len(self.logprobs) != self.tokens:
                # a value missing for some tokens (or more values than tokens): which token each
                # belongs to is unknown, and a mean over the rest read as the draft's confidence
                return (
                    f"the LLM's token log-probabilities do not match its tokens ({len(self.logprobs)} "
                    f"log-probabilities for {self.tokens} tokens)"
                )
            return None
        return (
            f"the LLM's token log-probabilities are not log-probabilities ({len(invalid)} of "
            f"{len(self.logprobs or [])} NaN, infinite or above 0, e.g. {invalid[0]!r})"
        )

    @property
    def mean_logprob(self) -> float | None:
        """The mean token log-probability; None without log-probabilities or with invalid ones."""
        if not self.logprobs or self.logprob_problem:
            return None
        return float(sum(self.logprobs) / len(self.logprobs))


def _row_logprobs(rows: Any) -> list[float] | None:
    """The chosen tokens' log-probabilities of ``response.logprobs`` rows (a list per token of
    candidates, the first chosen), or None when the rows are in another shape."""
    if not rows or not isinstance(rows, Sequence) or isinstance(rows, str):
        return None
    values: list[float] = []
    for row in rows:
        if not row:
            continue
        if not isinstance(row, Sequence) or isinstance(row, str):
            return None
        first = row[0]
        value = first if isinstance(first, Real) else getattr(first, "logprob", None)
        if value is None:
            continue
        if not isinstance(value, Real):
            return None
        values.append(float(value))
    return values


def token_logprobs(response: Any) -> list[float] | None:
    """Per-token log-probabilities of a llama-index ``CompletionResponse``, or None.

    Read from ``response.logprobs`` (a list per token of ``LogProb`` candidates, the
    first being the chosen token, as llama-index LLMs that expose them fill it), else
    from ``response.additional_kwargs["token_logprobs"]`` (a list of floats). Log-probabilities
    in another shape (a row that is no list, a value that is no number) are none: until session
    43 they raised out of :func:`complete_safely` (``KeyError``, ``ValueError``, ``TypeError``)
    and sank the query, past the fallback of the gate or router asking.
    """
    values = _row_logprobs(getattr(response, "logprobs", None))
    if values:
        return values
    extra = getattr(response, "additional_kwargs", None) or {}
    given = extra.get("token_logprobs") if isinstance(extra, Mapping) else None
    if isinstance(given, Sequence) and given and all(isinstance(v, Real) for v in given):
        return [float(v) for v in given]
    return None


def token_count(response: Any) -> int | None:
    """How many tokens ``response`` says it generated, as the source :func:`token_logprobs` reads
    says it: the rows of ``response.logprobs`` (one per token, also one without a value), else the
    ``additional_kwargs["tokens"]`` list; None when it does not say."""
    rows = getattr(response, "logprobs", None)
    if rows is not None and _row_logprobs(rows):
        return len(rows)
    extra = getattr(response, "additional_kwargs", None) or {}
    tokens = extra.get("tokens") if isinstance(extra, Mapping) else None
    if isinstance(tokens, Sequence) and not isinstance(tokens, str):
        return len(tokens)
    return None


def complete_safely(llm: Any, prompt: str, *, timeout_s: float | None = None, **kwargs: Any) -> Reply:
    """``llm.complete(prompt, **kwargs)`` as a :class:`Reply`; never raises for the LLM's failures."""
    start = time.perf_counter()

    def call() -> Any:
        return llm.complete(prompt, **kwargs)

    try:
        if timeout_s is None:
            response = call()
        else:
            try:
                response = _call_within(call, timeout_s)
            except _Overrun:  # the LLM's own TimeoutError is an ordinary error, below
                return Reply(ms=_ms(start), error=f"TimeoutError: no answer within {timeout_s} s")
        # read in here: a response whose text or log-probabilities raise when read (a stream cut
        # short) raised out of this function, past every caller's fallback
        text = getattr(response, "text", response)
        if not isinstance(text, str):
            return Reply(ms=_ms(start), error=f"TypeError: the LLM returned {type(text).__name__}, not text")
        problem = lone_surrogate(text)
        if problem is not None:  # no UTF-8 output can print it: `ragroute ask --json` raised on the
            # gate's draft or the router's answer in its trace; a failed call, as the answerer's is
            return Reply(ms=_ms(start), error=f"the LLM's answer is not valid text: {problem}")
        logprobs = token_logprobs(response)
        tokens = token_count(response) if logprobs is not None else None
    except Exception as exc:  # noqa: BLE001 - any LLM failure becomes a recorded error
        return Reply(ms=_ms(start), error=error_summary(exc, 200))
    if logprobs is not None:  # a token given probability 0: a finite stand-in; NaN stays (invalid)
        logprobs = [-100.0 if v == -math.inf else v for v in logprobs]
    return Reply(text=text, logprobs=logprobs, ms=_ms(start), tokens=tokens)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
