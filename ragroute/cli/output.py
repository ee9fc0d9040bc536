"""Machine-readable command output: the one JSON line that ``--json`` prints last."""

from __future__ import annotations

import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def emit_json(payload: dict[str, Any]) -> None:
    """Print ``payload`` as one line of strict JSON (the last line of ``--json`` output): NaN and
    infinite floats, which JSON has no literal for (a metadata value read as NaN, a speed-up over
    zero), are written as null; values JSON lacks (see :func:`json_safe`) as JSON values. The
    characters other than ``\\n`` and ``\\r`` that end a line for ``str.splitlines`` and JSON
    leaves as they are (NEL ``U+0085``, the line and paragraph separators ``U+2028`` / ``U+2029``)
    are written as ``\\u`` escapes: until session 44 a query or document holding one split the last
    line in two for a reader taking ``output.splitlines()[-1]``. Text stdout's encoding cannot hold
    (a pipe on Windows is cp1252; a lone surrogate, which no encoding holds) is written as ``\\u``
    escapes, which JSON reads as the same text (a UnicodeEncodeError traceback until session 48).
    The line is flushed at once: a reader that stopped reading (``| head -1``) is then a broken
    pipe click ends quietly, not Python's ``Exception ignored ... BrokenPipeError`` at exit (status
    120), and a line click writes after it (its own stream on an ASCII stdout) cannot come first
    (until session 52)."""
    safe = json_safe(payload)
    text = json.dumps(safe, ensure_ascii=False, allow_nan=False).translate(_LINE_BREAKS)
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(safe, allow_nan=False)  # every character outside ASCII escaped
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def tolerant_stdout() -> None:
    """Let stdout write any text: a character its encoding lacks (a pipe or console in latin-1 or
    cp1252, ``PYTHONIOENCODING=latin-1``; a lone surrogate on any) is written as a backslash escape
    (``\\u6771``), as stderr writes it. Until session 52 a query, title or snippet holding one
    ended the command in a UnicodeEncodeError traceback after its work was done, the rest of its
    output lost (click writes an ASCII stdout as UTF-8 itself; other encodings as they are)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)  # a TextIOWrapper's; not every stream has it
    if getattr(sys.stdout, "errors", None) == "strict" and callable(reconfigure):
        reconfigure(errors="backslashreplace")


def report_text(payload: dict[str, Any]) -> str:
    """``payload`` as indented strict JSON (a training command's report, printed whole): NaN and
    infinite numbers as null and values JSON lacks converted, as :func:`emit_json` writes them
    (the reports of ``rerank train``, ``calibrate`` and ``average`` were ``json.dumps``, which writes
    a NaN as the ``NaN`` no JSON parser reads)."""
    return json.dumps(json_safe(payload), indent=2, ensure_ascii=False, allow_nan=False)


#: line ends ``str.splitlines`` knows that ``json.dumps(ensure_ascii=False)`` writes raw (it escapes
#: every character below U+0020); in JSON they occur only inside strings, where an escape is the same
_LINE_BREAKS = {code: f"\\u{code:04x}" for code in (0x85, 0x2028, 0x2029)}


def json_safe(value: Any) -> Any:
    """``value`` as JSON can write it, through dicts, lists, tuples and sets: NaN and infinite
    floats (numpy's too) as ``None``; numpy scalars and arrays (anything with ``tolist``) as
    Python numbers and lists; a set as a sorted list; a date or time in ISO 8601; a path, or any
    other object, as its text; a dict key that is no JSON key (a numpy integer, a tuple) as its
    text. The metadata and explanations of a factory source's hits (``kind: python``, LangChain,
    LlamaIndex) may hold any of them: until session 48 ``--json`` raised on them (a traceback
    instead of the line)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_json_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return _sorted([json_safe(v) for v in value])
    if isinstance(value, (np.generic, np.ndarray)) or callable(getattr(value, "tolist", None)):
        return json_safe(value.tolist())  # a torch tensor or pandas series too, as before
    if isinstance(value, (datetime.date, datetime.time)):  # a datetime is a date
        return value.isoformat()
    return str(value)


def _json_key(key: Any) -> Any:
    """``key`` as a JSON object key: text, a finite number, a boolean or None as they are (JSON
    writes them as text); a numpy scalar as the Python value; anything else as its text."""
    if isinstance(key, np.generic):
        key = key.item()
    if key is None or isinstance(key, (str, bool, int)) or (isinstance(key, float) and math.isfinite(key)):
        return key
    return str(key)


def _sorted(items: list[Any]) -> list[Any]:
    """``items`` in order (by their text where they do not compare: mixed types), so that a set is
    written the same way every run."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


def save_plot(benchmark: str, result: dict[str, Any], path: Path | None) -> None:
    """Draw ``benchmark``'s plot of ``result`` into ``path`` (nothing when ``path`` is None). Bench
    commands call it after printing their JSON, so a drawing that fails loses no result."""
    if path is None:
        return
    from ragroute.evaluation.plots import PLOTS

    PLOTS[benchmark](result, path)
    sys.stderr.write(f"wrote plot {path}\n")
