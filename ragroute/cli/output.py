"""Machine-readable command output: the one JSON line that ``--json`` prints last."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def emit_json(payload: dict[str, Any]) -> None:
    """Print ``payload`` as one line of strict JSON (the last line of ``--json`` output): NaN and
    infinite floats, which JSON has no literal for (a metadata value read as NaN, a speed-up over
    zero), are written as null. The characters other than ``\\n`` and ``\\r`` that end a line
    for ``str.splitlines`` and JSON leaves as they are (NEL ``U+0085``, the line and paragraph
    separators ``U+2028`` / ``U+2029``) are written as ``\\u`` escapes: until session 44 a query
    or document holding one split the last line in two for a reader taking
    ``output.splitlines()[-1]``."""
    text = json.dumps(json_safe(payload), ensure_ascii=False, default=_jsonable, allow_nan=False)
    sys.stdout.write(text.translate(_LINE_BREAKS) + "\n")


#: line ends ``str.splitlines`` knows that ``json.dumps(ensure_ascii=False)`` writes raw (it escapes
#: every character below U+0020); in JSON they occur only inside strings, where an escape is the same
_LINE_BREAKS = {code: f"\\u{code:04x}" for code in (0x85, 0x2028, 0x2029)}


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats (numpy's too) turned into ``None``, through dicts,
    lists and tuples; other values as they are."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_plot(benchmark: str, result: dict[str, Any], path: Path | None) -> None:
    """Draw ``benchmark``'s plot of ``result`` into ``path`` (nothing when ``path`` is None). Bench
    commands call it after printing their JSON, so a drawing that fails loses no result."""
    if path is None:
        return
    from ragroute.evaluation.plots import PLOTS

    PLOTS[benchmark](result, path)
    sys.stderr.write(f"wrote plot {path}\n")
