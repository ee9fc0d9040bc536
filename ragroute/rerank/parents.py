"""The ``parents`` reranker: one hit per parent document, for sources indexed at a finer granularity.

When a corpus is indexed by sections or paragraphs, several chunks of one
document can fill the top k. This stage keeps the best chunk of each document
(chunks count as their ``parent_id``; granularity views of one corpus, named
``CORPUS/GRANULARITY``, count as one source) and re-numbers the ranks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ragroute.errors import check_k, check_keys
from ragroute.route.sources import collapse_to_parents
from ragroute.types import Hit


class ParentsReranker:
    """Keeps the best hit per parent document; the order of the fused list is kept."""

    name = "parents"
    candidates_per_hit = 3  # fused hits read per hit returned
    #: it keeps, cuts and re-numbers hits: their scores stay those stage 1 gave (a LlamaIndex
    #: postprocessor keeps each node's own score, see ``RagrouteRerank``)
    scores_hits = False

    def rerank(self, context: Any, hits: list[Hit], k: int) -> list[Hit]:
        """The best hit of each parent document among ``hits``, at most ``k``, as new hits (the
        caller's are left as they were: until session 51 their ranks and explanations were
        rewritten in place, and ``k=0`` returned every parent)."""
        k = check_k(k)
        kept = collapse_to_parents([replace(hit) for hit in hits], k)
        for hit in kept:
            parent = hit.parent_id or hit.doc_id
            hit.explain = {**hit.explain, "rerank": {"kind": self.name, "kept_for": parent}}
        return kept


def parents_reranker(settings: Mapping[str, Any], build: Any) -> ParentsReranker:
    """Registry entry (``reranker: {kind: parents}``); takes no settings."""
    from ragroute.rerank import RERANKER_SETTINGS, settings_where

    check_keys(
        settings, RERANKER_SETTINGS["parents"] | {"kind"}, settings_where(build), "parents reranker key"
    )
    return ParentsReranker()
