"""Gate signals that ask an LLM (any llama-index LLM), and a gate that falls back when it fails.

Three signals, each a :class:`~ragroute.gate.signals.GateSignal` (so they also stack in a
:class:`~ragroute.gate.trained.TrainedGate` fitted in-process, or sit under a
:class:`~ragroute.gate.trained.ThresholdGate`):

=================  ==========================================================================
kind               values
=================  ==========================================================================
``llm_logprob``    ``mean_logprob`` / ``min_logprob`` of a greedy draft answer's tokens (FLARE,
                   DRAGIN: low confidence means retrieve), ``ok``; needs an LLM that exposes
                   token log-probabilities (:class:`~ragroute.llm.local.LocalLLM` does)
``llm_agreement``  ``agreement`` (share of ``samples`` sampled answers equal to the most common
                   one, after normalising case, punctuation and articles), ``distinct``, ``ok``;
                   the samples ask for ``temperature`` and a ``seed`` per sample (an LLM that
                   ignores them agrees with itself: the value is then meaningless)
``llm_self``       ``known``: 1 when the LLM says it can answer without looking anything up
                   (a prompted self-assessment, yes/no), 0 when not; ``ok``
=================  ==========================================================================

A call that errors, times out, or returns nothing readable (no yes/no, no log-probabilities)
leaves that query's values at neutral defaults with ``ok = 0`` and the reason in
:meth:`~LLMSignal.explain` (the gate's trace). :class:`LLMGate` turns the LLM values into a
retrieval probability (``1 - mean confidence`` of the signals that answered) and, when *every*
LLM signal failed for a query, takes the decision of its ``fallback`` gate instead (any gate
over LLM-free signals; by default a rarity threshold, which needs no fitting), saying so in the
decision's reason and ``signals["fallback"]``. It never raises for an LLM's failure.
"""

from __future__ import annotations

import math
import re
import string
import threading
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ragroute.context import QueryContext
from ragroute.display import shown_pair, shown_value
from ragroute.gate.signals import GateSignal, RaritySignal
from ragroute.gate.trained import DepthPolicy, ThresholdGate, checked_max_steps, sigmoid, stop_reason
from ragroute.llm.calls import complete_safely
from ragroute.pipeline.stages import GateDecision

DRAFT_PROMPT = "Answer the question in a few words.\nQuestion: {query}\nAnswer:"
SELF_PROMPT = (
    "Can you answer the following question correctly from your own knowledge, without looking "
    "anything up? Reply with yes or no.\nQuestion: {query}\nReply:"
)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    """Case-folded NFKC, no punctuation or articles, single spaces (SQuAD-style answer
    normalisation). Until session 55 lower-cased only: "Straße" and "STRASSE", or "café" composed
    and decomposed, were two answers, and the samples' agreement read lower than it was."""
    text = re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(_ARTICLES.sub(" ", text).split())


@dataclass
class LLMOutcome:
    """One query's LLM signal: ``values`` (``ok`` last; neutral with ``ok = 0`` on failure),
    ``detail`` for the trace, and ``error``: why the call gave no values (None when it did)."""

    values: list[float]
    detail: dict[str, Any]
    error: str | None


