"""MCP ``tools/list`` JSON: one skill per tool (name, description, inputSchema).

Accepted shapes: ``{"tools": [...]}`` (the ``tools/list`` result), the JSON-RPC
response ``{"jsonrpc": "2.0", "id": ..., "result": {"tools": [...]}}``, a
bare list of tools (a result with a ``nextCursor`` is one page of a longer list:
it loads, with a warning), or one tool object (``name`` and ``inputSchema``).

A folder of such files (``.json`` / ``.yaml`` / ``.yml``, and ``.snap``: JSON tool
snapshots, one tool per file, as github-mcp-server keeps them in ``__toolsnaps__``),
found recursively, is one catalogue: the tools of every file, ids = tool names. A
name found in more than one file (two servers' ``search``) is kept in each, with
the id ``FILE:NAME`` (``FILE``: the file's path in the folder without its suffix)
and one warning naming the files. An id still repeated (a name written twice in
one file, or a tool named ``FILE:NAME`` itself) is one
:class:`~ragroute.skills.records.DuplicateSkillError` naming the file and item of
each copy and what to rename. Per tool:

* ``id`` and ``name`` = the tool's ``name``;
* ``description`` = its ``description``; a tool without one is loaded anyway
  (its ``title`` standing in, if it has one) with a warning naming file and tool;
* ``body`` = the title (if any), the input parameters as readable lines
  (``- query (string, required): what to search``; local ``$ref`` s into
  ``$defs`` / ``definitions`` resolved) and the ``inputSchema`` as JSON; an
  ``outputSchema`` is rendered the same way;
* ``metadata`` = ``{"source", "inputSchema", "title", "annotations", "outputSchema"}``
  (those present).

A tool that is not an object or has no name (or a name that is not text) cannot be loaded: it follows the
bad-record policy (``on_error``: skip + one warning per file, or raise).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import BadRecord, LoadReport, SkipLog, check_on_error, without_outside_links
from ragroute.skills.records import Catalogue, Skill, WarningLog, duplicate_error, jsonable
from ragroute.skills.schemas import (
    JSON_SUFFIXES,
    YAML_SUFFIXES,
    RefResolver,
    SchemaRenderer,
    load_structured,
    parse_structured_bytes,
)

KIND = "mcp"

#: Suffixes of the files a folder of MCP tools is read from (``.snap``: JSON tool snapshots).
TOOL_FILE_SUFFIXES = (*JSON_SUFFIXES, *YAML_SUFFIXES, ".snap")

#: Every MCP payload names one of these (a tool's ``inputSchema``, a result's ``tools``): a file naming
#: neither is not parsed when a folder is searched for tool files.
_TOOL_MARKERS = (b"inputSchema", b"tools")


def _is_tool(value: Any) -> bool:
    """Whether ``value`` is plainly one MCP tool: an object with a text ``name`` and an ``inputSchema``."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and isinstance(value.get("inputSchema"), dict)
    )


def mcp_tools(data: Any) -> list[Any] | None:
    """The tool list of an MCP ``tools/list`` payload in any accepted shape (one tool object: a list of
    one), or ``None`` if it is not one. A bare list is one when each item is an object with a
    ``name`` and some item has an ``inputSchema`` or ``description``, or when some item is plainly a
    tool (:func:`_is_tool`): its other items are then bad records for the loader to skip or refuse
    (until session 51 one tool without a name made the whole list no tool list: a folder left the
    file out without a word, and a file named alone was "not a skill catalogue")."""
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        return data["tools"]
    if _is_tool(data):
        return [data]
    named = isinstance(data, list) and all(isinstance(t, dict) and "name" in t for t in data)
    if isinstance(data, list) and (
        any(_is_tool(t) for t in data)
        or (named and any("inputSchema" in t or "description" in t for t in data))
    ):
        return data
    return None


#: Schema keys that give a schema without ``properties`` something to render.
_SHAPE_KEYS = ("$ref", "allOf", "oneOf", "anyOf", "items", "additionalProperties", "enum")


def _schema_block(title: str, schema: dict[str, Any], renderer: SchemaRenderer) -> list[str]:
    lines = [f"{title}:"]
    nested: list[str] = []
    if not schema.get("properties") and not any(schema.get(k) for k in _SHAPE_KEYS):
        # {"type": "object", "properties": {}}: a tool without parameters (github-mcp-server's
        # get_me) read "Parameters:\nobject"
        return lines + ["(none)"]
    if isinstance(schema.get("properties"), dict) and schema["properties"]:
        renderer.start_schema()
        renderer.property_lines(schema, nested, indent=0)
    else:
        nested = renderer.schema_lines(schema)
    return lines + (nested or ["(none)"])


