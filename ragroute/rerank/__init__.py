"""Rerankers: the last stage of the pipeline (see :class:`ragroute.pipeline.Reranker`).

Registered kinds live in :data:`ragroute.registry.RERANKERS`; each is one module here.
"""