class LLMSignal(GateSignal):
    """Base of the LLM signals: per-query calls, neutral values and a recorded reason on failure."""

    needs_llm: ClassVar[bool] = True
    neutral: ClassVar[tuple[float, ...]] = ()

    def __init__(self, llm: Any, *, timeout_s: float | None = None, prompt: str | None = None) -> None:
        self.llm = llm
        self.timeout_s = timeout_s
        if prompt is not None:
            try:
                # the placeholder itself, not a part of it: until session 54 "{query[0]}" sent the
                # LLM the query's first letter, and "{query.text}" was an AttributeError traceback
                for _, field_name, _, _ in string.Formatter().parse(prompt):
                    if field_name is not None and field_name != "query":
                        raise KeyError(field_name)
                filled = prompt.format(query="\x00")
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise ValueError(
                    f"the prompt may hold only the {{query}} placeholder; write literal braces as {{{{ }}}} "
                    f"({type(exc).__name__}: {exc})"
                ) from None
            if "\x00" not in filled:  # the LLM would never see the query, and answer every one alike
                raise ValueError("the prompt must hold the {query} placeholder, where the query goes")
            self.prompt = prompt
        # what the latest values() call of each thread read, by context object: the explanation
        # of a decision reads its own query's outcome (two queries with one text in a batch, or
        # two threads asking at once, never read each other's), and nothing accumulates
        self._latest = threading.local()

    def settings(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s}

    def confidence(self, row: np.ndarray) -> float:
        """How sure the LLM is that it can answer, in [0, 1], from this signal's values."""
        raise NotImplementedError

    def row(self, text: str) -> tuple[list[float], dict[str, Any]]:
        """Values (``ok`` last) and detail for one query; raise ``ValueError`` when unreadable."""
        raise NotImplementedError

    def outcomes(self, contexts: Sequence[QueryContext]) -> list[LLMOutcome]:
        """Ask the LLM for each query: its values (``ok`` last), detail, and why it failed (or None)."""
        out = []
        for context in contexts:
            try:
                values, detail = self.row(context.text)
                out.append(LLMOutcome(values, detail, None))
            except ValueError as exc:
                out.append(LLMOutcome([*self.neutral, 0.0], {}, str(exc)))
        self._latest.outcomes = {id(c): (c, o) for c, o in zip(contexts, out)}
        self._latest.by_text = {c.text: o for c, o in zip(contexts, out)}
        return out

    def values(self, contexts: Sequence[QueryContext], vectors: np.ndarray | None) -> np.ndarray:
        outcomes = self.outcomes(contexts)
        rows = [o.values for o in outcomes]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.names))

    def _outcome(self, context: QueryContext) -> LLMOutcome | None:
        """This thread's latest outcome for this context object, else for its text."""
        entry = getattr(self._latest, "outcomes", {}).get(id(context))
        if entry is not None and entry[0] is context:
            return entry[1]
        return getattr(self._latest, "by_text", {}).get(context.text)

    def error(self, text: str) -> str | None:
        """Why this thread's latest call for ``text`` gave no values (None when it did)."""
        outcome = getattr(self._latest, "by_text", {}).get(text)
        return outcome.error if outcome is not None else None

    def explain(self, context: QueryContext, vector: np.ndarray | None) -> dict[str, Any]:
        outcome = self._outcome(context)
        if outcome is None:
            return {}
        return {"error": outcome.error} if outcome.error else dict(outcome.detail)

    def _ask(self, prompt: str, **kwargs: Any) -> Any:
        reply = complete_safely(self.llm, prompt, timeout_s=self.timeout_s, **kwargs)
        if not reply.ok:
            raise ValueError(reply.error)
        return reply


class LogprobSignal(LLMSignal):
    """Mean and minimum token log-probability of a greedy draft answer."""

    kind = "llm_logprob"
    primary = "mean_logprob"
    prompt = DRAFT_PROMPT
    neutral = (0.0, 0.0)

    def __init__(self, llm: Any, *, center: float = -0.5, scale: float = 0.15, **kwargs: Any) -> None:
        super().__init__(llm, **kwargs)
        self.center, self.scale = float(center), float(scale)
        if not math.isfinite(self.center):
            raise ValueError(f"center must be a finite log-probability, got {center}")
        if not (math.isfinite(self.scale) and self.scale > 0):  # 0: NaN; below 0: confidence flipped
            raise ValueError(f"scale must be a positive number, got {scale}")

    @property
    def names(self) -> list[str]:
        return ["mean_logprob", "min_logprob", "ok"]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "center": self.center, "scale": self.scale}

    def row(self, text: str) -> tuple[list[float], dict[str, Any]]:
        reply = self._ask(self.prompt.format(query=text))
        if not reply.logprobs:
            if not reply.text.strip():  # no token to read (until session 53 said to be an LLM that
                # exposes none: the local LLM's empty draft sent its user to the wrong setting)
                raise ValueError("the LLM's draft answer is empty: no tokens to read log-probabilities of")
            raise ValueError("the LLM exposes no token log-probabilities")
        if reply.logprob_problem:  # NaN, or raw logits: no confidence to read, a failed signal
            raise ValueError(reply.logprob_problem)
        mean = float(np.mean(reply.logprobs))
        return [mean, float(min(reply.logprobs)), 1.0], {
            "draft": reply.text.strip()[:80],
            "tokens": len(reply.logprobs),
        }

    def confidence(self, row: np.ndarray) -> float:
        return float(sigmoid((row[0] - self.center) / self.scale))


