"""Check a routing config or a corpus definitions file without loading a model (``ragroute config check``).

:func:`check_config` reads the file with the checks the loaders use (the same key lists and the
same one-line messages, ``unknown key 'sorces'; did you mean 'sources'?``), then looks at what
loading would open: each source's index folder and its manifest (kind, documents, the encoder it
was built with, compared with the config's ``encoder:``, which is resolved offline but not
loaded), query-side experts, factories (imported, not called), the router, reranker, gate, LLM and
policy settings, and the files they name. Every problem is one line naming the file and the key;
a problem is anything that would stop loading or leave a source out. Notes (``warnings``) are
things that load but are probably not meant, such as a router key the chosen kind does not read.

:func:`accepted_keys` lists every key the loaders accept, section by section, from the code
(``docs/config.md`` documents each; ``tests/test_config_reference.py`` compares the two).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ragroute.errors import (
    RagrouteError,
    is_nul_path_error,
    one_line,
    refused_path_message,
    unknown_keys_message,
)
from ragroute.yaml_files import path_beside

CORPUS_FILE = "corpus definitions"
ROUTING_FILE = "routing config"


@dataclass
class SourceCheck:
    """What loading would make of one ``sources:`` entry."""

    name: str
    kind: str = "index"
    target: str = ""  # the index folder, or the factory reference
    # ok | config error (the entry itself is wrong: a misspelt key, a bad value) | missing | broken (its
    # index or factory cannot be read); a misspelt key beside a fine index was said "broken" before
    status: str = "ok"
    index_kind: str = ""
    documents: int | None = None
    encoder: dict[str, Any] | None = None  # as recorded in the index manifest
    expert: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class ConfigCheck:
    """The outcome of :func:`check_config`: what the file resolves to, and its problems."""

    path: Path
    what: str
    """:data:`ROUTING_FILE` or :data:`CORPUS_FILE`; ``""`` when the file could not be read as either
    (unreadable, not UTF-8, not YAML, empty, no mapping): then only ``problems`` says anything"""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    encoder: dict[str, Any] = field(default_factory=dict)
    sources: list[SourceCheck] = field(default_factory=list)
    corpora: list[dict[str, Any]] = field(default_factory=list)
    router: dict[str, Any] = field(default_factory=dict)
    reranker: str = ""
    gate: str = ""
    llm: str = ""
    policy: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["ok"] = self.ok
        return out


def check_config(path: str | Path, *, verify: bool = True) -> ConfigCheck:
    """Check a routing config or a corpus definitions file (told apart by a ``corpora:`` mapping).

    ``verify`` checks the checksum of every file of the artifacts it names (reads them all, as
    loading them does); ``verify=False`` reads only their manifests.
    """
    return _Checker(Path(path), verify).run()


# --------------------------------------------------------------------------- the checker


class _Checker:
    def __init__(self, path: Path, verify: bool) -> None:
        self.path = path
        self.verify = verify
        self.report = ConfigCheck(path, ROUTING_FILE)
        self.encoder_id = ""
        self.encoder_dim: int | None = None
        self.encoder_folder: Any = None  # the config encoder's resolved model folder
        self._encoder_weights: str | None = None
        #: the routes of a router fitted on labels (a trained router's, a kNN router's examples')
        self.router_labels: list[str] = []
        #: an ensemble's members fitted on labels, each with its routes (checked one by one)
        self.member_labels: list[tuple[str, list[str]]] = []
        #: the sources rules or ``always:`` send queries to
        self.reached: set[str] = set()

    # ----------------------------------------------------------------- helpers

    def problem(self, message: str) -> None:
        line = one_line(str(message))
        if line not in self.report.problems:  # one problem said once (twice or more until session 44)
            self.report.problems.append(line)

    def note(self, message: str) -> None:
        self.report.warnings.append(one_line(str(message)))

    def attempt(self, check: Callable[[], Any], prefix: str = "") -> Any:
        """``check()``, or ``None`` with its :class:`RagrouteError` recorded as a problem."""
        try:
            return check()
        except RagrouteError as exc:
            self.problem(f"{prefix}{exc}")
            return None

    def passes(self, check: Callable[[], Any], prefix: str = "") -> bool:
        """Whether ``check()`` raises no :class:`RagrouteError` (recorded as a problem if it does)."""
        count = len(self.report.problems)
        self.attempt(check, prefix)
        return len(self.report.problems) == count

    def resolve(self, relative: Any) -> Path:
        return path_beside(self.path, relative)

    def opened(self, names: list[str], failed: bool = True) -> list[str]:
        """The sources of ``names`` loading would open, in order, then (``failed``) those it would
        leave out (a missing or broken index), as loading lists them in its errors."""
        status = {source.name: source.status for source in self.report.sources}
        ok = [name for name in names if status.get(name, "ok") == "ok"]
        return [*ok, *(name for name in names if name not in ok)] if failed else ok

    # ----------------------------------------------------------------- entry

    def run(self) -> ConfigCheck:
        from ragroute.yaml_files import read_yaml

        data = self.attempt(lambda: read_yaml(self.path, "config"))
        if data is None and not self.report.problems:
            self.problem(f"{self.path}: the file is empty")
        elif not self.report.problems and not isinstance(data, dict):
            self.problem(f"{self.path}: expected a mapping (a routing config, or 'corpora:' definitions)")
        if self.report.problems:  # nothing was read: it is neither kind of file
            self.report.what = ""
            return self.report
        try:
            if isinstance(data.get("corpora"), dict):
                self.report.what = CORPUS_FILE
                self.check_corpora(self.path, data)
            else:
                self.check_routing(data)
        except OSError as exc:  # a path the system refuses to look at (name too long, link loop...)
            self.problem(f"{self.path}: cannot check {refused_path_message(exc, self.path)}")
        except ValueError as exc:
            if not is_nul_path_error(exc):
                raise
            self.problem(f"{self.path}: a path in it contains a NUL character")
        return self.report

    # ----------------------------------------------------------------- corpus definitions

    def check_corpora(self, path: Path, data: Any, built: bool = True) -> list[Any]:
        """The valid corpus specs of a definitions file (``data``: its parsed content); ``built``:
        whether the corpora themselves are read (by ``ragroute build``), else only their entries
        (a routing config reads its indexes under ``index_dir:``, not the corpora: until session 51
        a corpus file moved away after its build failed the check of a config that loads)."""
        from ragroute.corpora import corpus_spec

        if not isinstance(data, dict) or not isinstance(data.get("corpora"), dict) or not data["corpora"]:
            self.problem(f"{path}: expected a top-level 'corpora:' mapping of names to definitions")
            return []
        for key in data:
            if key != "corpora":
                self.problem(f"{path}: {unknown_keys_message([key], ['corpora'])}")
        specs = []
        for name, entry in data["corpora"].items():
            spec = self.attempt(functools.partial(corpus_spec, name, entry, path))
            if spec is None:
                continue
            specs.append(spec)
            row = {
                "name": spec.name,
                "path": str(spec.path),
                "modality": spec.modality,
                "granularity": spec.granularity,
                "format": "",
            }
            self.report.corpora.append(row)
            if not built:
                continue
            if not spec.path.exists():
                self.problem(f"{path}: corpus {spec.name!r}: path {spec.path} does not exist")
                continue
            row["format"] = self.attempt(
                functools.partial(_corpus_format, spec), f"{path}: corpus {spec.name!r}: "
            )
        return specs

    # ----------------------------------------------------------------- routing configs

    def check_routing(self, data: dict[str, Any]) -> None:
        from ragroute.route.config import TOP_KEYS, source_name_problem

        for key in data:
            if key not in TOP_KEYS:
                self.problem(f"{self.path}: {unknown_keys_message([key], TOP_KEYS)}")
        self.check_encoder(data)
        entries = self.source_entries(data)
        seen: set[str] = set()
        for name, entry in entries.items():
            self.check_source(str(name), entry, source_name_problem(name, seen))
            if isinstance(name, str):  # a misread key (`no:`) is refused itself, not as a twin
                seen.add(name)
        self.check_same_documents(entries)
        names = [str(name) for name in entries]
        self.check_router(data.get("router") or {"kind": "prototype"}, names)
        if data.get("reranker"):
            self.check_reranker(data["reranker"])
        if data.get("gate"):
            self.check_gate(data["gate"], f"{self.path}: gate", names)
        if "llm" in data:
            self.report.llm = self.check_llm(data["llm"], f"{self.path}: llm")
        if data.get("exposure") is not None:  # null: no budget, as loading reads it
            from ragroute.exposure import exposure_problems

            # every problem of the section (the first only, until session 38)
            for problem in exposure_problems(data["exposure"], f"{self.path}: exposure"):
                self.problem(problem)
        if data.get("signals") or data.get("rules"):
            self.check_policy(data, names)
        self.check_router_routes(names)

    def check_same_documents(self, entries: Mapping[str, Any]) -> None:
        """A note for two index sources of different collections holding the same document ids
        (a BM25 and a dense index built apart over one corpus, with no shared ``corpus:``), as
        loading warns (:func:`~ragroute.route.config.warn_same_documents`): fusion would list each
        document twice. Only indexes of equal size are read (until session 39 only loading said it)."""
        from ragroute.index.docstore import DocumentStore
        from ragroute.route.config import other_document_pairs, same_document_pairs
        from ragroute.store.artifact import published_path

        folders: dict[str, Path] = {}
        listed: list[tuple[str, str, int]] = []
        for source in self.report.sources:
            entry = entries.get(source.name)
            if source.status != "ok" or source.kind != "index" or not source.documents:
                continue
            if not isinstance(entry, dict) or "index" not in entry:
                continue
            folders[source.name] = folder = self.resolve(entry["index"])
            collection = str(self.resolve(entry["corpus"])) if entry.get("corpus") else str(folder)
            listed.append((source.name, collection, int(source.documents)))

        def ids_of(name: str) -> frozenset[str] | None:
            try:
                store = DocumentStore.load(published_path(folders[name]))
            except (RagrouteError, OSError, ValueError):
                return None  # loading would say what is wrong with it
            return frozenset(doc.id for doc in store.documents)

        # sources of one collection over other index folders whose documents differ (loading
        # warns: warn_other_documents; config check did not say it until session 43)
        stores = [(name, collection, folders[name], size) for name, collection, size in listed]
        for message in other_document_pairs(stores, ids_of):
            self.note(f"{self.path}: {message}")
        here = self.path.parent.resolve()
        for first, second, collection, n in same_document_pairs(listed, ids_of):
            shown = Path(collection)
            corpus = shown.relative_to(here) if shown.is_relative_to(here) else shown
            self.note(
                f"{self.path}: sources {first!r} and {second!r} hold the same {n} document "
                f"ids in two collections: their hits of one document would be listed twice; if "
                f"they index one corpus, give both the same 'corpus:' (e.g. corpus: {corpus})"
            )

    def check_router_routes(self, names: list[str]) -> None:
        """The routes of a router fitted on labels against the source names (as loading checks
        them: :func:`~ragroute.pipeline.build.route_name_problems`)."""
        from ragroute.pipeline.build import member_route_problem, route_name_problems

        error, notes = route_name_problems(self.router_labels, names, reached=sorted(self.reached))
        error = error or member_route_problem(self.member_labels, names, reached=sorted(self.reached))
        if error:
            self.problem(f"{self.path}: router: {error}")
        for note in notes:
            self.note(f"{self.path}: router: {note}")

    def check_encoder(self, data: dict[str, Any]) -> None:
        from ragroute.encode import DEFAULT_ENCODER, resolve_model
        from ragroute.route.config import RoutingConfig

        # the same refusals loading gives (a wrong type, an empty name, an unknown backend)
        settings = self.attempt(lambda: RoutingConfig(self.path, data).encoder_settings())
        if settings is None:  # the encoder still compared with the indexes when only the backend is wrong
            with contextlib.suppress(RagrouteError):
                settings = RoutingConfig(self.path, {**data, "backend": None}).encoder_settings()
        if settings is None:
            settings = {"encoder": DEFAULT_ENCODER, "backend": "auto"}
        name, backend = settings["encoder"], settings["backend"]
        info: dict[str, Any] = {"name": name, "backend": backend, "model_id": "", "dim": None}
        self.report.encoder = info
        resolved = self.attempt(lambda: resolve_model(name), f"{self.path}: encoder: ")
        if resolved is not None:
            self.encoder_folder = resolved
            self.encoder_id = info["model_id"] = resolved.model_id
            self.encoder_dim = info["dim"] = model_dimension(resolved.path)

    def source_entries(self, data: dict[str, Any]) -> dict[str, Any]:
        from ragroute.yaml_files import read_yaml

        if "sources" not in data and "corpora" in data:
            if "index_dir" not in data:
                self.problem(
                    f"{self.path}: 'corpora:' needs 'index_dir:' (where the corpus indexes are built)"
                )
                return {}
            from ragroute.route.config import check_corpora_paths

            if not self.passes(lambda: check_corpora_paths(self.path, data)):
                return {}
            corpora = self.resolve(data["corpora"])
            parsed = self.attempt(lambda: read_yaml(corpora, "corpus definitions"), f"{self.path}: corpora: ")
            if parsed is None:
                return {}
            index_dir = self.resolve(data["index_dir"])
            return {
                spec.name: {
                    "index": str(index_dir / spec.name),
                    "description": spec.description,
                    "modality": spec.modality,
                    "granularity": spec.granularity,
                    # checked as loading reads it: until session 43 an `access: [public]` in the
                    # corpora file had no warning here, as it has under sources:
                    **({"access": list(spec.access)} if spec.access else {}),
                }
                for spec in self.check_corpora(corpora, parsed, built=False)
            }
        sources = data.get("sources")
        if not isinstance(sources, dict) or not sources:
            self.problem(f"{self.path}: expected a 'sources:' mapping of names to index directories")
            return {}
        if "corpora" in data:
            self.note(f"{self.path}: 'corpora:' is not read when 'sources:' is given")
        return sources

    def check_source(self, name: str, entry: Any, name_problem: str | None = None) -> None:
        from ragroute.references import locate_reference
        from ragroute.registry import SOURCE_KINDS
        from ragroute.route.source_kinds import SourceRequest, check_entry
        from ragroute.scopes import access_labels, open_sounding_note

        where = f"{self.path}: source {name!r}"
        if name_problem:  # as loading refuses it (source_name_problem)
            self.problem(f"{where}: {name_problem}")
        if not isinstance(entry, dict):
            self.problem(f"{where} needs an 'index' directory or a 'kind:'")
            return
        source = SourceCheck(name, str(entry.get("kind") or "index"))
        if "index" in entry:
            source.target = str(self.resolve(entry["index"]))
        elif "factory" in entry:
            source.target = str(entry["factory"])
        self.report.sources.append(source)
        request = SourceRequest(self.path, name, entry)
        if not self.passes(lambda: SOURCE_KINDS.check(source.kind, where)):
            source.status = "config error"
            return
        opener = SOURCE_KINDS.get(source.kind)
        entry_ok = self.passes(lambda: check_entry(request, source.kind, opener))
        labels = self.attempt(lambda: access_labels(entry.get("access"), where))
        if not entry_ok or labels is None:
            source.status = "config error"  # what it names is still checked: missing or broken says more
        else:
            note = open_sounding_note(labels, f"{where}: this source")
            if note:
                self.note(note)
        if isinstance(entry.get("factory"), str):  # another type: refused by check_entry
            factory = entry["factory"]
            if self.passes(lambda: locate_reference(factory, where, "factory", self.path.parent)):
                source.notes.append("factory found (read, not run)")
            else:
                source.status = "broken"
        if source.kind == "index" and isinstance(entry.get("index"), str):  # another type: refused above
            self.check_index(source, where, entry)

    def check_index(self, source: SourceCheck, where: str, entry: dict[str, Any]) -> None:
        from ragroute.index.io import read_index_manifest
        from ragroute.registry import INDEX_KINDS

        folder = self.resolve(entry["index"])
        source.target = str(folder)
        if not folder.exists():
            source.status = "missing"
            self.problem(f"{where}: index {folder} does not exist (build it with `ragroute build ... --out`)")
            return
        manifest = self.attempt(lambda: read_index_manifest(folder, verify=self.verify), f"{where}: ")
        if manifest is None:
            source.status = "broken"
            return
        source.index_kind = manifest.kind
        source.documents = manifest.params.get("documents")
        source.encoder = dict(manifest.encoder or {}) or None
        if not self.passes(lambda: INDEX_KINDS.check(manifest.kind, f"{where}: index {folder}")):
            source.status = "broken"
            return
        recorded = manifest.encoder or {}
        if getattr(INDEX_KINDS.get(manifest.kind), "needs_encoder", False):
            if not recorded.get("model_id"):
                source.status = "broken"
                self.problem(f"{where}: index {folder} records no encoder for a {manifest.kind} index")
            elif self.encoder_id and not self.same_encoder(recorded):
                source.status = "broken"
                self.problem(
                    f"{where}: index {folder} was built with encoder {recorded.get('model_id')!r} "
                    f"(dim {recorded.get('dim')}), not the config's encoder "
                    f"{self.report.encoder['name']!r} ({self.encoder_id}, dim {self.encoder_dim}); "
                    f"set 'encoder: {recorded.get('model_id')}' or rebuild the index"
                )
            elif self.encoder_folder is not None and recorded.get("weights"):
                now = self.encoder_weights()
                if now and now != recorded["weights"]:
                    source.status = "broken"
                    self.problem(
                        f"{where}: index {folder} was built with encoder {recorded.get('model_id')!r} "
                        f"(weights {recorded['weights']}), whose files have changed since (weights now "
                        f"{now}): rebuild the index, or restore the model folder"
                    )
        if self.verify and source.status != "broken":
            from ragroute.index.io import verify_outside_contents

            if not self.passes(lambda: verify_outside_contents(folder), f"{where}: "):
                source.status = "broken"
        if entry.get("expert") and isinstance(entry["expert"], str):
            self.check_expert(source, where, entry["expert"], manifest.kind, recorded)

    def encoder_weights(self) -> str | None:
        """The content digest of the config encoder's model folder (read once)."""
        if self._encoder_weights is None and self.encoder_folder is not None:
            self._encoder_weights = self.attempt(
                lambda: self.encoder_folder.content_digest(), f"{self.path}: encoder: "
            )
        return self._encoder_weights

    def same_encoder(self, recorded: Mapping[str, Any]) -> bool:
        """The config's encoder is the one ``recorded``: the same id, or a copy of its model folder
        (the same weights digest), and the same dimension (as loading checks it)."""
        dim = recorded.get("dim")
        if self.encoder_dim is not None and dim is not None and int(dim) != self.encoder_dim:
            return False
        if recorded.get("model_id") == self.encoder_id:
            return True
        return bool(recorded.get("weights")) and recorded.get("weights") == self.encoder_weights()

    def check_expert(
        self, source: SourceCheck, where: str, expert: Any, index_kind: str, recorded: Mapping[str, Any]
    ) -> None:
        from ragroute.store import artifact_exists, open_snapshot

        path = self.resolve(expert)
        source.expert = str(path)
        if not artifact_exists(path):
            source.status = "missing"
            self.problem(f"{where}: expert {path} does not exist (train one with `ragroute expert train`)")
            return
        snapshot = self.attempt(
            lambda: open_snapshot(path, family="expert", verify=self.verify), f"{where}: "
        )
        if snapshot is None:
            source.status = "broken"
            return
        manifest = snapshot.manifest
        base = str(manifest.params.get("base", ""))
        source.notes.append(f"expert {manifest.kind} adapter of {base or '?'}")
        if manifest.kind == "full":
            source.status = "broken"
            self.problem(
                f"{where}: expert {path} is a full expert, not a query-side adapter: index the corpus "
                "with it and list that index as a source"
            )
        elif index_kind != "dense":
            source.status = "broken"
            self.problem(
                f"{where}: expert {path} needs a dense index of base-model embeddings, not {index_kind}"
            )
        elif recorded.get("model_id"):
            # the base by its weights, as loading compares it (until session 40 by name: a copy of
            # the base was refused, another model under its name passed)
            from ragroute.experts.encoder import base_problem, expert_base

            problem = base_problem(
                expert_base(manifest.params),
                str(recorded["model_id"]),
                recorded.get("weights"),
                "the index's encoder",
            )
            if problem:
                source.status = "broken"
                self.problem(
                    f"{where}: expert {path} {problem}: retrain the expert over this model, or use "
                    "the base model it was trained on"
                )

    # ----------------------------------------------------------------- router

    def check_router(self, settings: Any, names: list[str]) -> None:
        from ragroute.pipeline.build import SELECTION_KEYS, check_router_value, router_keys, routing_options
        from ragroute.registry import ROUTERS
        from ragroute.route.factories import (
            ENSEMBLE_IN_ENSEMBLE,
            ROUTER_REQUIRED,
            ROUTER_SETTINGS,
            examples_file_problem,
            llm_fallback_problem,
            missing_setting_problem,
            model_problem,
            not_sources_message,
        )

        where = str(self.path)
        if not isinstance(settings, Mapping):
            self.problem(f"{where}: 'router:' must be a mapping")
            return
        bad = set()  # keys whose value is refused: said once, not again by what reads them
        for key in settings:
            if key not in router_keys():
                self.problem(f"{where}: router: {unknown_keys_message([key], router_keys(), 'router key')}")
            elif not self.passes(functools.partial(check_router_value, key, settings[key], where)):
                bad.add(key)
        kind = str(settings.get("kind", "prototype"))
        self.report.router = {"kind": kind}
        if not self.passes(lambda: ROUTERS.check(kind, f"{where}: router")):
            return
        options = self.attempt(lambda: routing_options(settings, where))
        if options is not None:
            self.report.router.update(
                {f.name: getattr(options, f.name) for f in fields(options) if f.name in settings}
            )
            unknown = sorted(set(options.always) - set(names))
            if unknown:  # the line loading gives (pipeline_from_settings; one per name until session 51)
                self.problem(not_sources_message(where, "always", unknown, self.opened(names, failed=False)))
            self.reached |= set(options.always)
        kinds = [kind]
        if kind == "ensemble":
            members = [] if "members" in bad else settings.get("members") or ["prototype", "confidence"]
            if not isinstance(members, list):
                self.problem(f"{where}: router: members must be a list of router kinds")
                members = []
            self.report.router["members"] = [str(m) for m in members]
            for member in members:
                if str(member) == "ensemble":
                    self.problem(f"{where}: {ENSEMBLE_IN_ENSEMBLE}")
                elif self.passes(functools.partial(ROUTERS.check, str(member), f"{where}: router members")):
                    kinds.append(str(member))
        # an llm router, or an ensemble's llm member (until session 54 only the former was checked:
        # a member's missing module or a fallback that asks the LLM passed and failed loading)
        if "llm" in kinds:
            self.check_llm(settings.get("llm"), f"{where}: router llm")
        # what each inner kind is to the router, named with the routes of one fitted on labels
        inner: dict[str, str] = {}
        for member in kinds[1:]:
            inner.setdefault(member, f"ensemble member {member}")
        if "llm" in kinds and settings.get("fallback") is not None and "fallback" not in bad:
            fallback = str(settings["fallback"])
            problem = llm_fallback_problem(settings)
            if problem:
                self.problem(f"{where}: router: {problem}")
            if self.passes(lambda: ROUTERS.check(fallback, f"{where}: router fallback")):
                kinds.append(fallback)
                inner.setdefault(fallback, f"llm fallback {fallback}")
                if fallback == "ensemble" and not problem:  # its members are built as loading builds
                    # them: until session 50 a fallback ensemble's knn member was not checked here
                    members = settings.get("members") or ["prototype", "confidence"]
                    for member in [] if "members" in bad else members if isinstance(members, list) else []:
                        if str(member) == "ensemble":
                            self.problem(f"{where}: {ENSEMBLE_IN_ENSEMBLE}")
                        elif self.passes(
                            functools.partial(ROUTERS.check, str(member), f"{where}: router members")
                        ):
                            kinds.append(str(member))
                            inner.setdefault(str(member), f"ensemble member {member}")
        for each in kinds:
            for key in sorted(ROUTER_REQUIRED.get(each, ())):
                if key not in settings:
                    self.problem(f"{where}: {missing_setting_problem(each, key)}")
        if "examples" in bad:
            pass
        elif (
            "examples" in settings
            and "knn" in kinds
            and examples_file_problem(self.resolve(settings["examples"]))
        ):
            self.problem(f"{where}: {examples_file_problem(self.resolve(settings['examples']))}")
        elif "examples" in settings and "knn" in kinds:
            from ragroute.route.labels import read_labelled_queries

            read = self.attempt(
                lambda: read_labelled_queries(self.resolve(settings["examples"])), f"{where}: router: "
            )
            if read is not None and kind == "knn":
                self.router_labels = sorted(set(read[1]))
            elif read is not None:  # an ensemble member or an llm router's fallback
                self.member_labels.append((inner["knn"], sorted(set(read[1]))))
        if "model" in settings and "model" not in bad and set(kinds) & {"trained", "pilot", "quality"}:
            model = self.resolve(settings["model"])
            if model_problem(model):
                self.problem(f"{where}: {model_problem(model)}")
            elif "trained" in kinds:  # its format and version as loading reads them (either layout)
                from ragroute.route.trained import TrainedRouter

                saved = self.attempt(lambda: TrainedRouter.read_settings(model), f"{where}: router: ")
                labels = saved.get("labels") if saved is not None else None
                if isinstance(labels, list) and kind == "trained":
                    self.router_labels = [str(label) for label in labels]
                elif isinstance(labels, list):  # an ensemble member or an llm router's fallback
                    self.member_labels.append((inner["trained"], [str(label) for label in labels]))
            elif not (model / "router.json").is_file():
                manifest = self.artifact(model, "router", f"{where}: router: ")
                if manifest is not None and kind in ("pilot", "quality"):
                    self.check_expert_router(model, manifest, kind, names, where)
        if kind == "fixed" and settings.get("routes") and "routes" not in bad:
            # the line loading gives (factories.fixed; until session 51 one line per route, worded apart)
            unknown = sorted({str(route) for route in settings["routes"]} - set(names))
            if unknown:
                self.problem(not_sources_message(where, "fixed", unknown, self.opened(names)))
        read = {"kind"} | SELECTION_KEYS
        for each in kinds:
            read |= ROUTER_SETTINGS.get(each, set())
        if kind == "ensemble":
            read.add("members")
        for key in settings:
            if key in router_keys() and key not in read:
                members = ", ".join(kinds[1:])
                reader = f"this ensemble's members ({members})" if kind == "ensemble" else f"a {kind} router"
                self.note(f"{where}: router: key {key!r} is not read by {reader}")

    def check_expert_router(
        self, model: Path, manifest: Any, kind: str, names: list[str], where: str
    ) -> None:
        """A pilot or quality router's artifact as loading reads it: of that kind, fitted on experts
        the config's sources name, and (with ``verify``) its arrays readable and of the shapes its
        manifest records: a wrong ``arrays.npz`` can still match its checksum."""
        from ragroute.route.expert_gains import check_labels
        from ragroute.route.factories import load_saved_router

        if manifest.kind != kind:
            self.problem(f"{where}: router: {model} holds a {manifest.kind} router, not a {kind} router")
            return
        labels = [str(label) for label in manifest.params.get("labels") or []]
        if self.passes(lambda: check_labels(labels, names, f"{where}: router {model}")):
            self.router_labels = labels
        from ragroute.route.expert_gains import recorded_dim

        # a quality router's width too (until session 54 only a pilot router's was checked)
        unrecorded = (
            kind in ("pilot", "quality") and recorded_dim(manifest.params) is None and self.encoder_dim
        )
        if self.verify or unrecorded:  # loaded without an encoder: no model is loaded, its arrays are read
            router = self.attempt(lambda: load_saved_router(model), f"{where}: router: ")
            dim = self.encoder_dim
            if router is not None and unrecorded and dim is not None:  # no encoder recorded: their width
                what = f"the config's encoder {self.encoder_id}"
                self.attempt(
                    lambda: router.check_width(int(dim), what, f"router {model}"), f"{where}: router: "
                )

    # ----------------------------------------------------------------- reranker, gate, llm

    def check_reranker(self, spec: Any) -> None:
        from ragroute.pipeline.build import stage_kind_problem
        from ragroute.registry import RERANKERS
        from ragroute.rerank import RERANKER_SETTINGS

        where = f"{self.path}: reranker"
        if not isinstance(spec, Mapping) or "kind" not in spec:
            self.problem(f"{where}: {stage_kind_problem('reranker')}")
            return
        kind = str(spec["kind"])
        self.report.reranker = kind
        if not self.passes(lambda: RERANKERS.check(kind, where)):
            return
        if kind in RERANKER_SETTINGS:
            self.keys(spec, RERANKER_SETTINGS[kind] | {"kind"}, where, f"{kind} reranker key")
        if kind == "cross-encoder":
            from ragroute.rerank.cross_encoder import check_cross_encoder_value

            for key in spec:
                self.attempt(functools.partial(check_cross_encoder_value, key, spec[key], where))
            self.check_reranker_model(str(spec.get("model", "rerank/default")), spec, where)

    def check_reranker_model(self, model: str, spec: Mapping[str, Any], where: str) -> None:
        """A cross-encoder's model as loading finds it: a folder beside the config, else as given
        (the working directory), else a name in the offline model cache. A `ragroute rerank train`
        artifact is opened as loading opens it (family, format, checksums unless --no-verify, its
        calibration, the ONNX file a backend asks for); a token limit above what the model reads
        is a problem. Until session 36 only the folder's existence was checked, beside the config
        only: damaged artifacts and indexes passed, a folder in the working directory did not."""
        from ragroute.encode.resolve import resolve_model
        from ragroute.rerank.cross_encoder import (
            CALIBRATION_FILE,
            ONNX_FP32,
            ONNX_INT8,
            model_positions,
            read_calibration,
        )
        from ragroute.store import artifact_exists

        folder = next((p for p in (self.resolve(model), Path(model)) if p.is_dir()), None)
        if folder is None:
            try:
                folder = Path(resolve_model(model).path)
            except RagrouteError:
                self.problem(
                    f"{where}: model {model!r} is not a folder ({self.resolve(model)}) nor a model in the "
                    "offline cache (train one with `ragroute rerank train`)"
                )
                return
        backend = str(spec.get("backend", "auto"))
        if artifact_exists(folder):
            snapshot = self.snapshot(folder, "reranker", f"{where}: model {model!r}: ")  # opened once
            if snapshot is None:
                return
            files = Path(snapshot.path)
            try:  # read as loading reads it: until session 48 any JSON passed ({"a": "x"} too)
                read_calibration(files)
            except OSError as exc:
                self.problem(f"{where}: model {model!r}: {CALIBRATION_FILE} is unreadable ({exc})")
            except RagrouteError as exc:
                self.problem(f"{where}: model {model!r}: {exc}")
            wanted = {"onnx": ONNX_FP32, "onnx-int8": ONNX_INT8}.get(backend)
            if wanted and not (files / wanted).is_file():
                self.problem(f"{where}: model {model!r} has no {wanted} for backend {backend!r}")
        else:
            files = folder
            if backend.startswith("onnx"):
                self.problem(
                    f"{where}: backend {backend!r} needs a reranker artifact (`ragroute rerank train`)"
                )
        positions, asked = model_positions(files), spec.get("max_length")
        if isinstance(asked, int) and positions is not None and asked > positions:
            self.problem(f"{where}: max_length {asked} is above the {positions} tokens model {model!r} reads")

    def keys(self, mapping: Mapping[str, Any], known: Any, where: str, what: str = "key") -> None:
        for key in mapping:
            if key not in known:
                self.problem(f"{where}: {unknown_keys_message([key], known, what)}")

    def check_gate(self, spec: Any, where: str, names: list[str], top: bool = True) -> None:
        from ragroute.gate.factories import (
            DEPTH_KEYS,
            GATE_SETTINGS,
            check_depth,
            check_gate_value,
            read_examples,
        )
        from ragroute.gate.signals import GATE_SIGNALS, SIGNAL_SETTINGS
        from ragroute.pipeline.build import stage_kind_problem
        from ragroute.registry import GATES

        if not isinstance(spec, Mapping) or "kind" not in spec:
            self.problem(f"{where}: {stage_kind_problem('gate')}")
            return
        kind = str(spec["kind"])
        if top:
            self.report.gate = kind
        if not self.passes(lambda: GATES.check(kind, where)):
            return
        if kind in GATE_SETTINGS:
            self.keys(spec, GATE_SETTINGS[kind] | {"kind"}, where, f"{kind} gate key")
        prefix = where.removesuffix(": gate")
        valid = {
            key: self.passes(functools.partial(check_gate_value, key, spec[key], prefix)) for key in spec
        }
        depth = spec.get("depth")
        if depth is not None:
            if isinstance(depth, Mapping):
                self.keys(depth, DEPTH_KEYS, f"{where}: depth")
                if set(depth) <= DEPTH_KEYS:  # known keys: now their values
                    self.attempt(lambda: check_depth(depth, prefix))
            else:  # the line loading gives (until session 51 worded apart)
                self.attempt(lambda: check_depth(depth, prefix))
        if kind == "trained":
            from ragroute.gate.trained import check_operating_point

            point = {key: spec.get(key) for key in ("threshold", "retrieval_rate", "retrieve_cost")}
            if all(valid.get(key, True) for key in point):  # each value said once (twice until session 38)
                self.attempt(lambda: check_operating_point(**point), f"{where}: ")
            if not valid.get("path", True):
                pass
            elif "path" not in spec:
                self.problem(
                    f"{where}: a trained gate needs 'path:' (a folder written by `ragroute gate fit`)"
                )
            elif not self.resolve(spec["path"]).exists():
                self.problem(f"{where}: gate {self.resolve(spec['path'])} does not exist")
            else:
                self.check_gate_artifact(self.resolve(spec["path"]), spec.get("signals"), where)
        if kind == "threshold":
            if ("above" in spec) == ("below" in spec):
                self.problem(f"{where}: a threshold gate needs exactly one of 'above' and 'below'")
            if "signal" not in spec:
                self.problem(f"{where}: a threshold gate needs 'signal:' (e.g. rarity, knn_vote)")
            else:
                before = len(self.report.problems)
                self.signal_spec(spec["signal"], GATE_SIGNALS, SIGNAL_SETTINGS, f"{where}: signal")
                if len(self.report.problems) == before:  # known kind and keys: now their values
                    self.check_threshold_signal(spec, where, valid.get("value", True))
        if "examples" in spec and valid["examples"]:
            examples = self.resolve(spec["examples"])
            if not examples.is_file():
                self.problem(f"{where}: examples file {examples} does not exist")
            else:
                self.attempt(lambda: read_examples(examples), f"{where}: examples {examples}: ")
        if kind == "llm":
            from ragroute.gate.factories import check_llm_gate_signals, check_llm_signal_list
            from ragroute.gate.llm_signals import LLM_SIGNAL_SETTINGS, LLM_SIGNALS

            self.check_llm(spec.get("llm"), f"{where}: llm")
            before = len(self.report.problems)
            if self.passes(lambda: check_llm_signal_list(spec.get("signals"), where)):
                for signal in spec.get("signals") or []:
                    self.signal_spec(signal, LLM_SIGNALS, LLM_SIGNAL_SETTINGS, f"{where}: signals")
            if len(self.report.problems) == before and all(valid.values()):  # known kinds and keys
                self.attempt(lambda: check_llm_gate_signals(spec, where))
            fallback = spec.get("fallback")
            if fallback is not None:
                if isinstance(fallback, Mapping) and fallback.get("kind") == "llm":
                    self.problem(f"{where}: fallback: an LLM gate's fallback must not need an LLM")
                else:
                    self.check_gate(fallback, f"{where}: fallback", names, top=False)

    def snapshot(self, path: Path, family: str, prefix: str) -> Any:
        """The artifact at ``path`` when it opens as one of ``family`` (a newer format, a damaged
        manifest, another family: recorded as a problem, ``None``)."""
        from ragroute.store import open_snapshot

        return self.attempt(lambda: open_snapshot(path, family=family, verify=self.verify), prefix)

    def artifact(self, path: Path, family: str, prefix: str) -> Any:
        """The manifest of :meth:`snapshot`, or ``None``."""
        snapshot = self.snapshot(path, family, prefix)
        return None if snapshot is None else snapshot.manifest

    def check_gate_artifact(self, path: Path, configured: Any, where: str) -> None:
        from ragroute.gate.trained import check_configured_signals, check_gate_settings

        manifest = self.artifact(path, "gate", f"{where}: ")
        if manifest is None:
            return
        readable = self.passes(lambda: check_gate_settings(path, manifest.params), f"{where}: ")
        if not readable or not isinstance(configured, list):
            return
        saved = [dict(s) for s in manifest.params.get("signals") or [] if isinstance(s, Mapping)]
        self.attempt(lambda: check_configured_signals(path, saved, configured), f"{where}: ")

    def check_threshold_signal(self, spec: Mapping[str, Any], where: str, value_ok: bool = True) -> None:
        """A threshold gate's signal as loading builds it (without an encoder or sources: its
        settings' types are checked, its value names read): its ``value:`` must be one of them,
        and a signal that learns from labelled queries needs ``examples:``."""
        from ragroute.gate.signals import GATE_SIGNALS, make_signal

        signal = spec["signal"]
        kind = signal.get("kind") if isinstance(signal, Mapping) else signal
        if kind not in GATE_SIGNALS:
            return  # reported by signal_spec
        built = self.attempt(lambda: make_signal(signal, encoder=None, sources=()), f"{where}: ")
        if built is None:
            return
        if built.needs_examples and not spec.get("examples"):
            self.problem(f"{where}: signal {built.kind} learns from labelled queries: give 'examples:'")
        elif not built.needs_examples and spec.get("examples") is not None:  # as loading refuses it
            self.problem(
                f"{where}: signal {built.kind} learns nothing from labelled queries: leave 'examples' out"
            )
        value = spec.get("value")
        if value is None or not value_ok:  # a value of the wrong type: said once
            return
        value = str(value)
        name = value.split(".", 1)[1] if value.startswith(f"{built.kind}.") else value
        if name not in built.names:
            known = ", ".join(built.names)
            self.problem(f"{where}: signal {built.kind} has no value {name!r}: it has {known}")

    def signal_spec(
        self, spec: Any, kinds: Mapping[str, Any], settings: Mapping[str, Any], where: str
    ) -> None:
        data = {"kind": spec} if isinstance(spec, str) else spec
        if not isinstance(data, Mapping):
            self.problem(f"{where}: a signal is a kind name or a mapping with 'kind:'")
            return
        kind = str(data.get("kind", ""))
        if kind not in kinds:
            self.problem(f"{where}: {unknown_keys_message([kind], kinds, 'signal kind')}")
        elif kind in settings:
            self.keys(data, settings[kind] | {"kind"}, f"{where} {kind}", "setting")

    def check_llm(self, settings: Any, where: str) -> str:
        """The kind of an ``llm:`` value ("" when it has problems); a reference is found and read,
        not run, as a source's ``factory:`` is."""
        from ragroute.llm.settings import REFERENCE, check_llm_settings
        from ragroute.references import locate_reference

        checked = self.attempt(lambda: check_llm_settings(settings, where))
        if checked is None:
            return ""
        kind, data = checked
        if kind == REFERENCE and not self.passes(
            lambda: locate_reference(data[REFERENCE], where, "llm", self.path.parent)
        ):
            return ""
        return kind

    def check_policy(self, data: dict[str, Any], names: list[str]) -> None:
        from ragroute.route.rules import Policy

        policy = self.attempt(lambda: Policy.from_yaml(self.path, source_name=str(self.path)))
        if policy is None:
            return
        self.report.policy = {"signals": len(policy.signals), "rules": len(policy.rules)}
        if policy.rules:
            self.attempt(lambda: policy.validate_routes([*names, "none"]))
            self.reached |= {name for rule in policy.rules for _, name, _ in rule.then.refs}
        elif policy.signals:
            self.note(f"{self.path}: 'signals:' without 'rules:' is not used")


