"""Source kinds of routing configs: how one ``sources:`` entry becomes a retriever.

Each kind is registered in :data:`ragroute.registry.SOURCE_KINDS` as a function
``open(request: SourceRequest) -> OpenedSource`` marked with :func:`source_kind` (the entry
keys it reads, the ones it needs). An entry names its kind with ``kind:``; without one it is
an ``index`` (today's ragroute index folders)::

    sources:
      manuals: {index: ../indexes/manuals}                     # kind: index
      wiki:    {kind: llamaindex, factory: "my_rag.wiki:make_index", options: {top: 3}}
      tickets: {kind: langchain, factory: "retrievers.py:tickets"}  # a file beside the config
      search:  {kind: python, factory: "my_rag.search:make"}   # anything with search_many

``factory:`` is ``module:attribute`` (importable) or ``FILE.py:attribute`` (relative to the
config); it is called with ``options:`` as keyword arguments. ``llamaindex`` wants a LlamaIndex
retriever or index (``VectorStoreIndex``), ``langchain`` a LangChain retriever, and ``python``
takes either, or any object with ``search_many`` (a ragroute retriever). A factory that
cannot be imported or fails leaves its source out, reported like a missing index.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.corpora import GRANULARITIES, MODALITIES
from ragroute.errors import RagrouteError, check_keys, check_setting, not_one_of
from ragroute.references import REFERENCE_FORM, import_reference, is_reference
from ragroute.yaml_files import path_beside

#: keys every source entry may carry, whatever its kind
COMMON_KEYS = frozenset({"kind", "corpus", "description", "modality", "granularity", "access"})
FACTORY_KEYS = frozenset({"factory", "options"})


@dataclass
class SourceRequest:
    """One ``sources:`` entry being opened: where it is written and what it says."""

    config_path: Path
    name: str
    entry: Mapping[str, Any]
    encoder: Any = None
    shared: dict[Any, Any] = field(default_factory=dict)  # shared by a config's sources (index folders)

    @property
    def where(self) -> str:
        return f"{self.config_path}: source {self.name!r}"

    def resolve(self, relative: str | Path) -> Path:
        return path_beside(self.config_path, relative)


@dataclass
class OpenedSource:
    """A source's retriever and the corpus its documents belong to (fusion merges hits by it)."""

    retriever: Any
    corpus: str


def source_kind(
    keys: Iterable[str], required: Iterable[str] = ()
) -> Callable[[Callable[[SourceRequest], OpenedSource]], Callable[[SourceRequest], OpenedSource]]:
    """Marks a source opener with the entry keys it reads (besides :data:`COMMON_KEYS`) and needs."""

    def mark(opener: Callable[[SourceRequest], OpenedSource]) -> Callable[[SourceRequest], OpenedSource]:
        opener.keys = frozenset(keys)  # type: ignore[attr-defined]
        opener.required = frozenset(required)  # type: ignore[attr-defined]
        return opener

    return mark


def entry_keys(opener: Any) -> frozenset[str]:
    """The keys a source entry of this kind's ``opener`` may hold (:data:`COMMON_KEYS` included)."""
    return COMMON_KEYS | getattr(opener, "keys", FACTORY_KEYS)


def check_entry(request: SourceRequest, kind: str, opener: Any) -> None:
    """Refuse unknown or missing keys (one line naming the file, the source, the kind and the key)."""
    check_keys(request.entry, entry_keys(opener), f"{request.where} (kind {kind})")
    missing = sorted(set(getattr(opener, "required", ())) - set(request.entry))
    if missing:
        raise RagrouteError(f"{request.where} (kind {kind}) needs {', '.join(repr(m) for m in missing)}")
    if "factory" in request.entry:
        _split_reference(request)
    options = request.entry.get("options")
    if options is not None and not isinstance(options, Mapping):
        raise RagrouteError(f"{request.where}: options must be a mapping of keyword arguments")
    for key in ("index", "expert", "factory", "description", "corpus"):
        if key in request.entry:
            check_setting(request.entry[key], "string", request.where, key, optional=key != "index")
    for key, allowed in (("modality", MODALITIES), ("granularity", GRANULARITIES)):
        value = request.entry.get(key)
        if value is not None and value not in allowed:
            raise RagrouteError(f"{request.where}: {not_one_of(key, value, allowed)}")


# --------------------------------------------------------------------------- the kinds


