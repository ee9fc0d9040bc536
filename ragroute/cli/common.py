"""Helpers shared by several commands: opening encoders, timing, printing hits."""

from __future__ import annotations

import errno
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ragroute.display import counted as counted  # the commands print counts through it
from ragroute.display import terminal_text
from ragroute.errors import (
    IndexFormatError,
    ModelNotFoundError,
    RagrouteError,
    UnknownKindError,
    os_error_message,
)
from ragroute.types import Hit

T = TypeVar("T")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
"""click context settings of every command group."""


def user_error_message(exc: BaseException) -> str | None:
    """The one line to print for an error the user caused or can fix, or ``None`` for a bug (let it
    show its traceback): a :class:`RagrouteError`, or an :class:`OSError` (permissions, missing or
    misplaced folders, a full disk; a broken pipe excepted, which click handles)."""
    if isinstance(exc, RagrouteError):
        return terminal_text(exc)
    if isinstance(exc, OSError) and exc.errno != errno.EPIPE:
        return terminal_text(os_error_message(exc))
    return None


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a user error raised by the command (:func:`user_error_message`) as ``error: ...`` and
    exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (RagrouteError, OSError) as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            click.get_current_context().exit(2)

    return wrapper


CONFIG_FILE = "ragroute.config_file"
"""Key of ``click.Context.meta`` holding the path of the ``--config`` defaults file, when one is read."""

_TYPED = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _flag(param: click.Parameter) -> str:
    """How the user names ``param``: its longest flag (``--retrieval-rate``), or an argument's ``TASK``."""
    if isinstance(param, click.Argument):
        return param.human_readable_name
    return max(param.opts, key=len)


def _flags(names: list[str]) -> str:
    """``--a and --b``: the flags of the current command's parameters ``names``."""
    flags = {param.name: _flag(param) for param in click.get_current_context().command.params}
    return " and ".join(flags[name] for name in names)


def given_options(*names: str) -> list[str]:
    """The flags (``--encoder``) of the current command's parameters ``names`` that the user gave
    on the command line or through their environment variable (not defaults, nor ``--config``)."""
    ctx = click.get_current_context()
    return [_flags([name]) for name in names if ctx.get_parameter_source(name) in _TYPED]


def refuse_options(names: tuple[str, ...], reason: str) -> None:
    """Raise a one-line :class:`RagrouteError` when any of the options ``names`` was given: an option
    that does not apply is an error, not silently dropped: ``--encoder does not apply`` + ``reason``
    (``" to --method bm25 (...)"``). A ``--config`` default of one is not an error: the file's
    defaults apply where they can (the caller leaves the value unused, or :func:`applicable` drops it)."""
    given = given_options(*names)
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise RagrouteError(f"{' and '.join(given)} {verb} not apply {reason}")


def applicable(name: str, value: T, applies: bool, reason: str) -> T | None:
    """``value`` of the current command's option ``name`` where it applies. Where it does not: a
    one-line error if it was given on the command line (:func:`refuse_options` with ``reason``), and
    ``None`` (as if not set) if it is a ``--config`` default, which applies only where it can."""
    if applies:
        return value
    refuse_options((name,), reason)
    return None


def _is_set(value: Any) -> bool:
    """Whether an option's value says something: not ``None``, an unset flag or an empty ``multiple``."""
    return value is not None and value is not False and value != ()


