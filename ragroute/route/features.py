"""Cheap, deterministic query features for trained routers: no model, no vocabulary, no state.

Two blocks, both pure functions of the text:

* :func:`cheap_features`: a small vector of named, human-readable numbers (see
  :data:`CHEAP_FEATURE_NAMES`): log-scaled length, the question word, digits and
  arithmetic, the share of capitalised words (named entities), quotes,
  multiple-choice markers, and keyword groups (video/time, visual, comparison,
  how-to, exam phrasing). Each is in [0, 1] or a small log count.
* :func:`hashed_ngrams`: a bag of word and character n-grams hashed into a fixed
  number of buckets with :func:`zlib.crc32` (stable across processes and
  platforms, unlike :func:`hash`), sublinear counts, signed buckets, L2-normalised
  rows. Nothing is fitted, so nothing but the bucket count needs storing.

:func:`question_stem` cuts answer options off a multiple-choice query ("...?
(A) 1636 (B) 1366" or "...\\nChoices:\\nA) ..."). Both blocks are computed on
the stem, except the multiple-choice features, which look at the full text: a
router trained on bare questions then sees the same kind of text when options
are present (answer options say little about where to look for the answer).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError
from ragroute.memo import scoped_memo
from ragroute.unicode_forms import QUOTES

# --------------------------------------------------------------------------- question stem

_OPTION_LINE = re.compile(
    r"^[ \t]*(?:\(?[A-Ha-h]\)|[A-H][.:](?=\s)|(?:choices|options|answer choices)\s*:)", re.MULTILINE | re.I
)
_INLINE_OPTIONS = re.compile(r"\s\(A\)\s.*\(B\)\s", re.S)


def question_stem(text: str) -> str:
    """``text`` without a trailing block of answer options (unchanged if it has none).

    Options start on a line that begins with ``A)``, ``(A)``, ``A.``/``A:`` or
    ``Choices:``/``Options:``, or inline at `` (A) ... (B) ``. If cutting would leave
    nothing, the text is returned whole.
    """
    match = _OPTION_LINE.search(text)
    cut = match.start() if match else -1
    inline = _INLINE_OPTIONS.search(text)
    if inline and (cut < 0 or inline.start() < cut):
        cut = inline.start()
    if cut <= 0:
        return text.strip()
    stem = text[:cut].strip()
    return stem or text.strip()


_OPTION_LETTER = re.compile(r"^[ \t]*\(?([A-Ha-h])[).:](?=\s)", re.MULTILINE)
_INLINE_OPTION_LETTER = re.compile(r"\s\(([A-H])\)\s")


def count_options(text: str) -> int:
    """How many answer options (``A)``, ``(B)``, ``C.`` at a line start, or inline ``(D)``) ``text`` lists."""
    letters = _OPTION_LETTER.findall(text) + _INLINE_OPTION_LETTER.findall(text)
    return len({letter.upper() for letter in letters})


# --------------------------------------------------------------------------- cheap features

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+(?:[.,]\d+)*")
_ALPHA_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")

QUESTION_WORDS: dict[str, tuple[str, ...]] = {
    "what": ("what", "whats", "what's"),
    "who": ("who", "whom", "whose", "who's"),
    "when": ("when",),
    "where": ("where",),
    "which": ("which",),
    "how": ("how",),
    "why": ("why",),
    "be": ("is", "are", "was", "were", "am"),
    "do": ("do", "does", "did"),
    "modal": ("can", "could", "should", "would", "will", "shall", "may", "might", "must"),
    "have": ("has", "have", "had"),
}
"""Question-word groups; the first of these words among a query's first three words sets ``qw_<group>``."""
_QW_LOOKUP = {word: group for group, words in QUESTION_WORDS.items() for word in words}

