"""Any ragroute encoder as a LlamaIndex embedding model, and LlamaIndex's selector as a baseline.

``EncoderEmbedding`` lets LlamaIndex components (selectors, vector indexes)
use the same offline encoder as ragroute. :class:`LlamaIndexSelectorRouter` runs
LlamaIndex's own ``EmbeddingSingleSelector`` over source descriptions, exactly as
a LlamaIndex ``RouterRetriever`` would, as a ragroute router, so benchmarks can
compare against it inside the same pipeline.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import QueryBundle
from llama_index.core.selectors import EmbeddingSingleSelector
from llama_index.core.tools.types import ToolMetadata
from pydantic import PrivateAttr

from ragroute.errors import InvalidArgumentError, check_encoder_object
from ragroute.route.base import BaseRouter
from ragroute.types import Decision, TraceStep


class EncoderEmbedding(BaseEmbedding):
    """A LlamaIndex ``BaseEmbedding`` backed by a ragroute :class:`~ragroute.encode.Encoder`."""

    _encoder: Any = PrivateAttr()

    def __init__(self, encoder: Any, **kwargs: Any) -> None:
        # one line for what is not an encoder (a model name, None): an AttributeError on
        # `model_id` until session 43, or a stand-in without encode methods failing at the first query
        if isinstance(encoder, (str, os.PathLike)):
            check_encoder_object(encoder, "EncoderEmbedding")  # says how to load the name
        if not all(callable(getattr(encoder, name, None)) for name in ("encode_queries", "encode_documents")):
            raise InvalidArgumentError(
                "EncoderEmbedding needs a ragroute encoder (encode_queries and encode_documents, as "
                f"ragroute.encode.load_encoder(NAME) returns), got {type(encoder).__name__}"
            )
        super().__init__(model_name=str(getattr(encoder, "model_id", "") or type(encoder).__name__), **kwargs)
        self._encoder = encoder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encoder.encode_queries([query], show_progress=False)[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encoder.encode_documents([text], show_progress=False)[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encoder.encode_documents(texts, show_progress=False).tolist()

    # Encoding is CPU-bound work: the async forms run it in a worker thread, so an event loop
    # serving other requests is not stalled while a batch is encoded.
    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class LlamaIndexSelectorRouter(BaseRouter):
    """LlamaIndex's ``EmbeddingSingleSelector`` over source descriptions (one route, probability 1)."""

    name = "llamaindex-embedding-selector"

    def __init__(self, sources: Sequence[Any], encoder: Any) -> None:
        self._selector = EmbeddingSingleSelector.from_defaults(embed_model=EncoderEmbedding(encoder))
        self._choices = [ToolMetadata(description=s.description, name=s.name) for s in sources]
        self.labels = [s.name for s in sources]

    def route_many(self, queries: Sequence[str], *, query_vectors: Any = None) -> list[Decision]:
        out = []
        for query in queries:
            result = self._selector.select(self._choices, QueryBundle(query))
            chosen = self.labels[result.selections[0].index]
            out.append(
                Decision(
                    chosen=[chosen],
                    routes={name: float(name == chosen) for name in self.labels},
                    decided_by=self.name,
                    trace=[TraceStep("router", {"reason": result.selections[0].reason})],
                )
            )
        return out