def yield_to_command_line(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of the current command's parameters ``values`` (parameter name -> value), options
    that override one another, in the same order; when one of them was given on the command line,
    the ``--config`` defaults among the others come back ``None``: a default of the file yields to
    what is typed, even when it is typed as another option (``--retrieval-rate`` over a file's
    ``threshold``)."""
    ctx = click.get_current_context()
    typed = any(ctx.get_parameter_source(name) in _TYPED and _is_set(value) for name, value in values.items())
    from_file = ParameterSource.DEFAULT_MAP
    return tuple(
        None if typed and ctx.get_parameter_source(name) == from_file else value
        for name, value in values.items()
    )


def exclusive_options(values: Mapping[str, Any], conflict: str, *, required: bool = False) -> tuple[Any, ...]:
    """The values of the current command's parameters ``values`` (parameter name -> value), options of
    which at most one may be set (``required``: exactly one), in the same order, after
    :func:`yield_to_command_line` (a ``--config`` default yields to one of the others typed). More
    than one set, or none when ``required``, is a one-line :class:`RagrouteError`: ``conflict``, its
    ``{given}`` replaced by the options set (``--threshold and --retrieval-rate``), and the
    ``--config`` file named when they all come from it."""
    kept = dict(zip(values, yield_to_command_line(values), strict=True))
    chosen = [name for name, value in kept.items() if _is_set(value)]
    if len(chosen) <= 1 and (chosen or not required):
        return tuple(kept.values())
    message = conflict.format(given=_flags(chosen))
    if chosen and not given_options(*chosen):  # the file itself sets both
        message += f" (set by --config {click.get_current_context().meta.get(CONFIG_FILE, 'FILE')})"
    raise RagrouteError(message)


def corpus_columns(corpus: Path, columns: Mapping[str, Any]) -> dict[str, Any]:
    """The column options of :func:`ragroute.cli.options.column_options` to load ``corpus`` with:
    all of them when its format reads columns (a .csv, .tsv or .jsonl table); for a corpus of
    another format, a one-line error when they were given on the command line, and none when they
    are ``--config`` defaults (which apply where they can, like ``--encoder`` on a bm25 build)."""
    if not columns:
        return {}
    from ragroute.loaders.auto import LOADERS, detect_format

    fmt = detect_format(corpus, **columns)
    if all(name in LOADERS[fmt][1] for name in columns):
        return dict(columns)
    reason = "column options name the columns of a .csv, .tsv or .jsonl file"
    refuse_options(tuple(columns), f"to {corpus}, a {fmt} corpus ({reason})")
    return {}


ENCODER_OPTIONS = ("encoder", "backend", "cache_dir")
"""The parameters of :func:`ragroute.cli.options.encoder_options`."""


def open_encoder(name: str, backend: str, cache_dir: Path | None) -> Any:
    """Load an encoder (lazily imports torch / onnxruntime); ``cache_dir`` ``None`` is the per-user
    cache folder (:func:`ragroute.encode.resolve.default_cache_dir`)."""
    from ragroute.encode import load_encoder

    return load_encoder(name, backend=backend, cache_dir=cache_dir)


def encoder_for_index(
    manifest: Any, index_dir: Path, encoder: str | None, backend: str, cache_dir: Path | None
) -> Any:
    """The encoder to query an index with: ``encoder`` if given, else the one that built it.

    A given encoder whose canonical model id differs from the recorded one is
    refused before its weights are loaded, unless its folder holds the same files (the recorded
    weights digest: a copy of the model elsewhere is that encoder, as ``load_index`` takes it).
    """
    from ragroute.encode import resolve_model
    from ragroute.index.dense import check_encoder
    from ragroute.registry import INDEX_KINDS

    try:
        kind = INDEX_KINDS.get(manifest.kind, str(index_dir))
    except UnknownKindError as exc:  # before any encoder is looked for (it said "encoder name is empty")
        raise IndexFormatError(str(exc)) from None
    if not getattr(kind, "needs_encoder", False):
        refuse_options(ENCODER_OPTIONS, f"to {index_dir}, a {manifest.kind} index (it encodes nothing)")
        return None
    recorded = manifest.encoder or {}
    if encoder is not None:
        resolved = resolve_model(encoder)
        copied = resolved.model_id != recorded.get("model_id") and bool(recorded.get("weights"))
        if not (copied and recorded["weights"] == resolved.content_digest()):
            check_encoder(recorded, resolved.model_id, None, str(index_dir))
    name = encoder or recorded.get("model_id", "")
    if not name:
        raise IndexFormatError(f"{index_dir}: its manifest records no encoder for a {manifest.kind} index")
    try:
        return open_encoder(name, backend, cache_dir)
    except ModelNotFoundError as exc:
        if encoder is not None:
            raise
        # the encoder the manifest names, not one the user gave (until session 56 the error named it
        # alone, as if --encoder had: a model folder moved since the build read as a typo)
        raise ModelNotFoundError(
            f"{index_dir} was built with encoder {name!r}, which does not load here ({exc}): pass "
            "--encoder with that model's folder or name (a copy of the folder is that encoder)"
        ) from None


def load_index_for(
    index_dir: Path,
    encoder: str | None,
    backend: str,
    cache_dir: Path | None,
    *,
    verify: bool = True,
    check: Callable[[Any, Path], None] | None = None,
) -> Any:
    """The index at ``index_dir`` with the encoder :func:`encoder_for_index` picks, both from one
    published build (``check(manifest, index_dir)``, when given, looks at its manifest first).

    Until session 47 the encoder was picked from one read of the manifest and the index loaded in
    a second: a rebuild with another encoder published between them failed ``query`` and ``eval
    --index`` with "built with encoder X, not Y; rebuild the index", on an index that was sound.
    """
    from ragroute.index.io import load_index_choosing

    def choose(manifest: Any) -> Any:
        if check is not None:
            check(manifest, index_dir)
        return encoder_for_index(manifest, index_dir, encoder, backend, cache_dir)

    return load_index_choosing(index_dir, choose, backend=backend, verify=verify)


class Stopwatch:
    """Collects named timings in milliseconds for decision traces."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round((time.perf_counter() - start) * 1000, 2)


def format_hit(hit: Hit, width: int = 100) -> str:
    """One hit as two lines: rank, score, source, id, title; then a text snippet."""
    snippet = " ".join(hit.text.split())
    if len(snippet) > width:
        snippet = snippet[: width - 3] + "..."
    source = f"[{hit.source}] " if hit.source else ""
    # a title's line breaks made a third line that read as the snippet (until session 43)
    title = f"  {' '.join(hit.title.split())}" if hit.title else ""
    # corpus text with its control characters as visible escapes (raw until session 52)
    return (
        terminal_text(f"{hit.rank:>3}. {hit.score:8.4f}  {source}{hit.doc_id}{title}")
        + f"\n       {terminal_text(snippet)}"
    )
