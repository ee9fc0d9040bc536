"""``ragroute config check FILE``: validate a routing config, a corpus definitions file or a CLI
defaults file without loading a model; print what it resolves to and one line per problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import CONTEXT, counted, one_line_errors
from ragroute.cli.options import BesideConfigFile
from ragroute.cli.output import emit_json
from ragroute.errors import one_line


@click.group("config", context_settings=CONTEXT)
def config_group() -> None:
    """Configuration files: routing configs, corpus definitions (corpora.yaml), CLI defaults.

    Every key they take is listed in docs/config.md.
    """


@config_group.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check the checksum of every file of every index, router and gate it names (reads them all, "
    "as loading them would); --no-verify reads only their manifests.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: what FILE resolves to.")
@one_line_errors
def check_command(file: Path, verify: bool, as_json: bool) -> None:
    """Check FILE (a routing config, a corpora.yaml, or a --config file of CLI defaults) without
    loading a model: unknown keys (with the closest known one), sources whose index is missing,
    damaged (checksums) or built with another encoder than the config's (or the same one whose
    model folder has changed since), unregistered kinds, missing files.

    \b
    Prints the resolved sources (index folder, kind, documents, encoder recorded in the index),
    the router, reranker, gate and policy; then one `error: FILE: ...` line per problem on
    stderr. Exits with 1 when there are problems, 0 otherwise.
    """
    from ragroute.errors import RagrouteError
    from ragroute.route.config_check import check_config
    from ragroute.yaml_files import read_yaml

    try:
        data = read_yaml(file, "config")
    except RagrouteError:
        data = None  # check_config reports it as a problem
    root = click.get_current_context().find_root().command  # the `ragroute` group
    if _is_cli_defaults(root, data):
        problems = cli_defaults_problems(root, file, data)
        report: dict[str, Any] = {"path": str(file), "what": "CLI defaults", "problems": problems}
        lines = [f"{file}: CLI defaults for {', '.join(map(str, data))}"]
        warnings: list[str] = []
    else:
        checked = check_config(file, verify=verify)
        report, problems, warnings = checked.to_dict(), checked.problems, checked.warnings
        lines = describe(checked)
    if as_json:
        emit_json({**report, "ok": not problems})
    else:
        for line in lines:
            click.echo(line)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if not as_json and lines:  # a file never read is its one error line, no summary of it
        click.echo(counted(len(problems), "problem") if problems else "ok")
    if problems:
        click.get_current_context().exit(1)


def describe(checked: Any) -> list[str]:
    """What a checked file resolves to, as readable lines (none for a file that could not be read)."""
    if not checked.what:
        return []
    lines = [f"{checked.path}: {checked.what}"]
    if checked.what != "routing config":
        for corpus in checked.corpora:
            fmt = f", {corpus['format']}" if corpus["format"] else ""
            lines.append(
                f"  corpus {corpus['name']}: {corpus['path']} ({corpus['modality']}, "
                f"{corpus['granularity']}{fmt})"
            )
        return lines
    encoder = checked.encoder
    if encoder:
        resolved = encoder["model_id"] or "not found offline"
        dim = f", dim {encoder['dim']}" if encoder.get("dim") else ""
        lines.append(
            f"  encoder: {encoder['name']} -> {resolved}{dim} (backend {encoder['backend']}; not loaded)"
        )
    usable = sum(source.status == "ok" for source in checked.sources)
    lines.append(f"  sources: {len(checked.sources)} ({usable} usable)")
    width = max((len(source.name) for source in checked.sources), default=0)
    for source in checked.sources:
        lines.append(f"    {source.name:<{width}}  {source.kind:<6} {source.target or '-'}  {_state(source)}")
    router = dict(checked.router)
    if router:
        kind = router.pop("kind")
        members = router.pop("members", None)
        detail = ", ".join(f"{key} {_value(value)}" for key, value in router.items())
        of = f" of {', '.join(members)}" if members else ""
        lines.append(f"  router: {kind}{of}" + (f" ({detail})" if detail else ""))
    lines.append(f"  reranker: {checked.reranker or 'none'}")
    lines.append(f"  gate: {checked.gate or 'none'}")
    if checked.llm:
        lines.append(f"  llm: {checked.llm}")
    if checked.policy:
        policy = checked.policy
        lines.append(f"  policy: {counted(policy['signals'], 'signal')}, {counted(policy['rules'], 'rule')}")
    return lines


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _state(source: Any) -> str:
    parts = []
    if source.index_kind:
        parts.append(source.index_kind)
    if source.documents is not None:
        parts.append(counted(source.documents, "document"))
    if source.encoder:
        parts.append(f"encoder {source.encoder.get('model_id')} (dim {source.encoder.get('dim')})")
    if source.expert:
        parts.append(f"expert {source.expert}")
    parts.extend(source.notes)
    text = ", ".join(parts) or "-"
    return text if source.status == "ok" else f"{text}  {source.status.upper()}"


# --------------------------------------------------------------------------- CLI defaults files


def _is_cli_defaults(root: click.Command, data: Any) -> bool:
    """A ``--config`` file: a mapping with command names (or option names: ``progress``) of ``root``
    (``gate`` is also a routing config key) and no key only a routing config has."""
    from ragroute.route.config import TOP_KEYS

    commands = set(getattr(root, "commands", {})) | set(settable_params(root))
    if not isinstance(data, dict):
        return False
    keys = {str(key) for key in data}
    # a key both name (`gate`) is a command's section when it maps that command's subcommands or
    # options (`gate: {decide: {...}}`), not a routing config's `gate: {kind: ...}`: until session
    # 55 a defaults file holding only `gate:` was checked as a routing config (2 problems, exit 1)
    # that `ragroute --config` read fine
    sections = {key for key in keys & commands & TOP_KEYS if _is_section(root, key, data[key])}
    return bool(keys & (commands - TOP_KEYS) or sections) and not keys & (TOP_KEYS - commands)


def _is_section(root: click.Command, name: str, values: Any) -> bool:
    """Whether ``values`` reads as the CLI defaults section of ``root``'s command ``name``: a
    non-empty mapping of its subcommands' or options' names only."""
    command = getattr(root, "commands", {}).get(name)
    if command is None or not isinstance(values, dict) or not values:
        return False
    known = set(getattr(command, "commands", {})) | set(settable_params(command))
    return all(str(key) in known for key in values)


def settable_params(command: click.Command) -> dict[str, click.Parameter]:
    """The parameters of ``command`` a CLI defaults file may set, by name: not ``--help``, nor
    ``ragroute --version`` (a default of true printed the version and ran no command, exit status
    0), nor a group's option named as one of its subcommands, whose section the key is
    (``ragroute --config``: ``config: {check: {verify: false}}`` was refused as "expected a file",
    and ``config: other.yaml`` said ok and was never read, until session 50)."""
    commands = set(getattr(command, "commands", {}))
    return {
        param.name: param
        for param in command.params
        if param.name
        and param.name != "help"
        and param.name not in commands
        and not (param.name == "version" and isinstance(command, click.Group) and not param.expose_value)
    }


def cli_defaults_problems(root: click.Command, path: Path, data: Any) -> list[str]:
    """One line per problem of a CLI defaults file: a key that names no command or option of
    ``root`` (click would ignore it silently; the closest one is named), a section that is not a
    mapping, a value the option cannot take (the expected type is named)."""
    from ragroute.errors import unknown_keys_message

    problems: list[str] = []

    def walk(command: click.Command, values: Any, where: str) -> None:
        if not isinstance(values, dict):
            what = where.rstrip(": ") or "the file"
            got = "empty" if values is None else _type_name(values)
            problems.append(f"{path}: {what} must be a mapping of option defaults, not {got}")
            return
        params = settable_params(command)
        for key, value in values.items():
            param = params.get(str(key))
            if param is not None:
                problem = _value_problem(param, value)
                if problem:
                    problems.append(f"{path}: {where}{key}: {problem}")
            elif isinstance(command, click.Group):
                sub = command.commands.get(str(key))
                if sub is None:
                    message = unknown_keys_message([key], [*command.commands, *params], "command")
                    problems.append(f"{path}: {where}{message}")
                else:
                    walk(sub, value, f"{where}{key}: ")
            else:
                message = unknown_keys_message([key], params, "option")
                problems.append(f"{path}: {where}{message}")

    walk(root, data, "")
    return problems


def paths_beside(command: click.Command, values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``values``, a checked section of a CLI defaults file for ``command`` (the whole file for the
    ``ragroute`` group), with the value of every option taking a file or folder read relative to
    ``folder``, the file's own, as every path in a YAML file of ragroute is (absolute paths and
    ``~/...`` are kept as they are): a ``click.Path`` option's always, and a text option that may name
    a local path (:class:`~ragroute.cli.options.BesideConfigFile`: ``--encoder``, ``--llm``,
    ``--qdrant``, ``--lancedb``, ``--domain``...) where its type says the value is one."""
    params = settable_params(command)
    resolved: dict[str, Any] = {}
    for key, value in values.items():
        param = params.get(key)
        sub = command.commands.get(key) if isinstance(command, click.Group) and param is None else None
        kind = param.type if param is not None else None
        if isinstance(kind, (click.Path, BesideConfigFile)):
            items = [_beside(folder, item, kind) for item in (value if isinstance(value, list) else [value])]
            resolved[key] = items if isinstance(value, list) else items[0]
        elif sub is not None and isinstance(value, dict):
            resolved[key] = paths_beside(sub, value, folder)
        else:
            resolved[key] = value
    return resolved


