"""The ``ragroute`` command line: build indexes, query them, evaluate them, benchmark them.

Every command has ``--help``. A YAML config file (``--config FILE`` or the
``RAGROUTE_CONFIG`` environment variable) supplies defaults per command, e.g.::

    build:
      method: hybrid
      encoder: all-MiniLM-L6-v2
    query:
      k: 5

Errors caused by input (a missing file, an empty query, a corrupt index) print
one line ``error: ...`` and exit with status 2.

All click code of ragroute lives in this package: one module per command
(``build``, ``query``, ``evaluate``, ``route``, ``graph``, ``ask``, ``demo``, ``config``; ``bench`` holds the
benchmark commands listed in :data:`ragroute.registry.BENCHMARKS`), shared option
decorators in ``options``, helpers shared by commands in ``common`` and the
``--json`` output in ``output``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NoReturn

import click

from ragroute.cli.common import CONFIG_FILE, CONTEXT, user_error_message
from ragroute.display import terminal_text
from ragroute.errors import RagrouteError, SourceWarning, one_line


class _Group(click.Group):
    """A click group that turns a :class:`RagrouteError` or an :class:`OSError` (permissions, a full
    disk, a file where a folder should be...) into a one-line ``error: ...`` and exit status 2, and
    so a subcommand's usage error (a bad option value, a missing argument) too, naming its
    ``--help`` instead of printing the usage block, and so one in ``ragroute``'s own options
    (``ragroute --bogus query``, ``--config`` naming a folder), which click parses before any
    command runs; Ctrl-C is one line and exit status 130."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            if parent is not None:  # a subgroup: its parent's invoke says it in one line
                raise
            # the usage block, a "Try ... --help" line and the error until session 50
            _usage_line(exc, info_name or self.name or "ragroute")
            raise click.exceptions.Exit(2) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            _usage_line(exc, ctx.command_path)
            ctx.exit(2)
        except (RagrouteError, OSError) as exc:
            said = user_error_message(exc)
            if said is None:
                raise
            click.echo(f"error: {said}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as exc:  # Ctrl-C: click would say "Aborted!" and exit 1, like a failure
            said = f" {exc}" if str(exc) else ""  # what was being done (`build corpora.yaml`: which corpus)
            click.echo(
                f"\nerror: interrupted{said} (an artifact being written keeps its previous build)", err=True
            )
            ctx.exit(130)


def _usage_line(exc: click.UsageError, command_path: str) -> None:
    """Say a usage error as one line ``error: ... (see 'CMD --help')`` on stderr, ``CMD`` the command
    whose usage it is (``command_path`` when the error does not know)."""
    where = exc.ctx.command_path if exc.ctx is not None else command_path
    message = one_line(exc.format_message())
    click.echo(f"error: {terminal_text(message)} (see '{where} --help')", err=True)


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Read the ``--config`` file of option defaults; any problem in it (an unknown command or
    option, a value of the wrong type) is a one-line error, not a silently ignored key. Its paths
    are relative to its folder; its values are defaults: what the command line gives overrides
    them (:func:`ragroute.cli.common.yield_to_command_line`)."""
    path = value or os.environ.get("RAGROUTE_CONFIG")
    if not path:
        return value
    from ragroute.cli.config import cli_defaults_problems, paths_beside
    from ragroute.yaml_files import read_yaml

    try:
        data = read_yaml(path, "config")
    except RagrouteError as exc:
        _fail(ctx, str(exc))
    if data is None:
        data = {}
    problems = cli_defaults_problems(ctx.command, Path(path), data)
    if problems:
        more = len(problems) - 1
        tail = f" (and {more} more: ragroute config check {path} lists them)" if more else ""
        _fail(ctx, f"--config {problems[0]}{tail}")
    ctx.default_map = {**(ctx.default_map or {}), **paths_beside(ctx.command, data, Path(path).parent)}
    ctx.meta[CONFIG_FILE] = path
    return path


def _fail(ctx: click.Context, message: str) -> NoReturn:
    click.echo(f"error: {terminal_text(one_line(message))}", err=True)
    ctx.exit(2)


def _set_progress(ctx: click.Context, _param: click.Parameter, value: bool | None) -> bool | None:
    """``--progress`` / ``--no-progress``: set ``RAGROUTE_PROGRESS`` for this command (every bar reads
    it through :func:`ragroute.progress.progress_enabled`), restored when the command ends."""
    if value is None:
        return value
    from ragroute.progress import PROGRESS_ENV

    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "1" if value else "0"

    def restore() -> None:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous

    ctx.call_on_close(restore)
    return value


@click.group(cls=_Group, context_settings=CONTEXT)
# --config first: click runs the eager options not typed in the order they are declared, and a
# RAGROUTE_CONFIG file's `progress:` was ignored (read after --progress took its default) until
# session 50, while the same file given as --config FILE set it
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="YAML file of per-command option defaults (also RAGROUTE_CONFIG); the files and folders it "
    "names (a model folder or an --llm file too) are read beside it.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    callback=_set_progress,
    is_eager=True,
    expose_value=False,
    help="Force progress bars on or off [default: only when stderr is a terminal; RAGROUTE_PROGRESS=1/0].",
)
@click.version_option(package_name="ragroute")
def main() -> None:
    """ragroute: build, query, evaluate and benchmark retrieval indexes, and route queries.

    \b
    Typical session:
      ragroute build corpora/astronomy --out indexes/astronomy --method hybrid
      ragroute query indexes/astronomy "how are exoplanets detected?" -k 5
      ragroute graph build corpora/multihop && ragroute graph query graph/multihop "..."
      ragroute eval --index indexes/med --data ../shared/data/glasgow/med --split dev
      ragroute demo

    Caches (ONNX exports, embeddings) go to $RAGROUTE_CACHE, else $XDG_CACHE_HOME/ragroute, else
    ~/.cache/ragroute (--cache-dir on every command that encodes). Progress bars show only when
    stderr is a terminal (--progress / --no-progress to force).
    """
    from ragroute.cli.output import tolerant_stdout

    tolerant_stdout()  # any text printed, whatever stdout's encoding
    warnings.showwarning = _one_line_warning
    # a source left out of a routing config is named every time a command loads it
    warnings.simplefilter("always", SourceWarning)


def _one_line_warning(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    """Show warnings (e.g. skipped corpus lines) as ``warning: ...`` on stderr, one line each."""
    click.echo(f"warning: {terminal_text(one_line(str(message)))}", err=True)


def _register() -> None:
    from ragroute.cli.ask import ask_command
    from ragroute.cli.build import build_command
    from ragroute.cli.config import config_group
    from ragroute.cli.demo import demo_command
    from ragroute.cli.evaluate import eval_command
    from ragroute.cli.expert import expert_group
    from ragroute.cli.gate import gate_group
    from ragroute.cli.graph import graph_group
    from ragroute.cli.inspect import inspect_command
    from ragroute.cli.query import query_command
    from ragroute.cli.rerank import rerank_group
    from ragroute.cli.route import route_group
    from ragroute.cli.skills import skills_group

    for command in (
        build_command,
        query_command,
        eval_command,
        route_group,
        graph_group,
        rerank_group,
        expert_group,
        skills_group,
        gate_group,
        ask_command,
        inspect_command,
        demo_command,
        config_group,
    ):
        main.add_command(command)
    main.add_command(bench_group())


def bench_group() -> click.Group:
    """``ragroute bench ...``: the commands registered in :data:`ragroute.registry.BENCHMARKS`."""
    from ragroute.registry import BENCHMARKS

    @click.group("bench", cls=_Group, context_settings=CONTEXT)
    def bench() -> None:
        """Benchmarks: speed as ratios to the baselines, quality on real data.

        With --json the last line printed is one JSON object.
        """

    for name in BENCHMARKS.names():
        bench.add_command(BENCHMARKS.get(name), name)
    return bench


_register()