def _corpus_format(spec: Any) -> str:
    """The format a corpus loads as, after refusing the loader options that do not apply to it."""
    from ragroute.loaders.auto import check_options, check_table_header, detect_format

    if spec.loads_images():  # a folder of images read by caption (its options refused there)
        return "images"
    fmt = detect_format(spec.path, **spec.options)
    check_options(spec.path, fmt, spec.options)
    check_table_header(spec.path, fmt, spec.options)
    return fmt


def model_dimension(folder: Path) -> int | None:
    """The embedding size of a sentence-transformers model folder, read from its config files
    (the last ``Dense`` layer, else the pooling or transformer width); ``None`` when unsure."""

    def read(path: Path) -> dict[str, Any]:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    modules: Any = []
    with contextlib.suppress(OSError, ValueError):
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    dim = None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", ""))
        config = read(folder / str(module.get("path", "")) / "config.json")
        if kind.endswith(".Dense") and config.get("out_features"):
            dim = int(config["out_features"])
        elif kind.endswith(".Pooling") and dim is None:
            modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v is True]
            if len(modes) == 1 and config.get("word_embedding_dimension"):
                dim = int(config["word_embedding_dimension"])
    if dim is None:
        config = read(folder / "config.json")
        for key in ("hidden_size", "dim", "d_model"):
            if isinstance(config.get(key), int):
                return int(config[key])
    return dim


