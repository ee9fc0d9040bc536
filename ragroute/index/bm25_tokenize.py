"""BM25 tokenisation: :class:`TokenizerConfig`, :func:`tokenize` and :func:`tokenize_many`.

Text becomes tokens as unicode letter/digit runs (of the NFC form: a letter typed as a base
letter plus a combining accent is one letter; each run in its NFKC form, case-folded, as ICU's
``nfkc_cf`` normaliser writes it: full-width ``ＰＤＦ`` is ``pdf``; runs of Chinese, Japanese or
Korean characters, which are written without spaces between words, as their overlapping character
pairs, as Lucene's ``CJKBigramFilter`` does), optionally lowercased, with
a stop set removed (:data:`STOPWORD_SETS`: Lucene's 33 English stopwords,
:data:`ENGLISH_STOPWORDS`, by default; or NLTK's English list of function words,
:data:`NLTK_ENGLISH_STOPWORDS`) and a per-thread PyStemmer English Snowball
stemmer applied.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ragroute.errors import RagrouteError, check_keys
from ragroute.unicode_forms import INVISIBLE

__all__ = [
    "ENGLISH_STOPWORDS",
    "NLTK_ENGLISH_STOPWORDS",
    "STOPWORD_SETS",
    "TokenizerConfig",
    "check_can_tokenize",
    "tokenize",
    "tokenize_many",
]

# fmt: off
#: Lucene's default English stop set (``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``), 33 words.
ENGLISH_STOPWORDS: frozenset[str] = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
    "to", "was", "will", "with",
))

#: NLTK's English stopword list (``nltk.corpus.stopwords.words("english")``, 179 entries): pronouns,
#: determiners, auxiliaries, prepositions, conjunctions and a few adverbs, i.e. function words,
#: no content verbs (unlike scikit-learn's or spaCy's lists, which drop "get", "show", "call", "move").
#: Its contractions are kept as the tokens they split into ("don't" -> "don", "t"; both listed): 153
#: distinct tokens.
#: Task-like queries ("I need you to ...") are full of them: with Lucene's 33 words, the "i" of
#: "I need" matched a tool about "World War I" (see docs/skills.md).
NLTK_ENGLISH_STOPWORDS: frozenset[str] = frozenset((
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours", "yourself",
    "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its", "itself",
    "they", "them", "their", "theirs", "themselves", "what", "which", "who", "whom", "this", "that",
    "these", "those", "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had",
    "having", "do", "does", "did", "doing", "a", "an", "the", "and", "but", "if", "or", "because", "as",
    "until", "while", "of", "at", "by", "for", "with", "about", "against", "between", "into", "through",
    "during", "before", "after", "above", "below", "to", "from", "up", "down", "in", "out", "on", "off",
    "over", "under", "again", "further", "then", "once", "here", "there", "when", "where", "why", "how",
    "all", "any", "both", "each", "few", "more", "most", "other", "some", "such", "no", "nor", "not",
    "only", "own", "same", "so", "than", "too", "very", "s", "t", "can", "will", "just", "don", "should",
    "now", "d", "ll", "m", "o", "re", "ve", "y", "ain", "aren", "couldn", "didn", "doesn", "hadn", "hasn",
    "haven", "isn", "ma", "mightn", "mustn", "needn", "shan", "shouldn", "wasn", "weren", "won", "wouldn",
))
# fmt: on

#: The stop sets a :class:`TokenizerConfig` can name (``stopword_set``).
STOPWORD_SETS: dict[str, frozenset[str]] = {"lucene": ENGLISH_STOPWORDS, "nltk": NLTK_ENGLISH_STOPWORDS}

# Letters and digits; "_" separates words (so snake_case table headers match their words).
_TOKEN_RE = re.compile(r"[^\W_]+")


def _mark_ranges() -> str:
    """The combining marks of the Basic Multilingual Plane (categories Mn, Mc, Me) as a regex class
    body of ranges: the vowel signs and viramas of Indic scripts, Thai tone marks, accents left
    after NFC (~10 ms, once: :func:`_token_marks_re`)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp)).startswith("M"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )


@functools.cache
def _token_marks_re() -> re.Pattern[str]:
    """A letter or digit, then letters, digits and combining marks: a mark no longer ends a word.
    Compiled at the first non-ASCII text, not at import (ASCII text never needs it)."""
    return re.compile(rf"[^\W_](?:[^\W_]|[{_mark_ranges()}])*")


# ASCII fast path: on ASCII text a token character is exactly [A-Za-z0-9], so mapping every other
# byte to a space and splitting gives the same tokens as the regex, about 2.5x faster.
_ASCII_NON_WORD_TO_SPACE = bytes(c if c < 128 and chr(c).isalnum() else 32 for c in range(256))
_STEMMER_LOCAL = threading.local()
# Scripts written without spaces between words: Hangul Jamo, Hiragana, Katakana (with the prolonged
# sound mark), Hangul compatibility Jamo, Katakana extensions, CJK ideographs (extension A, unified,
# compatibility), Hangul syllables, half-width Katakana, and the ideographs of the planes above.
_CJK_RE = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]+"
)


