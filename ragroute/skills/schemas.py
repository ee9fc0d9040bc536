"""Reading JSON/YAML catalogue files, resolving local ``$ref`` s, and JSON Schemas as readable lines.

Used by the MCP loader (a tool's ``inputSchema``) and the OpenAPI loader
(parameters, request bodies, responses). Local references (``#/...``, JSON
pointers into the same document) are followed, and, when the resolver is given
a ``base`` folder, references to other ``.json`` / ``.yaml`` / ``.yml`` files
(``schemas/common.yaml#/Pet``) inside its ``root`` folder (references in such a
file are read relative to it); a reference that cannot be followed (missing
target, a file outside ``root``, a URL: never fetched) becomes a marker
``[unresolved $ref: REF]`` in the text and ONE warning per reference and file.
Recursive schemas are cut where a reference repeats (``(recursive: Node)``),
nesting is capped at ``max_depth`` levels, each schema at ``max_schema_lines``
lines and all schemas of one body at ``max_lines``, so a large spec cannot blow up a body.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import (
    BadRecord,
    RepeatedKeys,
    check_unicode,
    decode_utf8_file,
    json_error,
    parse_json,
)
from ragroute.loaders.jsonl import open_binary
from ragroute.skills.records import SkillWarning, WarningLog
from ragroute.yaml_files import YamlProblem, parse_yaml

JSON_SUFFIXES = (".json",)
YAML_SUFFIXES = (".yaml", ".yml")

MAX_DEPTH = 6
MAX_LINES = 300
MAX_SCHEMA_LINES = 100
#: Characters of one type summary (``one of A | B | ...``): options past it are counted, not named.
MAX_SUMMARY_CHARS = 400
#: The largest file a reference to another file may point to, in bytes.
MAX_REF_FILE_BYTES = 20_000_000

_URL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def _string_keys(value: Any) -> Any:
    """YAML mapping keys as strings (``200:`` in a responses map is an int to YAML)."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def parse_structured(text: str, source: str | Path, *, yaml_ok: bool, log: WarningLog | None = None) -> Any:
    """Parse JSON (or YAML when ``yaml_ok``); :class:`BadRecord` with a one-line reason if it fails.

    A mapping that writes a key twice keeps its last value, as JSON and YAML do, with one warning
    per key naming ``source`` and the key (the catalogue loaders load what they sensibly can and say
    what they did): on ``log`` (so on ``Catalogue.warnings``), else a
    :class:`~ragroute.skills.records.SkillWarning`."""
    if not yaml_ok:
        try:
            repeats = RepeatedKeys()
            value = check_unicode(parse_json(text, repeats), text)
        except json.JSONDecodeError as exc:
            raise BadRecord(f"invalid JSON ({json_error(exc, line=True)})") from None
        except RecursionError:
            raise BadRecord("invalid JSON (nested too deeply)") from None
        repeated = [f"duplicate key {key!r}" for key in repeats.names()]
    else:
        repeated = []
        try:
            value = _string_keys(parse_yaml(text, repeated=repeated, yaml12_booleans=True))
        except YamlProblem as exc:
            raise BadRecord(str(exc)) from None
    for what in repeated:
        message = f"{what} in one mapping: only its last value is read"
        if log is not None:
            log.warn(source, message)
        else:
            warnings.warn(f"{source}: {message}", SkillWarning, stacklevel=2)
    return value


def read_structured_file(path: Path, log: WarningLog | None = None) -> Any:
    """A ``.json`` / ``.yaml`` / ``.yml`` file parsed; :class:`BadRecord` if unreadable or invalid
    (repeated keys: see :func:`parse_structured`)."""
    with open_binary(path) as fh:
        return parse_structured_bytes(fh.read(), path, log)


def parse_structured_bytes(data: bytes, path: Path, log: WarningLog | None = None) -> Any:
    """The bytes of ``path`` (already read) parsed as :func:`read_structured_file` parses the file."""
    return parse_structured(
        decode_utf8_file(data), path, yaml_ok=path.suffix.lower() in YAML_SUFFIXES, log=log
    )


def load_structured(path: Path, log: WarningLog | None = None) -> Any:
    """Like :func:`read_structured_file` but a problem is a :class:`CorpusFormatError` naming the file."""
    try:
        return read_structured_file(path, log)
    except BadRecord as exc:
        raise CorpusFormatError(f"{path}: {exc}") from None


