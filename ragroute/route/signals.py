"""Cheap per-query signals that routing rules are built from.

A signal looks at a query and says whether it *fires*, with the number(s) behind
it. Each is declared by name under ``signals:`` in a policy file::

    signals:
      mentions_printer: {type: keywords, any: [printer, toner, "paper jam"]}
      has_ticket_id:    {type: regex, pattern: "INC-\\\\d{6}", flags: i}
      short:            {type: length, max_words: 4}
      english:          {type: language, is: [en]}
      it_like:          {type: example_bank, examples: ["my laptop won't boot"], threshold: 0.5}
      needs_docs:       {type: bank_margin, positive: [...], negative: [...], margin: 0.0, top_n: 3}

``keywords``, ``regex``, ``length`` and ``language`` need nothing but the text.
``example_bank`` and ``bank_margin`` compare the query embedding with banks of
example queries: a :class:`BankStore` embeds all banks of a policy once, on first
use, and a :class:`SignalContext` embeds the query at most once, shared by every
bank signal (or takes a precomputed vector).
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import numpy as np

from ragroute.errors import number_text_hint, unknown_keys_message
from ragroute.registry import SIGNALS
from ragroute.route.language import LANGUAGES, guess_language
from ragroute.route.policy import PolicyError, item_line, key_line, value_line
from ragroute.unicode_forms import INVISIBLE, QUOTES

COMMON_KEYS = frozenset({"type", "description"})


# --------------------------------------------------------------------------- results and context


@dataclass
class SignalResult:
    """What one signal said about one query: whether it fired, its value, and details.

    ``description`` is the signal's ``description:`` (in :meth:`to_dict`, so in traces, when set).
    """

    name: str
    kind: str
    fired: bool
    value: Any
    detail: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        described = {"description": self.description} if self.description else {}
        return {"type": self.kind, **described, "fired": self.fired, "value": self.value, **self.detail}


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def encode_texts(encoder: Any, texts: Sequence[str]) -> np.ndarray:
    """Embed ``texts`` with ``encoder.encode_queries`` as float32 L2-normalised rows."""
    vectors = np.asarray(encoder.encode_queries(list(texts)), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise PolicyError(
            f"encoder returned shape {vectors.shape} for {len(texts)} text(s); expected one row per text"
        )
    return _normalise_rows(vectors)


class BankStore:
    """The embeddings of every bank text of a policy, computed once (lazily) per encoder.

    All bank texts are embedded together in one ``encode_queries`` call, the first
    time any bank signal is evaluated; a different encoder starts over. Threads evaluating one
    policy at once (a server's first requests) share that one call: until session 42 each thread
    that found the store empty reset it and embedded every bank text again.
    """

    def __init__(self, signals: Iterable[Signal]) -> None:
        self._texts: list[str] = []
        self._index: dict[str, int] = {}
        self._signal_texts: dict[str, list[str]] = {}
        for signal in signals:
            texts = signal.bank_texts()
            if not texts:
                continue
            self._signal_texts[signal.name] = texts
            for text in texts:
                if text not in self._index:
                    self._index[text] = len(self._texts)
                    self._texts.append(text)
        self._matrix: np.ndarray | None = None
        self._encoder: Any = None
        self._rows: dict[str, np.ndarray] = {}
        self.encode_calls = 0
        self._lock = threading.Lock()

    @property
    def empty(self) -> bool:
        return not self._texts

    def reset(self) -> None:
        """Forget the embeddings (e.g. after the encoder changed)."""
        with self._lock:
            self._matrix, self._encoder, self._rows = None, None, {}

    def vectors(self, encoder: Any, signal_name: str) -> np.ndarray:
        """The embedded bank texts of ``signal_name``, in the order of ``bank_texts()``."""
        with self._lock:
            if self._matrix is None or self._encoder is not encoder:
                self._matrix, self._encoder, self._rows = None, None, {}
                self._matrix = encode_texts(encoder, self._texts)
                self._encoder = encoder
                self.encode_calls += 1
            rows = self._rows.get(signal_name)
            if rows is None:
                rows = self._matrix[[self._index[t] for t in self._signal_texts[signal_name]]]
                self._rows[signal_name] = rows
            return rows


class SignalContext:
    """One query as signals see it: its text, and its embedding computed at most once."""

    def __init__(
        self,
        text: str,
        *,
        encoder: Any = None,
        query_vector: Any = None,
        banks: BankStore | None = None,
        source: str = "",
    ) -> None:
        self.text = text
        self.encoder = encoder
        self.banks = banks
        self.source = source
        self._vector: np.ndarray | None = None
        self.vector_origin = "unused"
        if query_vector is not None:
            self._vector = self._as_vector(query_vector)
            self.vector_origin = "given"

    @staticmethod
    def _as_vector(vector: Any) -> np.ndarray:
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 1:
            raise PolicyError(f"query vector must be one row, got shape {array.shape}")
        return _normalise_rows(array)

    def _need_encoder(self, signal: Signal) -> Any:
        if self.encoder is None:
            raise PolicyError(
                f"signal {signal.name!r} ({signal.kind}) needs an encoder; give the policy one (encoder=...)",
                source=self.source,
            )
        return self.encoder

    def query_vector(self, signal: Signal) -> np.ndarray:
        """The query embedding; the encoder runs on the first call only."""
        if self._vector is None:
            encoder = self._need_encoder(signal)
            self._vector = encode_texts(encoder, [self.text])[0]
            self.vector_origin = "computed"
        return self._vector

    def bank_vectors(self, signal: Signal) -> np.ndarray:
        """The embedded bank texts of ``signal`` (computed once per policy and encoder)."""
        encoder = self._need_encoder(signal)
        if self.banks is None:
            self.banks = BankStore([signal])
        return self.banks.vectors(encoder, signal.name)

    def similarities(self, signal: Signal) -> np.ndarray:
        """Cosine similarity of the query to each bank text of ``signal``."""
        bank = self.bank_vectors(signal)
        query = self.query_vector(signal)
        if query.shape[0] != bank.shape[1]:
            raise PolicyError(
                f"query vector has width {query.shape[0]} but the bank of signal {signal.name!r} "
                f"has width {bank.shape[1]}",
                source=self.source,
            )
        return bank @ query


# --------------------------------------------------------------------------- spec checking


def _fail(source: str, line: int | None, problem: str) -> NoReturn:
    raise PolicyError(problem, source=source, line=line)


def yaml_boolean_hint(value: Any) -> str:
    """For a value YAML 1.1 read as a boolean where text was meant (`NO`, `on`, `yes` unquoted): what
    happened and what to write (``""`` for any other value), to end a one-line error."""
    if not isinstance(value, bool):
        return ""
    return (
        ": YAML reads unquoted yes, no, on, off, true and false (any case) as booleans: quote it, "
        f"{'yes' if value else 'no'!r}"
    )


def _string_list(
    spec: Mapping[str, Any], key: str, what: str, source: str, *, allow_single: bool = False
) -> list[str]:
    """A non-empty list of non-empty strings under ``key`` (one string too if ``allow_single``)."""
    value = spec[key]
    line = value_line(spec, key)
    if allow_single and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        _fail(source, line, f"{what}: '{key}' must be a non-empty list of strings")
    out = []
    for index, item in enumerate(value):
        if isinstance(item, bool):  # `any: [NO, oslo]`: YAML 1.1 read NO as false
            _fail(
                source,
                item_line(value, index, line),
                f"{what}: '{key}' item {item!r} is not a string{yaml_boolean_hint(item)}",
            )
        if not isinstance(item, str) or not item.strip():
            _fail(source, item_line(value, index, line), f"{what}: '{key}' item {item!r} is not a string")
        out.append(item.strip())
    return out


def _number(spec: Mapping[str, Any], key: str, default: float, what: str, source: str) -> float:
    if key not in spec:
        return default
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        # .nan was taken: a threshold no similarity passes, the signal never fired (session 37)
        _fail(
            source,
            value_line(spec, key),
            f"{what}: '{key}' must be a finite number, got {value!r}{number_text_hint(value)}",
        )
    return float(value)


def _count(spec: Mapping[str, Any], key: str, what: str, source: str, *, minimum: int = 0) -> int | None:
    if key not in spec:
        return None
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(
            source, value_line(spec, key), f"{what}: '{key}' must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _require(spec: Mapping[str, Any], keys: Iterable[str], what: str, source: str, line: int | None) -> None:
    for key in keys:
        if key not in spec:
            _fail(source, line, f"{what} needs '{key}'")


# --------------------------------------------------------------------------- signal types


@dataclass(kw_only=True)
class Signal:
    """Base of all signal types: a name, the line that declared it, and ``evaluate``."""

    kind: ClassVar[str] = ""
    keys: ClassVar[frozenset[str]] = frozenset()
    required: ClassVar[tuple[str, ...]] = ()
    uses_encoder: ClassVar[bool] = False

    name: str
    line: int | None = None
    description: str = ""

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], source: str, line: int | None) -> Signal:
        raise NotImplementedError

    def evaluate(self, ctx: SignalContext) -> SignalResult:
        raise NotImplementedError

    def bank_texts(self) -> list[str]:
        """Texts to embed once per policy (only bank signals have any)."""
        return []

    def _result(self, fired: bool, value: Any, **detail: Any) -> SignalResult:
        return SignalResult(
            name=self.name,
            kind=self.kind,
            fired=bool(fired),
            value=value,
            detail=detail,
            description=self.description,
        )


#: combining marks: one left after NFC (no composed letter exists) still belongs to the word before it
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"


def normalise_text(text: str) -> str:
    """``text`` as keyword and length signals read it: NFC (an accent typed as a combining mark is
    the accented letter), curly and other typographic quotes as ``'`` and ``"``, invisible format
    characters (zero-width space, soft hyphen, direction marks) removed. ASCII is unchanged."""
    if text.isascii():
        return text
    return INVISIBLE.sub("", unicodedata.normalize("NFC", text).translate(QUOTES))


def keyword_text(text: str) -> str:
    """``text`` as keyword signals compare it: :func:`normalise_text`, then in its NFKC form,
    case-folded (ICU's ``nfkc_cf``, as BM25 reads words): full-width ``ＰＤＦ`` is ``pdf``, the
    ligature ``ﬁ`` is ``fi``, ``Straße`` is ``strasse`` and a lowercased ``İ`` is ``i``. Until
    session 53 a keyword matched only what NFC and the regex's own case rules equate, so ``pdf``
    did not fire on ``ＰＤＦ`` nor ``STRASSE`` on ``Straße``. ASCII is unchanged."""
    text = normalise_text(text)
    if text.isascii():
        return text
    folded = unicodedata.normalize("NFKC", text).casefold().replace("i\u0307", "i")
    return unicodedata.normalize("NFKC", folded)  # casefold may leave a letter and its mark apart


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Whole-word, any-case pattern of ``phrase`` (:func:`keyword_text`; words separated by any
    whitespace); a word is not matched inside a longer one, nor before a combining mark. Chinese
    and Japanese are written without spaces between words: a phrase starting (or ending) in that
    script needs no boundary on that side, and a character of it next to a phrase is no part of
    the phrase's word (打印机 is found in 我的打印机坏了, VPN in 公司的VPN连接; neither matched until
    session 40)."""
    words = keyword_text(phrase).split()
    body = r"\s+".join(re.escape(word) for word in words)
    # a letter or digit of a spaced script (or a combining mark) next to the phrase joins it to a
    # longer word; a Chinese or Japanese character next to it does not (no spaces there)
    joined = rf"(?:[^\W{_UNSPACED_CHARS}]|[{_MARKS}])"
    before = "" if words and _UNSPACED.match(words[0][0]) else f"(?<!{joined})"
    after = "" if words and _UNSPACED.match(words[-1][-1]) else f"(?!{joined})"
    return re.compile(rf"{before}{body}{after}", re.IGNORECASE)


@dataclass(kw_only=True)
class KeywordsSignal(Signal):
    """Fires when any word of ``any`` and every word of ``all`` occur (whole words, any case).

    Query and words are compared as :func:`keyword_text` writes them: "café" typed with a
    combining accent is "café", "won’t" (a curly apostrophe) is "won't", full-width "ＰＤＦ" is
    "pdf"."""

    kind: ClassVar[str] = "keywords"
    keys: ClassVar[frozenset[str]] = frozenset({"any", "all"})

    any_of: list[str] = field(default_factory=list)
    all_of: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._patterns = {word: _phrase_pattern(word) for word in [*self.any_of, *self.all_of]}

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], source: str, line: int | None) -> Signal:
        what = f"signal {name!r}"
        if "any" not in spec and "all" not in spec:
            _fail(source, line, f"{what} (keywords) needs 'any' or 'all'")
        any_of = _string_list(spec, "any", what, source, allow_single=True) if "any" in spec else []
        all_of = _string_list(spec, "all", what, source, allow_single=True) if "all" in spec else []
        for key, words in (("any", any_of), ("all", all_of)):
            for index, word in enumerate(words):
                if not normalise_text(word).split():  # its pattern would be empty: found in every query
                    line_at = item_line(spec[key], index, value_line(spec, key))
                    _fail(source, line_at, f"{what}: '{key}' item {word!r} has no visible character")
        return cls(name=name, line=line, any_of=any_of, all_of=all_of)

    def _matches(self, words: list[str], text: str) -> list[str]:
        return [word for word in words if self._patterns[word].search(text)]

    def evaluate(self, ctx: SignalContext) -> SignalResult:
        text = keyword_text(ctx.text)
        matched_any = self._matches(self.any_of, text)
        matched_all = self._matches(self.all_of, text)
        fired = (not self.any_of or bool(matched_any)) and len(matched_all) == len(self.all_of)
        matched = matched_any + [word for word in matched_all if word not in matched_any]
        if not self.all_of:
            return self._result(fired, matched)
        return self._result(fired, matched, missing=[word for word in self.all_of if word not in matched_all])


REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@dataclass(kw_only=True)
class RegexSignal(Signal):
    """Fires when ``pattern`` matches anywhere in the query; the value is the matched text."""

    kind: ClassVar[str] = "regex"
    keys: ClassVar[frozenset[str]] = frozenset({"pattern", "flags"})
    required: ClassVar[tuple[str, ...]] = ("pattern",)

    pattern: re.Pattern[str]

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], source: str, line: int | None) -> Signal:
        what = f"signal {name!r}"
        flags = 0
        if "flags" in spec:
            letters = spec["flags"]
            if not isinstance(letters, str) or not letters or set(letters) - set(REGEX_FLAGS):
                _fail(source, value_line(spec, "flags"), f"{what}: 'flags' must be letters from 'imsx'")
            for letter in letters:
                flags |= REGEX_FLAGS[letter]
        text = spec["pattern"]
        if not isinstance(text, str) or not text:
            _fail(source, value_line(spec, "pattern"), f"{what}: 'pattern' must be a non-empty string")
        try:
            pattern = re.compile(text, flags)
        except re.error as exc:
            _fail(source, value_line(spec, "pattern"), f"{what}: invalid regex {text!r}: {exc}")
        return cls(name=name, line=line, pattern=pattern)

    def evaluate(self, ctx: SignalContext) -> SignalResult:
        # NFC, as keywords read it: 'café' typed as e + a combining accent did not match 'café'
        match = self.pattern.search(
            ctx.text if ctx.text.isascii() else unicodedata.normalize("NFC", ctx.text)
        )
        return self._result(match is not None, match.group(0) if match else None)