@dataclass(frozen=True)
class TokenizerConfig:
    """How text becomes BM25 tokens: unicode letter/digit runs, optionally lowercased,
    stop-worded (the :data:`STOPWORD_SETS` entry ``stopword_set``: Lucene's 33 words by default)
    and Snowball-stemmed (English, PyStemmer).

    Stopwords are removed before stemming. The config is JSON-serialisable with
    :meth:`to_dict` / :meth:`from_dict` so an index can record how it was built (a
    record without ``stopword_set``, from before it existed, means ``"lucene"``).
    """

    lowercase: bool = True
    stopwords: bool = True
    stem: bool = False
    stopword_set: str = "lucene"
    #: read text in its NFC form: ``München`` typed as ``u`` + a combining diaeresis (NFD, as
    #: macOS file names and some PDFs give it) is one token, the same as the composed one; without
    #: it the combining mark split the word into ``mu`` and ``nchen``. Indexes built before the
    #: option existed record no value and keep their tokenisation (off).
    nfc: bool = True
    #: split runs of CJK characters into overlapping pairs (``東京タワー`` -> ``東京 京タ タワ ワー``),
    #: so a query matches part of a run: a whole run was one token, and ``東京タワー`` found nothing
    #: in ``東京タワーの高さ``. A single character stays one token. Indexes built before the option
    #: existed record no value and keep their tokenisation (off).
    cjk_bigrams: bool = True
    #: keep combining marks inside their word: the vowel signs and viramas of Indic scripts split
    #: ``हिन्दी भाषा`` into ``ह न द भ ष``, and a lowercased ``İstanbul`` (``i`` + U+0307, which NFC
    #: cannot recombine) into ``i stanbul``; with it they are ``हिन्दी भाषा`` and ``istanbul`` (the dot
    #: of a lowercased ``İ`` is dropped, as Turkish-aware folding does). Indexes built before the option
    #: existed (session 37) record no value and keep their tokenisation (off).
    marks: bool = True
    #: read each word in its NFKC form, case-folded with ``lowercase`` (ICU's ``nfkc_cf``), without
    #: invisible format characters: full-width ``ＰＤＦ`` and ``２０２３`` (a Chinese or Japanese keyboard
    #: in full-width mode) are ``pdf`` and ``2023``, the ligature ``ﬁle`` is ``file``, half-width
    #: ``ﾊﾟｿｺﾝ`` is ``パソコン``, ``Straße`` is ``strasse`` (as ``STRASSE``), and a soft hyphen or zero-width
    #: space inside a word (``prin\u00adter`` from a web page) no longer splits it. A symbol between
    #: words still separates them (``Windows™`` is ``windows``, not ``windowstm``). Indexes built before
    #: the option existed (until session 53 each of these matched nothing the other form wrote)
    #: record no value and keep their tokenisation (off).
    nfkc: bool = True

    def __post_init__(self) -> None:
        for name in ("lowercase", "stopwords", "stem", "nfc", "cjk_bigrams", "marks", "nfkc"):
            if not isinstance(getattr(self, name), bool):
                value = getattr(self, name)
                raise RagrouteError(f"tokenizer option {name!r} must be true or false, got {value!r}")
        if self.stopword_set not in STOPWORD_SETS:
            raise RagrouteError(
                f"unknown stopword set {self.stopword_set!r}: choose one of {', '.join(STOPWORD_SETS)}"
            )

    @property
    def stop(self) -> frozenset[str] | None:
        """The words removed (``None`` when ``stopwords`` is off)."""
        return STOPWORD_SETS[self.stopword_set] if self.stopwords else None

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON; ``stopword_set`` only when not ``"lucene"`` (so a record is the same as
        before the option existed, and a reader that does not know it refuses only what it cannot read)."""
        data = asdict(self)
        if data["stopword_set"] == "lucene":
            del data["stopword_set"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error. A record without
        ``nfc``, ``cjk_bigrams``, ``marks`` or ``nfkc`` was written before the option existed: its index
        was built without it."""
        known = {"lowercase", "stopwords", "stem", "stopword_set", "nfc", "cjk_bigrams", "marks", "nfkc"}
        check_keys(data, known, "", "tokenizer option")
        before = {"nfc": False, "cjk_bigrams": False, "marks": False, "nfkc": False}
        return cls(**{**before, **{key: data[key] for key in known if key in data}})


def _stemmer() -> Any:
    """A per-thread English Snowball stemmer (PyStemmer objects are not thread-safe)."""
    stemmer = getattr(_STEMMER_LOCAL, "stemmer", None)
    if stemmer is None:
        try:
            import Stemmer  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RagrouteError(
                "stemming needs PyStemmer: pip install 'ragroute[stem]', or set stem=False"
            ) from exc
        stemmer = Stemmer.Stemmer("english")
        _STEMMER_LOCAL.stemmer = stemmer
    return stemmer


