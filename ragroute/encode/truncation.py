"""How many documents are longer than an encoder reads.

A text encoder reads at most ``max_seq_length`` tokens of a text (256 for all-MiniLM-L6-v2) and
drops the rest without a word; until session 41 a build embedded a 5,000-word document by its
first ~200 words and said nothing. :func:`warn_truncated` counts such documents before a build
encodes them and says so in one warning, with how to index them whole (in passages). It changes
nothing that is indexed.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

SPECIAL_TOKENS = 4
"""Room for the tokens a tokenizer adds around a text (``[CLS]`` and ``[SEP]``; 4 to be safe)."""

BATCH = 4096
"""Texts tokenised at once (a bound on the memory the encodings take)."""

_WORD = re.compile(r"\w\S*")
"""A word (text between whitespace) from its first letter, digit or underscore on: one such word is
one token at least for any tokenizer (a word of none, such as a zero-width space, a NUL or U+FFFD,
may be dropped whole: BERT's tokenizer drops control and format characters)."""


def count_truncated(
    texts: Sequence[str], *, limit: int | None, prompt: str = "", tokenizer: Any = None
) -> tuple[int, int, bool] | None:
    """``(documents, limit, exact)``: how many of ``texts`` (each behind ``prompt``) are longer than
    ``limit`` tokens, or None when there is no limit. ``tokenizer``: a fast (``tokenizers``)
    tokenizer that reads the texts as the encoder does; ``exact`` says the count is its. Without
    one the count is a lower bound (a text of more words holding a letter, digit or underscore than
    the limit, each such word at least one token). Only texts of more UTF-8 bytes than the limit (a
    token covers one byte at least) and no more such words than it are tokenised. Encoders call this
    from their ``count_truncated`` (:meth:`ragroute.encode._common.PromptedEncoder.count_truncated`)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    room = limit - SPECIAL_TOKENS

    def size(text: str) -> int:
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))

    candidates = [prompt + text for text in texts if size(prompt + text) > room]
    if not candidates:
        return 0, limit, True
    # a text of more words than the limit is longer (a word holding a letter, digit or underscore is
    # one token at least): counted without the tokenizer, which reads only the rest (about 0.3 ms a
    # document, a few % of encoding one). Until session 56 every word counted, and a text of 300
    # zero-width spaces or U+FFFD between spaces (2 tokens) was counted, "exactly", as truncated
    sure = [len(_WORD.findall(text)) > limit for text in candidates]
    count = sum(sure)
    if tokenizer is None or not callable(getattr(tokenizer, "encode_batch", None)):
        return count, limit, False
    candidates = [text for text, long in zip(candidates, sure) if not long]
    for start in range(0, len(candidates), BATCH):
        batch = candidates[start : start + BATCH]
        try:
            encodings = tokenizer.encode_batch(batch)
        except Exception:  # text the tokenizer refuses (a lone surrogate): the build refuses it
            return sum(sure), limit, False
        for encoding in encodings:
            # a tokenizer that truncates itself (the ONNX runner's) keeps the rest in overflowing
            count += bool(encoding.overflowing) or len(encoding.ids) > limit
    return count, limit, True


def count_for_encoder(encoder: Any, texts: Sequence[str]) -> tuple[int, int, bool] | None:
    """The encoder's own count (its ``count_truncated``: prompt and tokenizer known), else a lower
    bound from its ``max_seq_length`` alone (an encoder of another library's making)."""
    own = getattr(encoder, "count_truncated", None)
    if callable(own):
        found = own(texts)
        return None if found is None else (int(found[0]), int(found[1]), bool(found[2]))
    return count_truncated(texts, limit=getattr(encoder, "max_seq_length", None))


ADVICE = {
    "document": (
        "documents",
        "index them in passages to embed all of them (ragroute build --granularity paragraph or "
        "section; ragroute.chunking.chunk_documents in Python)",
    ),
    "section": (
        "section units",
        "index them by paragraph to embed all of them (ragroute build --granularity paragraph; "
        "granularity: paragraph in a corpora file)",
    ),
    "paragraph": (
        "paragraph units",
        "cut them smaller to embed all of them (ragroute.chunking.chunk_documents(documents, "
        '"paragraph", max_words=...) in Python)',
    ),
    "table": (
        "tables",
        "a table is one unit, never cut into passages; the BM25 side of a hybrid index reads all of it",
    ),
    "image": (
        "image captions",
        "an image is one unit, never cut into passages; shorten their captions (the NAME.txt sidecars) "
        "to embed all of them",
    ),
}
"""What a warning calls each kind of unit, and what it advises (see :func:`warn_truncated`)."""


def _kind(document: Any) -> str:
    """The :data:`ADVICE` a unit gets: ``image`` for an image (its caption), ``table`` for any other
    non-text unit, else its granularity (images were told they were tables until session 42)."""
    modality = getattr(document, "modality", "text")
    if modality == "image":
        return "image"
    if modality != "text":
        return "table"
    granularity = (getattr(document, "metadata", None) or {}).get("granularity")
    return granularity if granularity in ("section", "paragraph") else "document"


def warn_truncated(documents: Sequence[Any], encoder: Any, *, stacklevel: int = 3) -> int:
    """Warn when ``documents`` hold texts (``full_text()``) longer than ``encoder`` reads; return
    how many (0: none, or the encoder says no limit). One warning for each kind of unit that has
    such texts (whole documents, section or paragraph units, tables, image captions), with advice for
    that kind (until session 42 section units and tables were told to index themselves "in
    passages")."""
    if encoder is None or not documents:
        return 0
    groups: dict[str, list[str]] = {}
    for d in documents:
        if isinstance(getattr(d, "text", None), str):
            groups.setdefault(_kind(d), []).append(d.full_text())
    name = getattr(encoder, "model_id", None) or type(encoder).__name__
    total = 0
    for kind in ADVICE:
        found = count_for_encoder(encoder, groups.get(kind, []))
        if found is None or not found[0]:
            continue
        count, limit, exact = found
        total += count
        noun, advice = ADVICE[kind]
        of = len(groups[kind])
        counted = f"{count:,} of {of:,}" if exact else f"at least {count:,} of {of:,}"
        verb = "is" if count == 1 and exact else "are"
        warnings.warn(
            f"{counted} {noun} {verb} longer than the {limit} tokens encoder {name} reads: their "
            f"embeddings see only the first {limit} tokens (the rest is not embedded); {advice}",
            UserWarning,
            stacklevel=stacklevel,
        )
    return total