_KEYWORDS = {
    "time": (
        "scene, scenes, video, videos, clip, clips, shown, moment, minute, minutes, second, "
        "seconds, mark, timestamp, episode, footage, segment, vlog, vlogger, uploaded, youtube, "
        "channel, beginning, opening, watch, screen, frame"
    ),
    "visual": (
        "image, images, picture, pictures, photo, photos, photograph, color, colors, colour, "
        "colours, colored, look like, looks like, shape, visible, appearance, wear, wearing, "
        "pattern, painted, logo, roof, statue, made of, material"
    ),
    "comparison": (
        "both, compare, compared, difference, different, same, more than, less than, older, "
        "younger, larger, smaller, longer, first, earlier, either, neither"
    ),
    "howto": (
        "steps, step, how to, how do i, how can i, how should i, process, guide, tips, prepare, "
        "preparing, recipe, ingredients, next, after, technique, method"
    ),
    "exam": (
        "which of the following, following, true, false, statement, correct, best, most likely, "
        "according to, scenario, refers to, least, except, primarily"
    ),
    "math": (
        "calculate, compute, value, equation, solve, probability, sum, ratio, expression, "
        "function, integer, percent, rate"
    ),
    "person": ("i, me, my, mine, you, your, we, our, us"),
}
KEYWORD_GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(w.strip() for w in words.split(",")) for group, words in _KEYWORDS.items()
}
"""Keyword groups; ``kw_<group>`` is log(1 + number of matches) in the lower-cased question stem."""
_KEYWORD_PATTERNS = {
    group: re.compile(
        r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b"
    )
    for group, words in KEYWORD_GROUPS.items()
}

# A keyword matches only where a whole ``\w+`` token of the text equals its first word (the pattern
# is bounded by ``\b`` and keywords are lower-case words joined by single spaces), so a group none
# of whose first words is a token of the text counts 0 without running its pattern.
_KEYWORD_TOKEN = re.compile(r"\w+")
_KEYWORD_FIRST_WORDS = {
    group: frozenset(word.split(" ")[0] for word in words) for group, words in KEYWORD_GROUPS.items()
}


def _keyword_counts(lower: str) -> dict[str, int]:
    """Matches of each keyword group's pattern in ``lower`` (non-overlapping, as ``findall``)."""
    tokens = set(_KEYWORD_TOKEN.findall(lower))
    return {
        group: 0 if _KEYWORD_FIRST_WORDS[group].isdisjoint(tokens) else len(pattern.findall(lower))
        for group, pattern in _KEYWORD_PATTERNS.items()
    }


_MATH = re.compile(r"\d\s*[-+*/×÷^=<>]\s*\d|[=^√π∑∫×÷≤≥]|\\[a-z]+|\$")
_YEAR = re.compile(r"\b(?:1[0-9]\d\d|20\d\d)s?\b")
_TIMESTAMP = re.compile(r"\b\d{1,2}:\d{2}\b")
_QUOTE = re.compile(r"[\"“”«»]|(?:^|\s)'[^']+'")


def _log1p(count: float) -> float:
    return math.log1p(max(count, 0.0))


def _question_word(words: Sequence[str]) -> str | None:
    for word in words[:3]:
        group = _QW_LOOKUP.get(word.lower())
        if group:
            return group
    return None


def _capitalised_ratio(words: Sequence[str]) -> tuple[float, float]:
    """Share and log count of capitalised words after the first word (named-entity proxy)."""
    rest = [w for w in words[1:] if w.lower() not in ("i",)]
    capital = sum(1 for w in rest if w[0].isupper())
    return (capital / len(rest) if rest else 0.0), _log1p(capital)


_POSSESSIVE = re.compile(r"\w['’]s\b")
_OR = re.compile(r"\bor\b")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_QW_GROUPS = tuple(QUESTION_WORDS)
_KW_GROUPS = tuple(KEYWORD_GROUPS)


def _feature_values(text: str) -> tuple[float, ...]:
    """The cheap features of one query, in the order of :data:`CHEAP_FEATURE_NAMES` (a flat tuple:
    this runs on every routing and gating decision, so no per-call dict of names is built)."""
    stem = question_stem(text)
    if not stem.isascii():
        # typographic quotes as the ASCII ones (a phone types ’): until session 54 "What’s the..."
        # had no question word (qw_none), a stem ending in ” was not ends_open and ‘this’ no quote
        stem = stem.translate(QUOTES)
    lower = stem.lower()
    tokens = _WORD.findall(stem)
    words = _ALPHA_WORD.findall(stem)
    cap_ratio, cap_count = _capitalised_ratio(words)
    n_numbers = sum(1 for t in tokens if t[0].isdigit())
    end = stem.rstrip()[-1:] if stem.strip() else ""
    qword = _question_word(words)
    n_options = count_options(text)
    keywords = _keyword_counts(lower)
    return (
        _log1p(len(tokens)),
        _log1p(len(stem)),
        min(sum(len(w) for w in words) / len(words) / 10.0, 2.0) if words else 0.0,
        float(end == "?"),
        float(end == ":"),
        float(end.isalnum() or end in ("_", "'", '"', ")")),
        float(qword is None),
        *[float(qword == group) for group in _QW_GROUPS],
        float(n_numbers > 0),
        _log1p(n_numbers),
        float(_YEAR.search(stem) is not None),
        float(_TIMESTAMP.search(stem) is not None),
        float(_MATH.search(stem) is not None),
        cap_ratio,
        cap_count,
        float(bool(words[1:]) and cap_count == 0),
        float(_QUOTE.search(stem) is not None),
        float("(" in stem),
        float(_POSSESSIVE.search(stem) is not None),
        float("__" in stem),
        float(_OR.search(lower) is not None),
        float(_SENTENCE_END.search(stem.rstrip(".!? ")) is not None),
        float("\n" in text.strip()),
        float(n_options >= 2),
        _log1p(n_options),
        *[_log1p(keywords[group]) for group in _KW_GROUPS],
    )


