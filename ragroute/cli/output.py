"""Machine-readable command output: the one JSON line that ``--json`` prints last."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit_json(payload: dict[str, Any]) -> None:
    """Print ``payload`` as one JSON line (the last line of ``--json`` output)."""
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_plot(benchmark: str, result: dict[str, Any], path: Path | None) -> None:
    """Draw ``benchmark``'s plot of ``result`` into ``path`` (nothing when ``path`` is None)."""
    if path is None:
        return
    from ragroute.evaluation.plots import PLOTS

    PLOTS[benchmark](result, path)
    sys.stderr.write(f"wrote plot {path}\n")