#: scripts written without spaces between words: each Han ideograph and each kana is one word (the
#: katakana middle dot U+30FB is punctuation, as "，" is: until session 54 "コーヒー・ショップ" was 9 words)
_UNSPACED_CHARS = (
    "\u3040-\u30fa\u30fc-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uff66-\uff9f\U00020000-\U0003134f"
)
_UNSPACED = re.compile(f"[{_UNSPACED_CHARS}]")
_WORDLIKE = re.compile(r"\w")


def count_words(text: str) -> int:
    """Words in ``text``: whitespace-separated tokens, except that in a token holding Chinese or
    Japanese script (written without spaces) each Han ideograph and each kana counts as one word,
    and each run of other characters between them as one more if it holds a letter or digit
    ("VPN", not "，"). Hangul is written with spaces between words: its tokens count as other
    text does. Text without such script counts exactly as ``len(text.split())``."""
    count = 0
    for token in text.split():
        if not _UNSPACED.search(token):
            count += 1
            continue
        for part in _UNSPACED.split(token):
            count += 1 if _WORDLIKE.search(part) else 0
        count += len(_UNSPACED.findall(token))
    return count


@dataclass(kw_only=True)
class LengthSignal(Signal):
    """Fires when the word count (:func:`count_words`) and character count (of the text as
    :func:`normalise_text` writes it: a combining accent or a zero-width space is not a character
    of its own) are within bounds."""

    kind: ClassVar[str] = "length"
    keys: ClassVar[frozenset[str]] = frozenset({"min_words", "max_words", "min_chars", "max_chars"})

    min_words: int | None = None
    max_words: int | None = None
    min_chars: int | None = None
    max_chars: int | None = None

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], source: str, line: int | None) -> Signal:
        what = f"signal {name!r}"
        bounds = {key: _count(spec, key, what, source) for key in sorted(cls.keys)}
        if all(value is None for value in bounds.values()):
            _fail(source, line, f"{what} (length) needs at least one of {', '.join(sorted(cls.keys))}")
        for unit in ("words", "chars"):
            low, high = bounds[f"min_{unit}"], bounds[f"max_{unit}"]
            if low is not None and high is not None and low > high:
                _fail(
                    source, value_line(spec, f"max_{unit}"), f"{what}: min_{unit} {low} > max_{unit} {high}"
                )
        return cls(
            name=name,
            line=line,
            min_words=bounds["min_words"],
            max_words=bounds["max_words"],
            min_chars=bounds["min_chars"],
            max_chars=bounds["max_chars"],
        )

    @staticmethod
    def _within(value: int, low: int | None, high: int | None) -> bool:
        return (low is None or value >= low) and (high is None or value <= high)

    def evaluate(self, ctx: SignalContext) -> SignalResult:
        text = normalise_text(ctx.text).strip()  # a space before a trailing zero-width one is no char
        words, chars = count_words(text), len(text)
        fired = self._within(words, self.min_words, self.max_words) and self._within(
            chars, self.min_chars, self.max_chars
        )
        return self._result(fired, words, chars=chars)