CHEAP_FEATURE_NAMES: tuple[str, ...] = (
    "log_words",
    "log_chars",
    "mean_word_len",
    "ends_question",
    "ends_colon",
    "ends_open",
    "qw_none",
    *[f"qw_{group}" for group in _QW_GROUPS],
    "has_digit",
    "log_numbers",
    "has_year",
    "has_timestamp",
    "has_math",
    "cap_ratio",
    "log_capitalised",
    "all_lower",
    "has_quote",
    "has_paren",
    "has_possessive",
    "has_blank",
    "has_or",
    "multi_sentence",
    "has_newline",
    "has_choices",
    "log_options",
    *[f"kw_{group}" for group in _KW_GROUPS],
)
"""Names of the :func:`cheap_features` columns, in order.

Lengths (``log_words``, ``log_chars``, ``mean_word_len``) and everything except
``has_newline``, ``has_choices`` and ``log_options`` are computed on the
:func:`question_stem`; ``qw_<group>`` one-hot marks the first question word among
the first three words (``qw_none``: none); ``cap_ratio``/``log_capitalised``:
capitalised words after the first; ``all_lower``: none are; ``ends_open``: the
stem ends without punctuation (a cloze-style prompt); ``kw_<group>``: see
:data:`KEYWORD_GROUPS`.
"""


_MEMO: contextvars.ContextVar[dict[str, tuple[float, ...]] | None] = contextvars.ContextVar(
    "ragroute_cheap_feature_memo", default=None
)


def shared_cheap_features() -> contextlib.AbstractContextManager[None]:
    """Within the block, each text's cheap features are computed once (a gate's complexity signal
    and its text probe read the same query's features). Scoped to one decision on purpose: nothing
    is cached across calls, so repeated queries cost what a new one costs."""
    return scoped_memo(_MEMO)


def _feature_row(text: str) -> tuple[float, ...]:
    memo = _MEMO.get()
    if memo is None:
        return _feature_values(text)
    if text not in memo:
        memo[text] = _feature_values(text)
    return memo[text]


def cheap_features(texts: Sequence[str]) -> np.ndarray:
    """A float32 ``(len(texts), len(CHEAP_FEATURE_NAMES))`` matrix of the cheap features."""
    out = np.zeros((len(texts), len(CHEAP_FEATURE_NAMES)), dtype=np.float32)
    for row, text in enumerate(texts):
        out[row] = _feature_row(text)
    return out


def explain_features(text: str) -> dict[str, float]:
    """The non-zero cheap features of ``text`` by name (rounded), for decision signals."""
    return {name: round(float(v), 4) for name, v in zip(CHEAP_FEATURE_NAMES, _feature_values(text)) if v}


# --------------------------------------------------------------------------- hashed n-grams

_HASH_TOKEN = re.compile(r"\w+|[^\w\s]")


_WORD_CRC = zlib.crc32(b"w:")
_CHAR_CRC = zlib.crc32(b"c:")


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()
_LOW_BYTE = np.uint32(0xFF)
_BYTE = np.uint32(8)


@functools.lru_cache(maxsize=1 << 16)
def _hash(prefix_crc: int, token: str) -> int:
    """CRC-32 of ``prefix + token`` (the prefix's CRC is the running value), memoised."""
    return zlib.crc32(token.encode("utf-8"), prefix_crc)


