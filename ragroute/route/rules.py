"""Routing policy as configuration: Boolean rules over cheap signals, with priorities.

A policy file names signals (see :mod:`ragroute.route.signals`) and rules; a
deployment changes routing by editing the file, not the code::

    rules:
      - name: printers
        priority: 10                       # higher first; ties keep file order
        when: {all: [mentions_printer, {not: short}]}
        then: {route: it_helpdesk}         # or routes: [a, b] / route: none / defer: true

A condition is a signal name, ``{all: [...]}``, ``{any: [...]}``, ``{not: C}``,
``{rule: NAME}`` (that rule's condition holds) or ``true``/``false``. Every rule
is evaluated; the highest-priority fired rule whose action is ``route``/``routes``
or ``route: none`` decides, and ``boost``/``block`` of every fired ``defer`` rule
are collected for the router. Mistakes fail at load with the file and line, e.g.
``routing.yaml line 20: rule cycle a -> b -> a``; other top-level keys
(``sources:``, ``router:``...) are ignored here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ragroute.errors import check_query, number_text_hint, unknown_keys_message
from ragroute.route.policy import PolicyError, item_line, key_line, line_of, load_yaml, value_line
from ragroute.route.signals import (
    BankStore,
    Signal,
    SignalContext,
    SignalResult,
    encode_texts,
    parse_signal,
    yaml_boolean_hint,
)
from ragroute.types import TraceStep

RULE_KEYS = ("name", "priority", "when", "then", "description")
ACTION_KEYS = ("route", "routes", "defer", "boost", "block")
OPERATORS = ("all", "any", "not", "rule")
NO_ROUTE = "none"
#: the words YAML (PyYAML: 1.1) reads as each boolean, besides true and false (the documented constants)
_YAML_BOOL_WORDS = {True: ("yes", "on"), False: ("no", "off")}


def _fail(source: str, line: int | None, problem: str) -> NoReturn:
    raise PolicyError(problem, source=source, line=line)


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """A node of a rule's ``when`` tree.

    ``op`` is ``signal`` (``name`` fires), ``rule`` (rule ``name``'s condition
    holds), ``all``, ``any``, ``not`` (over ``items``) or ``const`` (``value``).
    """

    op: str
    name: str = ""
    items: tuple[Condition, ...] = ()
    value: bool = False
    line: int | None = None

    def holds(self, signals: Mapping[str, bool], rule_holds: Callable[[str], bool]) -> bool:
        """Evaluate against fired signals; ``rule_holds`` answers ``{rule: NAME}``."""
        if self.op == "signal":
            return signals[self.name]
        if self.op == "rule":
            return rule_holds(self.name)
        if self.op == "all":
            return all(item.holds(signals, rule_holds) for item in self.items)
        if self.op == "any":
            return any(item.holds(signals, rule_holds) for item in self.items)
        if self.op == "not":
            return not self.items[0].holds(signals, rule_holds)
        return self.value

    def refs(self, op: str) -> list[tuple[str, int | None]]:
        """``(name, line)`` of every ``signal`` or ``rule`` reference in the tree, in order."""
        if self.op == op:
            return [(self.name, self.line)]
        return [ref for item in self.items for ref in item.refs(op)]


def parse_condition(
    value: Any, line: int | None, rule: str, signals: Mapping[str, Signal], source: str
) -> Condition:
    """Build a condition tree; ``line`` is where ``value`` starts."""
    if isinstance(value, bool):
        # `when: on` with a signal named 'on' (a quoted key) was the constant true: fired always
        shadowed = [name for name in signals if name.strip().lower() in _YAML_BOOL_WORDS[value]]
        if shadowed:
            _fail(
                source,
                line,
                f"rule {rule!r}: YAML reads this condition as the boolean {str(value).lower()} "
                f"and a signal is named {shadowed[0]!r}: quote the name to use the signal, or rename it",
            )
        return Condition("const", value=value, line=line)
    if isinstance(value, str):
        name = value.strip()
        if name not in signals:
            _fail(source, line, f"rule {rule!r} uses unknown signal {name!r}")
        return Condition("signal", name=name, line=line)
    if not isinstance(value, Mapping) or len(value) != 1:
        _fail(
            source,
            line_of(value) or line,
            f"rule {rule!r}: a condition is a signal name or a mapping with one of {', '.join(OPERATORS)}",
        )
    op, arg = next(iter(value.items()))
    arg_line = value_line(value, op) or line
    if op in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            _fail(source, arg_line, f"rule {rule!r}: '{op}' needs a non-empty list of conditions")
        items = tuple(
            parse_condition(item, item_line(arg, i, arg_line), rule, signals, source)
            for i, item in enumerate(arg)
        )
        return Condition(op, items=items, line=arg_line)
    if op == "not":
        return Condition("not", items=(parse_condition(arg, arg_line, rule, signals, source),), line=arg_line)
    if op == "rule":
        if not isinstance(arg, str) or not arg.strip():
            _fail(source, arg_line, f"rule {rule!r}: 'rule' needs a rule name")
        return Condition("rule", name=arg.strip(), line=arg_line)
    _fail(
        source,
        key_line(value, op) or line,
        f"rule {rule!r}: {unknown_keys_message([op], OPERATORS, 'condition operator')}",
    )


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    """What a fired rule asks for: ``route`` (``routes``), ``none`` (no retrieval) or ``defer``.

    ``refs`` keeps ``(verb, source name, line)`` of every name the action mentions,
    so :meth:`Policy.validate_routes` can point at the line.
    """

    kind: str
    routes: tuple[str, ...] = ()
    boost: Mapping[str, float] = field(default_factory=dict)
    block: tuple[str, ...] = ()
    refs: tuple[tuple[str, str, int | None], ...] = ()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind, "routes": list(self.routes)}
        if self.boost:
            out["boost"] = dict(self.boost)
        if self.block:
            out["block"] = list(self.block)
        return out


def _route_name(value: Any, line: int | None, rule: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(
            source,
            line,
            f"rule {rule!r}: route names must be non-empty strings, got {value!r}{yaml_boolean_hint(value)}",
        )
    return value.strip()


def _parse_routes(then: Mapping[str, Any], rule: str, source: str) -> Action:
    if "route" in then:
        line = value_line(then, "route")
        if then["route"] is None:  # an empty `route:` read as null was taken for `none` (no retrieval)
            _fail(
                source,
                line or key_line(then, "route"),
                f"rule {rule!r}: 'route' is empty: name a source or none",
            )
        if isinstance(then["route"], str) and then["route"].strip() == NO_ROUTE:
            return Action("none")
        name = _route_name(then["route"], line, rule, source)
        return Action("route", routes=(name,), refs=(("routes to", name, line),))
    value, line = then["routes"], value_line(then, "routes")
    if not isinstance(value, list) or not value:
        _fail(source, line, f"rule {rule!r}: 'routes' must be a non-empty list of route names")
    names = [_route_name(item, item_line(value, i, line), rule, source) for i, item in enumerate(value)]
    for i, name in enumerate(names):
        if name == NO_ROUTE:
            _fail(
                source, item_line(value, i, line), f"rule {rule!r}: use 'route: none' alone, not in 'routes'"
            )
        if name in names[:i]:
            _fail(source, item_line(value, i, line), f"rule {rule!r} lists route {name!r} twice")
    refs = tuple(("routes to", name, item_line(value, i, line)) for i, name in enumerate(names))
    return Action("route", routes=tuple(names), refs=refs)


def _parse_boost(then: Mapping[str, Any], rule: str, source: str) -> tuple[dict[str, float], list[tuple]]:
    value, line = then["boost"], value_line(then, "boost")
    if not isinstance(value, Mapping) or not value:
        _fail(source, line, f"rule {rule!r}: 'boost' must be a mapping of route name to weight")
    boost: dict[str, float] = {}
    refs = []
    for name, weight in value.items():
        name_line = key_line(value, name)
        name = _route_name(name, name_line, rule, source)
        if name in boost:  # `{wiki: 1, ' wiki': 2}`: one weight was silently dropped
            _fail(source, name_line, f"rule {rule!r} boosts route {name!r} twice")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            # .inf made the boosted route's probability NaN and sent the query elsewhere (session 37)
            _fail(
                source,
                value_line(value, name),
                f"rule {rule!r}: boost for {name!r} must be a finite number{number_text_hint(weight)}",
            )
        boost[name] = float(weight)
        refs.append(("boosts", name, name_line))
    return boost, refs


def _parse_block(then: Mapping[str, Any], rule: str, source: str) -> tuple[list[str], list[tuple]]:
    value, line = then["block"], value_line(then, "block")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        _fail(source, line, f"rule {rule!r}: 'block' must be a non-empty list of route names")
    names = [_route_name(item, item_line(value, i, line), rule, source) for i, item in enumerate(value)]
    return names, [("blocks", name, item_line(value, i, line)) for i, name in enumerate(names)]


def parse_action(then: Any, line: int | None, rule: str, source: str) -> Action:
    """Build a rule's action from its ``then`` mapping; ``line`` is where it starts."""
    if not isinstance(then, Mapping):
        _fail(source, line, f"rule {rule!r}: 'then' must be a mapping with route, routes or defer")
    for key in then:
        if key not in ACTION_KEYS:
            _fail(
                source,
                key_line(then, key),
                f"rule {rule!r}: {unknown_keys_message([key], ACTION_KEYS, 'action key')}",
            )
    chosen = [key for key in ("route", "routes", "defer") if key in then]
    if len(chosen) != 1:
        _fail(source, line, f"rule {rule!r}: 'then' needs exactly one of route, routes, defer")
    if chosen[0] != "defer":
        extra = [key for key in ("boost", "block") if key in then]
        if extra:
            _fail(
                source, key_line(then, extra[0]), f"rule {rule!r}: '{extra[0]}' only goes with 'defer: true'"
            )
        return _parse_routes(then, rule, source)
    if then["defer"] is not True:
        _fail(source, value_line(then, "defer"), f"rule {rule!r}: 'defer' must be true")
    boost, boost_refs = _parse_boost(then, rule, source) if "boost" in then else ({}, [])
    block, block_refs = _parse_block(then, rule, source) if "block" in then else ([], [])
    return Action("defer", boost=boost, block=tuple(block), refs=tuple(boost_refs + block_refs))


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One rule: when ``when`` holds, it fires and asks for ``then``."""

    name: str
    when: Condition
    then: Action
    priority: int = 0
    line: int | None = None
    index: int = 0
    description: str = ""


def parse_rule(spec: Any, line: int | None, index: int, signals: Mapping[str, Signal], source: str) -> Rule:
    """Build one rule from its YAML mapping; ``line`` is where the list item starts."""
    if not isinstance(spec, Mapping):
        _fail(source, line, "each rule must be a mapping with name, priority, when, then")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        _fail(
            source,
            value_line(spec, "name") or line,
            f"rule #{index + 1} needs a 'name' (a non-empty string){yaml_boolean_hint(name)}",
        )
    name = name.strip()
    for key in spec:
        if key not in RULE_KEYS:
            _fail(
                source,
                key_line(spec, key),
                f"rule {name!r}: {unknown_keys_message([key], RULE_KEYS)}",
            )
    for key in ("when", "then"):
        if key not in spec:
            _fail(source, line, f"rule {name!r} needs '{key}'")
    priority = spec.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        _fail(
            source,
            value_line(spec, "priority"),
            f"rule {name!r}: priority must be an integer, got {priority!r}",
        )
    description = spec.get("description", "")
    if not isinstance(description, str):
        _fail(source, value_line(spec, "description"), f"rule {name!r}: 'description' must be a string")
    return Rule(
        name=name,
        when=parse_condition(spec["when"], value_line(spec, "when"), name, signals, source),
        then=parse_action(spec["then"], value_line(spec, "then"), name, source),
        priority=priority,
        line=line,
        index=index,
        description=description.strip(),
    )


def _check_rule_refs(rules: Sequence[Rule], source: str) -> None:
    """Unknown rule references and reference cycles (including a rule naming itself)."""
    by_name = {rule.name: rule for rule in rules}
    for rule in rules:
        for ref, line in rule.when.refs("rule"):
            if ref not in by_name:
                _fail(source, line, f"rule {rule.name!r} refers to unknown rule {ref!r}")
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for ref, line in by_name[name].when.refs("rule"):
            if state.get(ref) == 1:
                cycle = [*path[path.index(ref) :], ref]
                text = " -> ".join(cycle)
                if len(cycle) == 2:
                    _fail(source, line, f"rule {ref!r} refers to itself (rule cycle {text})")
                _fail(source, line, f"rule cycle {text}")
            if ref not in state:
                visit(ref)
        path.pop()
        state[name] = 2

    for rule in rules:
        if rule.name not in state:
            visit(rule.name)


# --------------------------------------------------------------------------- results


@dataclass
class PolicyResult:
    """What a policy decided for one query, and why.

    ``action`` is ``route`` (query ``routes``), ``none`` (answer without
    retrieval) or ``defer`` (let the router decide, after adding ``boosts`` to
    and removing ``blocks`` from its scores: see :meth:`apply`). ``fired`` lists
    the fired rules, highest priority first, as ``{"rule": name, "priority": p}``;
    ``decided_by`` names the rule that chose ``route``/``none``.
    """

    action: str
    routes: list[str] = field(default_factory=list)
    fired: list[dict[str, Any]] = field(default_factory=list)
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    boosts: dict[str, float] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    trace: list[TraceStep] = field(default_factory=list)
    decided_by: str | None = None

    @property
    def fired_names(self) -> list[str]:
        return [entry["rule"] for entry in self.fired]

    def apply(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Router scores with blocked routes removed and boosts added (unknown names are ignored)."""
        blocked = set(self.blocks)
        return {
            name: score + self.boosts.get(name, 0.0) for name, score in scores.items() if name not in blocked
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "routes": list(self.routes),
            "decided_by": self.decided_by,
            "fired": [dict(entry) for entry in self.fired],
            "signals": {name: dict(value) for name, value in self.signals.items()},
            "boosts": dict(self.boosts),
            "blocks": list(self.blocks),
            "trace": [step.to_dict() for step in self.trace],
        }


