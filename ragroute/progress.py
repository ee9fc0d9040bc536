"""When progress bars show: on a terminal only, unless forced either way.

One rule for every bar ragroute draws (encoders, graph extraction, training loops, evaluation):

* a caller's explicit ``show_progress=True`` / ``False`` wins;
* else ``RAGROUTE_PROGRESS`` decides when set (``1``/``true``/``yes``/``on`` or
  ``0``/``false``/``no``/``off``); ``ragroute --progress`` / ``--no-progress`` set it for one command;
* else a bar shows only when stderr is a terminal, so CI logs and ``2> file`` get no bars.
"""

from __future__ import annotations

import os
import sys
import warnings

PROGRESS_ENV = "RAGROUTE_PROGRESS"
"""Environment variable forcing progress bars on (``1``) or off (``0``)."""

_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})


class ProgressSettingWarning(UserWarning):
    """:data:`PROGRESS_ENV` holds a value that is neither on nor off (a typo): it is not read."""


_warned: set[str] = set()  # the values said so, each once per process (every encode asks)


def forced_progress() -> bool | None:
    """``True`` / ``False`` when :data:`PROGRESS_ENV` forces bars on / off, ``None`` when unset. Any
    other value (``ture``) is said once, in a :class:`ProgressSettingWarning`, and read as unset
    (until session 50 it was read so without a word)."""
    raw = os.environ.get(PROGRESS_ENV, "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    if value and raw not in _warned:
        _warned.add(raw)
        warnings.warn(
            f"{PROGRESS_ENV}={raw!r} is none of 1/true/yes/on or 0/false/no/off: it is not read "
            "(progress bars only when stderr is a terminal)",
            ProgressSettingWarning,
            stacklevel=3,
        )
    return None


def say_progress(message: str, show: bool | None = None) -> None:
    """One status line on stderr for slow one-time work that draws no bar (an ONNX export, an int8
    quantisation), under the same rule as the bars: silent in CI logs and ``2> file``."""
    if progress_enabled(show):
        print(message, file=sys.stderr, flush=True)


def progress_enabled(show: bool | None = None) -> bool:
    """Whether to draw a progress bar: ``show`` if given, else :data:`PROGRESS_ENV`, else whether
    stderr is a terminal."""
    if show is not None:
        return bool(show)
    forced = forced_progress()
    if forced is not None:
        return forced
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
