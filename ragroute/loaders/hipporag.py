"""HippoRAG-style JSON corpora: one JSON array of ``{"title", "text"}`` objects.

Ids are positional: ``f"{id_prefix}-{i}"`` with ``i`` the 0-based position in
the array and ``id_prefix`` defaulting to the file stem. They are stable for a
given file, identical ``(title, text)`` duplicates get distinct ids, and with
``id_prefix="musique"`` they match the ids of the BEIR conversion in
``/work/shared/data/musique`` (``musique-<i>``, same positions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import (
    BadRecord,
    LoadReport,
    RepeatedKeys,
    SkipLog,
    check_on_error,
    check_unicode,
    decode_utf8_file,
    duplicate_key_reason,
    json_error,
    optional_str,
    parse_json,
)
from ragroute.loaders.jsonl import open_binary
from ragroute.types import Document


def read_json_array(path: str | Path, repeats: RepeatedKeys | None = None) -> list[Any]:
    """Parse a whole JSON file that must hold an array; errors name file and line. A key written
    twice in one object is noted in ``repeats`` (each item's is refused by the caller), or, without
    it, an error naming the file and the key."""
    source = str(path)
    with open_binary(path) as fh:
        data = fh.read()
    try:
        text = decode_utf8_file(data)
    except BadRecord as exc:
        raise CorpusFormatError(f"{source}: {exc}") from None
    try:
        value = parse_json(text, repeats)
    except json.JSONDecodeError as exc:
        raise CorpusFormatError(f"{source} line {exc.lineno}: invalid JSON ({json_error(exc)})") from None
    except RecursionError:  # thousands of nested [ or {: a RecursionError traceback until session 55
        raise CorpusFormatError(f"{source}: invalid JSON (nested too deeply)") from None
    except BadRecord as exc:
        raise CorpusFormatError(f"{source}: {exc}") from None
    if not isinstance(value, list):
        raise CorpusFormatError(
            f"{source}: expected a JSON array of {{title, text}} objects, got {type(value).__name__}"
        )
    return value


def hipporag_document(item: Any, doc_id: str) -> Document:
    """Convert one ``{"title", "text", ...}`` item (extra keys go to metadata); :class:`BadRecord` if bad."""
    if not isinstance(item, dict):
        raise BadRecord(f"expected an object with 'title' and 'text', got {type(item).__name__}")
    if "text" not in item:
        raise BadRecord("missing 'text'")
    check_unicode(item)
    extra = {k: v for k, v in item.items() if k not in ("title", "text")}
    text, title = optional_str(item, "text"), optional_str(item, "title")
    return Document(id=doc_id, text=text, title=title, metadata=extra)


def load_hipporag_corpus(
    path: str | Path,
    *,
    id_prefix: str | None = None,
    on_error: str = "skip",
    report: LoadReport | None = None,
) -> list[Document]:
    """Load a HippoRAG-style JSON array of ``{"title", "text"}`` into Documents.

    Document ``i`` (0-based position in the array) gets id ``f"{id_prefix}-{i}"``,
    ``id_prefix`` defaulting to the file stem (``train_corpus.json`` ->
    ``train_corpus-0``...). Positions count skipped items too, so one bad
    item does not shift the ids after it. Items that are not objects or lack
    ``text``, or write a key twice, follow ``on_error`` (default: skip + one
    :class:`~ragroute.loaders.common.CorpusWarning`, reported as ``item <i>``);
    an unreadable file (invalid UTF-8, broken JSON, not an array) always raises.
    """
    check_on_error(on_error)
    prefix = id_prefix if id_prefix is not None else Path(path).stem
    log = SkipLog(str(path), "item", on_error, report)
    docs = []
    repeats = RepeatedKeys()
    for i, item in enumerate(read_json_array(path, repeats)):
        try:
            repeated = repeats.first_in(item)
            if repeated is not None:
                raise BadRecord(duplicate_key_reason(repeated))
            doc = hipporag_document(item, f"{prefix}-{i}")
        except BadRecord as exc:
            log.bad(i, str(exc))
            continue
        docs.append(doc)
    log.finish()
    return docs
