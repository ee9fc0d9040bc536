"""Routing configuration: sources, router and policy in one YAML file.

Example (``corpora/routing.yaml``)::

    encoder: all-MiniLM-L6-v2        # optional (this is the default); dense indexes must match it
    backend: auto
    sources:                          # name -> an index directory (paths relative to this file)
      astronomy:
        index: ../indexes/demo/astronomy
        description: Articles on astronomy and astrophysics.
        modality: text
        granularity: section
        access: [science]             # optional: only callers holding one of these scopes see it
      wiki:                           # or a retriever made in Python (ragroute.route.source_kinds):
        kind: llamaindex              # llamaindex | langchain | python (ragroute.registry.SOURCE_KINDS)
        factory: my_rag.wiki:make_retriever   # or a file beside this config: retrievers.py:make
        options: {top: 3}             # keyword arguments of the factory
    # ...or take names, descriptions, modalities and granularities from corpus definitions,
    # with one index per corpus under index_dir:
    corpora: corpora.yaml
    index_dir: ../indexes/demo
    router:
      kind: ensemble                  # any registered router: prototype | centroid | confidence |
                                      # knn | trained | llm | ensemble (ragroute.registry.ROUTERS)
      members: [prototype, confidence]
      none_threshold: 0.2             # prototype: add a "none" route below this similarity
      model: ../routers/demo          # trained: a directory written by `ragroute route fit`
      examples: labels.jsonl          # knn: labelled queries {text, label}
      llm: mypackage.llms:make_llm    # llm: a callable returning a llama-index LLM
      threshold: 0.25                 # route probability needed to be queried
      max_routes: 2
      hedge_below: 0.9                # query only the best route when it is at least this sure
      fusion: rrf                     # any registered fusion method (ragroute.registry.FUSIONS)
    reranker: {kind: parents}         # optional, any registered reranker
    signals: {...}                    # optional policy, see ragroute.route.Policy
    rules: [...]

Every key is listed in ``docs/config.md``. Unknown keys anywhere are refused in one line naming
the closest known key (``unknown key 'sorces'; did you mean 'sources'?``), an unknown source
``kind:`` with the registered ones. A source whose index is missing or broken (or
whose factory cannot be imported or fails) does not stop loading: it is left out,
reported in every decision (``unavailable_sources``) and warned about once per load
(:class:`~ragroute.errors.SourceWarning`, shown by the CLI on stderr as
``warning: routing.yaml: source 'x' left out: <reason>``). ``ragroute config check FILE``
checks a config without loading models (:mod:`ragroute.route.config_check`).
"""

from __future__ import annotations

import contextvars
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.errors import (
    RagrouteError,
    SourceWarning,
    check_encoder_object,
    check_keys,
    check_path,
    is_nul_path_error,
    refused_path_message,
    value_type_name,
)
from ragroute.pipeline import Pipeline
from ragroute.pipeline.build import check_router_settings, pipeline_from_settings
from ragroute.route.sources import Source, SourceProblem
from ragroute.scopes import access_labels
from ragroute.yaml_files import path_beside, read_yaml

#: the top-level keys of a routing config
TOP_KEYS = frozenset(
    {
        "encoder",
        "backend",
        "cache_dir",
        "sources",
        "corpora",
        "index_dir",
        "router",
        "reranker",
        "gate",
        "signals",
        "rules",
        "llm",  # the LLM `ragroute ask` plans and answers with (ragroute.llm.settings)
        "exposure",  # per-caller exposure budget (ragroute.exposure)
    }
)


