"""Numbers shown beside the threshold they were compared with: rounded, but never across it.

A probability of 0.99987 against a threshold of 0.9999, both printed to three digits, read 1.000
and 1.000 beside "abstain: yes"; rounded to four for JSON, 0.49996 read 0.5 beside a threshold of
0.5 and ``"abstain": true``. Every place that shows such a pair (skill abstention, retrieval
gates, their CLI lines and traces) takes its digits from here: as few as asked, and as many more
as it takes for the shown values to compare as the real ones do.

Counts shown with their noun take it in the singular or the plural as the count needs
(:func:`counted`: ``1 file``, ``2 files``), in the command line's output and in what the loaders
warn alike.

Text from a corpus, a query or a file name is shown through :func:`terminal_text`, its control
characters as visible escapes, so that it cannot drive the terminal.
"""

from __future__ import annotations

MOST_DIGITS = 10


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 document``, ``2 documents`` (``plural``: when not ``noun`` + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def compared_digits(
    value: float, threshold: float, digits: int, *, raw_threshold: bool = False
) -> int | None:
    """The fewest digits, at least ``digits`` (at most :data:`MOST_DIGITS`), at which ``value``
    rounded compares with ``threshold`` rounded alike (with ``raw_threshold``: with ``threshold``
    as it is, shown unrounded) as ``value`` does; None if no such number of digits."""
    below = value < threshold
    for n in range(digits, MOST_DIGITS + 1):
        shown = round(value, n)
        if (shown < (threshold if raw_threshold else round(threshold, n))) == below:
            return n
    return None


def shown_value(value: float, threshold: float | None, digits: int = 4) -> float:
    """``value`` rounded to ``digits``, or to more where fewer would cross ``threshold`` (shown as it
    is beside it); unrounded where no rounding keeps the order (a value equal to the threshold)."""
    if threshold is None:
        return round(value, digits)
    n = compared_digits(value, threshold, digits, raw_threshold=True)
    return value if n is None else round(value, n)


def shown_numbers(value: float, threshold: float, digits: int = 6) -> tuple[float, float]:
    """``value`` and ``threshold`` rounded to the same digits, ``digits`` or as many more as they
    need to compare as the real ones do (both unrounded where no rounding does)."""
    n = compared_digits(value, threshold, digits)
    return (value, threshold) if n is None else (round(value, n), round(threshold, n))


def shown_pair(value: float, threshold: float | None, digits: int = 3) -> tuple[str, str]:
    """``value`` and ``threshold`` as text with the same number of digits, ``digits`` or as many
    more as they need to read in the order they compare (``"n/a"`` for no threshold)."""
    if threshold is None:
        return f"{value:.{digits}f}", "n/a"
    n = compared_digits(value, threshold, digits)
    if n is None:
        return repr(value), repr(threshold)
    return f"{value:.{n}f}", f"{threshold:.{n}f}"


#: C0 control characters but the tab and line feed the text formats write themselves, DEL, and
#: the C1 control characters, each to its visible escape (``\\x1b``)
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\t\n"}


def terminal_text(text: object) -> str:
    """``text`` as it is safe to write to a terminal: each control character (C0 but tab and line
    feed, DEL, C1) as its visible escape (``\\x1b``, ``\\x07``, ``\\x00``); other text, CJK, emoji
    and right-to-left letters among it, unchanged. The command line's text output of titles,
    snippets, queries, answers, names and error messages goes through it: until session 52 a
    document's ESC reached the terminal raw (an ANSI sequence clearing the screen or setting its
    title) and its BEL rang the bell. ``--json`` needs none: JSON escapes them itself."""
    return str(text).translate(_CONTROLS)