# --------------------------------------------------------------------------- language signal


@dataclass(kw_only=True)
class LanguageSignal(Signal):
    """Fires when :func:`guess_language` guesses one of the languages in ``is``."""

    kind: ClassVar[str] = "language"
    keys: ClassVar[frozenset[str]] = frozenset({"is"})
    required: ClassVar[tuple[str, ...]] = ("is",)

    languages: list[str]

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], source: str, line: int | None) -> Signal:
        what = f"signal {name!r}"
        languages = [code.lower() for code in _string_list(spec, "is", what, source, allow_single=True)]
        unknown = [code for code in languages if code not in LANGUAGES]
        if unknown:
            _fail(
                source,
                value_line(spec, "is"),
                f"{what}: unknown language {unknown[0]!r}; known: {', '.join(sorted(LANGUAGES))}",
            )
        return cls(name=name, line=line, languages=languages)

    def evaluate(self, ctx: SignalContext) -> SignalResult:
        code, scores = guess_language(ctx.text)
        return self._result(code in self.languages, code, scores=scores)


# --------------------------------------------------------------------------- embedding banks


#: characters of a bank's nearest example kept in the trace (the knn router and the gate's knn_vote
#: keep as many): an example may be a whole passage, which every query's trace would otherwise repeat
NEAREST_CHARS = 80