def _crc32_windows(data: bytes, widths: range, prefix_crc: int) -> list[np.ndarray]:
    """``zlib.crc32(window, prefix_crc)`` of every window of each width in ``widths``, vectorised.

    A table-driven CRC-32 runs over all start positions at once, one numpy step per
    byte; the CRC of the first ``n`` bytes of a window is read off after step ``n``,
    so all widths cost one pass. (Hashing character n-grams one by one in Python
    dominated the trained router's routing time.)
    """
    size = len(data)
    starts = size - widths.start + 1
    if starts <= 0:
        return []
    padded = np.frombuffer(data + b"\0" * (widths.stop - widths.start), dtype=np.uint8).astype(np.uint32)
    state = np.full(starts, ~np.uint32(prefix_crc), dtype=np.uint32)
    index = np.empty(starts, dtype=np.uint32)
    out = []
    for j in range(widths.stop - 1):  # one table step per byte, in place (all operands uint32)
        np.bitwise_xor(state, padded[j : j + starts], out=index)
        np.bitwise_and(index, _LOW_BYTE, out=index)
        looked_up = _CRC_TABLE.take(index)
        np.right_shift(state, _BYTE, out=state)
        np.bitwise_xor(state, looked_up, out=state)
        width = j + 1
        if width in widths and size - width + 1 > 0:
            out.append(~state[: size - width + 1])  # a new array: later steps do not change it
    return out


