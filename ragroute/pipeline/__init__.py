"""The query pipeline: query context -> gate -> route -> retrieve -> fuse -> rerank -> hits + trace."""

from ragroute.pipeline.runner import Pipeline, PipelineResult
from ragroute.pipeline.stages import Gate, GateDecision, Reranker, RoutingOptions

__all__ = ["Gate", "GateDecision", "Pipeline", "PipelineResult", "Reranker", "RoutingOptions"]
