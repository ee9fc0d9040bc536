"""Reading the YAML files users write (configs, corpus definitions, specs), with one-line errors."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ragroute.errors import RagrouteError, lone_surrogate, one_line

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MERGE_TAG = "tag:yaml.org,2002:merge"
VALUE_TAG = "tag:yaml.org,2002:value"
STR_TAG = "tag:yaml.org,2002:str"

#: the most values a parsed YAML file may expand to (aliases count each time they are used), so a
#: few lines of nested aliases ("billion laughs") cannot make every reader walk billions of values
MAX_YAML_VALUES = 5_000_000


def path_beside(config: Path, value: Any, *, resolve: bool = True) -> Path:
    """A path written in the YAML file ``config``: relative to the file's folder (the link's folder
    for a file reached through a symbolic link), ``~/...`` the home folder (until session 50 a
    routing config's or corpora file's ``~/idx`` read ``<its folder>/~/idx``, where a CLI defaults
    file already expanded it), an absolute path as it is; resolved unless ``resolve`` is false (a
    file whose own paths are read beside it, which may itself be a link)."""
    # os.path's expanduser: pathlib's raised RuntimeError (a traceback) for a ~user that is not one
    # until session 55; this one leaves ``~nobody/idx`` as written, as a shell does
    path = config.parent / os.path.expanduser(str(value))
    return path.resolve() if resolve else path


def repeated_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterator[tuple[Any, yaml.Node]]:
    """Each key ``node`` writes again after its first time (YAML itself keeps the last value), with
    its node (for the line). A second merge key ``<<`` is one too: one of the two merges silently
    lost its keys (one merge key takes a list, ``<<: [*a, *b]``)."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = "<<" if key_node.tag == MERGE_TAG else loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable: construct_mapping reports it with its mark
        if duplicate:
            yield key, key_node
        seen.add(key)


