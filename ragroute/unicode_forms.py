"""The invisible characters removed before text is compared, one definition for what compares it:
BM25's tokens (:mod:`ragroute.index.bm25_tokenize`) and keyword and length signals
(:mod:`ragroute.route.signals`), so a word found by one is found by the other; and the typographic
quote marks read as the ASCII ones (keyword signals and the cheap router features)."""

from __future__ import annotations

import re

#: invisible format characters (soft hyphen, Mongolian vowel separator, zero-width space and
#: joiners, direction marks and embeddings, word joiner, invisible operators, isolates, BOM): one
#: inside a word ("prin\u200bter", "print\u00ader" pasted from a web page) would hide it
INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")

#: quote marks read as the ASCII ones (a phone or word processor types ’ for ')
QUOTES = str.maketrans(
    {
        **dict.fromkeys("\u2018\u2019\u201a\u201b\u02bc\u2032\uff07", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\uff02", '"'),
    }
)