def _top_mean(similarities: np.ndarray, top_n: int) -> float:
    best = np.sort(similarities)[::-1][:top_n]
    return float(best.mean())


@dataclass(kw_only=True)
class ExampleBankSignal(Signal):
    """Fires when the query's best cosine similarity to ``examples`` is >= ``threshold``."""

    kind: ClassVar[str] = "example_bank"
    keys: ClassVar[frozenset[str]] = frozenset({"examples", "threshold"})
    required: ClassVar[tuple[str, ...]] = ("examples",)
    uses_encoder: ClassVar[bool] = True

    examples: list[str]
    threshold: float = 0.5

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], source: str, line: int | None) -> Signal:
        what = f"signal {name!r}"
        examples = _string_list(spec, "examples", what, source)
        threshold = _number(spec, "threshold", 0.5, what, source)
        return cls(name=name, line=line, examples=examples, threshold=threshold)

    def bank_texts(self) -> list[str]:
        return list(self.examples)

    def evaluate(self, ctx: SignalContext) -> SignalResult:
        similarities = ctx.similarities(self)
        best = int(np.argmax(similarities))
        value = float(similarities[best])
        return self._result(
            value >= self.threshold,
            value,
            nearest=self.examples[best][:NEAREST_CHARS],
            threshold=self.threshold,
        )