def _mapping(value: Any) -> dict[str, Any]:
    """A schema's mapping-valued field (``properties``) as a dict; anything else counts as absent."""
    return dict(value) if isinstance(value, dict) else {}


def _listed(value: Any) -> list[Any]:
    """A schema's list-valued field (``required``) as a list; anything else counts as absent."""
    return list(value) if isinstance(value, list) else []


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def ref_name(ref: str) -> str:
    """The last segment of a reference: ``#/components/schemas/Pet`` -> ``Pet``."""
    return _unescape(unquote(ref.rstrip("/").rsplit("/", 1)[-1])) or ref


class RefResolver:
    """Follows local ``$ref`` s inside one document and reports the ones it cannot follow.

    ``on_unresolved(ref, where)`` is called once per distinct reference (``where``
    names the first place it was met, e.g. ``"GET /pets"``); what reading another file warns
    about (a key written twice in it) goes on ``log`` (until session 51 only to Python's
    ``warnings``, not on ``Catalogue.warnings``).
    """

    def __init__(
        self,
        document: Any,
        on_unresolved: Callable[[str, str], None] | None = None,
        *,
        base: Path | None = None,
        root: Path | None = None,
        log: WarningLog | None = None,
    ) -> None:
        self.document = document
        self.on_unresolved = on_unresolved
        #: where what reading another file warns about goes (a key written twice in it)
        self.log = log
        self.base = base
        self.root = root if root is not None else base
        self.unresolved: dict[str, str] = {}
        #: why a reference to another file was not followed (``"no such file"``, ...), by reference
        self.reasons: dict[str, str] = {}
        self._cache: dict[str, tuple[bool, Any]] = {}
        self._files: dict[str, tuple[bool, Any]] = {}

    def lookup(self, ref: str) -> tuple[bool, Any]:
        """``(True, target)`` for a local JSON pointer that exists, ``(False, None)`` otherwise."""
        if ref not in self._cache:
            self._cache[ref] = self._lookup(ref)
        return self._cache[ref]

    def _lookup(self, ref: str) -> tuple[bool, Any]:
        file_part, _hash, pointer = ref.partition("#")
        node = self.document
        if file_part:
            found, node = self._file(ref, file_part)
            if not found:
                return False, None
        if not pointer:
            return True, node
        if not pointer.startswith("/"):
            return False, None
        for token in pointer[1:].split("/"):
            # a URI fragment: percent-decoded first (#/components/schemas/Pet%20Record), then the
            # JSON pointer's ~1 and ~0 (RFC 6901, section 6); until session 38 only the latter
            token = _unescape(unquote(token))
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isascii() and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return False, None
        return True, node

    def _file(self, ref: str, file_part: str) -> tuple[bool, Any]:
        """The document of a reference to another file (relative to ``base``, inside ``root``)."""
        if _URL.match(file_part):
            self.reasons[ref] = "a URL, not fetched"
            return False, None
        if self.base is None or self.root is None:
            self.reasons[ref] = "another file, not followed"
            return False, None
        path = os.path.normpath(os.path.join(self.base, unquote(file_part)))
        if path not in self._files:
            self._files[path] = self._read_file(path)
        found, document = self._files[path]
        if not found:
            self.reasons[ref] = document
            return False, None
        return True, document

    def _read_file(self, path: str) -> tuple[bool, Any]:
        """``(True, document)`` with its references made relative to ``base``, or ``(False, reason)``."""
        assert self.base is not None and self.root is not None
        if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(self.root)):
            return False, f"a file outside the folder {self.root}"
        if not path.lower().endswith(JSON_SUFFIXES + YAML_SUFFIXES):
            return False, "not a .json/.yaml/.yml file"
        try:
            if not os.path.isfile(path):
                return False, "no such file"
            if os.path.getsize(path) > MAX_REF_FILE_BYTES:
                return False, f"larger than {MAX_REF_FILE_BYTES} bytes"
            document = read_structured_file(Path(path), self.log)
        except OSError as exc:
            return False, f"unreadable ({exc.strerror})"
        except BadRecord as exc:
            return False, str(exc)
        except RecursionError:
            return False, "nested too deeply"
        here = os.path.dirname(path)
        own = Path(os.path.relpath(path, self.base)).as_posix()

        def rebase(ref: str) -> str:
            file_part, hash_, pointer = ref.partition("#")
            if not file_part:
                return f"{own}#{pointer}"
            if _URL.match(file_part):
                return ref
            target = os.path.normpath(os.path.join(here, unquote(file_part)))
            return Path(os.path.relpath(target, self.base)).as_posix() + hash_ + pointer

        try:
            return True, _rebased(document, rebase)
        except RecursionError:
            return False, "nested too deeply"

    def report(self, ref: str, where: str) -> str:
        """Note an unresolved reference (once) and return its marker."""
        if ref not in self.unresolved:
            self.unresolved[ref] = where
            if self.on_unresolved is not None:
                self.on_unresolved(ref, where)
        return f"[unresolved $ref: {ref}]"

    def resolve(
        self, node: Any, where: str, stack: tuple[str, ...] = ()
    ) -> tuple[Any, str | None, str | None]:
        """Follow ``node``'s ``$ref`` chain.

        Returns ``(target, name, marker)``: the target (``None`` when it cannot
        be followed), the name of the last reference followed (``None`` if the
        node had none), and a marker for a reference that is unresolved
        (``[unresolved $ref: ...]``) or repeats one already in ``stack``
        (``(recursive: Name)``), else ``None``.
        """
        name = None
        seen = set(stack)  # a list until session 52: a chain of n references took n^2/2 comparisons
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str):
                return None, name, self.report(repr(ref), where)
            if ref in seen:
                return None, ref_name(ref), f"(recursive: {ref_name(ref)})"
            found, target = self.lookup(ref)
            if not found:
                return None, ref_name(ref), self.report(ref, where)
            seen.add(ref)
            name = ref
            node = target
        return node, name, None


