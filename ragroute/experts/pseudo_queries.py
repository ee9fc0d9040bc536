"""Pseudo-queries cut from a corpus's own documents: the unlabelled training data of a domain expert.

Three kinds, each paired with the document it was cut from (its positive):

* ``title``: the document's title, when the document also has a body that is more than the
  title again (a title alone would just be the document again);
* ``sentence``: one sentence of the body (6-40 words), not one that repeats the
  title; in texts with no such sentence (no sentence punctuation, or only sentences
  shorter or longer than that), a window of 8-16 words of a body of 12 or more;
* ``keyphrases``: the 3-5 terms of the document with the highest tf-idf among
  terms that occur in at least two documents and at most 10% of them (so
  neither typos nor domain-wide words), in document order — short keyword
  queries like those of the old test collections.

Everything is deterministic for a given seed, and the same whatever order the documents come in:
each document's sentence is drawn from its id, a sample of the pseudo-queries is drawn by theirs
(:mod:`ragroute.draws`), and they come out sorted by document id and kind (until session 42 one
random stream ran through the documents in corpus order, so a reordered corpus, or one document
added, trained another expert). Relevance labels are never read: an expert trained on
pseudo-queries has not seen any benchmark query.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ragroute.display import counted
from ragroute.draws import drawn, id_draws
from ragroute.errors import RagrouteError, unknown_keys_message
from ragroute.index.bm25_tokenize import tokenize
from ragroute.types import Document

MIN_DOCUMENTS = 50
"""Fewer documents than this give too few distinct pseudo-queries (and negatives) to train on."""

KINDS = ("title", "sentence", "keyphrases")

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class PseudoQuery:
    """A query cut from document ``doc_id`` (its positive), of one of :data:`KINDS`."""

    text: str
    doc_id: str
    kind: str


def cut_pseudo_queries(
    documents: Sequence[Document],
    *,
    kinds: Sequence[str] = KINDS,
    max_queries: int = 6000,
    seed: int = 0,
    purpose: str = "an expert",
) -> list[PseudoQuery]:
    """Up to one pseudo-query of each kind per document, at most ``max_queries`` in all.

    When the corpus would give more, pseudo-queries are sampled (seeded, by document id and kind)
    uniformly, so every kind keeps about its share. Sorted by document id, then kind. Raises
    :class:`RagrouteError` with the number needed when the corpus has fewer than
    :data:`MIN_DOCUMENTS` documents with text, or when fewer than that many give a pseudo-query
    (documents of a word or two give none), or when a document id is repeated; ``purpose`` names
    what needs them in that message.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise RagrouteError(unknown_keys_message(unknown, KINDS, "pseudo-query kind"))
    # a pseudo-query's positive is its document's id: until session 49 two documents of one id had
    # their pseudo-queries trained towards one of them (the last), without a word
    seen: set[str] = set()
    for doc in documents:
        if doc.id in seen:
            raise RagrouteError(
                f"document id {doc.id!r} is repeated: each document needs an id of its own "
                "(a pseudo-query is paired with its document by id)"
            )
        seen.add(doc.id)
    usable = [d for d in documents if d.full_text().strip()]
    if len(usable) < MIN_DOCUMENTS:
        raise RagrouteError(
            f"cannot cut pseudo-queries from {counted(len(usable), 'document')} with text: "
            f"{purpose} needs at least {MIN_DOCUMENTS}"
        )
    keyphrases = _keyphrase_queries(usable) if "keyphrases" in kinds else {}
    out: list[PseudoQuery] = []
    for doc in usable:
        # a body that merely repeats the title is no body: until session 54 the title was cut as a
        # pseudo-query of a document that is the title again
        body = doc.text.strip()
        if (
            "title" in kinds
            and doc.title.strip()
            and body
            and _says_more(body, doc.title)
            and len(doc.title.split()) >= 3
        ):
            out.append(PseudoQuery(doc.title.strip(), doc.id, "title"))
        if "sentence" in kinds:
            rng = random.Random(int(id_draws([doc.id], seed, "pseudo-query sentence")[0]))
            sentence = _pick_sentence(doc, rng)
            if sentence:
                out.append(PseudoQuery(sentence, doc.id, "sentence"))
        if doc.id in keyphrases:
            out.append(PseudoQuery(keyphrases[doc.id], doc.id, "keyphrases"))
    covered = len({q.doc_id for q in out})
    if covered < MIN_DOCUMENTS:
        raise RagrouteError(
            f"cut {len(out)} pseudo-queries ({', '.join(kinds)}) from {covered} of the {len(usable)} "
            "documents with text (a document gives one with a title of 3 words or more, a sentence of "
            f"6 or more, or specific terms): {purpose} needs pseudo-queries from at least {MIN_DOCUMENTS}"
        )  # "an expert needs" whatever needed them until session 52 (a router, the reranker's pairs)
    if len(out) > max_queries:
        keep = drawn([f"{q.doc_id}\x1f{q.kind}" for q in out], max_queries, seed, "pseudo-queries")
        out = [out[int(i)] for i in keep]
    return sorted(out, key=lambda q: (q.doc_id, KINDS.index(q.kind)))


def _says_more(text: str, title: str) -> bool:
    """Whether ``text`` says more than ``title`` (case, spacing and a final full stop aside)."""
    return _plain(text) != _plain(title)


def _plain(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .")


def _pick_sentence(doc: Document, rng: random.Random) -> str | None:
    text = doc.text.strip()
    if not text:
        return None
    title = doc.title.strip().lower()
    sentences = [s.strip() for s in _SENTENCE_END.split(text)]
    candidates = [
        s for s in sentences if 6 <= len(s.split()) <= 40 and s.lower().rstrip(" .") != title.rstrip(" .")
    ]
    if candidates:
        # skip a first sentence that merely restates the title (MEDLINE-style "title . body")
        return rng.choice(candidates)
    words = _WORD.findall(text)
    if len(words) < 12:
        return None
    width = rng.randint(8, min(16, len(words) - 2))
    start = rng.randint(0, len(words) - width)
    return " ".join(words[start : start + width])


def _keyphrase_queries(documents: Sequence[Document]) -> dict[str, str]:
    """Each document's 3-5 most specific terms (tf-idf among mid-frequency terms), in document order."""
    token_lists = [tokenize(d.full_text()) for d in documents]
    df = Counter(term for tokens in token_lists for term in set(tokens))
    n = len(documents)
    ceiling = max(2, int(0.1 * n))
    out: dict[str, str] = {}
    for doc, tokens in zip(documents, token_lists):
        tf = Counter(t for t in tokens if 2 <= df[t] <= ceiling and len(t) > 2 and not t.isdigit())
        if len(tf) < 3:
            continue
        scored = sorted(tf, key=lambda t: (-tf[t] * math.log(n / df[t]), t))[:5]
        first: dict[str, int] = {}
        for position, token in enumerate(tokens):
            first.setdefault(token, position)
        out[doc.id] = " ".join(sorted(scored, key=first.__getitem__))
    return out