def tool_skill(tool: dict[str, Any], source: str, log: WarningLog) -> Skill:
    """The skill of one MCP tool (``tool["name"]`` must be a non-empty string)."""
    name = str(tool["name"])
    title = tool.get("title") if isinstance(tool.get("title"), str) else ""
    annotations = tool.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    if not title and isinstance(annotations.get("title"), str):
        title = annotations["title"]
    description = tool.get("description")
    if not isinstance(description, str) or not description.strip():
        if description in (None, ""):
            what = "has no description"
        elif isinstance(description, str):
            what = "has an empty description (only spaces)"
        else:
            what = "has a non-string description"
        stand_in = "its title is used instead" if title else "loaded with an empty description"
        log.warn(source, f"tool {name!r} {what} ({stand_in})")
        description = title or ""
    description = description.strip()

    def unresolved(ref: str, where: str) -> None:
        log.warn(source, f"tool {name!r}: unresolved $ref {ref!r} in {where} (left as a marker)")

    parts: list[str] = []
    if title and title != description:
        parts.append(f"Title: {title}")
    metadata: dict[str, Any] = {"source": source}
    for key in ("inputSchema", "outputSchema"):
        schema = tool.get(key)
        if schema is None:
            if key == "inputSchema":
                log.warn(source, f"tool {name!r} has no inputSchema")
            continue
        if not isinstance(schema, dict):
            log.warn(source, f"tool {name!r}: {key} is not an object (kept as text)")
            parts.append(f"{key}: {json.dumps(jsonable(schema), ensure_ascii=False)}")
            continue
        renderer = SchemaRenderer(RefResolver(schema, unresolved), key)
        label = "Parameters" if key == "inputSchema" else "Output"
        parts.append("\n".join(_schema_block(label, schema, renderer)))
        parts.append(f"{key} JSON:\n{json.dumps(jsonable(schema), ensure_ascii=False, indent=2)}")
        metadata[key] = jsonable(schema)
    if title:
        metadata["title"] = title
    if annotations:
        metadata["annotations"] = jsonable(annotations)
    return Skill(id=name, name=name, description=description, body="\n\n".join(parts), metadata=metadata)


def skills_from_mcp(
    tools: list[Any],
    source: str,
    log: WarningLog,
    *,
    on_error: str = "skip",
    report: LoadReport | None = None,
    items: list[int] | None = None,
) -> list[Skill]:
    """Skills of a list of MCP tools; tools without a name follow ``on_error`` (``item N`` is 1-based;
    with ``items``, the item number of each skill returned is appended there)."""
    skip = SkipLog(source, "item", on_error, report)
    skills = []
    for i, tool in enumerate(tools, 1):
        if not isinstance(tool, dict):
            skip.bad(i, f"expected a tool object, got {type(tool).__name__}")
            continue
        name = tool.get("name")
        if name is not None and not isinstance(name, str):  # "tool without a 'name'" until session 40
            skip.bad(
                i, f"tool 'name' must be text, got {type(name).__name__} {json.dumps(jsonable(name))[:60]}"
            )
            continue
        if not isinstance(name, str) or not name.strip():
            skip.bad(i, "tool without a 'name'")
            continue
        skills.append(tool_skill(tool, source, log))
        if items is not None:
            items.append(i)
    if skip.entries:
        log.add(skip.summary(), source)
    return skills


ToolFile = tuple[Path, Any]
"""A tool file found in a folder and its parsed content (a :class:`BadRecord` if it could not be parsed)."""


def tool_files(folder: Path, log: WarningLog | None = None) -> list[ToolFile]:
    """The MCP tool files under ``folder`` (recursive, hidden excluded, by path), each parsed.

    A file with a :data:`TOOL_FILE_SUFFIXES` suffix whose text names ``inputSchema``
    or ``tools`` is parsed; it is kept when it holds an MCP payload, or when it
    cannot be parsed (then with the :class:`BadRecord`, for the loader's bad-record
    policy). Other files are left alone: an empty list means no MCP tool here. What parsing
    warns about (a key written twice) goes on ``log`` (until session 51 a folder's went only to
    Python's ``warnings``, not on ``Catalogue.warnings`` as a single file's did).
    """
    found: list[ToolFile] = []
    candidates = [
        path
        for path in sorted(folder.rglob("*"), key=lambda f: f.relative_to(folder).as_posix())
        if path.suffix.lower() in TOOL_FILE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    ]
    for path in without_outside_links(candidates, folder, "tool file"):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            found.append((path, BadRecord(f"cannot be read ({exc.strerror or exc})")))
            continue
        if not any(marker in raw for marker in _TOOL_MARKERS):
            continue
        try:
            data = parse_structured_bytes(raw, path, log)  # the bytes the marker check read: not read twice
        except BadRecord as exc:
            found.append((path, exc))
            continue
        if mcp_tools(data) is not None:
            found.append((path, data))
    if all(isinstance(data, BadRecord) for _, data in found):
        return []  # files naming "tools" that cannot be parsed do not make a folder of MCP tools
    return found


