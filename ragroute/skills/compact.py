"""A skill's body as a short-window reader (the reranker) should see it: without what it repeats.

Catalogue bodies often open by restating the skill: Seal-Tools bodies are the tool's JSON
(``{"api_name": "getMatchInfo", "api_description": "<the description again>", "field": ...,
"parameters": {...}}``), ToolLens bodies ``category_name:..., tool_name:..., api_name:...,
api_description:<the description again>, required_params: [{"name": ...}]``. A cross-encoder
that reads 64 tokens of query and candidate sees the name and description twice and the
parameters never. :func:`compact_body` removes the repeats and the JSON marks so the same
window reaches the parameters. BM25 and the dense views keep the body as it is.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

__all__ = ["compact_body"]

# a description this short may be an ordinary phrase of the body: it is left in place
_MIN_DESCRIPTION = 12
# an identifier name this short (``get``) may be part of other words
_MIN_NAME = 4
_JSON_MARKS = re.compile(r'[{}\[\]"]')
# ``key:`` left with no value once its value (the name or description) is gone
_EMPTY_KEY = re.compile(r"(?<![\w.-])[\w.-]+:\s*(?=[,;]|$)")
_SEPARATOR_RUNS = re.compile(r"[,;](?:\s*[,;])+")


def _opens_json(text: str) -> bool:
    """Whether ``text`` opens like a JSON object or array."""
    return text.lstrip()[:1] in ("{", "[")


def _structured(text: str) -> bool:
    """JSON, or key/value text holding JSON: its quotes and brackets are marks, not words."""
    return _opens_json(text) or '": ' in text or '":"' in text


def _render(value: Any, repeats: frozenset[str]) -> str:
    """A JSON value as ``key: value, ...`` text, leaving out string values in ``repeats``."""
    if isinstance(value, dict):
        parts = ((k, _render(v, repeats)) for k, v in value.items())
        return ", ".join(f"{k}: {text}" for k, text in parts if text)
    if isinstance(value, list):
        return ", ".join(text for text in (_render(v, repeats) for v in value) if text)
    if isinstance(value, str):
        return "" if value.strip() in repeats else value
    return "" if value is None else json.dumps(value)


@functools.lru_cache(maxsize=8192)  # a catalogue's candidates recur from query to query
def compact_body(body: str, name: str = "", description: str = "") -> str:
    """``body`` without the ``description`` (when it is at least 12 characters) and the one-word
    ``name`` it repeats, and, when it is structured (JSON, or key/value text holding JSON),
    without its quotes and brackets and the keys whose value was such a repeat; whitespace
    collapsed.

    ``compact_body('{"api_name": "getMatchInfo", "api_description": "Retrieve a match", "field":
    "Sports"}', "getMatchInfo", "Retrieve a match")`` is ``"field: Sports"``. Prose bodies keep
    every word but the repeats.
    """
    description = description.strip()
    name = name.strip()
    long_description = len(description) >= _MIN_DESCRIPTION
    identifier = len(name) >= _MIN_NAME and not any(c.isspace() for c in name)
    if _opens_json(body):
        try:
            value = json.loads(body)
        except ValueError:
            pass
        else:
            kept = ((description, long_description), (name, identifier))
            repeats = frozenset(text for text, repeated in kept if repeated)
            return " ".join(_render(value, repeats).split())
    text = body
    if long_description:
        text = text.replace(description, " ")
    if identifier and name in text:
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", " ", text)
    if _structured(body):
        text = _JSON_MARKS.sub("", text)
        text = _EMPTY_KEY.sub("", text)
        text = _SEPARATOR_RUNS.sub(",", text)
        text = text.strip(" \t\r\n,;")
    return " ".join(text.split())