class AgreementSignal(LLMSignal):
    """Agreement of ``samples`` sampled draft answers (self-consistency)."""

    kind = "llm_agreement"
    primary = "agreement"
    prompt = DRAFT_PROMPT
    neutral = (0.0, 1.0)

    def __init__(self, llm: Any, *, samples: int = 3, temperature: float = 0.8, **kwargs: Any) -> None:
        super().__init__(llm, **kwargs)
        if samples < 2:
            raise ValueError("agreement needs at least 2 samples")
        self.samples, self.temperature = int(samples), float(temperature)
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a number >= 0, got {temperature}")

    @property
    def names(self) -> list[str]:
        return ["agreement", "distinct", "ok"]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "samples": self.samples, "temperature": self.temperature}

    def row(self, text: str) -> tuple[list[float], dict[str, Any]]:
        prompt = self.prompt.format(query=text)
        answers = []
        for seed in range(self.samples):
            reply = self._ask(prompt, temperature=self.temperature, seed=seed)
            answer = normalise_answer(reply.text)
            if answer:
                answers.append(answer)
        if not answers:
            raise ValueError("the LLM gave only empty answers")
        counts = Counter(answers)
        top, n = counts.most_common(1)[0]
        return [n / self.samples, len(counts) / self.samples, 1.0], {
            "majority": top[:80],
            "answers": len(answers),
        }

    def confidence(self, row: np.ndarray) -> float:
        return float(row[0])


# "no" is tried first: "I can't" starts like "I can" (straight or curly apostrophe, or none), and
# so does "I can not" (until session 54 read as yes: the gate answered without retrieving); "no
# doubt" and "no problem" are a yes (until session 55 read as no)
_NO = re.compile(
    r"^\W*(no(?!\s+(?:doubt|problem)\b)|n|false|not|cannot|(i )?can['\u2019]?t|(i )?can\s+not|i cannot|"
    r"i don['\u2019]?t)\b",
    re.I,
)
_YES = re.compile(r"^\W*(yes|y|true|i can|sure|no\s+(?:doubt|problem))\b", re.I)


class SelfAssessSignal(LLMSignal):
    """The LLM's own yes/no: can it answer without looking anything up?"""

    kind = "llm_self"
    primary = "known"
    prompt = SELF_PROMPT
    neutral = (0.5,)

    @property
    def names(self) -> list[str]:
        return ["known", "ok"]

    def row(self, text: str) -> tuple[list[float], dict[str, Any]]:
        reply = self._ask(self.prompt.format(query=text))
        answer = reply.text.strip()
        if _NO.search(answer):
            known = 0.0
        elif _YES.search(answer):
            known = 1.0
        else:
            raise ValueError(f"unparseable self-assessment {answer[:60]!r} (no yes/no)")
        return [known, 1.0], {"reply": answer[:40]}

    def confidence(self, row: np.ndarray) -> float:
        return float(row[0])


LLM_SIGNALS: dict[str, type[LLMSignal]] = {
    cls.kind: cls for cls in (LogprobSignal, AgreementSignal, SelfAssessSignal)
}
LLM_SIGNAL_SETTINGS: dict[str, frozenset[str]] = {
    "llm_logprob": frozenset({"timeout_s", "prompt", "center", "scale"}),
    "llm_agreement": frozenset({"timeout_s", "prompt", "samples", "temperature"}),
    "llm_self": frozenset({"timeout_s", "prompt"}),
}
"""The settings each LLM signal kind takes in a ``{kind: ..., ...}`` mapping (besides ``kind``)."""
#: the type (and least value) of each LLM signal setting, checked before the signal is made
LLM_SIGNAL_TYPES: dict[str, tuple[str, float | None]] = {
    "timeout_s": ("number", None),
    "prompt": ("string", None),
    "center": ("number", None),
    "scale": ("number", None),
    "samples": ("integer", 2),
    "temperature": ("number", 0),
}


