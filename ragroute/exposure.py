"""Per-caller exposure accounting: how much of each corpus a caller has been shown, with a budget.

Extraction attacks on RAG ("Silent Leaks": benign-looking queries, each mutated from what the
last ones returned) enumerate a knowledge base a few documents at a time; no single query looks
wrong. What they cannot hide is how many *distinct* documents they get to see. An
:class:`ExposureLedger` counts, per caller and per source, the distinct documents returned within
a sliding time window, and compares each count with the source's budget:
``max(min_documents, max_fraction x source size)`` (:class:`ExposureBudget`).

* When a caller first crosses ``alert_at`` x budget on a source, the ledger calls its alert hook
  (and, with ``warn=True``, issues an :class:`ExposureWarning`) once per window.
* With ``hard_stop=True``, a caller at its budget on a source is shown nothing *new* from it:
  hits it has already seen in the window are still returned, new ones are withheld, so a normal
  user who re-reads is not cut off while an enumerator learns nothing more.

The pipeline calls :meth:`ExposureLedger.admit` on every query's final hits (after scopes and the
reranker) and records an ``exposure`` step in the trace: the caller's distinct documents per
source touched, the budget, and what was withheld. Callers are named by
:attr:`ragroute.context.QueryContext.caller` (``""``: one shared anonymous caller). The ledger is
in memory and thread-safe; one process serves one ledger (share it between pipelines to count a
caller across them).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragroute.errors import RagrouteError, check_keys
from ragroute.types import Hit, TraceStep

EXPOSURE_KEYS = frozenset(
    {"per", "max_fraction", "min_documents", "window_s", "alert_at", "hard_stop", "warn"}
)
#: the bucket every hit counts in when the budget is ``per: pipeline``
ALL_SOURCES = "*"


class ExposureWarning(UserWarning):
    """A caller crossed its exposure alert level on a source."""


@dataclass(frozen=True)
class ExposureBudget:
    """How much of each source one caller may see within ``window_s`` seconds.

    The budget of a source of ``n`` documents is ``max(min_documents, max_fraction * n)``
    distinct documents (a source of unknown size: ``min_documents``). ``per``: ``pipeline`` (one
    budget over all sources, of their total size) or ``source`` (each source has its budget).
    The defaults (``pipeline``, 2%, at least 200) were chosen with ``ragroute bench exposure
    --seed 0`` and reported on ``--seed 1`` (docs/exposure.md).
    """

    per: str = "pipeline"
    max_fraction: float = 0.02
    min_documents: int = 200
    window_s: float = 86_400.0
    alert_at: float = 1.0
    hard_stop: bool = False
    warn: bool = False

    def __post_init__(self) -> None:
        if self.per not in ("source", "pipeline"):
            raise RagrouteError(f"exposure: per must be 'source' or 'pipeline', not {self.per!r}")
        if not 0.0 < self.max_fraction <= 1.0:
            raise RagrouteError(f"exposure: max_fraction must be in (0, 1], not {self.max_fraction!r}")
        if self.min_documents < 1:
            raise RagrouteError(f"exposure: min_documents must be >= 1, not {self.min_documents!r}")
        if self.window_s <= 0:
            raise RagrouteError(f"exposure: window_s must be > 0, not {self.window_s!r}")
        if not 0.0 < self.alert_at <= 1.0:
            raise RagrouteError(f"exposure: alert_at must be in (0, 1], not {self.alert_at!r}")

    def limit(self, size: int | None) -> int:
        """The budget, in distinct documents, of a source holding ``size`` documents."""
        if not size:
            return self.min_documents
        return max(self.min_documents, int(self.max_fraction * size))

    @classmethod
    def from_settings(cls, settings: Any, where: str = "exposure") -> ExposureBudget:
        """A budget from an ``exposure:`` mapping of a routing config (unknown keys refused)."""
        if not isinstance(settings, Mapping):
            raise RagrouteError(f"{where}: 'exposure:' must be a mapping")
        check_keys(settings, EXPOSURE_KEYS, where, "exposure key")
        values: dict[str, Any] = {}
        for key, kind in (("max_fraction", float), ("window_s", float), ("alert_at", float)):
            if key in settings:
                values[key] = _number(settings[key], key, where, kind)
        if "min_documents" in settings:
            values["min_documents"] = _number(settings["min_documents"], "min_documents", where, int)
        if "per" in settings:
            values["per"] = str(settings["per"])
        for key in ("hard_stop", "warn"):
            if key in settings:
                if not isinstance(settings[key], bool):
                    raise RagrouteError(f"{where}: {key!r} must be true or false, not {settings[key]!r}")
                values[key] = settings[key]
        try:
            return cls(**values)
        except RagrouteError as exc:  # the range checks of __post_init__, said for this file
            raise RagrouteError(f"{where}: {str(exc).removeprefix('exposure: ')}") from None


def _number(value: Any, key: str, where: str, kind: type) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not isinstance(value, int))
    ):
        expected = "an integer" if kind is int else "a number"
        raise RagrouteError(f"{where}: {key!r} must be {expected}, not {type(value).__name__}")
    return kind(value)


@dataclass
class ExposureAlert:
    """What the alert hook receives."""

    caller: str
    source: str
    distinct: int
    budget: int
    window_s: float
    hard_stop: bool


@dataclass
class _Seen:
    """One caller's documents of one bucket: (source, doc id) -> last time shown, and when it alerted."""

    shown: dict[tuple[str, str], float] = field(default_factory=dict)
    alerted_at: float | None = None