def _page_warning(path: Path, data: Any, log: WarningLog) -> None:
    result = data.get("result", data) if isinstance(data, dict) else None
    cursor = result.get("nextCursor") if isinstance(result, dict) else None
    if cursor not in (None, ""):
        log.warn(
            path,
            f"the tools/list result has a nextCursor ({cursor!r}): it is one page, the tools of the later "
            "pages are not in the file",
        )


def _load_folder(
    folder: Path, files: list[ToolFile], on_error: str, report: LoadReport | None, log: WarningLog
) -> list[Skill]:
    skip = SkipLog(str(folder), "file", on_error, report)
    per_file: list[tuple[str, list[Skill]]] = []
    holders: list[str] = []  # where each skill is: "FILE item N, tool 'NAME'", for a duplicate id
    for path, data in files:
        rel = path.relative_to(folder).as_posix()
        if isinstance(data, BadRecord):
            skip.bad(rel, str(data))
            continue
        _page_warning(path, data, log)
        tools = mcp_tools(data) or []
        items: list[int] = []
        skills = skills_from_mcp(tools, str(path), log, on_error=on_error, report=report, items=items)
        per_file.append((rel, skills))
        holders.extend(_holder(rel, i, skill) for i, skill in zip(items, skills))
    if skip.entries:
        log.add(skip.summary(), str(folder))
    files_of: dict[str, list[str]] = {}
    for rel, skills in per_file:
        for name in dict.fromkeys(skill.id for skill in skills):
            files_of.setdefault(name, []).append(rel)
    shared = {name: rels for name, rels in files_of.items() if len(rels) > 1}
    stems = [Path(rel).with_suffix("").as_posix() for rel, _ in per_file]
    out: list[Skill] = []
    for (rel, skills), stem in zip(per_file, stems):
        prefix = stem if stems.count(stem) == 1 else rel  # tools.json beside tools.yaml keep the suffix
        out.extend(
            dataclasses.replace(skill, id=f"{prefix}:{skill.id}") if skill.id in shared else skill
            for skill in skills
        )
    for name, rels in shared.items():
        listed = ", ".join(rels[:5]) + (f" and {len(rels) - 5} more" if len(rels) > 5 else "")
        log.warn(
            folder, f"tool name {name!r} is in {len(rels)} files ({listed}): their ids are 'FILE:{name}'"
        )
    _check_unique([s.id for s in out], folder, holders, log)
    return out


def _holder(file: str, item: int, skill: Skill) -> str:
    return f"{file} item {item}, tool {skill.name!r}"


def _check_unique(ids: list[str], source: Path, holders: list[str], log: WarningLog) -> None:
    """One :class:`~ragroute.skills.records.DuplicateSkillError` naming the file and item of each copy
    of a repeated id, and what to rename: a tool name written twice in one file, or a ``FILE:NAME`` id
    (a name in several files) that another tool's name already is. Until session 40 the error listed
    the ids alone."""
    error = duplicate_error(
        ids,
        source,
        holders=holders,
        fix="rename one of each in its file (the tool's 'name'; a name in several files has the id "
        "'FILE:NAME', which no tool may be named)",
    )
    if error is not None:
        log.finish()
        raise error


def load_mcp(
    path: str | Path,
    *,
    on_error: str = "skip",
    report: LoadReport | None = None,
    data: Any = None,
) -> Catalogue:
    """Load an MCP ``tools/list`` JSON file, or a folder of MCP tool files, as a
    :class:`~ragroute.skills.records.Catalogue` (see module doc).

    ``data`` is what the caller already parsed: the file's content, or for a
    folder its :func:`tool_files`. A file that is not valid JSON, or holds no
    tool list, and a folder without any tool file raise
    :class:`~ragroute.errors.CorpusFormatError`; in a folder, a tool file that
    cannot be parsed follows ``on_error``.
    """
    check_on_error(on_error)
    p = Path(path)
    log = WarningLog()
    if p.is_dir():
        files = tool_files(p, log) if data is None else data
        if not files:
            raise CorpusFormatError(
                f"{p}: no MCP tool file in this folder (a .json/.yaml/.snap file holding a tools/list "
                "result, a list of tools or one tool)"
            )
        skills = _load_folder(p, files, on_error, report, log)
    else:
        if data is None:
            data = load_structured(p, log)
        tools = mcp_tools(data)
        if tools is None:
            raise CorpusFormatError(
                f"{p}: not an MCP tools/list payload (expected {{'tools': [...]}}, "
                "{'result': {'tools': [...]}}, a list of tools or one tool)"
            )
        _page_warning(p, data, log)
        items: list[int] = []
        skills = skills_from_mcp(tools, str(p), log, on_error=on_error, report=report, items=items)
        _check_unique([s.id for s in skills], p, [_holder(p.name, i, s) for i, s in zip(items, skills)], log)
    log.finish()
    return Catalogue(skills, source=p, kind=KIND, warnings=log.messages)