@source_kind({"index", "expert"}, required={"index"})
def index(request: SourceRequest) -> OpenedSource:
    """A ragroute index folder (``index:``), optionally searched through a query-side ``expert:``."""
    from ragroute.index.io import load_index

    folder = request.resolve(request.entry["index"])
    if folder not in request.shared:  # one index per folder, shared by the experts that search it
        request.shared[folder] = load_index(folder, request.encoder, name=request.name)
    retriever = request.shared[folder]
    if request.entry.get("expert"):
        from ragroute.experts.encoder import load_expert_encoder
        from ragroute.experts.expert_set import adapter_view

        expert = load_expert_encoder(request.resolve(str(request.entry["expert"])), request.encoder)
        retriever = adapter_view(retriever, expert)
    # sources over one index (or naming one corpus) hold the same documents: fusion merges them
    # ``corpus:`` names the index folder (relative to the config) whose documents this one holds too
    corpus = request.resolve(str(request.entry["corpus"])) if request.entry.get("corpus") else folder
    return OpenedSource(retriever, str(corpus))


@source_kind(FACTORY_KEYS, required={"factory"})
def llamaindex(request: SourceRequest) -> OpenedSource:
    """A LlamaIndex retriever or index returned by ``factory:``."""
    from ragroute.integrations.targets import framework_of

    made = call_factory(request)
    if framework_of(made) != "llamaindex":
        raise RagrouteError(
            f"{request.where}: factory returned {type(made).__name__}, not a LlamaIndex retriever or index"
        )
    return _wrapped(request, made, "llamaindex")


@source_kind(FACTORY_KEYS, required={"factory"})
def langchain(request: SourceRequest) -> OpenedSource:
    """A LangChain retriever returned by ``factory:`` (needs the ``langchain`` extra)."""
    from ragroute.integrations.targets import framework_of

    made = call_factory(request)
    if framework_of(made) != "langchain":
        raise RagrouteError(
            f"{request.where}: factory returned {type(made).__name__}, not a LangChain retriever"
        )
    return _wrapped(request, made, "langchain")


@source_kind(FACTORY_KEYS, required={"factory"})
def python(request: SourceRequest) -> OpenedSource:
    """What ``factory:`` returns: a LlamaIndex or LangChain retriever, or anything with ``search_many``."""
    from ragroute.integrations.targets import framework_of

    made = call_factory(request)
    framework = framework_of(made)
    if framework:
        return _wrapped(request, made, framework)
    if not callable(getattr(made, "search_many", None)):
        raise RagrouteError(
            f"{request.where}: factory returned {type(made).__name__}: not a LlamaIndex or LangChain "
            "retriever, nor an object with search_many"
        )
    return OpenedSource(made, str(request.entry.get("corpus") or request.name))


def _wrapped(request: SourceRequest, made: Any, framework: str) -> OpenedSource:
    if framework == "llamaindex":
        from ragroute.integrations.llamaindex import LlamaRetrieverAdapter

        adapter: Any = LlamaRetrieverAdapter(made, name=request.name)
    else:
        try:
            from ragroute.integrations.langchain import LangChainRetrieverAdapter
        except ImportError as exc:  # pragma: no cover - the extra is part of the test environment
            raise RagrouteError(f"{request.where}: {exc}; install ragroute[langchain]") from None
        adapter = LangChainRetrieverAdapter(made, name=request.name)
    return OpenedSource(adapter, str(request.entry.get("corpus") or request.name))


# --------------------------------------------------------------------------- factories


def _split_reference(request: SourceRequest) -> None:
    """Refuse a ``factory:`` that is not written as a reference (checked before anything loads)."""
    reference = str(request.entry["factory"])
    if not is_reference(reference):
        raise RagrouteError(f"{request.where}: factory {reference!r} is not {REFERENCE_FORM}")


def load_factory(request: SourceRequest) -> Callable[..., Any]:
    """The callable ``factory:`` names (a module on the path, or a ``.py`` file beside the config)."""
    return import_reference(
        str(request.entry["factory"]), request.where, "factory", base=request.config_path.parent
    )


def _takes_keyword(function: Any, name: str) -> bool:
    """Whether ``function`` has a parameter ``name`` that can be passed by keyword."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin or a callable without a signature
        return False
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters)


def call_factory(request: SourceRequest) -> Any:
    """Call ``factory:`` with ``options:``; any error it raises becomes one :class:`RagrouteError` line.

    Options are passed as written: which of them are paths only the factory knows, so a relative
    one is read from the working directory. A factory with a parameter named ``config_dir`` is
    also given the config's folder (a ``Path``), to resolve such paths against it wherever the
    command runs, unless ``options:`` sets ``config_dir`` itself (``**kwargs`` is not given it:
    they are often passed on to a constructor that would refuse it)."""
    factory = load_factory(request)
    options = dict(request.entry.get("options") or {})
    if "config_dir" not in options and _takes_keyword(factory, "config_dir"):
        options["config_dir"] = request.config_path.parent.resolve()
    try:
        return factory(**options)
    except (Exception, SystemExit) as exc:  # user code (a sys.exit in it ended the whole command
        # until session 53, naming no source)
        raise RagrouteError(
            f"{request.where}: factory {request.entry['factory']!r} failed ({type(exc).__name__}: {exc})"
        ) from None
