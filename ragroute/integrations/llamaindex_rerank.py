"""A ragroute reranker as a LlamaIndex node postprocessor, usable after any retriever.

``RagrouteRerank(reranker=CrossEncoderReranker("rerank/default"), top_n=5)`` reorders the
nodes of any LlamaIndex retriever or query engine by the reranker's calibrated
probability of relevance; each returned node (a copy: the input nodes are not changed) scores
that probability, and its metadata ``rerank`` holds the logit, the probability and the node's rank
before (kept out of the text an LLM reads and of what an embedding model encodes).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr

from ragroute.errors import RagrouteError, check_k
from ragroute.integrations.adapters import OWN_PREFIX, made_by_ragroute
from ragroute.integrations.llamaindex import node_parent
from ragroute.rerank import rerank_every
from ragroute.rerank.cross_encoder import fused_value
from ragroute.types import Hit

STAGE1_FROM = ("score", "fused", "order")
"""What a returned node's ``metadata["rerank"]["stage1_from"]`` says the reranker read as its stage-1
rank and score: ``score`` (the nodes' scores, in list order), ``fused`` (the fused value hidden in the
``explain`` of nodes one of ragroute's retrievers made; their score is a cosine-scale similarity out
of step with their order) or ``order`` (the nodes were not all scored, or not in score order: read by
their order alone)."""


def node_fused_value(node: NodeWithScore) -> float | None:
    """The fused value that ordered a node one of ragroute's retrievers made (``explain["fused"]``
    in its hidden metadata, read as :func:`~ragroute.rerank.cross_encoder.stage1_score` reads a
    hit's), or None for any other node, or one without a finite number there."""
    metadata = node.node.metadata
    if not made_by_ragroute(node.node.node_id, metadata):
        return None
    return fused_value(metadata.get("explain"))


class RagrouteRerank(BaseNodePostprocessor):
    """Reorders nodes with a ragroute reranker (any object with ``rerank(context, hits, k)``).

    Returns the best ``top_n`` nodes as copies scored by the reranker (its probability of
    relevance for a :class:`~ragroute.rerank.cross_encoder.CrossEncoderReranker`), each with the
    reranker's numbers in ``metadata["rerank"]`` (hidden from the LLM and the embedder), among them
    ``stage1_from``: ``score``, ``fused`` or ``order`` (:data:`STAGE1_FROM`).
    """

    top_n: int = Field(default=5, description="Nodes kept after reranking.")
    _reranker: Any = PrivateAttr()

    def __init__(self, reranker: Any, top_n: int = 5, **kwargs: Any) -> None:
        if not callable(getattr(reranker, "rerank", None)):
            raise RagrouteError(
                "RagrouteRerank needs a reranker object (e.g. CrossEncoderReranker('rerank/default')), "
                f"got {type(reranker).__name__}"
            )
        # pydantic's __init__ takes the subclass's fields; mypy types it with the base class's only
        super().__init__(top_n=check_k(top_n, "top_n"), **kwargs)  # type: ignore[call-arg]
        self._reranker = reranker

    def __setattr__(self, name: str, value: Any) -> None:
        # checked at the assignment, as the constructor checks it (and the retrievers their
        # similarity_top_k): 0, "3" or None failed only at postprocessing, naming k (until session 40)
        if name == "top_n":
            value = check_k(value, "top_n")
        super().__setattr__(name, value)

    @classmethod
    def class_name(cls) -> str:
        return "RagrouteRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise RagrouteError("RagrouteRerank needs the query (query_bundle or query_str)")
        if not nodes:
            return []
        # the reranker reads the stage-1 rank (list order) and score together: nodes that are not
        # all scored, or not in score order, are read by their order alone (until session 36 an
        # unscored node read 0.0 and fell to the bottom of the pool, and an unsorted list gave
        # rank and score that disagreed). Nodes a ragroute pipeline made are read by the fused
        # value that ordered them (hidden in their `explain`), as the pipeline's own rerank stage
        # reads it: their score is a cosine-scale similarity, out of step with that order (until
        # session 47 it was read, and such a list was often taken as unsorted, read by order alone)
        fused = [node_fused_value(n) for n in nodes]
        by_fused = all(v is not None for v in fused)
        if by_fused:
            numbers = [float(v) for v in fused if v is not None]
        else:
            numbers = [float(n.score) for n in nodes if n.score is not None]
        by_score = len(numbers) == len(nodes) and all(a >= b for a, b in zip(numbers, numbers[1:]))
        scores = numbers if by_score else [float(len(nodes) - i) for i in range(len(nodes))]
        # the parent and source of each node, as the reranker reads them (a ParentsReranker keeps one
        # hit per parent: it kept every chunk until session 37, when both were left out)
        hits = [
            Hit(
                doc_id=str(i),
                score=scores[i],
                source=str(n.node.metadata.get("source") or ""),
                rank=i + 1,
                text=n.node.get_content(metadata_mode=MetadataMode.NONE),
                title=str(n.node.metadata.get("title") or ""),
                parent_id=node_parent(n),
            )
            for i, n in enumerate(nodes)
        ]
        reranker = self._reranker
        ranked = rerank_every(reranker, query_bundle.query_str, hits, self.top_n)
        out = []
        for hit in ranked:
            # a copy: the caller's nodes stay as they were; the reranker's numbers are for the trace,
            # never part of the text an LLM reads or an embedding model encodes
            node = nodes[int(hit.doc_id)].node.model_copy(deep=True)
            if "rerank" in node.metadata:  # the node's own value (another postprocessor's, the
                # document's): kept under `document_rerank`, as ragroute's nodes keep a document's
                # own value of a key it writes; it was overwritten, lost
                node.metadata.setdefault(OWN_PREFIX + "rerank", node.metadata["rerank"])
            node.metadata["rerank"] = dict(hit.explain.get("rerank", {}))
            # what stage 1 was read from, one word as docs/rerank.md writes it (until session 50
            # "fused (the ragroute pipeline's fused value)" / "order (...)" and, for scores, nothing)
            node.metadata["rerank"]["stage1_from"] = (
                "order" if not by_score else "fused" if by_fused else "score"
            )
            for excluded in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                if "rerank" not in excluded:
                    excluded.append("rerank")
            # a reranker that scores nothing (parents) leaves each node its own score: until session
            # 51 it came back as the value it was read by (8.0, 7.0, ... for an unsorted list)
            own = nodes[int(hit.doc_id)].score
            scored = getattr(reranker, "scores_hits", True)
            out.append(NodeWithScore(node=node, score=float(hit.score) if scored else own))
        return out
