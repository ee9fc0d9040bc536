"""LABELS files (classification-style routing and gating): ``{"_id", "text", "label", "metadata"}``.

``label`` is a string or a non-empty list of strings; ``metadata`` is optional and unknown fields
are ignored. The file is read like every JSONL file here (line by line as bytes: a BOM, CRLF line
ends, blank lines and characters such as U+2028 inside strings are fine), and nothing is skipped:
a broken line, a missing or empty ``_id`` / ``text`` / ``label``, a duplicate ``_id`` or a file
without records raises ONE :class:`~ragroute.errors.CorpusFormatError` line naming file and line,
since a skipped labelled query would change what a benchmark scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import CorpusFormatError, InvalidQueryError, check_query
from ragroute.loaders.common import BadRecord, IdRegistry, record_id
from ragroute.loaders.jsonl import read_records


@dataclass(frozen=True)
class LabelledRecord:
    """One LABELS record; ``labels`` holds the label, or every label of a list, in file order."""

    id: str
    text: str
    labels: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The record's label; a list counts as its first label."""
        return self.labels[0]


def labelled_record(row: dict[str, Any]) -> LabelledRecord:
    """Convert one LABELS row; :class:`BadRecord` naming the missing or mistyped field."""
    record = record_id(row, "_id")
    text = row.get("text")
    if text is not None and not isinstance(text, str):
        raise BadRecord(f"'text' must be a string, got {type(text).__name__}")
    if not text or not text.strip():
        raise BadRecord("missing or empty 'text'")
    try:  # invisible or too long: `bench route-labels` stopped at it naming no line until session 55
        check_query(text, "'text'")
    except InvalidQueryError as exc:
        raise BadRecord(str(exc)) from None
    label = row.get("label")
    labels = label if isinstance(label, list) else [label]
    if not labels or not all(isinstance(item, str) and item.strip() for item in labels):
        raise BadRecord(f"'label' must be a non-empty string or list of strings, got {label!r}"[:200])
    metadata = row.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRecord(f"'metadata' must be an object, got {type(metadata).__name__}")
    return LabelledRecord(record, text, tuple(str(item) for item in labels), dict(metadata or {}))


def check_labels_file(path: str | Path) -> Path:
    """``path`` if it is a file; else one line saying it is missing, or not a file (a folder)."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise CorpusFormatError(f"data missing: {path} {what} (a LABELS .jsonl file)")
    return path


def load_labels(path: str | Path) -> list[LabelledRecord]:
    """Every record of a LABELS ``.jsonl`` file, in file order (see the module doc for what raises)."""
    path = check_labels_file(path)
    ids = IdRegistry("record")
    records = []
    for lineno, record in read_records(path, lambda row, _n: labelled_record(row), on_error="raise"):
        ids.add(record.id, f"{path.name} line {lineno}")
        records.append(record)
    if not records:
        raise CorpusFormatError(f"{path}: no records (a LABELS .jsonl file: one JSON object per line)")
    return records