def _rebased(node: Any, rebase: Callable[[str], str]) -> Any:
    """``node`` with every string ``$ref`` passed through ``rebase``."""
    if isinstance(node, dict):
        return {
            key: rebase(value) if key == "$ref" and isinstance(value, str) else _rebased(value, rebase)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebased(v, rebase) for v in node]
    return node


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = " or ".join(str(k) for k in kind)
    if not kind:
        if "properties" in schema:
            kind = "object"
        elif "items" in schema:
            kind = "array"
        elif "enum" in schema:
            kind = "enum"
        else:
            kind = "any"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text else ""


class SchemaRenderer:
    """Turns a JSON Schema into indented readable lines (one per property), following local refs.

    One renderer is used per body: each schema gets at most ``max_schema_lines``
    lines, and all of them together at most ``max_lines`` (so a huge request
    body still leaves room for the responses).
    """

    def __init__(
        self,
        resolver: RefResolver,
        where: str,
        *,
        max_depth: int = MAX_DEPTH,
        max_lines: int = MAX_LINES,
        max_schema_lines: int = MAX_SCHEMA_LINES,
    ) -> None:
        self.resolver = resolver
        self.where = where
        self.max_depth = max_depth
        self.total = max_lines
        self.max_schema_lines = max_schema_lines
        self.budget = 0
        self.truncated = False
        self.start_schema()

    def start_schema(self) -> None:
        """Give the next schema its budget: ``max_schema_lines`` at most, within what the body has left."""
        self.budget = min(self.max_schema_lines, self.total)
        self.truncated = False

    # -- helpers ---------------------------------------------------------------------------

    def _emit(self, out: list[str], line: str) -> bool:
        if self.budget <= 0:
            if not self.truncated:
                out.append("... (schema text truncated)")
                self.truncated = True
            return False
        self.budget -= 1
        self.total -= 1
        out.append(line)
        return True

    def _merge_all_of(
        self, schema: dict[str, Any], stack: tuple[str, ...], done: set[str] | None = None, depth: int = 0
    ) -> dict[str, Any]:
        """``allOf`` parts merged into one object schema (properties and required lists). A part
        referred to twice (``A: allOf [B, C]``, ``B`` and ``C`` both ``allOf [Base]``) is merged once
        (``done``: the references merged so far), and parts nested deeper than ``max_depth`` are
        not merged: a spec whose parts share parts, level after level, took time exponential in
        its depth, and a long chain of ``allOf`` references ended in a RecursionError."""
        parts = schema.get("allOf")
        if not isinstance(parts, list):
            return schema
        done = set() if done is None else done
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        props: dict[str, Any] = _mapping(merged.get("properties"))
        required = _listed(merged.get("required"))
        for part in parts:
            target, name, marker = self.resolver.resolve(part, self.where, stack)
            if marker is not None:
                props[marker] = {"type": "any"}
                continue
            if name is not None:
                if name in done:
                    continue
                done.add(name)
            if isinstance(target, dict):
                if depth < self.max_depth:
                    target = self._merge_all_of(target, stack + ((name,) if name else ()), done, depth + 1)
                props.update(_mapping(target.get("properties")))
                required.extend(_listed(target.get("required")))
                for key in ("type", "description"):
                    if key in target and key not in merged:
                        merged[key] = target[key]
        merged["properties"] = props
        if required:
            merged["required"] = required
        merged.setdefault("type", "object")
        return merged

    def summary(self, node: Any, stack: tuple[str, ...] = (), depth: int = 0) -> str:
        """A short type description: ``string``, ``array of Pet``, ``object Pet``, a marker...

        Options and items nested deeper than ``max_depth`` are ``...``, and options past
        :data:`MAX_SUMMARY_CHARS` characters are counted (``... (3 more)``): ``oneOf`` options that
        are ``oneOf`` s of shared schemas, level after level, made a summary exponential in the
        depth (18 levels of two options: a 42 MB body), and a long chain of them a RecursionError."""
        target, name, marker = self.resolver.resolve(node, self.where, stack)
        if marker is not None:
            return marker
        if not isinstance(target, dict):
            return "any"
        label = ref_name(name) if name else ""
        if "allOf" in target:
            target = self._merge_all_of(target, stack)
        inner_stack = stack + ((name,) if name else ())
        for key in ("oneOf", "anyOf"):
            if isinstance(target.get(key), list):
                options = self._options(target[key], inner_stack, depth + 1)
                return f"{label + ': ' if label else ''}one of {options}"
        kind = _type_of(target)
        if kind.startswith("array") and "items" in target:
            inner = self.summary(target["items"], inner_stack, depth + 1) if depth < self.max_depth else "..."
            text = f"array of {inner}"
        else:
            text = f"{kind} {label}".strip() if label and kind.startswith("object") else kind
            if label and not kind.startswith("object"):
                text = f"{label} ({kind})"
        return text

    def _options(self, options: list[Any], stack: tuple[str, ...], depth: int) -> str:
        """``A | B | ...`` of a ``oneOf`` / ``anyOf`` (see :meth:`summary` for the caps)."""
        if depth > self.max_depth:
            return "..."
        shown: list[str] = []
        size = 0
        for option in options:
            if size >= MAX_SUMMARY_CHARS:
                shown.append(f"... ({len(options) - len(shown)} more)")
                break
            text = self.summary(option, stack, depth)
            text = text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 3] + "..."
            shown.append(text)
            size += len(text) + 3
        return " | ".join(shown)

    def extras(self, schema: dict[str, Any]) -> str:
        """`` [one of: a, b; default: x]`` for a schema's enum, default and example (or ``""``)."""
        bits = []
        if isinstance(schema.get("enum"), list):
            bits.append("one of: " + ", ".join(_short(v, 30) for v in schema["enum"][:20]))
        if "default" in schema:
            bits.append(f"default: {_short(schema['default'], 40)}")
        if "const" in schema:  # until session 53 left out: a `kind (any)` line said nothing of the value
            bits.append(f"const: {_short(schema['const'], 40)}")
        if "example" in schema:
            bits.append(f"example: {_short(schema['example'], 60)}")
        elif isinstance(schema.get("examples"), list) and schema["examples"]:  # JSON Schema's (OpenAPI 3.1)
            bits.append(f"example: {_short(schema['examples'][0], 60)}")
        return f" [{'; '.join(bits)}]" if bits else ""

    def _about(self, node: Any, stack: tuple[str, ...]) -> str:
        """``": description [one of: ...]"`` of a ``oneOf`` / ``anyOf`` option (its enum is often the
        only place the allowed values are named, e.g. ``model: anyOf [string, enum of model ids]``)."""
        target, _name, marker = self.resolver.resolve(node, self.where, stack)
        if marker is not None or not isinstance(target, dict):
            return ""
        description = _one_line(target.get("description"))
        return (f": {description}" if description else "") + self.extras(target)

    def _object_of(
        self, node: Any, stack: tuple[str, ...], depth: int = 0
    ) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
        """The object schema to expand below a property (itself or its array items, at most
        ``max_depth`` arrays down), with the ref stack."""
        target, name, marker = self.resolver.resolve(node, self.where, stack)
        if marker is not None or not isinstance(target, dict):
            return None, stack
        stack = stack + ((name,) if name else ())
        if "allOf" in target:
            target = self._merge_all_of(target, stack)
        if "items" in target and "properties" not in target:
            return (
                self._object_of(target["items"], stack, depth + 1)
                if depth < self.max_depth
                else (None, stack)
            )
        if isinstance(target.get("properties"), dict) and target["properties"]:
            return target, stack
        for key in ("oneOf", "anyOf"):
            if isinstance(target.get(key), list):
                return target, stack
        return None, stack

    # -- rendering -------------------------------------------------------------------------

    def property_lines(
        self,
        schema: dict[str, Any],
        out: list[str],
        indent: int = 0,
        stack: tuple[str, ...] = (),
        depth: int = 0,
    ) -> None:
        """Append one line per property of an object schema (nested objects indented below)."""
        pad = " " * indent
        if depth >= self.max_depth:
            self._emit(out, f"{pad}... (nested deeper than {self.max_depth} levels)")
            return
        for key in ("oneOf", "anyOf"):
            if isinstance(schema.get(key), list) and "properties" not in schema:
                for i, option in enumerate(schema[key], 1):
                    if not self._emit(
                        out, f"{pad}- option {i}: {self.summary(option, stack)}{self._about(option, stack)}"
                    ):
                        return
                    nested, nested_stack = self._object_of(option, stack)
                    if nested is not None:
                        self.property_lines(nested, out, indent + 2, nested_stack, depth + 1)
                return
        listed = schema.get("required")
        required = {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return
        for prop, sub in properties.items():
            if self.budget <= 0:
                self._emit(out, "")
                return
            target, _name, _marker = self.resolver.resolve(sub, self.where, stack)
            desc_source = sub if isinstance(sub, dict) and sub.get("description") else target
            description = _one_line(desc_source.get("description")) if isinstance(desc_source, dict) else ""
            flags = ", required" if prop in required else ""
            extras = self.extras(target) if isinstance(target, dict) else ""
            summary = self.summary(sub, stack)
            if summary.startswith("(") and summary.endswith(")"):  # a marker: not bracketed twice
                summary = summary[1:-1]
            line = f"{pad}- {prop} ({summary}{flags})"
            line += f": {description}" if description else ""
            if not self._emit(out, line + extras):
                return
            nested, nested_stack = self._object_of(sub, stack)
            if nested is not None:
                self.property_lines(nested, out, indent + 2, nested_stack, depth + 1)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            self._emit(out, f"{pad}- <any key> ({self.summary(extra, stack)})")

    def schema_lines(self, node: Any, indent: int = 0, stack: tuple[str, ...] = ()) -> list[str]:
        """A schema as lines: its summary, then its properties (or its items' properties) indented."""
        self.start_schema()
        out: list[str] = []
        pad = " " * indent
        target, _name, _marker = self.resolver.resolve(node, self.where, stack)
        # a description beside a $ref is this use's (as for a property; until session 53 the target's)
        desc_source = node if isinstance(node, dict) and node.get("description") else target
        description = _one_line(desc_source.get("description")) if isinstance(desc_source, dict) else ""
        head = f"{pad}{self.summary(node, stack)}" + (f": {description}" if description else "")
        if not self._emit(out, head):
            return out
        self.nested_lines(node, out, indent + 2, stack)
        return out

    def nested_lines(self, node: Any, out: list[str], indent: int = 0, stack: tuple[str, ...] = ()) -> None:
        """Append the properties below a schema (its own, its array items', its options'), as
        :meth:`schema_lines` writes them under its summary line; nothing for a scalar schema."""
        nested, nested_stack = self._object_of(node, stack)
        if nested is not None:
            self.property_lines(nested, out, indent, nested_stack, 1)
