"""Reliability harnesses: kill points, corruption, concurrent readers, CLI fault injection and fuzzing.

* :mod:`~ragroute.reliability.kill` — real SIGKILLs of ``ragroute`` commands at swept points;
* :mod:`~ragroute.reliability.corruption` — truncate / flip / delete every artifact file, bit flips
  across every manifest and pointer;
* :mod:`~ragroute.reliability.race` — readers (in-process and ``ragroute query``) during rebuilds;
* :mod:`~ragroute.reliability.scope_probe` — queries that try to reach a forbidden corpus;
* :mod:`~ragroute.reliability.fuzz` — ``hypothesis`` over every loader and query strings;
* :mod:`~ragroute.reliability.faults` — the whole CLI under injected faults;
* :mod:`~ragroute.reliability.workload` — the tiny corpora, artifacts and probes they share.

Short versions run in ``tests/test_reliability_*.py``; ``ragroute bench reliability`` runs the long
ones (see docs/reliability.md).
"""
