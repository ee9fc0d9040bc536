"""Reading routing-policy YAML with line numbers, and the error every policy problem raises.

Policy files are read with a :class:`yaml.SafeLoader` subclass that builds
:class:`LineDict` and :class:`LineList` instead of plain ``dict`` and ``list``:
they behave the same but remember the line (1-based) where they, each key, each
value and each item start, so a load error can name the line at fault::

    routing.yaml line 14: rule 'printers' uses unknown signal 'about_printer'

Plain dicts and lists (``Policy.from_dict`` on hand-built data) work too; errors
then name the source without a line.
"""

from __future__ import annotations

from typing import Any

import yaml

from ragroute.errors import RagrouteError
from ragroute.yaml_files import MergesInOrder, YamlProblem, check_duplicate_keys, check_tree


class PolicyError(RagrouteError, ValueError):
    """A routing policy is invalid (at load) or cannot be evaluated (e.g. no encoder).

    The message reads ``<source> line <n>: <problem>``; ``source``, ``line`` and
    ``problem`` are also kept as attributes.
    """

    def __init__(self, problem: str, *, source: str = "", line: int | None = None) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        if source and line is not None:
            prefix = f"{source} line {line}: "
        elif source:
            prefix = f"{source}: "
        elif line is not None:
            prefix = f"line {line}: "
        else:
            prefix = ""
        super().__init__(prefix + problem)


class LineDict(dict):
    """A dict that remembers the lines of itself, its keys and its values."""

    line: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class LineList(list):
    """A list that remembers the lines of itself and of each item."""

    line: int | None = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines: list[int] = []


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    data = LineDict()
    data.line = _line(node)
    yield data
    check_duplicate_keys(loader, node)
    data.update(loader.construct_mapping(node))
    for key_node, value_node in node.value:  # merge keys are flattened by now
        key = loader.construct_object(key_node)
        data.key_lines[key] = _line(key_node)
        data.value_lines[key] = _line(value_node)


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> Any:
    data = LineList()
    data.line = _line(node)
    yield data
    data.extend(loader.construct_sequence(node))
    data.item_lines = [_line(child) for child in node.value]


class LineLoader(MergesInOrder, yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember their line numbers (``<<`` merged as
    routing configs are read: :class:`~ragroute.yaml_files.MergesInOrder`)."""


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` into :class:`LineDict` / :class:`LineList` values."""
    try:
        value = yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
        # `when: &c {not: *c}` made every reader recurse until RecursionError (as read_yaml refuses it)
        check_tree(value)
    except YamlProblem as exc:
        raise PolicyError(str(exc), source=source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "cannot parse"
        raise PolicyError(f"invalid YAML: {problem}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"invalid YAML: {str(exc).splitlines()[0]}", source=source) from None
    except RecursionError:
        raise PolicyError("invalid YAML: nested too deeply", source=source) from None
    # LookupError too: `!!bool maybe` (KeyError), an empty `!!int` (IndexError), until session 55 tracebacks
    except (ValueError, TypeError, AttributeError, OverflowError, LookupError) as exc:
        raise PolicyError(f"invalid YAML value: {exc}", source=source) from None
    return value


def line_of(obj: Any) -> int | None:
    """The line where a loaded mapping or sequence starts (``None`` for plain data)."""
    return getattr(obj, "line", None)


def key_line(mapping: Any, key: Any) -> int | None:
    """The line of ``key`` in ``mapping``, else the mapping's own line."""
    lines = getattr(mapping, "key_lines", None)
    if lines and key in lines:
        return lines[key]
    return line_of(mapping)


def value_line(mapping: Any, key: Any) -> int | None:
    """The line where the value of ``key`` starts, else the mapping's own line."""
    lines = getattr(mapping, "value_lines", None)
    if lines and key in lines:
        return lines[key]
    return line_of(mapping)


def item_line(sequence: Any, index: int, default: int | None = None) -> int | None:
    """The line of item ``index`` of ``sequence``, else ``default`` or the sequence's line."""
    lines = getattr(sequence, "item_lines", None)
    if lines and 0 <= index < len(lines):
        return lines[index]
    return default if default is not None else line_of(sequence)
