"""Gate factories: how each registered gate kind is built from a ``gate:`` settings mapping.

Each entry of :data:`ragroute.registry.GATES` is ``factory(settings, build) -> Gate``,
``build`` being the :class:`~ragroute.route.factories.RouterBuild` of the pipeline
(its sources, encoder, and the config's folder for relative paths)::

    gate: {kind: trained, path: gates/mine, retrieval_rate: 0.7, max_steps: 4}
    gate: {kind: threshold, signal: rarity, value: min_zipf, below: 3.0}
    gate: {kind: threshold, signal: {kind: knn_vote, k: 10}, above: 0.5, examples: labels.jsonl}
    gate: {kind: llm, llm: {kind: local}, signals: [llm_logprob, llm_self],
           fallback: {kind: threshold, signal: rarity, value: min_zipf, below: 3.0}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ragroute.errors import RagrouteError, check_keys, check_setting
from ragroute.gate.signals import make_signal, needs_retrieval
from ragroute.gate.trained import DepthPolicy, ThresholdGate, TrainedGate

#: the keys of a gate's ``depth:`` mapping (:class:`~ragroute.gate.trained.DepthPolicy`)
DEPTH_KEYS = frozenset(f.name for f in fields(DepthPolicy))

GATE_SETTINGS: dict[str, set[str]] = {
    "trained": {"path", "signals", "threshold", "retrieval_rate", "retrieve_cost", "max_steps", "depth"},
    "threshold": {"signal", "value", "above", "below", "scale", "examples", "max_steps", "depth"},
    "llm": {"llm", "signals", "fallback", "threshold", "weights", "timeout_s", "max_steps", "depth"},
}


#: the type of each plain gate setting (``signal``, ``signals``, ``llm``, ``fallback``, ``weights``
#: and ``depth`` are structured and checked where they are read)
GATE_SETTING_TYPES: dict[str, tuple[str, float | None]] = {
    "path": ("string", None),
    "threshold": ("number", None),
    "retrieval_rate": ("number", 0),
    "retrieve_cost": ("number", 0),
    "max_steps": ("integer", 1),
    "value": ("string", None),
    "above": ("number", None),
    "below": ("number", None),
    "scale": ("number", None),
    "examples": ("string", None),
    "timeout_s": ("number", 0),
}


def _check(kind: str, settings: Mapping[str, Any], where: str) -> None:
    check_keys(settings, GATE_SETTINGS[kind] | {"kind"}, where, f"{kind} gate key")
    for key, value in settings.items():
        check_gate_value(key, value, where)


def check_gate_value(key: str, value: Any, where: str) -> None:
    """A one-line :class:`RagrouteError` if a plain gate setting has the wrong type or range (what
    loading refuses; ``ragroute config check`` calls it too)."""
    if key in GATE_SETTING_TYPES:
        expected, minimum = GATE_SETTING_TYPES[key]
        check_setting(value, expected, f"{where}: gate" if where else "gate", key, minimum=minimum)


def _depth(settings: Mapping[str, Any], where: str) -> DepthPolicy | None:
    depth = settings.get("depth")
    if depth is None:
        return None
    if not isinstance(depth, Mapping):
        raise RagrouteError(f"{where}: gate 'depth:' must be a mapping (shallow_k, deep_k, deep_steps, ...)")
    check_keys(depth, DEPTH_KEYS, f"{where}: gate 'depth:'")
    for key, value in depth.items():
        optional = key in ("shallow_k", "deep_k")
        check_setting(value, "integer", f"{where}: gate 'depth:'", key, minimum=1, optional=optional)
    try:
        return DepthPolicy(**depth)
    except TypeError as exc:
        raise RagrouteError(f"{where}: gate 'depth:' {exc}") from None


def trained(settings: Mapping[str, Any], build: Any) -> TrainedGate:
    """A gate saved by ``ragroute gate fit`` (``path:``), at its default or a configured operating point."""
    _check("trained", settings, build.where)
    if "path" not in settings:
        raise RagrouteError(
            f"{build.where}: a trained gate needs 'path:' (a folder written by `ragroute gate fit`)"
        )
    gate = TrainedGate.load(
        build.resolve(settings["path"]),
        build.encoder,
        signals=settings.get("signals"),
        sources=build.sources,
    )
    gate = gate.with_operating_point(
        threshold=settings.get("threshold"),
        retrieval_rate=settings.get("retrieval_rate"),
        retrieve_cost=settings.get("retrieve_cost"),
    )
    if "max_steps" in settings:
        gate.max_steps = settings["max_steps"]
    depth = _depth(settings, build.where)
    if depth is not None:
        gate.depth = depth
    return gate


def threshold(settings: Mapping[str, Any], build: Any) -> ThresholdGate:
    """A threshold over one signal value (``signal:``, ``value:``, ``above:`` or ``below:``)."""
    _check("threshold", settings, build.where)
    if "signal" not in settings:
        raise RagrouteError(f"{build.where}: a threshold gate needs 'signal:' (e.g. rarity, knn_vote)")
    signal = make_signal(settings["signal"], encoder=build.encoder, sources=build.sources)
    examples = None
    if "examples" in settings:
        from ragroute.route.labels import read_labelled_queries

        texts, labels = read_labelled_queries(build.resolve(settings["examples"]))
        examples = (texts, [needs_retrieval(label) for label in labels])
    return ThresholdGate(
        signal,
        settings.get("value"),
        above=settings.get("above"),
        below=settings.get("below"),
        scale=float(settings.get("scale", 1.0)),
        encoder=build.encoder,
        examples=examples,
        depth=_depth(settings, build.where),
        max_steps=settings.get("max_steps"),
    )


def llm(settings: Mapping[str, Any], build: Any) -> Any:
    """An :class:`~ragroute.gate.llm_signals.LLMGate`: LLM signals (default ``llm_logprob`` and
    ``llm_self``) over ``llm:`` (a :func:`~ragroute.llm.settings.llm_from_settings` mapping; default
    the local LLM), falling back to the ``fallback:`` gate (default the rarity threshold)."""
    from ragroute.gate.llm_signals import LLMGate, make_llm_signal
    from ragroute.llm.settings import llm_from_settings
    from ragroute.registry import GATES

    _check("llm", settings, build.where)
    model = llm_from_settings(settings.get("llm"), where=f"{build.where}: gate llm")
    timeout = settings.get("timeout_s")
    signals = []
    for spec in settings.get("signals") or ["llm_logprob", "llm_self"]:
        data = {"kind": spec} if isinstance(spec, str) else dict(spec)
        if timeout is not None:
            data.setdefault("timeout_s", timeout)
        signals.append(make_llm_signal(data, model))
    fallback = None
    if settings.get("fallback") is not None:
        spec = settings["fallback"]
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise RagrouteError(f"{build.where}: gate 'fallback:' must be a gate mapping with 'kind:'")
        if spec["kind"] == "llm":
            raise RagrouteError(f"{build.where}: an LLM gate's fallback must not need an LLM")
        fallback = GATES.get(str(spec["kind"]), build.where)(spec, build)
    return LLMGate(
        signals,
        fallback=fallback,
        threshold=float(settings.get("threshold", 0.5)),
        weights=settings.get("weights"),
        depth=_depth(settings, build.where),
        max_steps=settings.get("max_steps"),
    )
