"""The one skill record every catalogue loader produces, and the catalogue that holds them.

A :class:`Skill` is what an agent can choose: an id, a name, a short
description, a body (the full text worth indexing: the SKILL.md body and the
files beside it, a tool's parameters and schema, an API operation's
parameters and schemas) and free metadata (``method`` and ``path`` of an API
operation, front-matter keys of a SKILL.md, ...).

A :class:`Catalogue` is an ordered list of skills with unique ids, the path it
was loaded from, its kind, and the warnings collected while loading it (the
same messages are also emitted as :class:`SkillWarning` through Python's
``warnings``, so a CLI can print the list and a library user can filter the
category).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, InvalidArgumentError, check_batch, value_type_name
from ragroute.loaders.common import CorpusWarning
from ragroute.types import Document

#: The text fields of a skill, in the order indexes see them.
FIELDS = ("name", "description", "body")

#: Key of the Document metadata entry that keeps the skill's fields (see :meth:`Skill.to_document`).
FIELDS_KEY = "skill"

#: How many duplicate ids a :class:`DuplicateSkillError` message lists before counting the rest.
MAX_LISTED_DUPLICATES = 10


class SkillWarning(CorpusWarning):
    """A catalogue entry was loaded only in part, or a record was skipped (message names file and field).

    A subclass of :class:`~ragroute.loaders.common.CorpusWarning`, so filters set
    for corpus warnings also apply to catalogues.
    """


class DuplicateSkillError(CorpusFormatError):
    """A catalogue holds the same skill id more than once (the message lists the ids)."""


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into strings (dates from YAML, sets, ...);
    numpy numbers, booleans and arrays (a catalogue built in code) as the Python values they hold:
    until session 49 a saved skill index read ``np.int64(3)`` back as the string ``"3"``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (np.generic, np.ndarray)):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(str(v) for v in value)
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    return str(value)


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return json.dumps(jsonable(value), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Skill:
    """One skill or tool of a catalogue.

    ``id`` is unique within its catalogue (SKILL.md: the skill folder relative
    to the root; MCP: the tool name; OpenAPI: the operationId or
    ``"METHOD /path"``; SKILLS JSONL: ``_id``). ``name`` and ``description``
    are short; ``body`` holds everything else worth indexing. ``metadata`` is
    JSON-safe and kept as loaded (plus what the loader adds, e.g. ``method``,
    ``path``, ``source``).
    """

    id: str
    name: str
    description: str = ""
    body: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a wrong type failed deep inside indexing (an AttributeError) until session 37
        for name in ("id", "name", "description", "body"):
            if not isinstance(getattr(self, name), str):
                raise InvalidArgumentError(
                    f"skill {self.id!r}: {name} must be a string, got {value_type_name(getattr(self, name))}"
                )
        if not isinstance(self.metadata, dict):
            raise InvalidArgumentError(f"skill {self.id!r}: metadata must be a mapping")

    def field_text(self, name: str) -> str:
        """The text of one field, for per-field indexing.

        ``"name"``, ``"description"``, ``"body"``; ``"text"`` gives name,
        description and body joined (``name | description | body``, the text a
        single-field index sees); any other name is a metadata key (strings as
        they are, lists of strings joined by ``", "``, other values as JSON;
        ``""`` when this skill has no such key).
        """
        if name in FIELDS:
            return getattr(self, name)
        if name == "text":
            return " | ".join(part for part in (self.name, self.description, self.body) if part)
        return _value_text(self.metadata.get(name))

    def document_text(self) -> str:
        """Description then body, separated by a blank line (the Document's text; the name is its title)."""
        return "\n\n".join(part for part in (self.description, self.body) if part)

    def to_document(self) -> Document:
        """The :class:`~ragroute.types.Document` an index is built from.

        ``title`` = name, ``text`` = description + blank line + body, ``id`` =
        the skill id; ``metadata`` = the skill's metadata plus, under the key
        ``"skill"``, ``{"name", "description", "body_start"}`` (where the body
        starts in ``text``), so :meth:`from_document` gives the skill back and
        each field stays available for per-field indexing.
        """
        text = self.document_text()
        return Document(
            id=self.id, text=text, title=self.name, metadata={**self.metadata, FIELDS_KEY: self.fields(text)}
        )

    def fields(self, text: str) -> dict[str, Any]:
        """The ``"skill"`` metadata of :meth:`to_document` for its ``text`` (:meth:`document_text`):
        name, description and where the body starts."""
        body_start = len(text) - len(self.body) if self.body else len(text)
        return {"name": self.name, "description": self.description, "body_start": body_start}

    @classmethod
    def from_document(cls, doc: Document) -> Skill:
        """The skill a :meth:`to_document` Document was made from."""
        metadata = dict(doc.metadata)
        fields = metadata.pop(FIELDS_KEY, None)
        if not isinstance(fields, dict):
            return cls(id=doc.id, name=doc.title, description="", body=doc.text, metadata=metadata)
        return cls(
            id=doc.id,
            name=str(fields.get("name", doc.title)),
            description=str(fields.get("description", "")),
            body=doc.text[int(fields.get("body_start", 0)) :],
            metadata=metadata,
        )

    def to_record(self) -> dict[str, Any]:
        """The skill as a SKILLS-format record: ``{"_id", "name", "description", "body", "metadata"}``."""
        return {
            "_id": self.id,
            "name": self.name,
            "description": self.description,
            "body": self.body,
            "metadata": jsonable(self.metadata),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Skill:
        """The skill of a SKILLS-format record (the inverse of :meth:`to_record`)."""
        return cls(
            id=str(record["_id"]),
            name=str(record.get("name") or ""),
            description=str(record.get("description") or ""),
            body=str(record.get("body") or ""),
            metadata=dict(record.get("metadata") or {}),
        )


def duplicate_ids(ids: Iterable[str]) -> list[str]:
    """The ids seen more than once, in order of their first repetition."""
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for skill_id in ids:
        if skill_id in seen:
            dups[skill_id] = None
        seen.add(skill_id)
    return list(dups)


def duplicate_error(
    ids: Sequence[str],
    source: str | Path | None = None,
    *,
    holders: Sequence[str] | None = None,
    fix: str = "",
) -> DuplicateSkillError | None:
    """The :class:`DuplicateSkillError` for ``ids`` (``None`` when each is unique): one line listing the
    repeated ids (the first :data:`MAX_LISTED_DUPLICATES`, then how many more); with ``holders`` (what
    holds each id, e.g. ``"tools.json item 3, tool 'search'"``, in the order of ``ids``) each id names
    where its copies are, and ``fix`` says what to rename."""
    dups = duplicate_ids(ids)
    if not dups:
        return None
    held: dict[str, list[str]] = {}
    if holders is not None:
        wanted = set(dups)
        for skill_id, holder in zip(ids, holders):
            if skill_id in wanted and holder:
                held.setdefault(skill_id, []).append(holder)
    shown = ", ".join(
        f"{d!r} ({'; '.join(held[d])})" if d in held else repr(d) for d in dups[:MAX_LISTED_DUPLICATES]
    )
    more = f" and {len(dups) - MAX_LISTED_DUPLICATES} more" if len(dups) > MAX_LISTED_DUPLICATES else ""
    where = f" in {source}" if source is not None else ""
    plural = "" if len(dups) == 1 else "s"
    advice = f"; {fix}" if fix else ""
    return DuplicateSkillError(f"{len(dups)} duplicate skill id{plural}{where}: {shown}{more}{advice}")


class Catalogue(Sequence[Skill]):
    """An ordered collection of skills with unique ids.

    ``source`` is the file or folder it was loaded from (``None`` when built in
    memory), ``kind`` the format (``"skill_md"``, ``"mcp"``, ``"openapi"``,
    ``"skills_jsonl"`` or ``""``), ``warnings`` the one-line messages collected
    while loading (each names the file and the field or record). Two skills with
    the same id raise ONE :class:`DuplicateSkillError` listing the duplicate ids
    (the first ten, then how many more).
    """

    def __init__(
        self,
        skills: Iterable[Skill],
        *,
        source: str | Path | None = None,
        kind: str = "",
        warnings: Iterable[str] = (),
    ) -> None:
        if isinstance(skills, Skill):  # one skill given bare: its fields were read as skills
            raise InvalidArgumentError(
                f"skills must be a list, not one Skill (wrap it: [skill {skills.id!r}])"
            )
        self.skills: list[Skill] = check_batch(skills, "skills")
        odd = next((s for s in self.skills if not isinstance(s, Skill)), None)
        if odd is not None:
            raise InvalidArgumentError(f"skills must be Skill objects, got {value_type_name(odd)}")
        self.source: Path | None = Path(source) if source is not None else None
        self.kind = kind
        self.warnings: list[str] = list(warnings)
        error = duplicate_error([s.id for s in self.skills], self.source)
        if error is not None:
            raise error
        self._by_id = {s.id: s for s in self.skills}

    def __len__(self) -> int:
        return len(self.skills)

    def __getitem__(self, index):  # type: ignore[override]
        return self.skills[index]

    def __iter__(self) -> Iterator[Skill]:
        return iter(self.skills)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Skill):
            return self._by_id.get(item.id) == item
        return item in self._by_id

    def __repr__(self) -> str:
        n_warnings = len(self.warnings)
        return (
            f"Catalogue({len(self)} skills, kind={self.kind!r}, source={self.source}, warnings={n_warnings})"
        )

    @property
    def ids(self) -> list[str]:
        """The skill ids, in catalogue order."""
        return [s.id for s in self.skills]

    def get(self, skill_id: str, default: Skill | None = None) -> Skill | None:
        """The skill with this id, or ``default``."""
        return self._by_id.get(skill_id, default)

    def by_id(self, skill_id: str) -> Skill:
        """The skill with this id; :class:`KeyError` naming it if there is none."""
        try:
            return self._by_id[skill_id]
        except KeyError:
            raise KeyError(f"no skill {skill_id!r} in the catalogue") from None

    def documents(self) -> list[Document]:
        """One :class:`~ragroute.types.Document` per skill (see :meth:`Skill.to_document`)."""
        return [s.to_document() for s in self.skills]


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside ``ragroute.skills``."""
    frame: FrameType | None = sys._getframe(1)  # the caller of this function, inside the package
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


class WarningLog:
    """Collects a loader's warnings for the catalogue and emits them as :class:`SkillWarning`.

    Every message is kept; at most ``emit_cap`` are emitted per source file,
    then one more message says how many were not shown (they are all on
    ``Catalogue.warnings``).
    """

    def __init__(self, emit_cap: int = 20) -> None:
        self.messages: list[str] = []
        self.emit_cap = emit_cap
        self._emitted: dict[str, int] = {}

    def warn(self, source: str | Path, message: str) -> None:
        """Record and emit ``"SOURCE: MESSAGE"``."""
        self.add(f"{source}: {message}", str(source))

    def add(self, full_message: str, source: str = "") -> None:
        """Record and emit a message that already names its file."""
        full = " ".join(full_message.split())
        self.messages.append(full)
        count = self._emitted.get(source, 0)
        self._emitted[source] = count + 1
        if count < self.emit_cap:
            warnings.warn(full, SkillWarning, stacklevel=_user_stacklevel())

    def finish(self) -> None:
        """Emit one line per source that had more warnings than ``emit_cap``."""
        for source, count in self._emitted.items():
            if count > self.emit_cap:
                hidden = count - self.emit_cap
                warnings.warn(
                    f"{source}: {counted(hidden, 'more warning')} not shown (all are on Catalogue.warnings)",
                    SkillWarning,
                    stacklevel=_user_stacklevel(),
                )
        self._emitted.clear()