def check_can_tokenize(config: TokenizerConfig) -> None:
    """A one-line :class:`RagrouteError` when text cannot be tokenized as ``config`` says here (stemming
    without PyStemmer): what an index checks before it changes anything, not once its documents are in."""
    if config.stem:
        _stemmer()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small lists.

    The collector would otherwise re-scan the growing token lists many times over
    (tokenizing 10M tokens is ~2x slower with it on); it is restored afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _words(
    text: str,
    nfc: bool = True,
    cjk_bigrams: bool = True,
    marks: bool = True,
    nfkc: bool = True,
    casefold: bool = True,
) -> list[str]:
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_NON_WORD_TO_SPACE).decode("ascii").split()
    if nfkc:
        text = INVISIBLE.sub("", text)
    if nfc and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if marks:
        if "i\u0307" in text:  # a lowercased İ: the dot is no mark of another letter here
            text = text.replace("i\u0307", "i")
        pattern = _token_marks_re()
    else:
        pattern = _TOKEN_RE
    words = pattern.findall(text)
    if nfkc:
        words = _folded(words, pattern, casefold)
        text = " ".join(words)  # half-width hangul is CJK in its NFKC form
    return _with_cjk_pairs(words) if cjk_bigrams and _CJK_RE.search(text) else words


def _folded(words: list[str], pattern: re.Pattern[str], casefold: bool) -> list[str]:
    """Each word in its NFKC form, case-folded when ``casefold``, split again by ``pattern`` where that
    form holds a separator (``½`` is ``1⁄2``). Words are folded one by one, so a symbol between two
    stays a separator (``Windows™`` is not ``WindowsTM``)."""
    out: list[str] = []
    for word in words:
        if word.isascii():
            out.append(word)
            continue
        folded = unicodedata.normalize("NFKC", word)
        if casefold:
            folded = folded.casefold()
            if not unicodedata.is_normalized("NFKC", folded):  # ǰ folds to j + a combining caron
                folded = unicodedata.normalize("NFKC", folded)
        if folded == word:
            out.append(word)
        else:
            out.extend(pattern.findall(folded))
    return out


def _with_cjk_pairs(words: list[str]) -> list[str]:
    """Each CJK run inside ``words`` as its overlapping character pairs (one character: itself);
    the letters and digits around a run in the same word stay tokens of their own."""
    out: list[str] = []
    for word in words:
        start = 0
        for run in _CJK_RE.finditer(word):
            if run.start() > start:
                out.append(word[start : run.start()])
            chars = run.group()
            out.extend([chars] if len(chars) == 1 else [chars[i : i + 2] for i in range(len(chars) - 1)])
            start = run.end()
        if start < len(word):
            out.append(word[start:])
    return out


def tokenize(text: str, config: TokenizerConfig | None = None) -> list[str]:
    """Split ``text`` into BM25 tokens according to ``config`` (default :class:`TokenizerConfig`).

    Tokens are the unicode letter/digit runs (``[^\\W_]+``) of the (lowercased) text, in order, with
    stopwords dropped and then stemmed as configured. Deterministic.
    """
    if not isinstance(text, str):
        raise RagrouteError(f"cannot tokenize {type(text).__name__}: expected a string")
    cfg = config if config is not None else TokenizerConfig()
    tokens = _words(
        text.lower() if cfg.lowercase else text, cfg.nfc, cfg.cjk_bigrams, cfg.marks, cfg.nfkc, cfg.lowercase
    )
    stop = cfg.stop
    if stop is not None:
        tokens = [tok for tok in tokens if tok not in stop]
    if cfg.stem:
        tokens = _stemmer().stemWords(tokens)
    return tokens


def tokenize_many(texts: Iterable[str], config: TokenizerConfig | None = None) -> list[list[str]]:
    """:func:`tokenize` for many texts at once: same tokens, less per-text overhead."""
    cfg = config if config is not None else TokenizerConfig()
    stem_words = _stemmer().stemWords if cfg.stem else None
    stop = cfg.stop
    lower = cfg.lowercase
    nfc = cfg.nfc
    cjk = cfg.cjk_bigrams
    marks = cfg.marks
    nfkc = cfg.nfkc
    out: list[list[str]] = []
    append = out.append
    with _gc_paused():
        for text in texts:
            if not isinstance(text, str):
                raise RagrouteError(f"cannot tokenize {type(text).__name__}: expected a string")
            tokens = _words(text.lower() if lower else text, nfc, cjk, marks, nfkc, lower)
            if stop is not None:
                tokens = [tok for tok in tokens if tok not in stop]
            if stem_words is not None:
                tokens = stem_words(tokens)
            append(tokens)
    return out