# --------------------------------------------------------------------------- the key reference


def accepted_keys() -> dict[str, frozenset[str]]:
    """Every key the loaders accept, by section, read from the code that checks them.

    Sections: ``corpora.yaml`` (top level), ``corpus`` (one entry), ``corpus options``;
    ``routing`` (top level), ``sources`` (keys of every kind), ``sources.KIND`` (the keys that
    kind adds); likewise ``router`` (``kind`` and the selection keys) and ``router.KIND``,
    ``reranker`` / ``reranker.KIND``, ``gate`` / ``gate.KIND``, ``gate depth``, ``gate signal`` /
    ``gate signal.KIND``, ``gate llm signal`` / ``gate llm signal.KIND``, ``llm`` / ``llm.KIND``,
    ``signals`` / ``signals.TYPE``; ``rules``, ``rules then``, ``rules when``.
    """
    from ragroute.corpora import CORPUS_KEYS
    from ragroute.exposure import EXPOSURE_KEYS
    from ragroute.gate.factories import DEPTH_KEYS, GATE_SETTINGS
    from ragroute.gate.llm_signals import LLM_SIGNAL_SETTINGS
    from ragroute.gate.signals import SIGNAL_SETTINGS
    from ragroute.llm.settings import LLM_SETTINGS
    from ragroute.loaders.auto import LOADERS
    from ragroute.pipeline.build import SELECTION_KEYS
    from ragroute.registry import SIGNALS, SOURCE_KINDS
    from ragroute.rerank import RERANKER_SETTINGS
    from ragroute.route.config import TOP_KEYS
    from ragroute.route.factories import ROUTER_SETTINGS
    from ragroute.route.rules import ACTION_KEYS, OPERATORS, RULE_KEYS
    from ragroute.route.signals import COMMON_KEYS as SIGNAL_KEYS
    from ragroute.route.source_kinds import COMMON_KEYS, entry_keys

    sections: dict[str, frozenset[str]] = {
        "corpora.yaml": frozenset({"corpora"}),
        "corpus": frozenset(CORPUS_KEYS),
        "corpus options": frozenset(key for _, options in LOADERS.values() for key in options),
        "routing": frozenset(TOP_KEYS),
        "sources": frozenset(COMMON_KEYS),
        "router": frozenset({"kind"} | SELECTION_KEYS),
        "reranker": frozenset({"kind"}),
        "gate": frozenset({"kind"}),
        "gate signal": frozenset({"kind"}),
        "gate llm signal": frozenset({"kind"}),
        "llm": frozenset({"kind"}),
        "exposure": EXPOSURE_KEYS,
        "gate depth": frozenset(DEPTH_KEYS),
        "signals": frozenset(SIGNAL_KEYS),
        "rules": frozenset(RULE_KEYS),
        "rules then": frozenset(ACTION_KEYS),
        "rules when": frozenset(OPERATORS),
    }
    for kind in SOURCE_KINDS.names():
        sections[f"sources.{kind}"] = frozenset(entry_keys(SOURCE_KINDS.get(kind)) - COMMON_KEYS)
    keys: Iterable[str]
    for kind, keys in ROUTER_SETTINGS.items():
        sections[f"router.{kind}"] = frozenset(keys)
    for kind, keys in RERANKER_SETTINGS.items():
        sections[f"reranker.{kind}"] = frozenset(keys)
    for kind, keys in GATE_SETTINGS.items():
        sections[f"gate.{kind}"] = frozenset(keys)
    for kind, keys in SIGNAL_SETTINGS.items():
        sections[f"gate signal.{kind}"] = frozenset(keys)
    for kind, keys in LLM_SIGNAL_SETTINGS.items():
        sections[f"gate llm signal.{kind}"] = frozenset(keys)
    for kind, keys in LLM_SETTINGS.items():
        sections[f"llm.{kind}"] = frozenset(keys)
    for kind in SIGNALS.names():
        sections[f"signals.{kind}"] = frozenset(SIGNALS.get(kind).keys)
    return sections