def make_llm_signal(spec: str | dict[str, Any], llm: Any) -> LLMSignal:
    """An LLM signal from its kind (``"llm_logprob"``) or ``{kind: ..., setting: ...}``."""
    from ragroute.errors import RagrouteError, check_keys, check_listed_setting

    data = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = str(data.pop("kind", ""))
    if kind not in LLM_SIGNALS:
        raise RagrouteError(f"unknown LLM gate signal {kind!r}: known ones are {', '.join(LLM_SIGNALS)}")
    if kind in LLM_SIGNAL_SETTINGS:
        check_keys(data, LLM_SIGNAL_SETTINGS[kind], f"LLM gate signal {kind}", "setting")
    for key, value in data.items():  # a prompt of 5 was a traceback; timeout_s 0 failed every call
        check_listed_setting(
            key, value, LLM_SIGNAL_TYPES, f"LLM gate signal {kind}", positive=("timeout_s", "scale")
        )
    try:
        return LLM_SIGNALS[kind](llm, **data)
    except (TypeError, ValueError) as exc:
        raise RagrouteError(f"LLM gate signal {kind}: bad settings {data}: {exc}") from None


ZERO_WEIGHTS = "every signal is weighted 0, so none could decide: give one a weight above 0"


def weighted_zero(weights: Mapping[str, Any], kinds: Sequence[str]) -> bool:
    """Whether ``weights`` (1 for a kind not named) give every one of ``kinds`` weight 0: such a
    gate could never decide (:class:`LLMGate` and the config's checks refuse it alike)."""
    return all(float(weights.get(kind, 1.0)) == 0 for kind in kinds)


def repeated_kind(kinds: Sequence[str]) -> str:
    """Why an LLM gate cannot take ``kinds`` ("" when it can): a kind named twice. Its values,
    confidence and weight are the kind's, so until session 49 the later signal's outcome replaced
    the earlier's, whose LLM was asked and never heard (two ``llm_logprob`` over two LLMs: one)."""
    seen: set[str] = set()
    for kind in kinds:
        if kind in seen:
            return f"two signals of kind {kind!r}: an LLM gate takes one signal of each kind"
        seen.add(kind)
    return ""


def unknown_weight(weights: Mapping[str, Any], kinds: Sequence[str]) -> str:
    """Why an LLM gate cannot take ``weights`` ("" when it can): a weight named after none of its
    signal ``kinds``, which would be silently unused (a config's ``weights:`` was refused so, while
    :class:`LLMGate` took ``weights={"llm_slf": 3}`` without a word until session 52)."""
    for name in weights:
        if name not in kinds:
            return f"weights: {name!r} is none of the gate's signals ({', '.join(kinds)})"
    return ""


def default_fallback() -> ThresholdGate:
    """The LLM-free gate used when the LLM fails: retrieve when a content word is rare (Zipf <= 3)."""
    return ThresholdGate(RaritySignal(), "min_zipf", below=3.0)


