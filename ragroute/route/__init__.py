"""Routing: decide per query whether to retrieve, and from which sources.

:class:`Policy` reads signals and prioritised rules from YAML (routing policy as
configuration); its :class:`PolicyResult` says ``route``, ``none`` or ``defer``
(to a router), with every signal value and fired rule in the trace.
"""

from ragroute.route.language import guess_language
from ragroute.route.policy import PolicyError
from ragroute.route.rules import Policy, PolicyResult
from ragroute.route.signals import Signal, SignalResult

__all__ = [
    "Policy",
    "PolicyError",
    "PolicyResult",
    "Signal",
    "SignalResult",
    "guess_language",
]
