"""OpenAPI 3 and Swagger 2 specs (JSON or YAML, a file or a folder of them): one skill per operation.

Per operation (``paths -> PATH -> METHOD``; OpenAPI 3.1 ``webhooks`` are requests
the API sends, not operations an agent calls, and are not loaded, nor are ``x-...``
extension keys of ``paths``):

* ``id`` = the ``operationId``, or ``"METHOD /path"`` (e.g. ``"GET /pets/{petId}"``)
  when it has none or shares it with another operation of the spec (one
  warning per repeated operationId); in a folder holding more than one spec, ids are prefixed
  with the spec's path relative to the folder, without suffix
  (``"petstore:listPets"``; with it when two specs differ only by suffix:
  ``"petstore.yaml:listPets"``), since separate APIs often reuse operation names;
* ``name`` = the same operationId or ``"METHOD /path"``;
* ``description`` = the ``summary`` (or, without one, the ``description``);
* ``body`` = ``METHOD /path``, the API title, tags, the operation's long
  description, then its parameters (path-level ones merged in), request body
  and responses, each schema rendered as readable lines
  (``- name (string, required): ...``) with local ``$ref`` s resolved
  (recursion cut, nesting and length capped: see :mod:`ragroute.skills.schemas`);
* ``metadata`` = ``{"method", "path", "operationId", "tags", "api", "source",
  "spec_version", "deprecated"}`` (those present; ``method`` in capitals).

References to other ``.json`` / ``.yaml`` / ``.yml`` files
(``schemas/common.yaml#/components/schemas/Pet``) are followed when the file is
inside the spec's folder (for a folder catalogue: inside that folder); URLs are
never fetched. An unresolved ``$ref`` leaves ``[unresolved $ref: REF]`` in the
body and ONE warning per reference and file (naming the first operation that
uses it, and for another file why it was not read); the operation is kept. An
operation without summary or description is kept with a warning. An operation
entry that is not an object, or a spec file in a folder that cannot be parsed,
follows the bad-record policy (``on_error``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import yaml

from ragroute.display import counted
from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import BadRecord, LoadReport, SkipLog, check_on_error, without_outside_links
from ragroute.skills.records import Catalogue, Skill, WarningLog, jsonable
from ragroute.skills.schemas import (
    JSON_SUFFIXES,
    YAML_SUFFIXES,
    RefResolver,
    SchemaRenderer,
    load_structured,
    read_structured_file,
)

KIND = "openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: the other fields of a path item (OpenAPI 3; Swagger 2 has a subset); ``x-...`` extensions aside
PATH_ITEM_KEYS = frozenset({"$ref", "summary", "description", "servers", "parameters"})
SPEC_SUFFIXES = JSON_SUFFIXES + YAML_SUFFIXES
#: Lines of schema text one operation's body may hold.
MAX_BODY_LINES = 300

#: A file whose head lacks the key is searched whole up to this size (a JSON spec with sorted keys has
#: ``openapi`` after ``components``, megabytes in).
MAX_SCAN_BYTES = 100_000_000

# a key at the start of a line (YAML, pretty JSON; the first one after a byte order mark: a YAML spec
# saved with one was no spec, and left out of its folder without a word) or after '{' / ',' (minified JSON)
_SPEC_HEAD = re.compile(r"""(?:^\ufeff?|[{,])\s*["']?(openapi|swagger)["']?\s*:""", re.MULTILINE)


def spec_version(data: Any) -> str | None:
    """``"3.x"`` / ``"2.0"`` for an OpenAPI 3 / Swagger 2 document, else ``None``."""
    if not isinstance(data, dict):
        return None
    for key in ("openapi", "swagger"):
        if key in data and isinstance(data[key], (str, int, float)):
            return str(data[key])
    return None


def looks_like_spec(path: Path, head_bytes: int = 65536) -> bool:
    """Whether a JSON/YAML file holds a top-level ``openapi:`` / ``swagger:`` key: a cheap search of
    its first bytes (then, if the file is not too large, the rest), confirmed by reading the file
    when it parses (until session 36 a nested key counted: an MCP tool with a parameter named
    ``openapi`` made its folder an OpenAPI catalogue of no skills). A file that does not parse keeps
    the search's answer, so a broken spec is still reported by the spec loader."""
    if path.suffix.lower() not in SPEC_SUFFIXES:
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(head_bytes)
            found = bool(_SPEC_HEAD.search(head.decode("utf-8", errors="replace")))
            if not found and (len(head) < head_bytes or path.stat().st_size > MAX_SCAN_BYTES):
                return False
            text = (head + fh.read()).decode("utf-8", errors="replace")
    except OSError:
        return False
    if not found and not _SPEC_HEAD.search(text):
        return False
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return True
    return spec_version(data) is not None


def _shape(value: Any) -> str:
    """``a list``, ``a number (42)``: what a value is, for a warning."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    names: dict[type, str] = {list: "a list", dict: "a mapping", str: "a string"}
    return names.get(type(value), f"a {type(value).__name__}")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Operation:
    """Renders one operation into a skill."""

    def __init__(
        self,
        spec: dict[str, Any],
        resolver: RefResolver,
        method: str,
        path: str,
        op: dict[str, Any],
        path_params: list[Any],
    ) -> None:
        self.spec = spec
        self.swagger2 = "swagger" in spec and "openapi" not in spec
        self.method = method.upper()
        self.path = path
        self.op = op
        self.path_params = path_params
        self.where = f"{self.method} {path}"
        self.renderer = SchemaRenderer(resolver, self.where, max_lines=MAX_BODY_LINES)
        self.resolver = resolver

    def parameters(self) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
        """Parameter lines, and Swagger 2 ``in: body`` parameters (request bodies) as (name, param)."""
        merged: dict[tuple[str, str], Any] = {}
        own = self.op.get("parameters")
        for raw in list(self.path_params) + (own if isinstance(own, list) else []):
            target, _name, marker = self.resolver.resolve(raw, self.where)
            if marker is not None or not isinstance(target, dict):
                merged[(marker or repr(raw), "")] = marker or "[invalid parameter]"
                continue
            target = _overridden(raw, target)
            merged[(str(target.get("name", "")), str(target.get("in", "")))] = target
        lines: list[str] = []
        bodies: list[tuple[str, dict[str, Any]]] = []
        for (name, where), param in merged.items():
            if isinstance(param, str):
                lines.append(f"- {param}")
                continue
            if where == "body":
                bodies.append((name, param))
                continue
            schema = param if self.swagger2 else param.get("schema")
            if schema is None:  # OpenAPI 3: a schema per media type (`content`), as a request body has
                schema = self._media_schema(param.get("content"))[1]
                schema = param if schema is None else schema  # was always the parameter itself: "any"
            kind = self.renderer.summary(schema)
            flags = ", required" if param.get("required") else ""
            resolved, _ref, _marker = self.resolver.resolve(schema, self.where)
            # the parameter's description, else its schema's, as an MCP property's is read (until
            # session 56 one written only in the schema was left out of the body)
            described = (
                _text(d.get("description")) for d in (param, schema, resolved) if isinstance(d, dict)
            )
            description = _one_line(next((text for text in described if text), ""))
            if (
                isinstance(resolved, dict)
                and "enum" not in resolved
                and isinstance(resolved.get("items"), dict)
            ):
                resolved = resolved["items"]
            extras = self.renderer.extras(resolved) if isinstance(resolved, dict) else ""
            line = f"- {name} ({where}, {kind}{flags})" + (f": {description}" if description else "")
            lines.append(line + extras)
            # an object parameter's properties below it, as for a request body or an MCP property
            # (until session 56 left out: `filter (query, object)` and nothing of what it holds)
            self.renderer.start_schema()
            self.renderer.nested_lines(schema, lines, indent=2)
        return lines, bodies

    def _media_schema(self, content: Any) -> tuple[list[str], Any]:
        """Media types of an OpenAPI 3 ``content`` map, and the first schema found in it."""
        if not isinstance(content, dict):
            return [], None
        schema = None
        for media in content.values():
            if schema is None and isinstance(media, dict) and "schema" in media:
                schema = media["schema"]
        return list(content), schema

    def request_body(self, swagger_bodies: list[tuple[str, dict[str, Any]]]) -> list[str]:
        out: list[str] = []
        if self.swagger2:
            consumes = self.op.get("consumes") or self.spec.get("consumes") or []
            consumes = consumes if isinstance(consumes, list) else [consumes]  # one media type, unlisted
            media_text = f" ({', '.join(map(str, consumes))})" if consumes else ""
            for name, param in swagger_bodies:
                flags = ", required" if param.get("required") else ""
                description = _one_line(_text(param.get("description")))
                out.append(
                    f"Request body{media_text}{flags}: {name}" + (f" - {description}" if description else "")
                )
                if "schema" in param:
                    out.extend(self.renderer.schema_lines(param["schema"], indent=2))
            return out
        if "requestBody" not in self.op:
            return out
        body, _name, marker = self.resolver.resolve(self.op["requestBody"], self.where)
        if marker is not None:
            return [f"Request body: {marker}"]
        body = _overridden(self.op["requestBody"], body)
        if not isinstance(body, dict):
            return out
        media, schema = self._media_schema(body.get("content"))
        head = "Request body"
        head += f" ({', '.join(media)})" if media else ""
        head += ", required" if body.get("required") else ""
        description = _one_line(_text(body.get("description")))
        out.append(head + (f": {description}" if description else ":"))
        if schema is not None:
            out.extend(self.renderer.schema_lines(schema, indent=2))
        return out

    def responses(self) -> list[str]:
        responses = self.op.get("responses")
        if not isinstance(responses, dict) or not responses:
            return []
        out = ["Responses:"]
        for code, raw in responses.items():
            response, _name, marker = self.resolver.resolve(raw, self.where)
            if marker is not None:
                out.append(f"- {code}: {marker}")
                continue
            if not isinstance(response, dict):
                continue
            response = _overridden(raw, response)
            description = _one_line(_text(response.get("description")))
            media: list[str]
            if self.swagger2:
                media, schema = [], response.get("schema")
            else:
                media, schema = self._media_schema(response.get("content"))
            media_text = f" ({', '.join(media)})" if media else ""
            out.append(f"- {code}{media_text}" + (f": {description}" if description else ""))
            if schema is not None:
                out.extend(self.renderer.schema_lines(schema, indent=4))
        return out

    def _check_shapes(self, source: str, log: WarningLog) -> None:
        """Warn about each field of the operation whose value has a shape
        the spec format does not allow, which is then left out (or, for ``operationId``, replaced
        by METHOD /path): until session 38 each went without a word."""
        fields = [
            ("operationId", self.op.get("operationId"), str, "a string", "the id is 'METHOD /path'"),
            ("parameters", self.op.get("parameters"), list, "a list", "left out"),
            ("responses", self.op.get("responses"), dict, "a mapping", "left out"),
            ("requestBody", self.op.get("requestBody"), dict, "a mapping", "left out"),
            ("tags", self.op.get("tags"), list, "a list", "left out"),
            ("summary", self.op.get("summary"), str, "a string", "left out"),
            ("description", self.op.get("description"), str, "a string", "left out"),
        ]
        for key, value, kind, expected, outcome in fields:
            if value is not None and not isinstance(value, kind):
                log.warn(source, f"{self.where}: {key} is {_shape(value)}, not {expected}: {outcome}")

    def skill(self, id_prefix: str, source: str, log: WarningLog) -> Skill:
        self._check_shapes(source, log)
        op_id = _text(self.op.get("operationId"))
        name = op_id or self.where
        summary = _text(self.op.get("summary"))
        long_description = _text(self.op.get("description"))
        description = summary or long_description
        if not description:
            log.warn(source, f"operation {self.where} has no summary or description")
        info = self.spec.get("info")
        info = info if isinstance(info, dict) else {}
        api = _text(info.get("title"))
        listed = self.op.get("tags")
        listed = listed if isinstance(listed, list) else []
        tags = [str(t) for t in listed if isinstance(t, (str, int, float))]
        head = [self.where]
        if api:
            head.append(f"API: {api}")
        if tags:
            head.append(f"Tags: {', '.join(tags)}")
        if self.op.get("deprecated") is True:
            head.append("Deprecated.")
        parts = ["\n".join(head)]
        if long_description and long_description != description:
            parts.append(long_description)
        param_lines, swagger_bodies = self.parameters()
        if param_lines:
            parts.append("\n".join(["Parameters:", *param_lines]))
        body_lines = self.request_body(swagger_bodies)
        if body_lines:
            parts.append("\n".join(body_lines))
        response_lines = self.responses()
        if response_lines:
            parts.append("\n".join(response_lines))
        metadata: dict[str, Any] = {"method": self.method, "path": self.path}
        if op_id:
            metadata["operationId"] = op_id
        if tags:
            metadata["tags"] = tags
        if api:
            metadata["api"] = api
        metadata["source"] = source
        metadata["spec_version"] = spec_version(self.spec)
        if self.op.get("deprecated") is True:
            metadata["deprecated"] = True
        return Skill(
            id=f"{id_prefix}{name}",
            name=name,
            description=description,
            body="\n\n".join(parts),
            metadata=jsonable(metadata),
        )


def skills_from_openapi(
    spec: dict[str, Any],
    source: str,
    log: WarningLog,
    *,
    id_prefix: str = "",
    on_error: str = "skip",
    report: LoadReport | None = None,
    base: Path | None = None,
    root: Path | None = None,
) -> list[Skill]:
    """One skill per operation of a parsed OpenAPI 3 / Swagger 2 document (see the module doc).

    ``base``: the spec's folder, to follow references to other files from (only
    those inside ``root``, by default ``base``); without it they stay unresolved.
    """

    def unresolved(ref: str, where: str) -> None:
        reason = resolver.reasons.get(ref)
        why = f": {reason}" if reason else ""
        log.warn(source, f"unresolved $ref {ref!r} (first in {where}; left as a marker{why})")

    resolver = RefResolver(spec, unresolved, base=base, root=root, log=log)
    skip = SkipLog(source, "operation", on_error, report)
    info = spec.get("info")
    if info is not None and not isinstance(info, dict):
        log.warn(source, f"info is {_shape(info)}, not a mapping: the API title is left out")
    paths = spec.get("paths")
    if not isinstance(paths, dict) or not paths:
        hooks = spec.get("webhooks")
        why = (
            f" (its {counted(len(hooks), 'webhook')} {'is a request' if len(hooks) == 1 else 'are requests'} "
            "the API sends, not operations to call)"
            if isinstance(hooks, dict) and hooks
            else ""
        )
        log.warn(source, f"no 'paths' in the spec: no operations loaded{why}")
        return []
    skills = []
    for path, raw_item in paths.items():
        if str(path).startswith("x-"):
            # a specification extension of the Paths Object, not a path: until session 56 it was a bad
            # path item (skipped with a warning, or the whole spec refused with on_error="raise")
            continue
        item, _name, marker = resolver.resolve(raw_item, f"path {path}")
        if marker is not None or not isinstance(item, dict):
            skip.bad(str(path), marker or "path item is not an object")
            continue
        if isinstance(raw_item, dict) and "$ref" in raw_item:
            item = _with_siblings(raw_item, item, f"path {path}", source, log)
        path_params = item.get("parameters")
        if path_params is not None and not isinstance(path_params, list):  # without a word until session 56
            log.warn(source, f"path {path}: parameters is {_shape(path_params)}, not a list: left out")
        path_params = path_params if isinstance(path_params, list) else []
        for key in item:
            if str(key).lower() in HTTP_METHODS and key not in HTTP_METHODS:
                log.warn(
                    source,
                    f"path {path}: operation key {key!r} must be lower case ({key.lower()!r}): not loaded",
                )
            elif key not in PATH_ITEM_KEYS and key not in HTTP_METHODS and not str(key).startswith("x-"):
                log.warn(
                    source,
                    f"path {path}: key {key!r} is not an HTTP method ({', '.join(HTTP_METHODS)}) nor a path "
                    "item field: not loaded as an operation",
                )
        for method in HTTP_METHODS:
            if method not in item:
                continue
            op, _name, marker = resolver.resolve(item[method], f"{method.upper()} {path}")
            if marker is not None:  # said by the resolver (the $ref and where); the marker stands in
                op = {"description": marker}
            if not isinstance(op, dict):
                skip.bad(f"{method.upper()} {path}", "operation is not an object")
                continue
            skills.append(
                _Operation(spec, resolver, method, str(path), op, path_params).skill(id_prefix, source, log)
            )
    if skip.entries:
        log.add(skip.summary(), source)
    return _unique_operation_ids(skills, id_prefix, source, log)


def _with_siblings(
    raw: dict[str, Any], target: dict[str, Any], where: str, source: str, log: WarningLog
) -> dict[str, Any]:
    """A path item given as a ``$ref`` with fields beside it (``$ref: '#/paths/~1b'`` and a ``post:``):
    the target's fields and those beside the reference, these winning where both have one (with a
    warning naming the field); until session 53 the fields beside it, operations included, were
    dropped without a word."""
    own = {key: value for key, value in raw.items() if key != "$ref"}
    both = [key for key in own if key in target]
    if both:
        log.warn(
            source,
            f"{where}: {', '.join(map(repr, both))} given both beside its $ref and in the path item it "
            "refers to: the one beside the $ref is loaded",
        )
    return {**target, **own}


def _overridden(raw: Any, target: Any) -> Any:
    """A parameter, request body or response given as a ``$ref`` with a ``summary`` / ``description``
    beside it (an OpenAPI 3.1 Reference Object): those override the target's, as the spec says
    (until session 53 the target's were used)."""
    if not (isinstance(raw, dict) and "$ref" in raw and isinstance(target, dict)):
        return target
    own = {key: raw[key] for key in ("summary", "description") if isinstance(raw.get(key), str)}
    return {**target, **own} if own else target


def _unique_operation_ids(skills: list[Skill], id_prefix: str, source: str, log: WarningLog) -> list[Skill]:
    """Operations sharing an operationId get ``"METHOD /path"`` ids instead, with one warning per id."""
    by_id: dict[str, list[Skill]] = {}
    for skill in skills:
        if "operationId" in skill.metadata:
            by_id.setdefault(skill.metadata["operationId"], []).append(skill)
    renamed: dict[int, Skill] = {}
    for op_id, same in by_id.items():
        if len(same) < 2:
            continue
        wheres = [f"{s.metadata['method']} {s.metadata['path']}" for s in same]
        log.warn(
            source,
            f"operationId {op_id!r} is used by {len(same)} operations ({', '.join(wheres)}); "
            "their ids are 'METHOD /path'",
        )
        for skill, where in zip(same, wheres):
            renamed[id(skill)] = dataclasses.replace(skill, id=f"{id_prefix}{where}")
    return [renamed.get(id(skill), skill) for skill in skills] if renamed else skills


def spec_files(folder: Path) -> list[Path]:
    """JSON/YAML files under ``folder`` (recursive, hidden excluded) whose head names openapi/swagger."""
    candidates = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SPEC_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    found = [p for p in without_outside_links(candidates, folder, "spec file") if looks_like_spec(p)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def load_openapi(
    path: str | Path,
    *,
    on_error: str = "skip",
    report: LoadReport | None = None,
    data: Any = None,
) -> Catalogue:
    """Load an OpenAPI 3 / Swagger 2 spec file, or a folder of them, as a catalogue (see the module doc).

    ``data`` is the already parsed spec (for a file), if the caller has it. A
    single file that cannot be parsed or is not a spec raises
    :class:`~ragroute.errors.CorpusFormatError`; in a folder, a spec file that
    cannot be parsed follows ``on_error``.
    """
    check_on_error(on_error)
    p = Path(path)
    log = WarningLog()
    skills: list[Skill] = []
    if p.is_dir():
        files = spec_files(p)
        if not files:
            raise CorpusFormatError(f"{p}: no OpenAPI/Swagger spec (.json, .yaml, .yml) in this folder")
        skip = SkipLog(str(p), "file", on_error, report)
        stems = [f.relative_to(p).with_suffix("").as_posix() for f in files]
        for file, stem in zip(files, stems):
            rel = file.relative_to(p).as_posix()
            try:
                spec = read_structured_file(file, log)
            except BadRecord as exc:
                skip.bad(rel, str(exc))
                continue
            if spec_version(spec) is None:
                skip.bad(rel, "not an OpenAPI/Swagger document (no top-level 'openapi' or 'swagger')")
                continue
            # pets.yaml beside pets.json: the suffix stays, so their ids do not collide
            prefix = f"{stem if stems.count(stem) == 1 else rel}:" if len(files) > 1 else ""
            skills.extend(
                skills_from_openapi(
                    spec,
                    str(file),
                    log,
                    id_prefix=prefix,
                    on_error=on_error,
                    report=report,
                    base=file.parent,
                    root=p,
                )
            )
        if skip.entries:
            log.add(skip.summary(), str(p))
    else:
        spec = load_structured(p, log) if data is None else data
        if spec_version(spec) is None:
            raise CorpusFormatError(
                f"{p}: not an OpenAPI/Swagger document (no top-level 'openapi' or 'swagger')"
            )
        skills = skills_from_openapi(spec, str(p), log, on_error=on_error, report=report, base=p.parent)
    log.finish()
    return Catalogue(skills, source=p, kind=KIND, warnings=log.messages)
