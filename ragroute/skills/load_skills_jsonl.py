"""JSONL in the SKILLS format of the evaluation data: ``{"_id", "name", "description", "body", "metadata"}``.

One skill per line: ``id`` = ``_id`` (required), ``name``, ``description``,
``body`` (strings, ``""`` when absent or null), ``metadata`` (an object, or
absent). A skill without a name is loaded with its id as name, and ONE warning
per file lists the lines; other keys are not loaded, and ONE warning per file
names them and their lines (put them under ``metadata``). Bad lines (invalid UTF-8, broken JSON, no ``_id``, a
field of the wrong type) follow the corpus loaders' bad-record policy (see
:mod:`ragroute.loaders.common`): by default they are skipped and ONE warning
per file lists them (``skipped 1 bad line in skills.jsonl (line 3; line 3:
invalid JSON (...))``); ``on_error="raise"`` raises
:class:`~ragroute.errors.CorpusFormatError` naming file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragroute.display import counted
from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import (
    BadRecord,
    LoadReport,
    SkipLog,
    check_on_error,
    optional_str,
    record_id,
    wide_encoding_reason,
)
from ragroute.loaders.jsonl import decode_line, open_binary, parse_object
from ragroute.skills.records import Catalogue, Skill, WarningLog

KIND = "skills_jsonl"
SKILLS_FILE = "skills.jsonl"
#: The keys of a SKILLS record; others are not loaded (one warning per file names them).
RECORD_KEYS = ("_id", "name", "description", "body", "metadata")


def record_skill(row: dict[str, Any]) -> Skill:
    """The skill of one SKILLS record; :class:`BadRecord` if ``_id`` is missing or a field is mistyped."""
    skill_id = record_id(row, "_id")
    metadata = row.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRecord(f"'metadata' must be an object, got {type(metadata).__name__}")
    return Skill(
        id=skill_id,
        name=optional_str(row, "name").strip(),
        description=optional_str(row, "description"),
        body=optional_str(row, "body"),
        metadata=dict(metadata or {}),
    )


def skills_file(path: Path) -> Path:
    """``path`` itself, or the ``skills.jsonl`` inside a folder."""
    if path.is_dir():
        candidate = path / SKILLS_FILE
        if not candidate.is_file():
            raise CorpusFormatError(f"{path}: no {SKILLS_FILE} in this folder")
        return candidate
    return path


def load_skills_jsonl(
    path: str | Path, *, on_error: str = "skip", report: LoadReport | None = None
) -> Catalogue:
    """Load a SKILLS JSONL file (or the ``skills.jsonl`` of a folder) as a catalogue (see module doc)."""
    check_on_error(on_error)
    file = skills_file(Path(path))
    source = str(file)
    log = WarningLog()
    skip = SkipLog(source, "line", on_error, report)
    skills: list[Skill] = []
    unnamed: list[int] = []
    extra: dict[str, list[int]] = {}  # keys a SKILLS record does not have -> the lines holding them
    with open_binary(file) as fh:
        for lineno, raw in enumerate(fh, 1):
            wide = wide_encoding_reason(raw) if lineno == 1 else None
            if wide is not None:  # no line of it can be read: the file, not its lines, is refused (until
                # session 53 every line was skipped, counted inside its characters, into no skills)
                raise CorpusFormatError(f"{file}: {wide}")
            try:
                text = decode_line(raw, first=lineno == 1)
                if not text.strip():
                    continue
                row = parse_object(text)
                skill = record_skill(row)
            except BadRecord as exc:
                skip.bad(lineno, str(exc))
                continue
            for key in row:
                if key not in RECORD_KEYS:
                    extra.setdefault(key, []).append(lineno)
            if not skill.name:
                unnamed.append(lineno)
                skill = Skill(skill.id, skill.id, skill.description, skill.body, skill.metadata)
            skills.append(skill)
    if skip.entries:
        log.add(skip.summary(), source)
    if unnamed:
        lines = ", ".join(map(str, unnamed[:10])) + (", ..." if len(unnamed) > 10 else "")
        plural = "s" if len(unnamed) > 1 else ""
        log.warn(
            source, f"{counted(len(unnamed), 'skill')} without 'name' (line{plural} {lines}); the id is used"
        )
    if extra:  # dropped without a word until session 40
        keys = ", ".join(
            f"{key!r} (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:5]))}"
            f"{', ...' if len(lines) > 5 else ''})"
            for key, lines in list(extra.items())[:10]
        )
        more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
        log.warn(
            source,
            f"keys a skills record does not have are not loaded: {keys}{more}; a record holds "
            f"{', '.join(RECORD_KEYS)}: put the others under 'metadata'",
        )
    log.finish()
    return Catalogue(skills, source=file, kind=KIND, warnings=log.messages)
