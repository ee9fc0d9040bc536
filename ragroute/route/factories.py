"""Router factories: how each registered router kind is built from a routing config's settings.

Each entry of :data:`ragroute.registry.ROUTERS` is ``factory(settings, build) -> Router``,
where ``settings`` is the ``router:`` mapping of the config (or an ensemble
member's) and ``build`` is a :class:`RouterBuild` (the open sources, the
encoder, and how to resolve paths relative to the config).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError
from ragroute.registry import ROUTERS
from ragroute.route.base import Router
from ragroute.route.sources import Source

# Settings each kind reads (beyond the selection keys every router config may carry).
ROUTER_SETTINGS: dict[str, set[str]] = {
    "prototype": {"none_threshold", "temperature", "bank_dim"},
    "centroid": {"none_threshold", "temperature"},
    "confidence": {"temperature", "probe", "probe_ef_search"},
    "knn": {"examples", "k"},
    "trained": {"model"},
    "llm": {"llm", "fallback", "label_probability", "timeout_s"},
    "ensemble": {"members", "sharpness", "early_exit"},
    "fixed": {"routes"},
    "pilot": {"model", "mode"},
    "quality": {"model"},
}
#: the type (and least value) of each router setting, checked before any router is built
ROUTER_SETTING_TYPES: dict[str, tuple[str, float | None]] = {
    "none_threshold": ("number", -1.0),  # a cosine similarity
    "temperature": ("number", None),
    "examples": ("string", None),
    "k": ("integer", 1),
    "model": ("string", None),
    "fallback": ("string", None),
    "label_probability": ("number", 0),
    "timeout_s": ("number", 0),
    "members": ("strings", None),
    "sharpness": ("number", 0),  # below 0 the least confident member led (until session 37)
    "early_exit": ("number", 0),
    "routes": ("strings", None),
    "mode": ("string", None),
    "bank_dim": ("integer", 1),
    "probe": ("string", None),
    "probe_ef_search": ("integer", 1),
}
# Settings a kind cannot do without (its factory refuses a mapping that lacks them).
ROUTER_REQUIRED: dict[str, set[str]] = {
    "knn": {"examples"},
    "trained": {"model"},
    "llm": {"llm"},
    "pilot": {"model"},
    "quality": {"model"},
}


@dataclass
class RouterBuild:
    """What a router factory may use: sources, the query encoder, and the config's location."""

    sources: Sequence[Source]
    encoder: Any
    where: str = ""
    base: Path = Path(".")
    failed: Sequence[str] = ()  # configured sources that could not be opened

    def resolve(self, relative: str) -> Path:
        """A path a router or gate setting names, as every path of the config is read (and as
        ``config check`` reads it): relative to the config's folder, ``~/...`` the home folder
        (until session 51 ``examples: ~/labels.jsonl`` read ``<folder>/~/labels.jsonl``)."""
        return (self.base / os.path.expanduser(str(relative))).resolve()  # ~nobody as written


def build_router(kind: str, settings: Mapping[str, Any], build: RouterBuild) -> Router:
    """A router of a registered ``kind`` (unknown kinds list the registered ones)."""
    factory = ROUTERS.get(kind, build.where)
    try:
        return factory(settings, build)
    except RagrouteError as exc:  # say which config the refusal is about, once
        if build.where and not str(exc).startswith(build.where):
            raise type(exc)(f"{build.where}: {exc}") from None
        raise


#: what each setting of :data:`ROUTER_REQUIRED` names, said when it is missing
ROUTER_REQUIRED_HINTS: dict[tuple[str, str], str] = {
    ("knn", "examples"): "a JSONL file of labelled queries {text, label}",
    ("trained", "model"): "a folder written by `ragroute route fit`",
    ("llm", "llm"): "local, a mapping with 'kind:', or 'package.module:factory'",
    ("pilot", "model"): "a folder written by `ragroute expert fit-router`",
    ("quality", "model"): "a folder written by `ragroute expert fit-router`",
}


def missing_setting_problem(kind: str, key: str) -> str:
    """The line (after ``FILE: ``) for a ``kind`` router without its required ``key:``, as loading
    and ``config check`` both say it (until session 51 loading said it without ``router:`` and the
    check without the hint)."""
    return f"router: a {kind} router needs '{key}:' ({ROUTER_REQUIRED_HINTS[(kind, key)]})"