# --------------------------------------------------------------------------- policy


def _looks_like_path(value: str | Path) -> bool:
    if isinstance(value, Path):
        return True
    if "\n" in value or ": " in value or not value.strip():
        return False
    if value.endswith((".yaml", ".yml")):
        return True
    try:
        return Path(value).is_file()
    except OSError:
        return False


class Policy:
    """Named signals and prioritised rules, evaluated per query into a :class:`PolicyResult`.

    ``encoder`` (anything with ``encode_queries``) is only needed by
    ``example_bank`` and ``bank_margin`` signals; their banks are embedded once,
    on first use, and again only if the encoder is replaced.
    """

    def __init__(
        self,
        signals: Mapping[str, Signal] | Iterable[Signal],
        rules: Sequence[Rule],
        *,
        source: str = "policy",
        encoder: Any = None,
    ) -> None:
        self.signals: dict[str, Signal] = (
            dict(signals) if isinstance(signals, Mapping) else {signal.name: signal for signal in signals}
        )
        self.rules: list[Rule] = list(rules)
        self.source = source
        self._check()
        self._by_name = {rule.name: rule for rule in self.rules}
        self._banks = BankStore(self.signals.values())
        self._encoder = encoder
        used = {name for rule in self.rules for name, _ in rule.when.refs("signal")}
        self.used_signals: list[str] = [name for name in self.signals if name in used]

    def _check(self) -> None:
        seen: dict[str, Rule] = {}
        for rule in self.rules:
            if rule.name in seen:
                _fail(
                    self.source,
                    rule.line,
                    f"duplicate rule name {rule.name!r} (first at line {seen[rule.name].line})",
                )
            seen[rule.name] = rule
            for name, line in rule.when.refs("signal"):
                if name not in self.signals:
                    _fail(self.source, line, f"rule {rule.name!r} uses unknown signal {name!r}")
        _check_rule_refs(self.rules, self.source)

    # ----------------------------------------------------------------- loading

    @classmethod
    def from_yaml(
        cls, path_or_text: str | Path, *, encoder: Any = None, source_name: str | None = None
    ) -> Policy:
        """Load a policy from a YAML file path or from YAML text."""
        if _looks_like_path(path_or_text):
            path = Path(path_or_text)
            source = source_name or str(path_or_text)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise PolicyError(f"cannot read policy file: {exc.strerror}", source=source) from None
            except UnicodeDecodeError:
                raise PolicyError("policy file is not valid UTF-8", source=source) from None
        else:
            text, source = str(path_or_text), source_name or "<policy>"
        return cls.from_dict(load_yaml(text, source), source_name=source, encoder=encoder)

    @classmethod
    def from_dict(cls, mapping: Any, *, source_name: str = "policy", encoder: Any = None) -> Policy:
        """Build a policy from parsed YAML (line numbers are reported when it was loaded with them)."""
        source = source_name
        if not isinstance(mapping, Mapping):
            _fail(source, line_of(mapping), "a policy must be a mapping with 'signals:' and 'rules:'")
        signal_specs = mapping.get("signals") or {}
        if not isinstance(signal_specs, Mapping):
            _fail(source, value_line(mapping, "signals"), "'signals' must be a mapping of names to signals")
        rule_specs = mapping.get("rules") or []
        if not isinstance(rule_specs, list):
            _fail(source, value_line(mapping, "rules"), "'rules' must be a list of rules")
        signals = {
            name: parse_signal(name, spec, source, key_line(signal_specs, name))
            for name, spec in signal_specs.items()
        }
        rules = [
            parse_rule(spec, item_line(rule_specs, i), i, signals, source)
            for i, spec in enumerate(rule_specs)
        ]
        return cls(signals, rules, source=source, encoder=encoder)

    # ----------------------------------------------------------------- properties

    @property
    def encoder(self) -> Any:
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: Any) -> None:
        if encoder is not self._encoder:
            self._banks.reset()
        self._encoder = encoder

    @property
    def needs_encoder(self) -> bool:
        """Whether any signal used by a rule compares embeddings."""
        return any(self.signals[name].uses_encoder for name in self.used_signals)

    def route_names(self) -> set[str]:
        """Every route name the rules mention (routes, boosts and blocks)."""
        return {name for rule in self.rules for _, name, _ in rule.then.refs}

    def validate_routes(self, known_names: Iterable[str]) -> None:
        """Raise :class:`PolicyError` (with the line) for a route name not in ``known_names``."""
        known = set(known_names)
        for rule in self.rules:
            for verb, name, line in rule.then.refs:
                if name not in known:
                    listed = ", ".join(sorted(known)) or "(none)"
                    _fail(
                        self.source,
                        line,
                        f"rule {rule.name!r} {verb} unknown source {name!r}; known: {listed}",
                    )

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, query: str, *, query_vector: Any = None, all_signals: bool = False) -> PolicyResult:
        """Compute the signals the rules use (all signals if ``all_signals``) and apply the rules.

        ``query_vector`` is the query's embedding if the caller already has it;
        otherwise the encoder runs at most once, and only if a bank signal is used.
        """
        text = check_query(query)
        ctx = SignalContext(
            text, encoder=self._encoder, query_vector=query_vector, banks=self._banks, source=self.source
        )
        names = list(self.signals) if all_signals else self.used_signals
        results = {name: self.signals[name].evaluate(ctx) for name in names}
        return self._decide(results, ctx.vector_origin)

    def evaluate_batch(
        self, queries: Sequence[str], *, query_vectors: Any = None, all_signals: bool = False
    ) -> list[PolicyResult]:
        """:meth:`evaluate` for many queries, embedding them in one encoder call when needed."""
        texts = [check_query(query) for query in queries]
        if query_vectors is None and texts and self._encoder is not None and self._needs_vectors(all_signals):
            query_vectors = encode_texts(self._encoder, texts)
        if query_vectors is not None and len(query_vectors) != len(texts):
            raise PolicyError(
                f"got {len(query_vectors)} query vectors for {len(texts)} queries", source=self.source
            )
        return [
            self.evaluate(
                text,
                query_vector=None if query_vectors is None else query_vectors[i],
                all_signals=all_signals,
            )
            for i, text in enumerate(texts)
        ]

    def _needs_vectors(self, all_signals: bool) -> bool:
        names = list(self.signals) if all_signals else self.used_signals
        return any(self.signals[name].uses_encoder for name in names)

    def _holds_fn(self, fired: Mapping[str, bool]) -> Callable[[str], bool]:
        memo: dict[str, bool] = {}

        def holds(name: str) -> bool:
            if name not in memo:
                memo[name] = self._by_name[name].when.holds(fired, holds)
            return memo[name]

        return holds

    def _decide(self, results: Mapping[str, SignalResult], vector_origin: str) -> PolicyResult:
        holds = self._holds_fn({name: result.fired for name, result in results.items()})
        fired = sorted(
            (rule for rule in self.rules if holds(rule.name)), key=lambda r: (-r.priority, r.index)
        )
        deciding = next((rule for rule in fired if rule.then.kind != "defer"), None)
        boosts: dict[str, float] = {}
        blocks: list[str] = []
        for rule in fired:
            for name, weight in rule.then.boost.items():
                boosts[name] = boosts.get(name, 0.0) + weight
            blocks.extend(name for name in rule.then.block if name not in blocks)
        action = deciding.then.kind if deciding else "defer"
        routes = list(deciding.then.routes) if deciding else []
        trace = [
            TraceStep("signal", {"signal": name, **result.to_dict()}) for name, result in results.items()
        ]
        for rule in fired:
            described = {"description": rule.description} if rule.description else {}
            detail = {"rule": rule.name, **described, "priority": rule.priority, **rule.then.describe()}
            trace.append(TraceStep("rule", {**detail, "decides": rule is deciding}))
        trace.append(
            TraceStep(
                "policy",
                {
                    "action": action,
                    "routes": routes,
                    "decided_by": deciding.name if deciding else None,
                    "query_vector": vector_origin,
                },
            )
        )
        return PolicyResult(
            action=action,
            routes=routes,
            fired=[{"rule": rule.name, "priority": rule.priority} for rule in fired],
            signals={name: result.to_dict() for name, result in results.items()},
            boosts=boosts,
            blocks=blocks,
            trace=trace,
            decided_by=deciding.name if deciding else None,
        )