def _beside(folder: Path, value: Any, kind: click.Path | BesideConfigFile) -> Any:
    """A value of a defaults file in ``folder`` for an option of type ``kind``, as the command line
    would give it (a path option's ``-`` where it means standard input or output is not a file)."""
    if not isinstance(value, str):
        return value
    if not isinstance(kind, click.Path):
        return kind.beside(folder, value)
    if kind.allow_dash and value == "-":
        return value
    return str(folder / os.path.expanduser(value))


def _value_problem(param: click.Parameter, value: Any) -> str | None:
    """Why ``value`` cannot be the default of ``param`` (its type named), or ``None``.

    Paths are not looked up (a defaults file serves commands run from other folders)."""
    if value is None:
        return "empty (give a value or remove the key)"
    if param.multiple or (param.nargs != 1):
        if not isinstance(value, list):
            return f"expected a list, not {_type_name(value)}"
        items = value
    else:
        items = [value]
    for item in items:
        if isinstance(item, (dict, list)):
            return f"expected {_expected(param)}, not {_type_name(item)}"
        if getattr(param, "is_flag", False) or isinstance(param.type, click.types.BoolParamType):
            if not isinstance(item, bool):
                return f"expected true or false, not {_type_name(item)}"
            continue
        if isinstance(param.type, (click.Path, click.File)):
            if not isinstance(item, str):
                return f"expected a path, not {_type_name(item)}"
            continue
        if isinstance(param.type, click.types.IntParamType) and (
            isinstance(item, bool) or (isinstance(item, float) and not item.is_integer())
        ):  # click's int() made k: 1.5 and k: yes run as k = 1 (until session 37)
            return f"expected {_expected(param)}, not {item!r}"
        try:
            param.type.convert(item, param, None)
        except click.BadParameter as exc:
            message = one_line(exc.message).rstrip(".")
            if isinstance(param.type, click.Choice):
                return message
            return f"{message} (expected {_expected(param)})"
    return None


def _expected(param: click.Parameter) -> str:
    kind = param.type
    if isinstance(kind, click.Choice):
        return "one of " + ", ".join(map(str, kind.choices))
    if getattr(param, "is_flag", False) or isinstance(kind, click.types.BoolParamType):
        return "true or false"
    names = {click.types.IntParamType: "an integer", click.types.FloatParamType: "a number"}
    for cls, name in names.items():
        if isinstance(kind, cls):
            return name
    return f"a {kind.name}"


def _type_name(value: Any) -> str:
    from ragroute.errors import value_type_name

    return value_type_name(value)
