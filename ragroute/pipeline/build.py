"""Build a :class:`~ragroute.pipeline.Pipeline` from settings: the one way every entry point does it.

``load_routing`` (a routing YAML file), the benchmarks and user code all go
through :func:`pipeline_from_settings`, so a benchmark measures exactly the
pipeline a user gets from the same settings. The ``router:`` mapping names a
registered router kind plus its settings and the selection/fusion options
(:class:`~ragroute.pipeline.stages.RoutingOptions`); ``reranker:`` and ``gate:``
(optional) name registered rerankers and gates.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ragroute.errors import (
    RagrouteError,
    SourceWarning,
    check_encoder_object,
    check_keys,
    check_listed_setting,
    check_setting,
)
from ragroute.exposure import ExposureBudget, ExposureLedger
from ragroute.pipeline.runner import Pipeline
from ragroute.pipeline.stages import (
    SELECTION_MAXIMA,
    SELECTION_MINIMA,
    SELECTION_TYPES,
    RoutingOptions,
    check_always,
    check_selection_words,
)
from ragroute.registry import FUSIONS, GATES, RERANKERS, ROUTERS, load_plugins
from ragroute.route.base import NONE_ROUTE, Router
from ragroute.route.factories import (
    ROUTER_SETTING_TYPES,
    ROUTER_SETTINGS,
    RouterBuild,
    build_router,
    not_sources_message,
)
from ragroute.route.pilot import MODES as PILOT_MODES
from ragroute.route.score_probe import PROBES
from ragroute.route.sources import Source, SourceProblem, check_sources

SELECTION_KEYS = {f.name for f in fields(RoutingOptions)}
#: router settings that may be ``null``: the default (fitted temperature, no none route) or off (early exit)
OPTIONAL_SETTINGS = ("temperature", "none_threshold", "early_exit")
#: router kinds whose routes come from labelled data or a fitted artifact (not from the sources, nor
#: chosen by hand as a fixed router's are): their routes are checked against the source names
LABELLED_ROUTER_KINDS = ("knn", "trained", "llm", "ensemble", "pilot", "quality")
#: router settings that must be above 0 (a softmax temperature)
POSITIVE_SETTINGS = ("temperature", "timeout_s", "early_exit")
#: router settings with a largest value (probabilities)
ROUTER_SETTING_MAXIMA = {"label_probability": 1.0, "none_threshold": 1.0, "early_exit": 1.0}
#: router settings that take one of a few words (checked before any router is built)
ROUTER_SETTING_CHOICES = {"probe": PROBES, "mode": PILOT_MODES}
#: list settings whose empty list is refused (it quietly meant the default: the key left out says so)
ROUTER_SETTING_NOT_EMPTY = {
    "members": (
        "name at least one router kind, or leave 'members' out for the default (prototype, confidence)"
    ),
    "routes": "name at least one source, or leave 'routes' out to query every source",
}


def router_keys() -> set[str]:
    """Every key a ``router:`` mapping may hold (an extension's router kinds' keys included)."""
    load_plugins()
    return {"kind"} | SELECTION_KEYS | {key for keys in ROUTER_SETTINGS.values() for key in keys}


def routing_options(settings: Mapping[str, Any], where: str = "") -> RoutingOptions:
    """Selection and fusion options from a ``router:`` mapping (defaults for what it omits)."""
    values = {k: settings[k] for k in SELECTION_KEYS if settings.get(k) is not None}
    section = f"{where}: router" if where else "router"
    for key, value in values.items():
        kind = SELECTION_TYPES.get(key, "string")
        check_setting(
            value, kind, section, key, minimum=SELECTION_MINIMA.get(key), maximum=SELECTION_MAXIMA.get(key)
        )
    if "always" in values:
        values["always"] = check_always(values["always"], section)
    check_selection_words(values, section)
    options = RoutingOptions(**values)
    FUSIONS.check(str(options.fusion), section)
    return options


def check_router_settings(settings: Mapping[str, Any], where: str) -> str:
    """The router kind of ``settings`` (registered), after refusing unknown keys."""
    if not isinstance(settings, Mapping):
        raise RagrouteError(f"{where}: 'router:' must be a mapping")
    # named `router:` as `config check` names them (until session 51 loading said only the file)
    section = f"{where}: router" if where else "router"
    check_keys(settings, router_keys(), section, "router key")
    for key, value in settings.items():
        check_router_value(key, value, where)
    return ROUTERS.check(str(settings.get("kind", "prototype")), section)


def check_router_value(key: str, value: Any, where: str) -> None:
    """A one-line :class:`RagrouteError` if a router kind's setting has the wrong type or range
    (``bank_dim: 0``, ``temperature: -1``, ``members: []``); selection keys are checked by
    :func:`routing_options`."""
    check_listed_setting(
        key,
        value,
        ROUTER_SETTING_TYPES,
        f"{where}: router" if where else "router",
        maxima=ROUTER_SETTING_MAXIMA,
        positive=POSITIVE_SETTINGS,
        optional=OPTIONAL_SETTINGS,
    )
    if key == "label_probability":  # above 0.5: the LLM's label must stay the most probable route
        from ragroute.route.llm import check_label_probability

        check_label_probability(value, f"{where}: router" if where else "router")
    if key in ROUTER_SETTING_NOT_EMPTY and isinstance(value, (list, tuple)) and not value:
        prefix = f"{where}: router" if where else "router"
        raise RagrouteError(f"{prefix}: {key!r} is an empty list: {ROUTER_SETTING_NOT_EMPTY[key]}")
    choices = ROUTER_SETTING_CHOICES.get(key)
    if choices and value not in choices:
        prefix = f"{where}: router" if where else "router"
        raise RagrouteError(f"{prefix}: {key!r} must be one of {', '.join(choices)}, not {value!r}")


def route_name_problems(
    labels: Sequence[str], names: Sequence[str], *, left_out: Sequence[str] = (), reached: Sequence[str] = ()
) -> tuple[str | None, list[str]]:
    """What is wrong between a router's routes (``labels``: a trained, kNN or LLM router's, fitted on
    labels) and the sources a config opens (``names``; ``left_out``: configured but not opened;
    ``reached``: sources rules or ``always:`` send queries to). A route naming no source sends its
    share nowhere; a source that is none of the routes is never chosen. Both at once is a renamed
    source or the wrong router: the error (``None`` if not). Either alone: a warning each (a router
    fitted on more sources than the config opens, a source reached only through rules)."""
    labels = [label for label in labels if label != NONE_ROUTE]
    if not labels:
        return None, []
    strays = [label for label in labels if label not in names and label not in left_out]
    never = [name for name in names if name not in {*labels, *reached}]
    routes = f"the router's routes ({', '.join(labels)})"
    if strays and never:
        many = len(never) > 1
        return (
            f"{routes} name no source {', '.join(map(repr, strays))}, and source"
            f"{'s' if many else ''} {', '.join(map(repr, never))} {'are' if many else 'is'} none of them, "
            f"so {'they' if many else 'it'} could never be chosen: name the sources as the router's "
            "routes, or refit the router on these sources"
        ), []
    notes = []
    if strays:
        notes.append(
            f"{routes}: {', '.join(map(repr, strays))} {'names' if len(strays) == 1 else 'name'} no "
            "source; queries routed there are searched nowhere"
        )
    if never:
        notes.append(
            f"{'source' if len(never) == 1 else 'sources'} {', '.join(map(repr, never))} "
            f"{'is' if len(never) == 1 else 'are'} none of {routes}, and no rule or 'always:' "
            f"names {'it' if len(never) == 1 else 'them'}: no query will be sent there"
        )
    return None, notes


def member_route_problem(
    members: Sequence[tuple[str, Sequence[str]]],
    names: Sequence[str],
    *,
    left_out: Sequence[str] = (),
    reached: Sequence[str] = (),
) -> str | None:
    """The error of :func:`route_name_problems` for the first inner router (``(what, routes)``:
    ``what`` says which, ``ensemble member knn`` or ``llm fallback knn``) whose own routes have it,
    or None: the ensemble's routes together hide a member fitted on a renamed source when another
    member knows the source (a kNN or trained member never chose it, and its share went nowhere,
    with a warning only), and an llm router's routes (every source) hide its fallback's."""
    for what, labels in members:
        error, _ = route_name_problems(labels, names, left_out=left_out, reached=reached)
        if error:
            return f"{what}: {error}"
    return None


def inner_routers(router: Any) -> list[tuple[str, Any]]:
    """The routers a router decides through, each with what it is to it: an ensemble's members
    (``ensemble member knn``) and an llm router's fallback (``llm fallback knn``), and theirs in
    turn (a fallback ensemble's members). Until session 50 an llm router's fallback was not
    checked: a kNN fallback fitted on a renamed source routed the queries the LLM could not place
    to a source the config does not have, silently, where the same kNN router alone is refused."""
    found: list[tuple[str, Any]] = []
    for member in getattr(router, "routers", None) or ():
        found.append((f"ensemble member {_router_name(member)}", member))
        found.extend(inner_routers(member))
    fallback = getattr(router, "fallback", None)
    if fallback is not None and callable(getattr(fallback, "route_many", None)):
        found.append((f"llm fallback {_router_name(fallback)}", fallback))
        found.extend(inner_routers(fallback))
    return found


def _router_name(router: Any) -> str:
    return str(getattr(router, "name", type(router).__name__))


def _check_router_routes(
    router: Router,
    sources: Sequence[Source],
    problems: Sequence[SourceProblem],
    options: RoutingOptions,
    policy: Any,
    where: str,
) -> None:
    """:func:`route_name_problems` for a built pipeline: the error raised, the warnings warned."""
    reached = set(options.always)
    if policy is not None:
        reached |= {name for rule in policy.rules for _, name, _ in rule.then.refs}
    names, left_out = [s.name for s in sources], [p.name for p in problems]
    error, notes = route_name_problems(
        list(getattr(router, "labels", None) or []), names, left_out=left_out, reached=sorted(reached)
    )
    members = [(what, list(getattr(inner, "labels", None) or [])) for what, inner in inner_routers(router)]
    error = error or member_route_problem(members, names, left_out=left_out, reached=sorted(reached))
    prefix = f"{where}: " if where else ""
    if error:
        raise RagrouteError(prefix + error)
    for note in notes:
        warnings.warn(prefix + note, SourceWarning, stacklevel=3)


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
    try:
        sources = check_sources(sources)
    except RagrouteError as exc:
        raise type(exc)(f"{where}: {exc}" if where else str(exc)) from None
    check_encoder_object(encoder, where or "pipeline_from_settings")
    if router_settings is not None and not isinstance(router_settings, Mapping):
        raise RagrouteError(f"{where + ': ' if where else ''}router settings must be a mapping (kind: ...)")
    settings = dict(router_settings or {})
    if router is None:
        settings.setdefault("kind", "prototype")
    kind = check_router_settings(settings, where)
    build = RouterBuild(
        sources, encoder, where=where, base=base or Path("."), failed=[p.name for p in problems]
    )
    built_here = router is None
    if router is None:
        router = build_router(kind, settings, build)
    # a router may suggest selection defaults (a fixed router queries all its routes); settings win
    given = {key: value for key, value in settings.items() if value is not None}
    options = routing_options({**getattr(router, "selection_defaults", {}), **given}, where)
    unknown = sorted(set(options.always) - {s.name for s in sources} - {p.name for p in problems})
    if unknown:
        raise RagrouteError(not_sources_message(where, "always", unknown, [s.name for s in sources]))
    if built_here and kind in LABELLED_ROUTER_KINDS:  # a router passed in is the caller's own choice
        _check_router_routes(router, sources, problems, options, policy, where)
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


def stage_kind_problem(stage: str) -> str:
    """What ``config check`` and loading both say (after ``FILE: gate: ``) of a ``reranker:`` or
    ``gate:`` that is not a mapping with ``kind:`` (until session 51 loading left out ``gate: ``)."""
    return f"'{stage}:' must be a mapping with 'kind:'"


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
        raise RagrouteError(f"{build.where}: {registry.kind}: {stage_kind_problem(registry.kind)}")
    # an unknown kind named as `config check` names it (until session 51 without `gate: `)
    make = registry.get(str(settings["kind"]), f"{build.where}: {registry.kind}" if build.where else "")
    try:
        return make(settings, build)
    except RagrouteError as exc:  # a stage's own check ("threshold must be in [0, 1]"): name the file
        if not build.where or str(exc).startswith(build.where):
            raise
        raise type(exc)(f"{build.where}: {registry.kind}: {exc}") from None