class ExposureLedger:
    """Counts what each caller has seen; see the module docstring.

    ``sizes``: documents per source (the pipeline fills in its sources'); ``on_alert``: called
    with an :class:`ExposureAlert`; ``clock``: seconds (``time.monotonic`` by default; the
    benchmark replays streams on a simulated clock).
    """

    def __init__(
        self,
        budget: ExposureBudget | None = None,
        *,
        sizes: Mapping[str, int] | None = None,
        on_alert: Callable[[ExposureAlert], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget or ExposureBudget()
        self.sizes: dict[str, int] = dict(sizes or {})
        self.on_alert = on_alert
        self.clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._lock = threading.Lock()

    def distinct(self, caller: str, source: str) -> int:
        """Distinct documents of ``source`` shown to ``caller`` within the window, now."""
        with self._lock:
            seen = self._seen.get((caller, source))
            return 0 if seen is None else len(self._expire(seen, self.clock()))

    def tripped(self, caller: str, source: str) -> bool:
        """Whether ``caller`` has reached its budget on ``source``."""
        return self.distinct(caller, source) >= self.budget.limit(self.sizes.get(source))

    def admit(self, caller: str, hits: Sequence[Hit]) -> tuple[list[Hit], TraceStep]:
        """Account ``hits`` shown to ``caller``; returns what may be shown, and a trace step.

        With a hard stop, a hit that is new to the caller on a source at its budget is withheld.
        """
        now = self.clock()
        alerts: list[ExposureAlert] = []
        shown: list[Hit] = []
        detail: dict[str, Any] = {}
        withheld = 0
        with self._lock:
            for hit in hits:
                bucket = self.bucket(hit)
                seen = self._seen.setdefault((caller, bucket), _Seen())
                current = self._expire(seen, now)
                limit = self.budget.limit(self.sizes.get(bucket))
                doc = (hit.source, hit.doc_id)  # ids are unique within a source only
                if doc not in current and len(current) >= limit and self.budget.hard_stop:
                    withheld += 1
                    continue
                current[doc] = now
                shown.append(hit)
                if len(current) >= self.budget.alert_at * limit and seen.alerted_at is None:
                    seen.alerted_at = now
                    alerts.append(
                        ExposureAlert(
                            caller,
                            bucket,
                            len(current),
                            limit,
                            self.budget.window_s,
                            self.budget.hard_stop,
                        )
                    )
            for source in dict.fromkeys(self.bucket(h) for h in hits):
                seen = self._seen[(caller, source)]
                limit = self.budget.limit(self.sizes.get(source))
                detail[source] = {"distinct": len(seen.shown), "budget": limit}
        for alert in alerts:
            if self.budget.warn:
                warnings.warn(
                    f"caller {alert.caller or '(anonymous)'} has seen {alert.distinct} distinct documents of "
                    f"{alert.source} within {alert.window_s:g} s (budget {alert.budget})",
                    ExposureWarning,
                    stacklevel=3,
                )
            if self.on_alert is not None:
                self.on_alert(alert)
        step = {"caller": caller, "sources": detail, "withheld": withheld}
        if alerts:
            step["alerts"] = [a.source for a in alerts]
        return shown, TraceStep("exposure", step)

    def add_sizes(self, sizes: Mapping[str, int]) -> None:
        """Declare sources' sizes (a source already known keeps its size); the total, the size
        of the :data:`ALL_SOURCES` bucket, follows."""
        with self._lock:
            for name, size in sizes.items():
                self.sizes.setdefault(name, int(size))
            self.sizes[ALL_SOURCES] = sum(v for k, v in self.sizes.items() if k != ALL_SOURCES)

    def bucket(self, hit: Hit) -> str:
        """Where ``hit`` is counted: its source, or :data:`ALL_SOURCES` (``per: pipeline``)."""
        return hit.source if self.budget.per == "source" else ALL_SOURCES

    def reset(self, caller: str | None = None) -> None:
        """Forget one caller's exposure (or everyone's)."""
        with self._lock:
            for key in [k for k in self._seen if caller is None or k[0] == caller]:
                del self._seen[key]

    def _expire(self, seen: _Seen, now: float) -> dict[tuple[str, str], float]:
        """Drop what left the window; an alert re-arms when the caller falls below the alert level."""
        horizon = now - self.budget.window_s
        if seen.shown and min(seen.shown.values()) < horizon:
            seen.shown = {doc: t for doc, t in seen.shown.items() if t >= horizon}
        if seen.alerted_at is not None and seen.alerted_at < horizon:
            seen.alerted_at = None
        return seen.shown
