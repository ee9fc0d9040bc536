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

from ragroute.errors import RagrouteError, check_keys, check_listed_setting, check_setting, value_type_name
from ragroute.gate.signals import make_signal, needs_retrieval
from ragroute.gate.trained import DepthPolicy, ThresholdGate, TrainedGate, check_example_kinds

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
    "threshold": ("number", 0),
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


#: gate settings that are probabilities or shares (at most 1), and those that must be above 0
GATE_SETTING_MAXIMUM = {"threshold": 1.0, "retrieval_rate": 1.0}
GATE_SETTING_POSITIVE = ("timeout_s", "scale")


def _check(kind: str, settings: Mapping[str, Any], where: str) -> None:
    check_keys(settings, GATE_SETTINGS[kind] | {"kind"}, where, f"{kind} gate key")
    for key, value in settings.items():
        check_gate_value(key, value, where)


def check_gate_value(key: str, value: Any, where: str) -> None:
    """A one-line :class:`RagrouteError` if a plain gate setting has the wrong type or range (what
    loading refuses; ``ragroute config check`` calls it too)."""
    check_listed_setting(
        key,
        value,
        GATE_SETTING_TYPES,
        f"{where}: gate" if where else "gate",
        maxima=GATE_SETTING_MAXIMUM,
        positive=GATE_SETTING_POSITIVE,
    )


def check_depth(depth: Any, where: str) -> DepthPolicy:
    """A gate's ``depth:`` mapping as a :class:`DepthPolicy`, or one line saying what is wrong
    (loading and ``ragroute config check`` both call it)."""
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


def _depth(settings: Mapping[str, Any], where: str) -> DepthPolicy | None:
    depth = settings.get("depth")
    return None if depth is None else check_depth(depth, where)


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
    points = {key: settings.get(key) for key in ("threshold", "retrieval_rate", "retrieve_cost")}
    if any(value is not None for value in points.values()):  # else the one it was saved at
        gate = gate.with_operating_point(**points)
    if "max_steps" in settings:
        gate.max_steps = settings["max_steps"]
    depth = _depth(settings, build.where)
    if depth is not None:
        gate.depth = depth
    return gate


def _llm_signal_specs(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An LLM gate's signals as ``{kind: ..., ...}`` mappings (the gate's ``timeout_s`` for each
    that sets none)."""
    specs = []
    for spec in settings.get("signals") or ["llm_logprob", "llm_self"]:
        data = {"kind": spec} if isinstance(spec, str) else dict(spec)
        if settings.get("timeout_s") is not None:
            data.setdefault("timeout_s", settings["timeout_s"])
        specs.append(data)
    return specs


def check_llm_signal_list(signals: Any, where: str) -> None:
    """An LLM gate's ``signals:`` as a list of kind names and mappings, or one line saying what it
    is instead (until session 44 ``signals: 5`` or ``[null]`` was a traceback at load, and
    ``signals: llm_self`` read as the signals 'l', 'l', 'm'...; until session 54 ``signals: []`` was
    read as the default signals)."""
    if signals is None:
        return
    if not isinstance(signals, list):
        shown = value_type_name(signals)
    elif not signals:  # until session 54 read as the default signals, llm_logprob and llm_self
        shown = "an empty list (leave 'signals' out for the default, [llm_logprob, llm_self])"
    else:
        wrong = [item for item in signals if not isinstance(item, (str, Mapping))]
        if not wrong:
            return
        shown = f"a list holding {value_type_name(wrong[0])} ({wrong[0]!r})"
    raise RagrouteError(
        f"{where}: 'signals' must be a list of LLM signal kinds or {{kind: ...}} mappings, not {shown}"
    )


def check_llm_gate_signals(settings: Mapping[str, Any], where: str) -> None:
    """An LLM gate's signals built without an LLM (their settings and prompts checked), and its
    ``weights:`` naming only those signals (a weight of another name was silently unused); one
    line each, for loading and ``ragroute config check`` alike."""
    from ragroute.gate.llm_signals import (
        ZERO_WEIGHTS,
        make_llm_signal,
        repeated_kind,
        unknown_weight,
        weighted_zero,
    )

    check_llm_signal_list(settings.get("signals"), where)
    kinds = []
    for data in _llm_signal_specs(settings):
        try:
            kinds.append(make_llm_signal(data, None).kind)
        except RagrouteError as exc:
            raise RagrouteError(f"{where}: {exc}") from None
    twice = repeated_kind(kinds)
    if twice:
        raise RagrouteError(f"{where}: signals: {twice}")
    weights = settings.get("weights")
    if weights is None:
        return
    if not isinstance(weights, Mapping):
        raise RagrouteError(f"{where}: 'weights:' must map signal kinds to numbers")
    unknown = unknown_weight(weights, kinds)
    if unknown:
        raise RagrouteError(f"{where}: {unknown}")
    for name, value in weights.items():
        check_setting(value, "number", f"{where}: weights", str(name), minimum=0)
    if weighted_zero(weights, kinds):
        raise RagrouteError(f"{where}: weights: {ZERO_WEIGHTS}")


def read_examples(path: Any) -> tuple[list[str], list[bool]]:
    """A threshold gate's ``examples:`` file (LABELS format): texts and whether each needs
    retrieval, both kinds present (loading and ``ragroute config check`` both read it so)."""
    from ragroute.route.labels import read_labelled_queries

    texts, labels = read_labelled_queries(path)
    flags = [needs_retrieval(label) for label in labels]
    check_example_kinds(flags)
    return texts, flags


def threshold(settings: Mapping[str, Any], build: Any) -> ThresholdGate:
    """A threshold over one signal value (``signal:``, ``value:``, ``above:`` or ``below:``)."""
    _check("threshold", settings, build.where)
    if "signal" not in settings:
        raise RagrouteError(f"{build.where}: a threshold gate needs 'signal:' (e.g. rarity, knn_vote)")
    signal = make_signal(settings["signal"], encoder=build.encoder, sources=build.sources)
    examples = None
    if "examples" in settings:
        examples = read_examples(build.resolve(settings["examples"]))
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
    from ragroute.pipeline.build import stage_kind_problem
    from ragroute.registry import GATES

    _check("llm", settings, build.where)
    check_llm_gate_signals(settings, f"{build.where}: gate" if build.where else "gate")
    model = llm_from_settings(settings.get("llm"), where=f"{build.where}: gate llm", base=build.base)
    signals = [make_llm_signal(data, model) for data in _llm_signal_specs(settings)]
    fallback = None
    if settings.get("fallback") is not None:
        spec = settings["fallback"]
        if not isinstance(spec, Mapping) or "kind" not in spec:
            # the line `config check` gives (until session 51 worded apart)
            raise RagrouteError(f"{build.where}: gate: fallback: {stage_kind_problem('gate')}")
        if spec["kind"] == "llm":
            raise RagrouteError(f"{build.where}: gate: fallback: an LLM gate's fallback must not need an LLM")
        fallback = GATES.get(str(spec["kind"]), build.where)(spec, build)
    return LLMGate(
        signals,
        fallback=fallback,
        threshold=float(settings.get("threshold", 0.5)),
        weights=settings.get("weights"),
        depth=_depth(settings, build.where),
        max_steps=settings.get("max_steps"),
    )
