"""Build a :class:`~ragroute.pipeline.Pipeline` from settings: the one way every entry point does it.

``load_routing`` (a routing YAML file), the benchmarks and user code all go
through :func:`pipeline_from_settings`, so a benchmark measures exactly the
pipeline a user gets from the same settings. The ``router:`` mapping names a
registered router kind plus its settings and the selection/fusion options
(:class:`~ragroute.pipeline.stages.RoutingOptions`); ``reranker:`` and ``gate:``
(optional) name registered rerankers and gates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError, check_keys, check_setting
from ragroute.exposure import ExposureBudget, ExposureLedger
from ragroute.pipeline.runner import Pipeline
from ragroute.pipeline.stages import RoutingOptions
from ragroute.registry import FUSIONS, GATES, RERANKERS, ROUTERS
from ragroute.route.base import Router
from ragroute.route.factories import ROUTER_SETTING_TYPES, ROUTER_SETTINGS, RouterBuild, build_router
from ragroute.route.sources import Source, SourceProblem

SELECTION_KEYS = {f.name for f in fields(RoutingOptions)}
#: the type of each selection key of a ``router:`` mapping (the others are strings)
SELECTION_TYPES = {
    "threshold": "number",
    "hedge_below": "number",
    "max_routes": "integer",
    "depth": "integer",
    "always": "strings",
}
SELECTION_MINIMA = {"max_routes": 1, "depth": 1}
#: router settings whose ``null`` means "the default" (fitted temperature, no none route)
OPTIONAL_SETTINGS = ("temperature", "none_threshold")


def router_keys() -> set[str]:
    """Every key a ``router:`` mapping may hold."""
    return {"kind"} | SELECTION_KEYS | {key for keys in ROUTER_SETTINGS.values() for key in keys}


def routing_options(settings: Mapping[str, Any], where: str = "") -> RoutingOptions:
    """Selection and fusion options from a ``router:`` mapping (defaults for what it omits)."""
    values = {k: settings[k] for k in SELECTION_KEYS if settings.get(k) is not None}
    section = f"{where}: router" if where else "router"
    for key, value in values.items():
        kind = SELECTION_TYPES.get(key, "string")
        check_setting(value, kind, section, key, minimum=SELECTION_MINIMA.get(key))
    if "always" in values:
        always = values["always"]
        if isinstance(always, str) or not all(isinstance(name, str) for name in always):
            raise RagrouteError(f"{where}: 'always' must be a list of source names")
        values["always"] = tuple(always)
    options = RoutingOptions(**values)
    FUSIONS.check(str(options.fusion), where)
    if options.scores not in ("similarity", "fusion"):
        raise RagrouteError(f"{where}: scores must be 'similarity' or 'fusion', not {options.scores!r}")
    if options.route_weights not in ("even", "probability"):
        raise RagrouteError(
            f"{where}: route_weights must be 'even' or 'probability', not {options.route_weights!r}"
        )
    return options


def check_router_settings(settings: Mapping[str, Any], where: str) -> str:
    """The router kind of ``settings`` (registered), after refusing unknown keys."""
    if not isinstance(settings, Mapping):
        raise RagrouteError(f"{where}: 'router:' must be a mapping")
    check_keys(settings, router_keys(), where, "router key")
    section = f"{where}: router" if where else "router"
    for key, value in settings.items():
        if key in ROUTER_SETTING_TYPES:
            expected, minimum = ROUTER_SETTING_TYPES[key]
            check_setting(value, expected, section, key, minimum=minimum, optional=key in OPTIONAL_SETTINGS)
    return ROUTERS.check(str(settings.get("kind", "prototype")), where)


def pipeline_from_settings(
    sources: Sequence[Source],
    router_settings: Mapping[str, Any] | None,
    *,
    encoder: Any,
    router: Router | None = None,
    policy: Any = None,
    problems: Sequence[SourceProblem] = (),
    reranker: Mapping[str, Any] | Any = None,
    gate: Mapping[str, Any] | Any = None,
    exposure: Mapping[str, Any] | ExposureLedger | None = None,
    where: str = "",
    base: Path | None = None,
    name: str = "pipeline",
) -> Pipeline:
    """The pipeline the settings describe over already opened ``sources``.

    ``router`` replaces the router the settings would build (the benchmarks pass
    routers fitted on a training split); selection and fusion still come from
    ``router_settings``. ``exposure``: an ``exposure:`` mapping (a budget; a new ledger) or a
    ledger to share (:mod:`ragroute.exposure`).
    """
    settings = dict(router_settings or {})
    if router is None:
        settings.setdefault("kind", "prototype")
    kind = check_router_settings(settings, where)
    build = RouterBuild(
        sources, encoder, where=where, base=base or Path("."), failed=[p.name for p in problems]
    )
    if router is None:
        router = build_router(kind, settings, build)
    # a router may suggest selection defaults (a fixed router queries all its routes); settings win
    given = {key: value for key, value in settings.items() if value is not None}
    options = routing_options({**getattr(router, "selection_defaults", {}), **given}, where)
    unknown = sorted(set(options.always) - {s.name for s in sources} - {p.name for p in problems})
    if unknown:
        raise RagrouteError(
            f"{where}: 'always' names {', '.join(unknown)}, which are not sources "
            f"({', '.join(s.name for s in sources)})"
        )
    pipeline = Pipeline(
        sources,
        router,
        policy=policy,
        encoder=encoder,
        options=options,
        problems=problems,
        reranker=_stage(RERANKERS, reranker, build),
        gate=_stage(GATES, gate, build),
        name=name,
        exposure=_ledger(exposure, where),
    )
    return pipeline.calibrate()


def _ledger(exposure: Mapping[str, Any] | ExposureLedger | None, where: str) -> ExposureLedger | None:
    if exposure is None or isinstance(exposure, ExposureLedger):
        return exposure
    budget = ExposureBudget.from_settings(exposure, f"{where}: exposure" if where else "exposure")
    return ExposureLedger(budget)


def _stage(registry: Any, settings: Any, build: RouterBuild) -> Any:
    """The stage ``settings`` name (``{kind: ..., ...}``), or ``settings`` itself when it is an
    already built stage (e.g. a reranker loaded once and shared by several pipelines)."""
    if not settings:
        return None
    if not isinstance(settings, Mapping) and any(
        callable(getattr(settings, method, None)) for method in ("rerank", "gate_many")
    ):
        return settings
    if not isinstance(settings, Mapping) or "kind" not in settings:
        raise RagrouteError(f"{build.where}: '{registry.kind}:' must be a mapping with 'kind:'")
    return registry.get(str(settings["kind"]), build.where)(settings, build)