class LLMGate:
    """Retrieve when the LLM is unsure; when every LLM signal fails, the ``fallback`` gate decides.

    ``p_retrieve = 1 - mean(confidence)`` over the signals that answered (``weights`` per
    kind optional); retrieve when it reaches ``threshold``. ``max_steps`` and repeated
    sub-queries stop as in the other gates (no LLM call then, so no probability either: NaN, as
    for a gate that failed; ``null`` in JSON; it read 1.0, a certainty nothing computed).
    """

    name = "llm"

    def __init__(
        self,
        signals: Sequence[LLMSignal],
        *,
        fallback: Any = None,
        threshold: float = 0.5,
        weights: dict[str, float] | None = None,
        depth: DepthPolicy | None = None,
        max_steps: int | None = None,
    ) -> None:
        if not signals:
            raise ValueError("an LLM gate needs at least one LLM signal")
        self.signals = list(signals)
        twice = repeated_kind([s.kind for s in self.signals])
        if twice:  # values, confidences and weights are by kind: one signal's answers were dropped
            raise ValueError(twice)
        self.fallback = fallback if fallback is not None else default_fallback()
        self.threshold = float(threshold)
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
        self.weights = {str(k): float(v) for k, v in (weights or {}).items()}
        unknown = unknown_weight(self.weights, [s.kind for s in self.signals])
        if unknown:
            raise ValueError(unknown)
        if any(not (math.isfinite(v) and v >= 0) for v in self.weights.values()):
            raise ValueError(f"weights must be numbers >= 0, got {weights}")
        if weighted_zero(self.weights, [s.kind for s in self.signals]):
            raise ValueError(ZERO_WEIGHTS)
        self.depth = depth or DepthPolicy()
        self.max_steps = checked_max_steps(max_steps)

    def gate_many(self, contexts: Sequence[QueryContext]) -> list[GateDecision]:
        contexts = list(contexts)
        out: list[GateDecision | None] = [None] * len(contexts)
        live = []
        for i, context in enumerate(contexts):
            stop = stop_reason(context, self.max_steps)
            if stop:
                out[i] = GateDecision("stop", math.nan, {}, reason=stop)
            else:
                live.append(i)
        asked = [contexts[i] for i in live]
        outcomes = {s.kind: s.outcomes(asked) for s in self.signals}
        failed: list[tuple[int, str]] = []
        for j, i in enumerate(live):
            context = contexts[i]
            values, confidences, errors = {}, {}, {}
            explained: dict[str, Any] = {}
            for signal in self.signals:
                outcome = outcomes[signal.kind][j]
                row = np.asarray(outcome.values, dtype=np.float64)
                for name, value in zip(signal.names, row):
                    values[f"{signal.kind}.{name}"] = round(float(value), 4)
                if outcome.error:
                    errors[signal.kind] = outcome.error
                    explained[signal.kind] = {"error": outcome.error}
                else:
                    confidences[signal.kind] = signal.confidence(row)
                    explained[signal.kind] = dict(outcome.detail)
            weight = {k: self.weights.get(k, 1.0) for k in confidences}
            total = sum(weight.values())
            if total == 0:  # none answered, or only signals weighted 0 (they inform, never decide)
                reasons = [f"{k}: {v}" for k, v in errors.items()]
                reasons += [f"{k}: answered but weighted 0" for k in confidences]
                failed.append((i, "; ".join(reasons)))
                continue
            # rounded: 1 - 0.8 is 0.19999999999999996, which missed a threshold of 0.2 it reaches
            # (4 of 5 samples agreeing answered without retrieving until session 54)
            p = round(1.0 - sum(confidences[k] * weight[k] for k in confidences) / total, 12)
            signals: dict[str, Any] = {
                "threshold": self.threshold,
                "values": values,
                "confidence": {k: round(v, 4) for k, v in confidences.items()},
                **explained,
            }
            if errors:
                signals["errors"] = errors
            p_text, t_text = shown_pair(p, self.threshold)  # digits that do not cross the threshold
            if p >= self.threshold:
                level, depth, steps = self.depth.of(context.text)
                action, reason = "retrieve", f"p_retrieve {p_text} >= threshold {t_text} ({level})"
            else:
                depth = steps = None
                action, reason = "answer", f"p_retrieve {p_text} < threshold {t_text}"
            reason += ": LLM confidence " + ", ".join(f"{k} {v:.2f}" for k, v in confidences.items())
            if errors:
                reason += f" ({', '.join(errors)} failed)"
            shown_p = shown_value(p, self.threshold, 6)
            out[i] = GateDecision(action, shown_p, signals, depth=depth, steps=steps, reason=reason)
        if failed:
            decisions = self.fallback.gate_many([contexts[i] for i, _ in failed])
            name = getattr(self.fallback, "name", type(self.fallback).__name__)
            for (i, why), decision in zip(failed, decisions):
                decision.signals = {**decision.signals, "fallback": f"{name}: {why}"}
                decision.reason = (
                    f"LLM signals failed ({why}): fell back to the {name} gate: {decision.reason}"
                )
                out[i] = decision
        return [d for d in out if d is not None]
