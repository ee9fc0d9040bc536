"""``load_catalogue``: load any supported skill catalogue, detecting its kind from the path.

Detection, first match wins:

==============================================  ==============  ==========================================
path                                            kind            loaded with
==============================================  ==============  ==========================================
folder holding ``skills.jsonl``                 skills_jsonl    :func:`~.load_skills_jsonl.load_skills_jsonl`
folder with a ``SKILL.md`` anywhere below it    skill_md        :func:`~.load_skill_md.load_skill_md`
folder with ``.json`` / ``.yaml`` / ``.yml``    openapi         :func:`~.load_openapi.load_openapi`
specs (``openapi:`` / ``swagger:`` key)
folder with MCP tool files (``.json`` /         mcp             :func:`~.load_mcp.load_mcp`
``.yaml`` / ``.yml`` / ``.snap`` holding a
tools/list result, a list of tools or a tool)
a ``SKILL.md`` file                             skill_md        (that one skill)
``*.jsonl``                                     skills_jsonl
``*.json`` / ``*.yaml`` / ``*.yml`` with a      openapi
top-level ``openapi`` or ``swagger`` key
``*.json`` / ``*.yaml`` / ``*.yml`` /          mcp             :func:`~.load_mcp.load_mcp`
``*.snap`` holding ``{"tools": [...]}``,
``{"result": {"tools": [...]}}``, a list of
tools or one tool
==============================================  ==============  ==========================================

Anything else raises ONE :class:`~ragroute.errors.CorpusFormatError` line
saying what was found and what was expected.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, check_path
from ragroute.loaders.common import LoadReport, check_on_error
from ragroute.skills.load_mcp import load_mcp, mcp_tools, tool_files
from ragroute.skills.load_openapi import SPEC_SUFFIXES, load_openapi, spec_files, spec_version
from ragroute.skills.load_skill_md import SKILL_FILE, load_skill_md, skill_files
from ragroute.skills.load_skills_jsonl import SKILLS_FILE, load_skills_jsonl
from ragroute.skills.records import Catalogue, WarningLog
from ragroute.skills.schemas import load_structured

KINDS = ("skill_md", "mcp", "openapi", "skills_jsonl")

_EXPECTED = (
    "a folder of SKILL.md skills, a folder holding skills.jsonl, a SKILLS .jsonl file, an MCP tools/list "
    ".json (or a folder of MCP tool files), or an OpenAPI 3 / Swagger 2 .json/.yaml file or folder"
)


def _describe(data: Any) -> str:
    if isinstance(data, dict):
        keys = ", ".join(repr(k) for k in list(data)[:6]) + (", ..." if len(data) > 6 else "")
        return f"an object with keys {keys}" if data else "an empty object"
    if isinstance(data, list):
        return f"a list of {counted(len(data), 'item')}" if data else "an empty list"
    return f"a {type(data).__name__}"


def detect_file_kind(path: Path, log: WarningLog | None = None) -> tuple[str, Any]:
    """``(kind, parsed data or None)`` for a catalogue file; :class:`CorpusFormatError` if not one
    (what parsing it warns about goes on ``log``)."""
    suffix = path.suffix.lower()
    if path.name.lower() == SKILL_FILE.lower():
        return "skill_md", None
    if suffix == ".jsonl":
        return "skills_jsonl", None
    if suffix in SPEC_SUFFIXES or suffix == ".snap":
        data = load_structured(path, log)
        if suffix != ".snap" and spec_version(data) is not None:
            return "openapi", data
        if mcp_tools(data) is not None:
            return "mcp", data
        raise CorpusFormatError(
            f"{path}: not a skill catalogue: found {_describe(data)}; expected an MCP tools/list "
            "({'tools': [...]}, {'result': {'tools': [...]}}, a list of tools or one tool) or an "
            "OpenAPI/Swagger spec (top-level 'openapi' or 'swagger')"
        )
    raise CorpusFormatError(
        f"{path}: unknown catalogue file type {suffix or '(no extension)'!r}; expected {_EXPECTED}"
    )


def detect_catalogue(path: str | Path) -> str:
    """The kind :func:`load_catalogue` would use for ``path``: skill_md, mcp, openapi or skills_jsonl."""
    # a path that is not one (None, a number) raised pathlib's TypeError until session 54
    return _detect(Path(check_path(path, "detect_catalogue needs a catalogue file or folder path")))[0]


def _detect(p: Path, log: WarningLog | None = None) -> tuple[str, Any]:
    if not p.exists():
        raise CorpusFormatError(f"{p}: no such file or folder")
    if p.is_file():
        return detect_file_kind(p, log)
    if (p / SKILLS_FILE).is_file():
        return "skills_jsonl", None
    if skill_files(p):
        return "skill_md", None
    if spec_files(p):
        return "openapi", None
    mcp_files = tool_files(p, log)
    if mcp_files:
        return "mcp", mcp_files
    n_files = sum(1 for f in p.rglob("*") if f.is_file())
    raise CorpusFormatError(
        f"{p}: no skill catalogue recognised in this folder ({counted(n_files, 'file')}: no {SKILLS_FILE}, "
        f"no {SKILL_FILE} below it, no OpenAPI/Swagger .json/.yaml spec, no MCP tool file); "
        f"expected {_EXPECTED}"
    )


def _say_left_out(folder: Path, kind: str, log: WarningLog) -> None:
    """Warn, naming a few, about catalogue files of another kind in a folder loaded as ``kind`` (one
    kind a catalogue): a folder holding an OpenAPI spec and MCP tool files loaded only the spec, and
    said nothing of the tools (until session 38); a folder holding ``skills.jsonl`` said nothing of
    the SKILL.md skills, specs and MCP files beside it (until session 40). Files inside a skill's
    folder are its side files."""
    with warnings.catch_warnings():  # what the loader itself says about these files is not said here
        warnings.simplefilter("ignore")
        skill_mds = skill_files(folder) if kind in ("skill_md", "skills_jsonl") else []
        # any kind detected after this one may sit beside it (the module doc's order: an MCP
        # folder holds none of the others)
        specs = spec_files(folder) if kind != "mcp" else []
        spec_set = set(specs)
        others: dict[str, list[Path]] = {}
        if kind == "skills_jsonl":
            others["SKILL.md"] = skill_mds
        if kind in ("skill_md", "skills_jsonl"):
            others["OpenAPI/Swagger spec"] = specs
        if kind != "mcp":
            others["MCP tool"] = [path for path, _ in tool_files(folder) if path not in spec_set]
    homes = {f.parent for f in skill_mds}
    for what, paths in others.items():
        left = [
            path
            for path in paths
            if what == "SKILL.md" or not any(path.is_relative_to(home) for home in homes)
        ]
        if left:
            shown = ", ".join(path.relative_to(folder).as_posix() for path in left[:3])
            more = f" and {len(left) - 3} more" if len(left) > 3 else ""
            are = "is" if len(left) == 1 else "are"
            log.warn(
                folder,
                f"loaded as a {KIND_NAMES[kind]} catalogue: its {counted(len(left), f'{what} file')} "
                f"({shown}{more}) {are} not loaded; a catalogue is one kind: load them from their own "
                "folder or with --kind",
            )


KIND_NAMES = {"skill_md": "SKILL.md", "openapi": "OpenAPI", "mcp": "MCP", "skills_jsonl": "skills JSONL"}


def load_catalogue(
    path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    on_error: str = "skip",
    report: LoadReport | None = None,
) -> Catalogue:
    """Load a skill catalogue, detecting its kind (see the module doc) unless ``kind`` is given.

    Returns a :class:`~ragroute.skills.records.Catalogue` whose ``warnings``
    list what was loaded only in part (each also emitted as a
    :class:`~ragroute.skills.records.SkillWarning`). Bad records follow
    ``on_error`` (``"skip"``: skipped, one warning per file, counted in
    ``report``; ``"raise"``: :class:`~ragroute.errors.CorpusFormatError` naming
    file and record). Duplicate skill ids always raise
    :class:`~ragroute.skills.records.DuplicateSkillError` listing them.
    """
    p = Path(check_path(path, "load_catalogue needs a catalogue file or folder path"))
    check_on_error(on_error)
    data = None
    parsing = WarningLog()  # what detecting the kind found while parsing the file
    if kind is None:
        kind, data = _detect(p, parsing)
        if p.is_dir():
            _say_left_out(p, kind, parsing)
    elif kind not in KINDS:
        raise CorpusFormatError(f"unknown catalogue kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "skill_md":
        catalogue = load_skill_md(p, on_error=on_error, report=report)
    elif kind == "skills_jsonl":
        catalogue = load_skills_jsonl(p, on_error=on_error, report=report)
    elif kind == "openapi":
        catalogue = load_openapi(p, on_error=on_error, report=report, data=data)
    else:
        catalogue = load_mcp(p, on_error=on_error, report=report, data=data)
    catalogue.warnings[:0] = parsing.messages
    return catalogue
