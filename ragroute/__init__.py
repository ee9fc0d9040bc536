"""ragroute: decide, per query and per step, whether and where to retrieve.

The main entry points are re-exported here, each imported on first use (``import ragroute`` loads
no model library: faiss, torch and onnxruntime load with the first thing that needs them):

>>> import ragroute
>>> pipeline = ragroute.load_routing("corpora/routing.yaml")  # doctest: +SKIP
>>> index = ragroute.build_index(docs, "hybrid", encoder=ragroute.load_encoder())  # doctest: +SKIP

See ``README.md`` for a tour and ``docs/architecture.md`` for where each piece lives.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ragroute.errors import RagrouteError
from ragroute.types import Decision, Document, Hit, Query, TraceStep

#: name -> the module that defines it (imported when the name is first read)
_LAZY = {
    "QueryContext": "ragroute.context",
    "load_encoder": "ragroute.encode.load",
    "load_corpus": "ragroute.loaders",
    "build_index": "ragroute.index.build",
    "load_index": "ragroute.index.io",
    "save_index": "ragroute.index.io",
    "Source": "ragroute.route.sources",
    "load_routing": "ragroute.route.config",
    "PrototypeRouter": "ragroute.route.prototype",
    "ConfidenceRouter": "ragroute.route.confidence",
    "EnsembleRouter": "ragroute.route.ensemble",
    "TrainedRouter": "ragroute.route.trained",
    "Pipeline": "ragroute.pipeline",
    "RoutingOptions": "ragroute.pipeline",
    "pipeline_from_settings": "ragroute.pipeline.build",
    "CrossEncoderReranker": "ragroute.rerank.cross_encoder",
    "TrainedGate": "ragroute.gate",
    "ThresholdGate": "ragroute.gate",
    "StepwiseController": "ragroute.gate.controller",
    "SkillRouter": "ragroute.skills.router",
    "load_catalogue": "ragroute.skills",
    "ExpertSet": "ragroute.experts.expert_set",
    "ExpertSpec": "ragroute.experts.expert_set",
}

__all__ = [  # the types above, then every name of _LAZY
    "Decision",
    "Document",
    "Hit",
    "Query",
    "RagrouteError",
    "TraceStep",
    "QueryContext",
    "load_encoder",
    "load_corpus",
    "build_index",
    "load_index",
    "save_index",
    "Source",
    "load_routing",
    "PrototypeRouter",
    "ConfidenceRouter",
    "EnsembleRouter",
    "TrainedRouter",
    "Pipeline",
    "RoutingOptions",
    "pipeline_from_settings",
    "CrossEncoderReranker",
    "TrainedGate",
    "ThresholdGate",
    "StepwiseController",
    "SkillRouter",
    "load_catalogue",
    "ExpertSet",
    "ExpertSpec",
]
__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports them
    from ragroute.context import QueryContext
    from ragroute.encode.load import load_encoder
    from ragroute.experts.expert_set import ExpertSet, ExpertSpec
    from ragroute.gate import ThresholdGate, TrainedGate
    from ragroute.gate.controller import StepwiseController
    from ragroute.index.build import build_index
    from ragroute.index.io import load_index, save_index
    from ragroute.loaders import load_corpus
    from ragroute.pipeline import Pipeline, RoutingOptions
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.rerank.cross_encoder import CrossEncoderReranker
    from ragroute.route.confidence import ConfidenceRouter
    from ragroute.route.config import load_routing
    from ragroute.route.ensemble import EnsembleRouter
    from ragroute.route.prototype import PrototypeRouter
    from ragroute.route.sources import Source
    from ragroute.route.trained import TrainedRouter
    from ragroute.skills import load_catalogue
    from ragroute.skills.router import SkillRouter


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ragroute' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next read is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
