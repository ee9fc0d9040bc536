"""MCP ``tools/list`` JSON: one skill per tool (name, description, inputSchema).

Accepted shapes: ``{"tools": [...]}`` (the ``tools/list`` result), the JSON-RPC
response ``{"jsonrpc": "2.0", "id": ..., "result": {"tools": [...]}}``, or a
bare list of tools (a result with a ``nextCursor`` is one page of a longer list:
it loads, with a warning). Per tool:

* ``id`` and ``name`` = the tool's ``name``;
* ``description`` = its ``description``; a tool without one is loaded anyway
  (its ``title`` standing in, if it has one) with a warning naming file and tool;
* ``body`` = the title (if any), the input parameters as readable lines
  (``- query (string, required): what to search``; local ``$ref`` s into
  ``$defs`` / ``definitions`` resolved) and the ``inputSchema`` as JSON; an
  ``outputSchema`` is rendered the same way;
* ``metadata`` = ``{"source", "inputSchema", "title", "annotations", "outputSchema"}``
  (those present).

A tool that is not an object or has no name cannot be loaded: it follows the
bad-record policy (``on_error``: skip + one warning per file, or raise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import LoadReport, SkipLog, check_on_error
from ragroute.skills.records import Catalogue, Skill, WarningLog, jsonable
from ragroute.skills.schemas import RefResolver, SchemaRenderer, load_structured

KIND = "mcp"


def mcp_tools(data: Any) -> list[Any] | None:
    """The tool list of an MCP ``tools/list`` payload in any accepted shape, or ``None`` if it is not one."""
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        return data["tools"]
    if (
        isinstance(data, list)
        and data
        and all(isinstance(t, dict) and "name" in t for t in data)
        and any("inputSchema" in t or "description" in t for t in data)
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
        what = "has no description" if description in (None, "") else "has a non-string description"
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
) -> list[Skill]:
    """Skills of a list of MCP tools; tools without a name follow ``on_error`` (``item N`` is 1-based)."""
    skip = SkipLog(source, "item", on_error, report)
    skills = []
    for i, tool in enumerate(tools, 1):
        if not isinstance(tool, dict):
            skip.bad(i, f"expected a tool object, got {type(tool).__name__}")
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name.strip():
            skip.bad(i, "tool without a 'name'")
            continue
        skills.append(tool_skill(tool, source, log))
    if skip.entries:
        log.add(skip.summary(), source)
    return skills


def load_mcp(
    path: str | Path,
    *,
    on_error: str = "skip",
    report: LoadReport | None = None,
    data: Any = None,
) -> Catalogue:
    """Load an MCP ``tools/list`` JSON file as a :class:`~ragroute.skills.records.Catalogue` (see module doc).

    ``data`` is the already parsed file, if the caller has it. A file that is
    not valid JSON, or holds no tool list, raises :class:`~ragroute.errors.CorpusFormatError`.
    """
    check_on_error(on_error)
    p = Path(path)
    if data is None:
        data = load_structured(p)
    tools = mcp_tools(data)
    if tools is None:
        raise CorpusFormatError(
            f"{p}: not an MCP tools/list payload (expected {{'tools': [...]}}, "
            "{'result': {'tools': [...]}} or a list of tools)"
        )
    log = WarningLog()
    result = data.get("result", data) if isinstance(data, dict) else None
    cursor = result.get("nextCursor") if isinstance(result, dict) else None
    if cursor not in (None, ""):
        log.warn(
            p,
            f"the tools/list result has a nextCursor ({cursor!r}): it is one page, the tools of the later "
            "pages are not in the file",
        )
    skills = skills_from_mcp(tools, str(p), log, on_error=on_error, report=report)
    log.finish()
    return Catalogue(skills, source=p, kind=KIND, warnings=log.messages)