def ngram_tokens(text: str, word_ngrams: tuple[int, int], char_ngrams: tuple[int, int] | None) -> list[str]:
    """The word (``w:``) and character (``c:``) n-grams of the lower-cased text that get hashed."""
    words = _HASH_TOKEN.findall(text.lower())
    grams = ["w:" + gram for gram in _word_grams(words, word_ngrams)]
    if char_ngrams is not None:
        padded = " " + " ".join(words) + " "
        clo, chi = char_ngrams
        for n in range(max(clo, 1), chi + 1):
            grams.extend("c:" + padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


def _word_grams(words: list[str], word_ngrams: tuple[int, int]) -> list[str]:
    lo, hi = word_ngrams
    return [" ".join(words[i : i + n]) for n in range(max(lo, 1), hi + 1) for i in range(len(words) - n + 1)]


def _ngram_hashes(text: str, word_ngrams: tuple[int, int], char_ngrams: tuple[int, int] | None) -> np.ndarray:
    """CRC-32 of every n-gram of :func:`ngram_tokens` (with its prefix), as int64."""
    words = _HASH_TOKEN.findall(text.lower())
    parts = [np.fromiter((_hash(_WORD_CRC, g) for g in _word_grams(words, word_ngrams)), dtype=np.int64)]
    if char_ngrams is not None:
        padded = " " + " ".join(words) + " "
        clo, chi = char_ngrams
        widths = range(max(clo, 1), chi + 1)
        if padded.isascii():  # one byte per character: windows of bytes are the character n-grams
            parts.extend(
                h.astype(np.int64) for h in _crc32_windows(padded.encode("ascii"), widths, _CHAR_CRC)
            )
        else:
            for n in widths:
                grams = (padded[i : i + n] for i in range(len(padded) - n + 1))
                parts.append(np.fromiter((_hash(_CHAR_CRC, g) for g in grams), dtype=np.int64))
    return np.concatenate(parts)


def hashed_ngrams(
    texts: Sequence[str],
    dim: int,
    *,
    word_ngrams: tuple[int, int] = (1, 2),
    char_ngrams: tuple[int, int] | None = (3, 5),
) -> np.ndarray:
    """Signed, sublinear (``log1p``), L2-normalised hashed n-gram counts: float32 ``(len(texts), dim)``.

    Each n-gram of :func:`ngram_tokens` goes to bucket ``crc32 % dim`` with sign
    ``+1`` if the CRC's top bit is 0, else ``-1``. Row by row this is :func:`hashed_entries`
    scattered into zeros.
    """
    if dim <= 0:
        raise RagrouteError(f"hashed n-gram dimension must be positive, got {dim}")
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        buckets, values = hashed_entries(text, dim, word_ngrams=word_ngrams, char_ngrams=char_ngrams)
        out[row, buckets] = values
    return out


_DENSE_COUNTS_UP_TO = 1 << 16
"""Up to this many buckets, a text's counts are summed into one dense array (cheaper than sorting
the n-grams' buckets); beyond it, into the distinct buckets found by sorting."""


def hashed_entries(
    text: str,
    dim: int,
    *,
    word_ngrams: tuple[int, int] = (1, 2),
    char_ngrams: tuple[int, int] | None = (3, 5),
) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero buckets (ascending, int64) of one text's :func:`hashed_ngrams` row and their
    float32 values: the sparse form a linear model reads (a query fills ~1% of the buckets)."""
    if dim <= 0:
        raise RagrouteError(f"hashed n-gram dimension must be positive, got {dim}")
    hashes = _ngram_hashes(text, word_ngrams, char_ngrams)
    signs = 1.0 - 2.0 * ((hashes >> 31) & 1)
    if dim <= _DENSE_COUNTS_UP_TO:
        dense = np.bincount(hashes % dim, weights=signs, minlength=dim)
        buckets = np.flatnonzero(dense)
        counts = dense[buckets]
    else:
        distinct, slot = np.unique(hashes % dim, return_inverse=True)
        summed = np.bincount(slot, weights=signs, minlength=len(distinct))
        keep = summed != 0  # opposite signs that cancel leave the bucket at zero
        buckets, counts = distinct[keep], summed[keep]
    values = np.sign(counts) * np.log1p(np.abs(counts))
    norm = float(np.sqrt(values @ values))
    if norm == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return buckets.astype(np.int64, copy=False), (values / norm).astype(np.float32)


# --------------------------------------------------------------------------- configuration


#: Hashed n-gram buckets of a router fitted with the defaults (``ragroute route fit``,
#: :meth:`~ragroute.route.trained.TrainedRouter.fit`): the setting every routing benchmark measures
#: (UniversalRAG labels 91.5% -> 93.3% accuracy with them; docs/benchmarks.md).
DEFAULT_HASHED_DIM = 4096


@dataclass(frozen=True)
class QueryFeatures:
    """Which model-free features a router uses, and how to compute them (all deterministic).

    ``cheap``: the :func:`cheap_features` block; ``hashed_dim``: buckets of the
    :func:`hashed_ngrams` block (0 = off) over word n-grams of ``word_ngrams``
    sizes and character n-grams of ``char_ngrams`` sizes (``None``: none).

    A bare ``QueryFeatures()`` has no hashed block; a router fitted without ``features`` (and
    ``ragroute route fit``) uses ``QueryFeatures(hashed_dim=DEFAULT_HASHED_DIM)``.
    """

    cheap: bool = True
    hashed_dim: int = 0
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] | None = (3, 5)

    @property
    def names(self) -> list[str]:
        """Column names of :meth:`transform`'s output."""
        names = list(CHEAP_FEATURE_NAMES) if self.cheap else []
        return names + [f"hash_{i}" for i in range(self.hashed_dim)]

    @property
    def width(self) -> int:
        return (len(CHEAP_FEATURE_NAMES) if self.cheap else 0) + self.hashed_dim

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 ``(len(texts), width)`` matrix: cheap features, then hashed n-grams."""
        blocks = [np.zeros((len(texts), 0), dtype=np.float32)]
        if self.cheap:
            blocks.append(cheap_features(texts))
        if self.hashed_dim:
            stems = [question_stem(t) for t in texts]
            blocks.append(
                hashed_ngrams(
                    stems, self.hashed_dim, word_ngrams=self.word_ngrams, char_ngrams=self.char_ngrams
                )
            )
        return np.hstack(blocks)

    def sparse_hashed(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's hashed n-gram block of :meth:`transform` in sparse form: the non-zero buckets
        (ascending) and their float32 values (see :func:`hashed_entries`)."""
        return hashed_entries(
            question_stem(text), self.hashed_dim, word_ngrams=self.word_ngrams, char_ngrams=self.char_ngrams
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["word_ngrams"] = list(self.word_ngrams)
        data["char_ngrams"] = None if self.char_ngrams is None else list(self.char_ngrams)
        data["cheap_names"] = list(CHEAP_FEATURE_NAMES) if self.cheap else []
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryFeatures:
        """Rebuild from :meth:`to_dict`; refuses cheap feature names other than this version's."""
        names = data.get("cheap_names")
        if data.get("cheap", True) and names is not None and list(names) != list(CHEAP_FEATURE_NAMES):
            raise RagrouteError(
                "was fitted on cheap query features this version of ragroute does not compute: "
                "refit it with `ragroute route fit`"
            )
        char = data.get("char_ngrams", (3, 5))
        return cls(
            cheap=bool(data.get("cheap", True)),
            hashed_dim=int(data.get("hashed_dim", 0)),
            word_ngrams=_pair(data.get("word_ngrams", (1, 2))),
            char_ngrams=None if char is None else _pair(char),
        )


def _pair(value: Any) -> tuple[int, int]:
    lo, hi = (int(v) for v in value)
    return lo, hi
