"""Retrieval gates: decide per query (or per step's sub-query) whether to retrieve at all.

A gate is the pipeline's first stage (:class:`~ragroute.pipeline.stages.Gate`):
for each query it returns a :class:`~ragroute.pipeline.stages.GateDecision`:
``retrieve`` (with a depth: hits and steps), ``answer`` (from the model, no
retrieval) or ``stop`` (a step-wise caller's budget is spent, or the sub-query
repeats), with the calibrated probability that retrieval is needed and the
signal values behind it.

* :mod:`ragroute.gate.signals`: LLM-free signals (neighbour vote, example-bank
  margin, retrieval confidence, rarity, complexity, a text probe);
* :mod:`ragroute.gate.trained`: :class:`TrainedGate` (calibrated logistic
  regression over signals, operating points, artifact store) and
  :class:`ThresholdGate` (one signal value against a threshold);
* :mod:`ragroute.gate.factories`: the ``gate: {kind: ...}`` settings of
  :data:`ragroute.registry.GATES`;
* :mod:`ragroute.gate.llm_signals`: signals that ask an LLM (draft-answer token
  log-probabilities, agreement of sampled answers, a self-assessment) and
  :class:`~ragroute.gate.llm_signals.LLMGate`, which falls back to an LLM-free gate;
* :mod:`ragroute.gate.planners` and :mod:`ragroute.gate.controller`: the step-wise
  controller (plan a sub-question, gate, retrieve, repeat within a step budget).
"""

from ragroute.gate.signals import (
    ANSWER_LABELS,
    DEFAULT_SIGNALS,
    GATE_SIGNALS,
    Examples,
    GateSignal,
    make_signal,
    needs_retrieval,
)
from ragroute.gate.trained import (
    DepthPolicy,
    GateSignalMismatchError,
    ThresholdGate,
    TrainedGate,
)

__all__ = [
    "ANSWER_LABELS",
    "DEFAULT_SIGNALS",
    "GATE_SIGNALS",
    "DepthPolicy",
    "Examples",
    "GateSignal",
    "GateSignalMismatchError",
    "ThresholdGate",
    "TrainedGate",
    "make_signal",
    "needs_retrieval",
]