class MergesInOrder:
    """A loader mixin merging ``<<`` keys as YAML's merge key type says: a key of the mapping's own
    wins over a merged one, and of mappings merged from a list (``<<: [*a, *b]``) the first one
    listed wins. PyYAML 6.0.3 and later dropped a merged key only when it was the same string object
    as one merged before (one-letter keys, which Python shares), so ``threshold:`` of ``*b`` won over
    ``*a``'s, and ``x:`` did not. A key merged in is kept once, so merges of merges stay small."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merged: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        unhashable: list[tuple[yaml.Node, yaml.Node]] = []  # construct_mapping reports them
        merging = False
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                if key_node.tag == VALUE_TAG:
                    key_node.tag = STR_TAG
                own.append((key_node, value_node))
                continue
            merging = True
            for pair in self._merged_pairs(node, value_node):
                try:
                    merged.setdefault(self.construct_object(pair[0], deep=True), pair)  # type: ignore[attr-defined]
                except TypeError:
                    unhashable.append(pair)
        if merging:
            node.value = [*unhashable, *merged.values(), *own]

    def _merged_pairs(self, node: yaml.MappingNode, value: yaml.Node) -> list[tuple[yaml.Node, yaml.Node]]:
        """The key-value pairs a merge key's ``value`` (a mapping or a list of them) brings into
        ``node``, in the order of the mappings listed."""
        mappings = value.value if isinstance(value, yaml.SequenceNode) else [value]
        pairs = []
        for mapping in mappings:
            if not isinstance(mapping, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"expected a mapping or list of mappings for merging, but found {mapping.id}",
                    mapping.start_mark,
                )
            merging = self.__dict__.setdefault("_merging", set())  # the mappings being flattened
            if id(mapping) in merging or mapping is node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a mapping merges itself (<<: an alias of a mapping holding it)",
                    mapping.start_mark,
                )
            merging.add(id(node))
            try:
                self.flatten_mapping(mapping)
            finally:
                merging.discard(id(node))
            pairs.extend(mapping.value)
        return pairs


def check_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    """Raise a YAML constructor error (with the key's line) when ``node`` repeats a key: YAML
    itself keeps the last value, so a key written twice in a config would silently lose one."""
    for key, key_node in repeated_keys(loader, node):
        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)


def _unique_key_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    check_duplicate_keys(loader, node)
    return loader.construct_mapping(node)


class _MergingLoader(MergesInOrder, _SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, merging ``<<`` keys in the order YAML says (:class:`MergesInOrder`)."""


class UniqueKeyLoader(MergesInOrder, _SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, refusing a mapping that repeats a key (for the files users write)."""


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:map", _unique_key_mapping)


def _recording_mapping(loader: Any, node: yaml.MappingNode) -> Any:
    """Build a mapping as YAML does (the last value of a repeated key kept), noting each repeated key
    on the loader's ``repeated`` list, with its line."""
    first_line = getattr(loader, "first_line", 1)  # the text's first line in its file
    for key, key_node in repeated_keys(loader, node):
        loader.repeated.append(f"duplicate key {key!r} at line {key_node.start_mark.line + first_line}")
    return loader.construct_mapping(node)


class _RecordingLoader(MergesInOrder, _SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, keeping the last value of a repeated key and noting it on ``repeated``."""

    repeated: list[str]
    first_line: int = 1


_RecordingLoader.add_constructor("tag:yaml.org,2002:map", _recording_mapping)


BOOL_TAG = "tag:yaml.org,2002:bool"


def _yaml12_booleans(base: Any) -> Any:
    """``base`` reading booleans as YAML 1.2 does (``true`` / ``false`` only): YAML 1.1, PyYAML's,
    also reads ``yes``, ``no``, ``on``, ``off``, ``y`` and ``n``, so a spec's ``enum: [SE, NO, DK]``
    became ``[SE, false, DK]``. For files other tools write as YAML 1.2 (OpenAPI specs, MCP lists,
    SKILL.md front matter); configs keep YAML 1.1, which their users may rely on."""
    loader: Any = type(f"{base.__name__}12", (base,), {})
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != BOOL_TAG]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return loader


_SAFE_LOADER_12 = _yaml12_booleans(_MergingLoader)
_RECORDING_LOADER_12 = _yaml12_booleans(_RecordingLoader)


class YamlProblem(ValueError):
    """YAML text that cannot be used; the message is one line (``invalid YAML (...) at line 3``)."""


def parse_yaml(
    text: str,
    loader: Any = None,
    *,
    first_line: int = 1,
    repeated: list[str] | None = None,
    yaml12_booleans: bool = False,
) -> Any:
    """Parse YAML ``text`` safely (``loader``: a SafeLoader subclass, default the C one if built;
    ``first_line``: the line number of the text's first line in its file). With ``repeated`` (and
    no ``loader``), a mapping that writes a key twice keeps its last value, as YAML does, and the
    repeat is noted there (``duplicate key 'get' at line 12``) for the caller to warn about.

    Raises :class:`YamlProblem` with a one-line reason for broken YAML, values YAML cannot build
    (``2001-02-30``, ``!!int x``), nesting too deep, aliases that make a cycle (``&a [*a]``) or
    expand to more than :data:`MAX_YAML_VALUES` values, and strings that are not valid Unicode
    (``"\\ud800"``). ``yaml12_booleans`` (with no ``loader``): only ``true`` and ``false`` are
    booleans, as in YAML 1.2 (:func:`_yaml12_booleans`).
    """
    if loader is None and yaml12_booleans and repeated is None:
        loader = _SAFE_LOADER_12
    try:
        if repeated is not None and loader is None:
            recording = (_RECORDING_LOADER_12 if yaml12_booleans else _RecordingLoader)(text)
            recording.repeated = repeated
            recording.first_line = first_line
            try:
                value = recording.get_single_data()
            finally:
                recording.dispose()
        else:
            value = yaml.load(text, Loader=loader or _MergingLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + first_line}" if mark is not None else ""
        problem = exc.problem or exc.context or type(exc).__name__
        raise YamlProblem(f"invalid YAML ({one_line(str(problem))}{where})") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML ({one_line(str(exc))})") from None
    except RecursionError:
        raise YamlProblem("invalid YAML (nested too deeply)") from None
    # a value YAML cannot build; LookupError too: ``!!bool maybe`` (KeyError) and an empty ``!!int``
    # (IndexError) were tracebacks until session 55
    except (ValueError, TypeError, AttributeError, OverflowError, LookupError) as exc:
        reason = one_line(str(exc)) or type(exc).__name__
        raise YamlProblem(f"invalid YAML value ({reason})") from None
    check_tree(value)
    problem = lone_surrogate(value)
    if problem is not None:
        raise YamlProblem(f"not valid text: {problem} of a string (an escape of half a surrogate pair)")
    return value


def check_tree(value: Any) -> None:
    """Raise :class:`YamlProblem` if ``value`` (parsed YAML) refers to itself through aliases or
    expands to more than :data:`MAX_YAML_VALUES` values."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: Any) -> int:
        # a tuple too (``!!pairs`` and ``!!omap`` build lists of them): until session 55 aliases
        # nested in them were not counted, and lone_surrogate walked billions of values
        if not isinstance(node, (dict, list, tuple)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise YamlProblem("invalid YAML (an alias refers to a value that contains it)")
        on_path.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1 + sum(size(child) for child in children)
        on_path.discard(key)
        if total > MAX_YAML_VALUES:
            raise YamlProblem(f"invalid YAML (aliases expand it to more than {MAX_YAML_VALUES:,} values)")
        sizes[key] = total
        return total

    try:
        size(value)
    except RecursionError:
        raise YamlProblem("invalid YAML (nested too deeply)") from None


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse ``path`` safely; an unreadable or invalid file, or one that repeats a key in a mapping,
    raises a one-line :class:`RagrouteError`.

    ``what`` names the file's role in the message (e.g. ``"routing config"``).
    """
    from ragroute.loaders.common import wide_encoding_reason

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RagrouteError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    wide = wide_encoding_reason(data)
    if wide is not None:  # until session 53 "is not UTF-8 (invalid start byte)", or without a byte
        # order mark "invalid YAML (unacceptable character #x0000)": neither said UTF-16
        raise RagrouteError(f"{what} {path}: {wide}")
    try:  # line ends as read_text reads them
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise RagrouteError(f"{what} {path} is not UTF-8 ({exc.reason})") from None
    try:
        return parse_yaml(text, UniqueKeyLoader)
    except YamlProblem as exc:
        raise RagrouteError(f"{what} {path} is {_article(str(exc))}") from None


def _article(problem: str) -> str:
    """``invalid YAML (...)`` -> ``not valid YAML (...)``, as the messages said before."""
    if problem.startswith("invalid YAML"):
        return "not valid YAML" + problem[len("invalid YAML") :]
    return problem


def read_as_other_than_text(name: Any) -> str | None:
    """Why the mapping key ``name`` is not the text its user wrote, else ``None``: YAML 1.1 reads an
    unquoted ``no``, ``on``, ``0x10``, ``2024-01-01`` or ``~`` as a boolean, number, date or null
    (``no:`` named the source or corpus ``'False'``)."""
    if isinstance(name, str):
        return None
    kinds = {bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    kind = kinds.get(type(name), f"a {type(name).__name__}")
    return f"YAML read this name as {kind}, not as text: write it in quotes"
