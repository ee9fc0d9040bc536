"""Registries: one place per kind of pluggable part, read by configs, the CLI and artifact loading.

Each :class:`Registry` maps a name to an implementation given as a
``"module:attribute"`` reference, imported on first use (so listing the choices,
e.g. for ``--help``, imports nothing heavy, and the registry module imports no
implementation). Asking for an unknown name raises :class:`UnknownKindError`
listing the registered ones. Adding a kind is one module plus one line here (or
one :meth:`Registry.register` call from user code).

What each registry's entries are:

* ``INDEX_KINDS``: classes with ``read(snapshot, encoder, name)`` (artifact family ``index``);
* ``SOURCE_KINDS``: ``open(request) -> OpenedSource`` per kind of routing-config source
  (``index`` folders, ``llamaindex`` / ``langchain`` / ``python`` factories; see
  :mod:`ragroute.route.source_kinds`);
* ``ROUTERS``: ``factory(settings, build_context) -> Router`` (see :mod:`ragroute.route.factories`);
* ``FUSIONS``: ``fuse(results, weights=..., limit=..., **options) -> list[Hit]``;
* ``RERANKERS`` / ``GATES``: ``factory(settings, build_context)`` returning a pipeline stage;
* ``EXTRACTORS``: graph phrase/fact extractors, classes with ``from_description(dict)``
  (see :mod:`ragroute.graph.extract`);
* ``SIGNALS``: policy signal classes (see :mod:`ragroute.route.signals`);
* ``ARTIFACTS``: ``load(path, **kwargs)`` per artifact family;
* ``RELEASES``: ``release(removed, kept)`` per artifact family whose builds hold something outside
  their folder (an index's external store collection): called with the manifest of a build the
  artifact store has just pruned and those of the builds it keeps;
* ``BENCHMARKS``: click commands of ``ragroute bench``.

Extensions outside ragroute register themselves when imported; :func:`load_plugins` imports them
before the first lookup of any registry (so YAML configs, CLI choices and artifact loading see
them): every entry point of the group :data:`PLUGIN_GROUP` of an installed package, then every
module named in the environment variable :data:`PLUGINS_ENV` (comma-separated).
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from ragroute.errors import UnknownKindError

#: the entry-point group of installed extensions (``[project.entry-points."ragroute.plugins"]``)
PLUGIN_GROUP = "ragroute.plugins"
#: extension modules to import, comma-separated (``RAGROUTE_PLUGINS=myext,other.module``)
PLUGINS_ENV = "RAGROUTE_PLUGINS"
_plugins_loaded = False
_plugins_loading = False
_plugins_lock = threading.RLock()
_plugin_errors: list[str] = []


def load_plugins() -> None:
    """Import the extensions (entry points of :data:`PLUGIN_GROUP`, modules in ``$RAGROUTE_PLUGINS``)
    once per process; each registers its kinds on import. One that fails to import is skipped and
    its error kept: an unknown kind's :class:`UnknownKindError` then says it (importing the CLI,
    which lists kinds as choices, never fails on it). Another thread looking a kind up meanwhile
    waits for the plugins (until session 42 it found the loading begun and looked the kind up
    before the plugin had registered it)."""
    global _plugins_loaded, _plugins_loading
    if _plugins_loaded:
        return
    with _plugins_lock:
        if _plugins_loaded or _plugins_loading:  # loading: a plugin looking a kind up does not recurse
            return
        _plugins_loading = True
        try:
            _import_plugins()
        finally:
            _plugins_loaded = True
            _plugins_loading = False


def _import_plugins() -> None:
    from importlib.metadata import entry_points

    named = [(f"entry point {ep.name} ({ep.value})", ep.load) for ep in entry_points(group=PLUGIN_GROUP)]
    for module in os.environ.get(PLUGINS_ENV, "").split(","):
        if module.strip():
            named.append((f"{PLUGINS_ENV} module {module.strip()!r}", _importer(module.strip())))
    for what, load in named:
        try:
            load()
        except Exception as exc:  # a broken extension: said where its kinds are missed
            _plugin_errors.append(f"cannot load ragroute plugin {what}: {type(exc).__name__}: {exc}")


def _importer(module: str) -> Any:
    return lambda: importlib.import_module(module)


class Registry:
    """Named implementations of one kind of part, imported lazily."""

    def __init__(self, kind: str, entries: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._refs: dict[str, str | Any] = dict(entries or {})
        self._loaded: dict[str, Any] = {}

    def register(self, name: str, target: Any, *, replace: bool = False) -> Any:
        """Register ``target`` (an object or a ``"module:attribute"`` string) under ``name``."""
        if name in self._refs and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._refs[name] = target
        self._loaded.pop(name, None)
        return target

    def unregister(self, name: str) -> None:
        self._refs.pop(name, None)
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        load_plugins()
        return list(self._refs)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._refs

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(self._refs)

    def check(self, name: str, where: str = "") -> str:
        """``name`` if registered, else :class:`UnknownKindError` listing the registered names."""
        load_plugins()
        if name not in self._refs:
            prefix = f"{where}: " if where else ""
            close = difflib.get_close_matches(str(name), [str(n) for n in self._refs], n=1, cutoff=0.6)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            broken = "".join(f" ({error})" for error in _plugin_errors)
            raise UnknownKindError(
                f"{prefix}unknown {self.kind} {name!r}: registered ones are "
                f"{', '.join(self._refs) or 'none'}{guess}{broken}"
            )
        return name

    def get(self, name: str, where: str = "") -> Any:
        """The implementation registered as ``name`` (imported on first use)."""
        self.check(name, where)
        if name not in self._loaded:
            ref = self._refs[name]
            if isinstance(ref, str):
                module, _, attribute = ref.partition(":")
                ref = importlib.import_module(module)
                for part in attribute.split("."):  # "Class.method" references are allowed
                    ref = getattr(ref, part)
            self._loaded[name] = ref
        return self._loaded[name]


INDEX_KINDS = Registry(
    "index kind",
    {
        "bm25": "ragroute.index.lexical:BM25Index",
        "dense": "ragroute.index.dense:DenseIndex",
        "hybrid": "ragroute.index.hybrid:HybridIndex",
        "graph": "ragroute.graph.index:GraphIndex",
        "qdrant": "ragroute.index.qdrant:QdrantIndex",
        "lancedb": "ragroute.index.lancedb_store:LanceDBIndex",
    },
)

SOURCE_KINDS = Registry(
    "source kind",
    {
        "index": "ragroute.route.source_kinds:index",
        "llamaindex": "ragroute.route.source_kinds:llamaindex",
        "langchain": "ragroute.route.source_kinds:langchain",
        "python": "ragroute.route.source_kinds:python",
    },
)

ROUTERS = Registry(
    "router",
    {
        "prototype": "ragroute.route.factories:prototype",
        "centroid": "ragroute.route.factories:centroid",
        "confidence": "ragroute.route.factories:confidence",
        "knn": "ragroute.route.factories:knn",
        "trained": "ragroute.route.factories:trained",
        "llm": "ragroute.route.factories:llm",
        "ensemble": "ragroute.route.factories:ensemble",
        "fixed": "ragroute.route.factories:fixed",
        "pilot": "ragroute.route.factories:pilot",
        "quality": "ragroute.route.factories:quality",
    },
)

FUSIONS = Registry(
    "fusion method",
    {
        "rrf": "ragroute.index.fusion:rrf",
        "minmax": "ragroute.index.fusion:minmax",
        "zscore": "ragroute.index.fusion:zscore",
        "score": "ragroute.index.fusion:raw_score",
        "calibrated": "ragroute.index.fusion:calibrated",
        "auto": "ragroute.index.fusion:auto",
    },
)

RERANKERS = Registry(
    "reranker",
    {
        "parents": "ragroute.rerank.parents:parents_reranker",
        "cross-encoder": "ragroute.rerank.cross_encoder:cross_encoder_reranker",
    },
)

GATES = Registry(
    "gate",
    {
        "trained": "ragroute.gate.factories:trained",
        "threshold": "ragroute.gate.factories:threshold",
        "llm": "ragroute.gate.factories:llm",
    },
)

EXTRACTORS = Registry(
    "graph extractor",
    {
        "rules": "ragroute.graph.extract:RuleExtractor",
        "spacy": "ragroute.graph.extract_spacy:SpacyExtractor",
        "llm": "ragroute.graph.extract_llm:LLMExtractor",
    },
)

SIGNALS = Registry(
    "signal",
    {
        "keywords": "ragroute.route.signals:KeywordsSignal",
        "regex": "ragroute.route.signals:RegexSignal",
        "length": "ragroute.route.signals:LengthSignal",
        "language": "ragroute.route.signals:LanguageSignal",
        "example_bank": "ragroute.route.signals:ExampleBankSignal",
        "bank_margin": "ragroute.route.signals:BankMarginSignal",
    },
)

ARTIFACTS = Registry(
    "artifact family",
    {
        "index": "ragroute.index.io:load_index",
        "router": "ragroute.route.factories:load_saved_router",
        "expert": "ragroute.experts.encoder:load_expert_encoder",
        "scorer": "ragroute.index.bm25_scoring:BM25Scorer.load",
        "reranker": "ragroute.rerank.cross_encoder:CrossEncoderReranker",
        "skills": "ragroute.skills.router:SkillRouter.load",
        "gate": "ragroute.gate.trained:TrainedGate.load",
        "llm": "ragroute.llm.local:load_cached_llm",
    },
)

RELEASES = Registry(
    "artifact family with outside parts",
    {
        "index": "ragroute.index.io:release_build",
    },
)

BENCHMARKS = Registry(
    "benchmark",
    {
        "bm25": "ragroute.cli.bench:bm25_command",
        "encode": "ragroute.cli.bench:encode_command",
        "dense": "ragroute.cli.bench:dense_command",
        "corpus-routing": "ragroute.cli.bench:corpus_routing_command",
        "experts": "ragroute.cli.bench:experts_command",
        "route-labels": "ragroute.cli.bench:route_labels_command",
        "tatqa": "ragroute.cli.bench:tatqa_command",
        "graph": "ragroute.cli.bench:graph_command",
        "ppr": "ragroute.cli.bench:ppr_command",
        "rerank": "ragroute.cli.bench:rerank_command",
        "skills": "ragroute.cli.bench:skills_command",
        "gate": "ragroute.cli.bench:gate_command",
        "stepwise": "ragroute.cli.bench:stepwise_command",
        "scores": "ragroute.cli.bench:scores_command",
        "exposure": "ragroute.cli.bench:exposure_command",
        "scale": "ragroute.cli.bench:scale_command",
        "reliability": "ragroute.cli.bench:reliability_command",
    },
)