def examples_file_problem(path: Path) -> str | None:
    """The line (after ``FILE: ``) for a kNN router's ``examples:`` file that is not there, or None,
    as loading and ``config check`` both say it (until session 51 loading said ``FILE: PATH: no such
    file``)."""
    return None if path.is_file() else f"router: examples file {path} does not exist"


def model_problem(path: Path) -> str | None:
    """The line (after ``FILE: ``) for a trained, pilot or quality router's ``model:`` that is not
    there, or None, as loading and ``config check`` both say it (until session 51 loading said
    ``FILE: nothing at PATH: directory does not exist``)."""
    return None if path.exists() else f"router: model {path} does not exist"


def _model(settings: Mapping[str, Any], kind: str, build: RouterBuild) -> Path:
    model = build.resolve(_need(settings, "model", kind, build))
    problem = model_problem(model)
    if problem:
        raise RagrouteError(f"{build.where}: {problem}")
    return model


def _need(settings: Mapping[str, Any], key: str, kind: str, build: RouterBuild) -> Any:
    if key not in settings:
        raise RagrouteError(f"{build.where}: {missing_setting_problem(kind, key)}")
    return settings[key]


def prototype(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    from ragroute.route.prototype import PrototypeConfig, PrototypeRouter

    config = PrototypeConfig(
        none_threshold=settings.get("none_threshold"),
        temperature=settings.get("temperature"),
        bank_dim=settings.get("bank_dim"),
    )
    return PrototypeRouter(build.sources, build.encoder, config)


def centroid(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    """The prototype router with only source centroids (no descriptions, no document bank)."""
    from ragroute.route.prototype import PrototypeConfig, PrototypeRouter

    config = PrototypeConfig(
        description_weight=0,
        bank_weight=0,
        none_threshold=settings.get("none_threshold"),
        temperature=settings.get("temperature"),
    )
    router = PrototypeRouter(build.sources, build.encoder, config)
    router.name = "centroid"
    return router


def confidence(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    from ragroute.route.confidence import ConfidenceConfig, ConfidenceRouter

    config = ConfidenceConfig(temperature=settings.get("temperature"))
    config.probe = settings.get("probe", config.probe)
    config.probe_ef_search = settings.get("probe_ef_search", config.probe_ef_search)
    return ConfidenceRouter(build.sources, config)


def knn(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    from ragroute.route.knn import KnnRouter
    from ragroute.route.labels import read_labelled_queries

    path = _need(settings, "examples", "knn", build)
    examples = build.resolve(path)
    problem = examples_file_problem(examples)
    if problem:
        raise RagrouteError(f"{build.where}: {problem}")
    texts, labels = read_labelled_queries(examples)
    return KnnRouter(texts, labels, build.encoder, k=int(settings.get("k", 5)))


def trained(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    from ragroute.route.trained import TrainedRouter

    model = _model(settings, "trained", build)
    return TrainedRouter.load(model, build.encoder)


def llm(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    """``llm:`` is what a config's ``llm:`` takes (:func:`~ragroute.llm.settings.llm_from_settings`):
    ``local``, ``{kind: scripted, ...}``, or ``package.module:factory`` returning a llama-index LLM."""
    from ragroute.llm.settings import llm_from_settings
    from ragroute.route.llm import LlmRouter

    spec = _need(settings, "llm", "llm", build)
    fallback = settings.get("fallback")
    problem = llm_fallback_problem(settings)
    if problem:
        raise RagrouteError(f"{build.where}: router: {problem}")
    if fallback is not None:  # an unknown fallback named as `config check` names it (until session 51 not)
        ROUTERS.check(str(fallback), f"{build.where}: router fallback" if build.where else "router fallback")
    timeout = settings.get("timeout_s")
    return LlmRouter(
        build.sources,
        llm_from_settings(spec, where=f"{build.where}: router llm", base=build.base),
        fallback=None if fallback is None else build_router(str(fallback), settings, build),
        label_probability=float(settings.get("label_probability", 0.9)),
        timeout_s=None if timeout is None else float(timeout),
    )


def llm_fallback_problem(settings: Mapping[str, Any]) -> str | None:
    """Why an llm router's ``fallback:`` cannot be built, or None. The fallback is built from the
    same settings, so a fallback that is (or holds) an llm router would build itself without end."""
    fallback = settings.get("fallback")
    if fallback is None:
        return None
    members = settings.get("members") or ["prototype", "confidence"]
    if str(fallback) == "llm" or (str(fallback) == "ensemble" and "llm" in [str(m) for m in members]):
        return (
            f"an llm router's fallback ({fallback}) cannot itself ask the LLM: name a router kind "
            "that decides without it (e.g. prototype)"
        )
    return None


#: what loading and ``config check`` both say (after ``FILE: ``) of an ensemble among an ensemble's
#: members (until session 51 loading left out ``router: ``)
ENSEMBLE_IN_ENSEMBLE = "router: an ensemble cannot contain an ensemble"


def ensemble(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    from ragroute.route.ensemble import EARLY_EXIT, EnsembleRouter

    members = settings.get("members") or ["prototype", "confidence"]
    if "ensemble" in members:
        raise RagrouteError(f"{build.where}: {ENSEMBLE_IN_ENSEMBLE}")
    for member in members:  # an unknown member named as `config check` names it (until session 51 not)
        ROUTERS.check(str(member), f"{build.where}: router members" if build.where else "router members")
    early_exit = settings.get("early_exit", EARLY_EXIT)
    return EnsembleRouter(
        [build_router(str(m), settings, build) for m in members],
        sharpness=float(settings.get("sharpness", 2.0)),
        early_exit=None if early_exit is None else float(early_exit),
    )


def fixed(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    """Always the ``routes:`` listed (all sources when omitted), equally weighted.

    A route to a configured source that failed to open (``build.failed``) is kept, as a knn or
    trained router's label is: each decision drops it (the ``unavailable-routes`` step says why)
    and the other routes share its probability (it used to refuse the whole config, calling the
    source no source)."""
    from ragroute.route.fixed import FixedRoutes

    names = [s.name for s in build.sources]
    routes = [str(r) for r in settings.get("routes") or names]
    unknown = sorted(set(routes) - set(names) - set(build.failed))
    if unknown:
        known = [*names, *(name for name in build.failed if name not in names)]
        raise RagrouteError(not_sources_message(build.where, "fixed", unknown, known))
    return FixedRoutes(routes)


def not_sources_message(where: str, named_by: str, unknown: Sequence[str], known: Sequence[str]) -> str:
    """The one line loading and ``config check`` both give for routes that name no source:
    ``FILE: fixed routes a, b are not sources (x, y)`` (``named_by`` ``fixed``) or ``FILE: 'always'
    names a, which is not a source (x, y)`` (``named_by`` ``always``)."""
    one = len(unknown) == 1
    names, listed = ", ".join(unknown), f"({', '.join(known) or 'none'})"
    is_not = "is not a source" if one else "are not sources"
    if named_by == "always":
        return f"{where}: 'always' names {names}, which {is_not} {listed}"
    return f"{where}: {named_by} {'route' if one else 'routes'} {names} {is_not} {listed}"


def pilot(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    """Pilot-embedding expert routing, from a folder written by `ragroute expert fit-router`."""
    from ragroute.route.expert_gains import check_labels
    from ragroute.route.pilot import PilotRouter

    model = _model(settings, "pilot", build)
    router = PilotRouter.load(model, build.encoder)
    if settings.get("mode"):
        router = PilotRouter(
            router.labels,
            router.pilots,
            router.owners,
            encoder=router.encoder,
            mode=str(settings["mode"]),
            temperature=router.temperature,
            encoder_info=router.encoder_info,
        )
    router.unavailable = check_labels(
        router.labels, [s.name for s in build.sources], build.where or str(model), build.failed
    )
    return router


def quality(settings: Mapping[str, Any], build: RouterBuild) -> Router:
    """Per-query expert routing by predicted nDCG, from a folder written by `ragroute expert fit-router`."""
    from ragroute.route.expert_gains import check_labels
    from ragroute.route.expert_quality import QualityRouter

    model = _model(settings, "quality", build)
    router = QualityRouter.load(model, build.encoder)
    router.unavailable = check_labels(
        router.labels, [s.name for s in build.sources], build.where or str(model), build.failed
    )
    return router


def load_saved_router(path: str | Path, encoder: Any = None) -> Router:
    """Any router saved in the artifact store (family ``router``), by the kind its manifest records."""
    from ragroute.store import artifact_exists, open_snapshot

    kind = open_snapshot(path, family="router", verify=False).manifest.kind if artifact_exists(path) else ""
    if kind == "pilot":
        from ragroute.route.pilot import PilotRouter

        return PilotRouter.load(path, encoder)
    if kind == "quality":
        from ragroute.route.expert_quality import QualityRouter

        return QualityRouter.load(path, encoder)
    from ragroute.route.trained import TrainedRouter

    return TrainedRouter.load(path, encoder)
