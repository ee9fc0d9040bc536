"""Routing configuration: sources, router and policy in one YAML file.

Example (``corpora/routing.yaml``)::

    encoder: all-MiniLM-L6-v2        # optional; default: the encoder the indexes were built with
    backend: auto
    sources:                          # name -> an index directory (paths relative to this file)
      astronomy:
        index: ../indexes/demo/astronomy
        description: Articles on astronomy and astrophysics.
        modality: text
        granularity: section
    # ...or take names, descriptions, modalities and granularities from corpus definitions,
    # with one index per corpus under index_dir:
    corpora: corpora.yaml
    index_dir: ../indexes/demo
    router:
      kind: ensemble                  # prototype | confidence | knn | trained | ensemble
      members: [prototype, confidence]
      none_threshold: 0.2             # prototype: add a "none" route below this similarity
      model: ../routers/demo          # trained: a directory written by `ragroute route fit`
      threshold: 0.25                 # route probability needed to be queried
      max_routes: 2
      fusion: rrf
    signals: {...}                    # optional policy, see ragroute.route.Policy
    rules: [...]

A source whose index is missing or broken does not stop loading: it is left
out and reported in every decision (``unavailable_sources``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError
from ragroute.route.base import Router
from ragroute.route.retriever import RoutedRetriever, RoutingOptions
from ragroute.route.sources import Source, SourceProblem
from ragroute.yaml_files import read_yaml

ROUTER_KINDS = ("prototype", "confidence", "knn", "trained", "ensemble")
_SOURCE_KEYS = {"index", "description", "modality", "granularity"}
_ROUTER_KEYS = {
    "route_weights",
    "kind",
    "members",
    "none_threshold",
    "model",
    "threshold",
    "max_routes",
    "fusion",
    "temperature",
}


@dataclass
class RoutingConfig:
    """The parsed file: raw sections plus where it came from."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> RoutingConfig:
        path = Path(path)
        data = read_yaml(path, "routing config")
        if isinstance(data, dict) and "corpora" in data and "sources" not in data:
            data["sources"] = _sources_from_corpora(path, data)
        if not isinstance(data, dict) or not isinstance(data.get("sources"), dict) or not data["sources"]:
            raise RagrouteError(f"{path}: expected a 'sources:' mapping of names to index directories")
        return cls(path, data)

    def resolve(self, relative: str) -> Path:
        return (self.path.parent / relative).resolve()

    @property
    def router(self) -> dict[str, Any]:
        router = self.data.get("router") or {"kind": "prototype"}
        unknown = sorted(set(router) - _ROUTER_KEYS)
        if unknown:
            raise RagrouteError(f"{self.path}: unknown router key(s) {', '.join(unknown)}")
        return router


def _sources_from_corpora(path: Path, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from ragroute.corpora import load_corpus_specs

    if "index_dir" not in data:
        raise RagrouteError(f"{path}: 'corpora:' needs 'index_dir:' (where the corpus indexes are built)")
    index_dir = (path.parent / str(data["index_dir"])).resolve()
    return {
        spec.name: {
            "index": str(index_dir / spec.name),
            "description": spec.description,
            "modality": spec.modality,
            "granularity": spec.granularity,
        }
        for spec in load_corpus_specs(path.parent / str(data["corpora"]))
    }


def open_sources(config: RoutingConfig, encoder: Any) -> tuple[list[Source], list[SourceProblem]]:
    """Load every source's index; broken ones become :class:`SourceProblem` s instead of errors."""
    from ragroute.index.io import load_index

    sources, problems = [], []
    for name, entry in config.data["sources"].items():
        if not isinstance(entry, dict) or "index" not in entry:
            raise RagrouteError(f"{config.path}: source {name!r} needs an 'index' directory")
        unknown = sorted(set(entry) - _SOURCE_KEYS)
        if unknown:
            raise RagrouteError(f"{config.path}: source {name!r} has unknown key(s) {', '.join(unknown)}")
        try:
            index = load_index(config.resolve(entry["index"]), encoder, name=str(name))
        except RagrouteError as exc:
            problems.append(SourceProblem(str(name), str(exc)))
            continue
        sources.append(
            Source(
                str(name),
                index,
                description=str(entry.get("description", "")).strip(),
                modality=entry.get("modality", "text"),
                granularity=entry.get("granularity", "document"),
            )
        )
    return sources, problems


def build_router(
    kind: str, settings: dict[str, Any], sources: list[Source], encoder: Any, config: RoutingConfig
) -> Router:
    """One router of ``kind`` over ``sources`` (ensembles recurse over ``members``)."""
    if kind == "prototype":
        from ragroute.route.prototype import PrototypeConfig, PrototypeRouter

        return PrototypeRouter(
            sources,
            encoder,
            PrototypeConfig(
                none_threshold=settings.get("none_threshold"), temperature=settings.get("temperature")
            ),
        )
    if kind == "confidence":
        from ragroute.route.confidence import ConfidenceRouter

        return ConfidenceRouter(sources)
    if kind == "trained":
        from ragroute.route.trained import TrainedRouter

        if "model" not in settings:
            raise RagrouteError(
                f"{config.path}: a trained router needs 'model:' (written by `ragroute route fit`)"
            )
        return TrainedRouter.load(config.resolve(settings["model"]), encoder)
    if kind == "ensemble":
        from ragroute.route.ensemble import EnsembleRouter

        members = settings.get("members") or ["prototype", "confidence"]
        if "ensemble" in members:
            raise RagrouteError(f"{config.path}: an ensemble cannot contain an ensemble")
        return EnsembleRouter([build_router(m, settings, sources, encoder, config) for m in members])
    if kind == "knn":
        raise RagrouteError(
            f"{config.path}: a knn router needs labelled queries; use `ragroute route fit` instead"
        )
    raise RagrouteError(
        f"{config.path}: unknown router kind {kind!r}: choose one of {', '.join(ROUTER_KINDS)}"
    )


def load_routing(path: str | Path, *, encoder: Any = None, backend: str | None = None) -> RoutedRetriever:
    """Everything a routing config describes, ready to ``retrieve``."""
    from ragroute.encode import load_encoder
    from ragroute.route import Policy

    config = RoutingConfig.read(path)
    if encoder is None:
        encoder = load_encoder(
            config.data.get("encoder", "all-MiniLM-L6-v2"),
            backend=backend or config.data.get("backend", "auto"),
            cache_dir=config.resolve(config.data.get("cache_dir", "../indexes/.cache")),
        )
    sources, problems = open_sources(config, encoder)
    if not sources:
        detail = "; ".join(f"{p.name}: {p.error}" for p in problems)
        raise RagrouteError(f"{config.path}: no source could be opened ({detail})")
    router_settings = config.router
    router = build_router(router_settings.get("kind", "prototype"), router_settings, sources, encoder, config)
    policy = None
    if config.data.get("rules"):
        policy = Policy.from_yaml(config.path, encoder=encoder)
        policy.validate_routes([*config.data["sources"], "none"])
    options = RoutingOptions(
        threshold=float(router_settings.get("threshold", 0.25)),
        max_routes=int(router_settings.get("max_routes", 3)),
        fusion=str(router_settings.get("fusion", "rrf")),
        route_weights=str(router_settings.get("route_weights", "even")),
    )
    return RoutedRetriever(
        sources, router, policy=policy, encoder=encoder, options=options, problems=problems
    )