@dataclass(kw_only=True)
class BankMarginSignal(Signal):
    """Fires when mean top-n similarity to ``positive`` minus that to ``negative`` is > ``margin``."""

    kind: ClassVar[str] = "bank_margin"
    keys: ClassVar[frozenset[str]] = frozenset({"positive", "negative", "margin", "top_n"})
    required: ClassVar[tuple[str, ...]] = ("positive", "negative")
    uses_encoder: ClassVar[bool] = True

    positive: list[str]
    negative: list[str]
    margin: float = 0.0
    top_n: int = 3

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], source: str, line: int | None) -> Signal:
        what = f"signal {name!r}"
        return cls(
            name=name,
            line=line,
            positive=_string_list(spec, "positive", what, source),
            negative=_string_list(spec, "negative", what, source),
            margin=_number(spec, "margin", 0.0, what, source),
            top_n=_count(spec, "top_n", what, source, minimum=1) or 3,
        )

    def bank_texts(self) -> list[str]:
        return [*self.positive, *self.negative]

    def evaluate(self, ctx: SignalContext) -> SignalResult:
        similarities = ctx.similarities(self)
        pos, neg = similarities[: len(self.positive)], similarities[len(self.positive) :]
        pos_score, neg_score = _top_mean(pos, self.top_n), _top_mean(neg, self.top_n)
        value = pos_score - neg_score
        return self._result(
            value > self.margin,
            value,
            positive=pos_score,
            negative=neg_score,
            nearest_positive=self.positive[int(np.argmax(pos))][:NEAREST_CHARS],
            nearest_negative=self.negative[int(np.argmax(neg))][:NEAREST_CHARS],
            margin=self.margin,
        )


def parse_signal(name: Any, spec: Any, source: str, line: int | None) -> Signal:
    """Build one signal from its YAML mapping; ``line`` is the line of its name."""
    if not isinstance(name, str) or not name.strip():
        _fail(source, line, f"signal names must be non-empty strings, got {name!r}{yaml_boolean_hint(name)}")
    if name != name.strip():  # a rule's reference is read trimmed: it named an "unknown signal"
        _fail(source, line, f"signal name {name!r} has spaces around it: write it as {name.strip()!r}")
    what = f"signal {name!r}"
    if not isinstance(spec, Mapping):
        _fail(source, line, f"{what} must be a mapping with a 'type'")
    if "type" not in spec:
        _fail(source, line, f"{what} needs 'type' (one of {', '.join(SIGNALS.names())})")
    kind = spec["type"]
    cls = SIGNALS.get(kind) if isinstance(kind, str) and kind in SIGNALS else None
    if cls is None:
        _fail(
            source,
            value_line(spec, "type"),
            f"{what} has unknown type {kind!r}; known: {', '.join(SIGNALS.names())}",
        )
    known = COMMON_KEYS | cls.keys
    for key in spec:
        if key not in known:
            _fail(
                source,
                key_line(spec, key),
                f"{what} ({kind}): {unknown_keys_message([key], known)}",
            )
    _require(spec, cls.required, f"{what} ({kind})", source, line)
    description = spec.get("description", "")
    if not isinstance(description, str):
        _fail(source, value_line(spec, "description"), f"{what}: 'description' must be a string")
    signal = cls.from_spec(name, spec, source, line)
    signal.description = description.strip()
    return signal