@dataclass
class RoutingConfig:
    """The parsed file: raw sections plus where it came from."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> RoutingConfig:
        path = Path(path)
        data = read_yaml(path, "routing config")
        if not isinstance(data, dict):
            raise RagrouteError(f"{path}: expected a mapping with a 'sources:' section")
        check_keys(data, TOP_KEYS, str(path))
        if "corpora" in data and "sources" not in data:
            data["sources"] = _sources_from_corpora(path, data)
        if not isinstance(data.get("sources"), dict) or not data["sources"]:
            raise RagrouteError(f"{path}: expected a 'sources:' mapping of names to index directories")
        return cls(path, data)

    def resolve(self, relative: str) -> Path:
        return path_beside(self.path, relative)

    def cache_dir(self, override: str | os.PathLike[str] | None = None) -> Path | None:
        """Where the encoder caches: ``override`` (``--cache-dir``), else the config's ``cache_dir:``
        (relative to the file), else ``None``: the per-user cache folder
        (:func:`ragroute.encode.resolve.default_cache_dir`)."""
        if override is not None:
            return Path(os.path.expanduser(override))
        value = self.encoder_settings()["cache_dir"]
        return self.resolve(value) if value is not None else None

    def encoder_settings(self) -> dict[str, Any]:
        """The config's ``encoder:`` (a model name, or a folder read beside the file when one is
        there or the value starts with ``./`` or ``../``), ``backend:`` and ``cache_dir:``, each
        checked: until session 37 ``encoder: null`` or ``backend: yes`` were tracebacks,
        ``cache_dir: [a]`` made a folder named ``['a']``, and a relative encoder folder was read
        from the working directory."""
        from ragroute.encode import DEFAULT_ENCODER

        out: dict[str, Any] = {}
        for key, default in (("encoder", DEFAULT_ENCODER), ("backend", "auto"), ("cache_dir", None)):
            value = self.data.get(key)
            if value is None:
                out[key] = default
            elif not isinstance(value, str) or not value.strip():
                raise RagrouteError(
                    f"{self.path}: {key}: expected a non-empty string, not {value_type_name(value)}"
                )
            else:
                out[key] = value
        from ragroute.encode.load import BACKENDS

        if out["backend"].strip().lower() not in (*BACKENDS, "auto"):  # refused here, naming the file:
            # loading with an encoder handed in took any backend, and without one said no file
            raise RagrouteError(
                f"{self.path}: backend: unknown encoder backend {out['backend']!r}: "
                f"expected auto, {', '.join(BACKENDS)}"
            )
        beside = self.path.parent / out["encoder"]
        # ./x and ../x can only be folders: read beside the file even when not there, as a CLI
        # defaults file reads them (until session 54 the working directory's, wherever it ran)
        if not Path(out["encoder"]).is_absolute() and (
            beside.is_dir() or out["encoder"].startswith(("./", "../"))
        ):
            out["encoder"] = str(beside.resolve())
        return out

    def load_encoder(
        self, *, backend: str | None = None, cache_dir: str | os.PathLike[str] | None = None
    ) -> Any:
        """The config's ``encoder:`` (default all-MiniLM-L6-v2) on ``backend`` (else the config's
        ``backend:``, else auto), caching as :meth:`cache_dir` says."""
        from ragroute.encode import load_encoder

        settings = self.encoder_settings()
        return load_encoder(
            settings["encoder"], backend=backend or settings["backend"], cache_dir=self.cache_dir(cache_dir)
        )

    @property
    def router(self) -> dict[str, Any]:
        router = self.data.get("router") or {"kind": "prototype"}
        check_router_settings(router, str(self.path))
        return router


def check_corpora_paths(path: Path, data: Mapping[str, Any]) -> None:
    """Refuse a ``corpora:`` or ``index_dir:`` that is not a non-empty path: until session 43
    ``index_dir: null`` read the indexes from a folder named ``None`` beside the config, and
    ``corpora: [corpora.yaml]`` a file named ``['corpora.yaml']``."""
    for key in ("corpora", "index_dir"):
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            shown = "an empty string" if isinstance(value, str) else value_type_name(value)
            raise RagrouteError(f"{path}: {key}: expected a path (relative to this file), not {shown}")


def source_name_problem(name: Any, seen: set[str]) -> str | None:
    """What is wrong with ``name`` as the name of a source (read as text, as loading reads it) among
    the names ``seen`` before it, or ``None``: a key YAML read as other than text (a boolean, number,
    date or null: ``no:`` was the source ``'False'``; corpus names refuse them alike), ``none`` (the
    route that retrieves nothing), a name without a visible character, or one written twice. Loading
    and ``config check`` refuse alike (until session 44 the check passed the last two, which loading
    refused, one of them without the file)."""
    from ragroute.route.sources import RESERVED_NAMES
    from ragroute.yaml_files import read_as_other_than_text

    misread = read_as_other_than_text(name)  # `no:` was the source 'False' until session 49
    if misread:
        return misread
    text = str(name)
    if text in RESERVED_NAMES:
        return f"a source may not be named {text!r}: the route that retrieves nothing"
    if not text.strip():
        return f"a source's name must hold a visible character, not {text!r}"
    if text in seen:
        return (
            f"two sources are named {text!r} (YAML keys written apart, read as one name): "
            "one would hide the other"
        )
    return None


def _sources_from_corpora(path: Path, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from ragroute.corpora import load_corpus_specs

    if "index_dir" not in data:
        raise RagrouteError(f"{path}: 'corpora:' needs 'index_dir:' (where the corpus indexes are built)")
    check_corpora_paths(path, data)
    index_dir = path_beside(path, data["index_dir"])
    return {
        spec.name: {
            "index": str(index_dir / spec.name),
            "description": spec.description,
            "modality": spec.modality,
            "granularity": spec.granularity,
            **({"access": list(spec.access)} if spec.access else {}),
        }
        for spec in load_corpus_specs(path_beside(path, data["corpora"], resolve=False))
    }


def open_sources(config: RoutingConfig, encoder: Any) -> tuple[list[Source], list[SourceProblem]]:
    """Open every source through its kind (``SOURCE_KINDS``; ``index`` by default): broken ones
    become :class:`SourceProblem` s instead of errors; unknown kinds and keys are refused."""
    from ragroute.registry import SOURCE_KINDS
    from ragroute.route.source_kinds import SourceRequest, check_entry

    sources, problems = [], []
    shared: dict[Any, Any] = {}  # one index per folder, shared by the experts that search it
    seen: set[str] = set()
    for name, entry in config.data["sources"].items():
        problem = source_name_problem(name, seen)
        if problem:
            raise RagrouteError(f"{config.path}: source {str(name)!r}: {problem}")
        seen.add(str(name))
        if not isinstance(entry, dict):
            raise RagrouteError(f"{config.path}: source {name!r} needs an 'index' directory or a 'kind:'")
        request = SourceRequest(config.path, str(name), entry, encoder, shared)
        kind = SOURCE_KINDS.check(str(entry.get("kind") or "index"), request.where)
        opener = SOURCE_KINDS.get(kind)
        check_entry(request, kind, opener)
        access = access_labels(entry.get("access"), request.where)  # caller scopes: ragroute.scopes
        try:
            opened = opener(request)
        except RagrouteError as exc:
            problems.append(SourceProblem(str(name), str(exc), access))
            continue
        sources.append(
            Source(
                str(name),
                opened.retriever,
                # null means the default: it was read as the text 'None' / None (until session 37)
                description=str(entry.get("description") or "").strip(),
                modality=entry.get("modality") or "text",
                granularity=entry.get("granularity") or "document",
                # sources over one index (or naming one corpus) hold the same documents: fusion merges them
                metadata={"corpus": opened.corpus},
                access=access,
            )
        )
    return sources, problems


def warn_left_out(path: str | Path, problems: Sequence[SourceProblem]) -> None:
    """One :class:`~ragroute.errors.SourceWarning` per source left out of the config at ``path``
    (the CLI prints each as ``warning: PATH: source 'x' left out: <reason>`` on stderr)."""
    for problem in problems:
        warnings.warn(left_out_message(path, problem), SourceWarning, stacklevel=3)


def warn_same_documents(path: str | Path, sources: Sequence[Source]) -> None:
    """A :class:`~ragroute.errors.SourceWarning` for two sources of different collections whose
    documents have the same ids (a BM25 and a dense index built apart over one corpus, say):
    fusion then lists each document twice, once per source, where a shared ``corpus:`` merges
    them (until session 36 nothing said so)."""
    by_name = {source.name: source for source in sources}

    def ids_of(name: str) -> frozenset[str]:
        return frozenset(doc.id for doc in by_name[name].documents)

    entries = [(s.name, s.collection, len(s.documents or ())) for s in sources]
    for first, second, collection, n in same_document_pairs(entries, ids_of):
        warnings.warn(
            f"{path}: sources {first!r} and {second!r} hold the same {n} document "
            f"ids in two collections: their hits of one document are listed twice; if they index "
            f"one corpus, give both the same 'corpus:' (e.g. corpus: {collection})",
            SourceWarning,
            stacklevel=3,
        )


def warn_other_documents(path: str | Path, sources: Sequence[Source]) -> None:
    """A :class:`~ragroute.errors.SourceWarning` for two sources of one collection (one index
    folder, or a ``corpus:`` naming another source's) whose documents differ: fusion merges their
    hits of one id as one document, so a BM25 index built over another corpus (or not rebuilt when
    the dense one was) lent its votes to whichever document of the other has that id (until session
    43 nothing said so). Sources over one document store are not read; ids of the others are."""
    by_name = {source.name: source for source in sources}
    entries = [
        (s.name, s.collection, id(s.documents), len(s.documents)) for s in sources if s.documents
    ]  # a retriever that does not list its documents: cannot tell

    def ids_of(name: str) -> frozenset[str]:
        return frozenset(doc.id for doc in by_name[name].documents)

    for message in other_document_pairs(entries, ids_of):
        warnings.warn(f"{path}: {message}", SourceWarning, stacklevel=3)


def other_document_pairs(
    entries: Sequence[tuple[str, str, Any, int]], ids_of: Callable[[str], frozenset[str] | None]
) -> list[str]:
    """What to say of sources of one collection over different document stores whose documents
    differ: ``entries`` are ``(name, collection, store key, number of documents)`` (one store key:
    the same documents, nothing read); ``ids_of(name)`` (None: cannot tell) is read for the others.
    Loading warns of them (:func:`warn_other_documents`), and so does ``config check``."""
    groups: dict[str, list[tuple[str, Any, int]]] = {}
    for name, collection, store, size in entries:
        groups.setdefault(collection, []).append((name, store, size))
    said = []
    for collection, members in groups.items():
        first, first_store, _ = members[0]
        ids = None
        for other, store, _ in members[1:]:
            if store == first_store:
                continue
            ids = ids if ids is not None else ids_of(first)
            other_ids = ids_of(other)
            if ids is None or other_ids is None or ids == other_ids:
                continue
            said.append(
                f"sources {first!r} and {other!r} are one collection ({collection}) "
                f"but hold different documents ({len(ids)} and {len(other_ids)} ids, "
                f"{len(ids ^ other_ids)} in only one): fusion merges their hits of one id as one "
                "document; build both over the same corpus, or give them different 'corpus:'"
            )
    return said


def same_document_pairs(
    entries: Sequence[tuple[str, str, int]], ids_of: Callable[[str], frozenset[str] | None]
) -> list[tuple[str, str, str, int]]:
    """Pairs of sources of different collections holding the same document ids: ``entries`` are
    ``(name, collection, number of documents)``; only sources of equal size can hold the same ids,
    so ``ids_of(name)`` (None: cannot tell) is read for those alone. Each pair is ``(the source
    seen first, the other, the first one's collection, the number of ids)``; loading warns of them
    (:func:`warn_same_documents`), and so does ``config check`` without opening the sources."""
    by_size: dict[int, list[tuple[str, str]]] = {}
    for name, collection, size in entries:
        if size:
            by_size.setdefault(size, []).append((name, collection))
    pairs = []
    for group in by_size.values():
        if len({collection for _, collection in group}) < 2:
            continue
        seen: dict[frozenset[str], tuple[str, str]] = {}
        for name, collection in group:
            ids = ids_of(name)
            if ids is None:
                continue
            other, other_collection = seen.setdefault(ids, (name, collection))
            if other != name and other_collection != collection:
                pairs.append((other, name, other_collection, len(ids)))
    return pairs


def left_out_message(path: str | Path, problem: SourceProblem) -> str:
    """``PATH: source 'x' left out: <reason>`` (the reason without a repeated ``PATH: source 'x'``)."""
    where = f"{path}: source {problem.name!r}"
    reason = problem.error
    if reason.startswith(where):
        reason = reason[len(where) :].lstrip(" :") or reason
    return f"{where} left out: {reason}"


#: the routing configs being loaded on this thread (or task), outermost first: a factory that loads
#: a config (a nested pipeline) is refused when that config is one of them
_LOADING: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("ragroute_loading", default=())


def load_routing(
    path: str | os.PathLike[str],
    *,
    encoder: Any = None,
    backend: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Pipeline:
    """The query pipeline a routing config describes, ready to ``retrieve``.

    Without ``encoder`` (an encoder object, :func:`ragroute.encode.load_encoder`'s) the config's is
    loaded, caching under ``cache_dir`` if given, else the config's ``cache_dir:``, else the
    per-user cache folder."""
    check_path(path, "load_routing needs a routing config file path")
    check_encoder_object(encoder, "load_routing")
    if cache_dir is not None:
        check_path(cache_dir, "load_routing: cache_dir needs a folder path")
    loading = _LOADING.get()
    here = Path(os.path.abspath(path))
    if here in loading:  # a config whose factory loads it again: until session 53 it recursed for
        # minutes (every level near the recursion limit failing and building on), never ending
        chain = " -> ".join(str(p) for p in (*loading[loading.index(here) :], here))
        raise RagrouteError(f"{path}: a routing config that loads itself through a factory ({chain})")
    token = _LOADING.set((*loading, here))
    try:
        return _load_routing(path, encoder, backend, cache_dir)
    except OSError as exc:  # a file the config names that the system refuses (name too long, ...)
        raise RagrouteError(f"{path}: cannot read {refused_path_message(exc, path)}") from None
    except ValueError as exc:
        if not is_nul_path_error(exc):
            raise
        raise RagrouteError(f"{path}: a path in it contains a NUL character") from None
    finally:
        _LOADING.reset(token)


def _load_routing(
    path: str | os.PathLike[str], encoder: Any, backend: str | None, cache_dir: str | os.PathLike[str] | None
) -> Pipeline:
    from ragroute.route import Policy

    config = RoutingConfig.read(path)
    router_settings = config.router
    if encoder is None:
        encoder = config.load_encoder(backend=backend, cache_dir=cache_dir)
    else:  # the settings checked also when an encoder is handed in (as `config check` does)
        config.encoder_settings()
    sources, problems = open_sources(config, encoder)
    if not sources:
        detail = "; ".join(f"{p.name}: {p.error}" for p in problems)
        raise RagrouteError(f"{config.path}: no source could be opened ({detail})")
    warn_left_out(config.path, problems)
    warn_same_documents(config.path, sources)
    warn_other_documents(config.path, sources)
    policy = None
    if config.data.get("rules") or config.data.get("signals"):  # bad signals without rules: refused
        policy = Policy.from_yaml(config.path, encoder=encoder)  # as `config check` does (session 37)
        policy.validate_routes([*config.data["sources"], "none"])
        policy = policy if policy.rules else None
    return pipeline_from_settings(
        sources,
        router_settings,
        encoder=encoder,
        policy=policy,
        problems=problems,
        reranker=config.data.get("reranker"),
        gate=config.data.get("gate"),
        exposure=config.data.get("exposure"),
        where=str(config.path),
        base=config.path.parent,
        name=config.path.stem,
    )
