"""Cheap language identification: :func:`guess_language` and its script and stopword tables.

The dominant Unicode script decides non-Latin languages (:data:`SCRIPT_RANGES`,
:data:`SCRIPT_LANGUAGE`, CJK told apart by kana and hangul); Latin-script text is
scored by stopword overlap (:data:`STOPWORDS`) and distinctive letters
(:data:`LETTER_HINTS`). :data:`LANGUAGES` lists every code it can return. The
``language`` routing signal (:mod:`ragroute.route.signals`) is built on it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

__all__ = [
    "LANGUAGES",
    "LETTER_HINTS",
    "SCRIPT_LANGUAGE",
    "SCRIPT_RANGES",
    "STOPWORDS",
    "UNDETERMINED",
    "guess_language",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the and of to is are was were what which who whom how why when where does do did in on for with "
        "this that these those it its be been by from an a can could i you my me not or there their have "
        "has had will would should about at as if than into"
    ),
    "fr": _words(
        "le la les un une des du de et est sont que qui quoi quel quelle quels quelles comment pourquoi où "
        "dans pour avec sur par pas ne ce cette ces il elle ils elles je vous nous au aux en entre mon ma "
        "mes son sa ses se plus très y qu l d c j n s été être fait peut"
    ),
    "de": _words(
        "der die das und ist sind ein eine einen einem einer nicht mit von zu zum zur den dem des auf für "
        "ich du sie er es wie was wer warum wo wann welche welcher welches im auch oder aber bei nach aus "
        "weit kann können wird werden hat haben über man sich noch nur"
    ),
    "es": _words(
        "el la los las un una unos unas y es son que qué de del en por para con cómo como cuál cuáles "
        "cuándo cuánto dónde quién porque entre su sus se al lo no más muy está están hay este esta yo tú "
        "mi le ser fue"
    ),
    "it": _words(
        "il lo la i gli le un uno una e è sono che di del della dei delle da in per con su come cosa quale "
        "quali quando quanto dove chi perché non si al alla nel nella ma anche questo questa mio ho ha l "
        "essere stato"
    ),
    "pt": _words(
        "o a os as um uma uns umas e é são que de do da dos das em no na nos nas por para com como qual "
        "quais quando quanto onde quem porque não se ao mais muito está estão há este esta eu você meu "
        "minha entre ser foi"
    ),
    "nl": _words(
        "de het een en is zijn van in op te dat die wat wie hoe waarom waar wanneer welke niet met voor "
        "aan er ook maar bij naar uit ik je jij we wij hij zij ze kan kunnen wordt worden heeft hebben "
        "over deze dit om tussen"
    ),
}

# Letters that (almost) only one of the Latin-script languages above uses.
LETTER_HINTS: dict[str, str] = {"de": "äöüß", "es": "ñ¿¡", "fr": "œçèêëîïûù", "pt": "ãõ", "it": "ìò"}

# Unicode ranges of non-Latin scripts: (first, last, script).
SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0370, 0x03FF, "greek"),
    (0x1F00, 0x1FFF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"),
    (0x3130, 0x318F, "hangul"),
    (0xAC00, 0xD7AF, "hangul"),
    (0x3040, 0x30FF, "kana"),
    (0x31F0, 0x31FF, "kana"),
    (0xFF66, 0xFF9F, "kana"),  # halfwidth katakana (ｱｲｳ): read as Latin letters until now
    (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"),
    (0xF900, 0xFAFF, "han"),
    (0x20000, 0x2FA1F, "han"),
)

SCRIPT_LANGUAGE = {
    "greek": "el",
    "cyrillic": "ru",
    "hebrew": "he",
    "arabic": "ar",
    "devanagari": "hi",
    "thai": "th",
}

UNDETERMINED = "und"
LANGUAGES = frozenset([*STOPWORDS, "zh", "ja", "ko", *SCRIPT_LANGUAGE.values(), "uk", UNDETERMINED])


#: letters of a script none of the languages here is written in (Armenian, Tamil, Georgian...)
OTHER_SCRIPT = "other"


def _script(char: str) -> str:
    if unicodedata.category(char)[0] not in "LM":
        # a digit, punctuation mark or symbol is no letter of the script whose block holds it: until
        # session 54 the katakana middle dot ・ made Chinese 巴拉克・奥巴马 Japanese, and ١٢٣ was Arabic
        return ""
    code = ord(char)
    for first, last, script in SCRIPT_RANGES:
        if first <= code <= last:
            return script
    if not char.isalpha():
        return ""
    # a letter of another script was counted as Latin: "Բարեւ ձեզ the" was English
    return "latin" if code < 0x80 or "LATIN" in unicodedata.name(char, "") else OTHER_SCRIPT


def _script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for char in text:
        script = _script(char)
        if script:
            counts[script] = counts.get(script, 0) + 1
    return counts


def _language_of_script(script: str, counts: Mapping[str, int], text: str) -> str:
    if script in ("han", "kana", "hangul"):
        if counts.get("kana", 0):
            return "ja"
        return "ko" if counts.get("hangul", 0) > counts.get("han", 0) else "zh"
    if script == "cyrillic" and any(char in "іїєґІЇЄҐ" for char in text):
        return "uk"
    return SCRIPT_LANGUAGE[script]


def _stopword_scores(text: str) -> dict[str, float]:
    # lower, not casefold: casefold writes ß as ss, and German's letter hint never counted (until
    # session 52 "Straße" was no language)
    folded = unicodedata.normalize("NFC", text.lower())
    tokens = re.findall(r"[^\W\d_]+", folded)
    scores = dict.fromkeys(STOPWORDS, 0.0)
    if not tokens:
        return scores
    for token in tokens:
        owners = [lang for lang, words in STOPWORDS.items() if token in words]
        for lang in owners:
            scores[lang] += 1.0 / len(owners)
        for lang, letters in LETTER_HINTS.items():
            if any(letter in token for letter in letters):
                scores[lang] += 0.5
    for lang, letters in LETTER_HINTS.items():  # ¿ and ¡ are not part of any token
        scores[lang] += 0.5 * sum(folded.count(mark) for mark in letters if not mark.isalpha())
    return {lang: score / len(tokens) for lang, score in scores.items()}


def guess_language(text: str) -> tuple[str, dict[str, float]]:
    """A cheap language guess: the dominant script, then stopword overlap for Latin script.

    Latin-script words in none of the Latin languages here, beside letters of a script that is one of
    them, count as that script's language.

    Returns ``(code, scores)``: an ISO 639-1 code (``en``, ``fr``, ``de``, ``es``,
    ``it``, ``pt``, ``nl``, ``zh``, ``ja``, ``ko``, ``ru``, ``uk``, ``ar``, ``el``,
    ``he``, ``hi``, ``th``) or ``und`` when nothing is recognised, and the score
    of each candidate (share of letters for scripts, weighted stopword share for
    Latin languages).
    """
    # NFD hangul (3 jamo a syllable) outweighed Han; NFKC: full-width "ｗｈａｔ ｉｓ ｔｈｅ" (a Chinese or
    # Japanese keyboard in full-width mode) and Arabic presentation forms ("ﺍﻟﻌﺮﺑﻴﺔ", as PDFs give
    # Arabic) were no language until session 53
    text = unicodedata.normalize("NFKC", text)
    counts = _script_counts(text)
    letters = sum(counts.values())
    if not letters:
        return UNDETERMINED, {}
    cjk = counts.get("han", 0) + counts.get("kana", 0) + counts.get("hangul", 0)
    groups = {script: n for script, n in counts.items() if script not in ("han", "kana", "hangul")}
    if cjk:
        groups["han"] = cjk
    script = max(groups, key=lambda name: (groups[name], name == "latin"))
    if script == OTHER_SCRIPT:
        return UNDETERMINED, {}
    if script != "latin":
        code = _language_of_script(script, counts, text)
        return code, {code: round(groups[script] / letters, 4)}
    scores = _stopword_scores(text)
    best = max(scores, key=lambda lang: scores[lang])  # ties: first in STOPWORDS order
    rounded = {lang: round(score, 4) for lang, score in scores.items() if score > 0}
    known = {name: n for name, n in groups.items() if name not in ("latin", OTHER_SCRIPT)}
    if scores[best] <= 0 and known:
        # Latin letters of no language here (a product name, an acronym) beside a script that is one:
        # that script's language (until session 52 "公司VPN" and "Python 教程" were no language)
        script = max(known, key=lambda name: (known[name], name))
        code = _language_of_script(script, counts, text)
        return code, {code: round(groups[script] / letters, 4)}
    return (best if scores[best] > 0 else UNDETERMINED), rounded
