"""Command-line option decorators shared by several commands and benchmarks."""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from ragroute.errors import RagrouteError, argument_text, has_visible_text

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")

DEFAULT_RERANKER = Path("rerank/default")

CACHE_DIR_HELP = (
    "Embedding cache and exported ONNX models [default: $RAGROUTE_CACHE, else "
    "$XDG_CACHE_HOME/ragroute, else ~/.cache/ragroute]."
)

CONFIG_CACHE_HELP = (
    "Embedding cache and exported ONNX models [default: the config's cache_dir:, else $RAGROUTE_CACHE, "
    "else $XDG_CACHE_HOME/ragroute, else ~/.cache/ragroute]."
)


class FiniteFloatRange(click.FloatRange):
    """A ``click.FloatRange`` that refuses NaN and infinity: NaN compares false with every bound, so
    the range let ``--timeout nan`` through (every LLM call then timed out at once, only said in
    ``note:`` lines), and ``inf`` with no upper bound (an overflow in each call, said the same way)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


SEED = click.IntRange(min=0)
"""The type of every seed option (``--seed``, ``rerank train --draw``): numpy's generators refuse a
negative seed, so one is refused in one line when the command line is parsed, not after a run's
first hours."""


class BesideConfigFile(click.types.StringParamType):
    """A text option that may name a local file or folder among other things (a model name, a URL):
    :meth:`beside` says how a value of a ``--config`` file is read against the file's folder
    (:func:`ragroute.cli.config.paths_beside`), as ``click.Path`` options are. On the command line
    the value is kept as typed (read from the working directory)."""

    def beside(self, folder: Path, value: str) -> str:
        """``value``, a default from a ``--config`` file in ``folder``, as the command line would give it."""
        raise NotImplementedError


def _in(folder: Path, value: str) -> Path:
    # an absolute value (or ~/...) stays what it is; os.path's expanduser leaves a ~user that is no
    # user as written (pathlib's raised RuntimeError, a traceback, until session 55)
    return folder / os.path.expanduser(value)


class NameOrPath(BesideConfigFile):
    """A name or a local path (``--encoder``: a model name or a model folder; ``--llm``: a kind name, a
    settings file or ``file.py:factory``). A ``--config`` value is read beside the file when it names
    a file or folder there, or can only be a path (``./x``, ``../x``, ``~/x``, a suffix of
    ``path_suffixes``);
    otherwise it is a name (a hub model, ``local``, ``package.module:factory``) and kept as written,
    as are the bundled encoder's names, which are never paths."""

    def __init__(self, path_suffixes: tuple[str, ...] = ()) -> None:
        self.path_suffixes = path_suffixes

    def beside(self, folder: Path, value: str) -> str:
        from ragroute.encode.resolve import is_bundled_name
        from ragroute.references import is_reference

        if is_bundled_name(value):
            return value
        here = _in(folder, value)
        if here.exists() or value.startswith(("./", "../", "~")) or Path(value).suffix in self.path_suffixes:
            return str(here)
        module, _, attribute = value.partition(":")
        if is_reference(value) and module.strip().endswith(".py"):  # file.py:function, beside the file
            return f"{_in(folder, module.strip())}:{attribute}"
        return value


def is_local_location(location: str) -> bool:
    """Whether a store location (``--qdrant``, ``--lancedb``) names a local folder: not a URL
    (``http://...``, ``s3://...``) nor Qdrant's ``:memory:``."""
    return "://" not in location and location != ":memory:"


class StoreLocation(BesideConfigFile):
    """A store's folder or a URL (``--qdrant``, ``--lancedb``): a ``--config`` folder is read beside
    the file (it need not exist yet: the build makes it); a URL or ``:memory:`` is kept."""

    def beside(self, folder: Path, value: str) -> str:
        return str(_in(folder, value)) if is_local_location(value) else value


class NamedPath(BesideConfigFile):
    """``NAME=PATH`` (``--domain EXPERT=CORPUS``): a ``--config`` value's PATH is read beside the file."""

    def beside(self, folder: Path, value: str) -> str:
        name, sep, path = value.partition("=")
        return (
            f"{name}={_in(folder, path)}" if sep and name and path else value
        )  # malformed: the command says


BACKEND_HELP = (
    "How the encoder runs: torch, onnx (fp32 export) or onnx-int8; auto picks the fastest backend "
    "whose retrieval quality was measured to hold."
)


def _source_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not has_visible_text(value):  # until session 50 the folder's name, unsaid
        raise click.BadParameter(
            f"{value!r} names nothing: give a name with a visible character, or leave --name out "
            "for the output folder's name"
        )
    return value


def source_name_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--name``: the source name an index stamps on its hits; an empty or blank one is refused."""
    return click.option(
        "--name",
        default=None,
        callback=_source_name,
        help="Source name stamped on hits [default: the output folder name].",
    )(func)


def backend_option(
    func: Callable[..., Any], help_text: str = BACKEND_HELP, show_default: bool = True
) -> Callable[..., Any]:
    """``--backend``: how the encoder runs (``auto`` by default; ``help_text`` without
    ``show_default`` where the help says its own default)."""
    return click.option(
        "--backend", type=click.Choice(BACKENDS), default="auto", show_default=show_default, help=help_text
    )(func)


def on_error_option(more: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--on-error skip|raise``: what a command that loads a corpus does with its bad lines;
    ``more`` adds what the command does besides (e.g. with bad triples)."""
    return click.option(
        "--on-error",
        type=click.Choice(["skip", "raise"]),
        default="skip",
        show_default=True,
        help="Bad corpus lines: skip them with a counted warning, or stop at the first with its line "
        "number." + (f" {more}" if more else ""),
    )


def _cache_dir(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Path | None:
    """Callback of ``--cache-dir``: the folder as a ``Path``; an empty or blank value is refused (until
    session 56 it was the working directory, which got the ONNX exports and the embedding cache,
    where an empty ``RAGROUTE_CACHE`` and a config's empty ``cache_dir:`` are not taken so)."""
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter(
            f"{value!r} names no folder (an unset variable?): give a folder, or leave --cache-dir out "
            "for the per-user cache folder"
        )
    return Path(value)


def cache_dir_option(help_text: str = CACHE_DIR_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--cache-dir`` (``None`` when not given: the per-user cache folder, or a config's ``cache_dir:``)."""
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        default=None,
        callback=_cache_dir,
        help=help_text,
    )


def text_argument(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """Callback of the text arguments and options (a query, a task, a scope label, a filter): each
    text as typed, UTF-8 bytes a C locale left undecoded read as UTF-8 (:func:`argument_text`)."""
    if isinstance(value, tuple):
        return tuple(argument_text(v) if isinstance(v, str) else v for v in value)
    return argument_text(value) if isinstance(value, str) else value


#: ``--scope LABEL`` (repeatable): the caller's scopes, for the commands that answer as a caller
scope_option = click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="LABEL",
    callback=text_argument,
    help="A scope of the caller (repeatable): sources and documents with access labels are visible "
    "only to callers holding one of them [default: none, public sources only].",
)


#: ``--filter KEY=VALUE`` (repeatable): metadata filters, for the commands that search (read with
#: :func:`parse_filters`)
filter_option = click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    callback=text_argument,
    help="Keep documents whose metadata KEY equals VALUE, or holds it in a list (repeat to allow "
    "several values); a VALUE that spells a number or true/false also matches that number or boolean, "
    "and null also matches a null or missing KEY (a qdrant or lancedb index matches text and integers only).",
)


def parse_filters(values: tuple[str, ...]) -> dict[str, list[Any]]:
    """``KEY=VALUE`` options as store filters. A command line holds only text, while metadata read
    from JSON or YAML may hold numbers and booleans: a VALUE that spells a number or ``true`` /
    ``false`` matches that value too (``year=2019`` keeps ``"year": 2019`` and ``"year": "2019"``;
    ``price=12.5`` keeps ``12.5`` and ``"12.5"``); ``null`` also keeps documents whose KEY is null
    or missing, as a filter value ``None`` does (it matched only the text "null" until session 38).
    An empty VALUE matches the empty text, said on stderr (an unset shell variable reads the same)."""
    filters: dict[str, list[Any]] = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key:
            raise RagrouteError(f"bad --filter {value!r}: expected KEY=VALUE")
        if not wanted:  # an unset shell variable reads the same: say what it matches
            click.echo(
                f"note: --filter {key}= matches documents whose {key} is the empty text "
                f"(for a null or missing {key}: --filter {key}=null)",
                err=True,
            )
        filters.setdefault(key, []).extend([wanted, *_typed_filter_value(wanted)])
    return filters


def store_matchable(parsed: dict[str, list[Any]], retrievers: Sequence[Any]) -> dict[str, list[Any]]:
    """``parsed`` (:func:`parse_filters`) with only the values every store index among
    ``retrievers`` matches, when there is one (a qdrant or lancedb index matches text and integers:
    ``--filter price=12.5`` also offers the number, ``flag=true`` the boolean, ``null`` a missing
    key); each value left out is said on stderr. Until session 39 such a filter failed on a store
    index (``query``), and on a pipeline with a store source (``route``, ``ask``)."""
    stores = [r for r in retrievers if getattr(r, "filter_value_matched", None) is not None]
    if not stores:
        return parsed
    kinds = "/".join(sorted({str(getattr(r, "kind", "store")) for r in stores}))
    out: dict[str, list[Any]] = {}
    for key, values in parsed.items():
        out[key] = []
        for value in values:
            if all(r.filter_value_matched(value) for r in stores):
                out[key].append(value)
                continue
            if value is None:
                text, what = "null", f"a null or missing {key}"
            elif isinstance(value, bool):
                text, what = str(value).lower(), f"the boolean {str(value).lower()}"
            else:
                text, what = str(value), f"the number {value}"
            click.echo(
                f"note: a {kinds} index matches text and integers only: --filter {key}={text} matches the "
                f"text {text!r}, not {what}",
                err=True,
            )
    return out


def _typed_filter_value(text: str) -> list[Any]:
    """The integer, number or boolean ``text`` spells, if any (as JSON would write it: ``12.5``,
    ``4.0`` and ``1e3`` match those numbers, and ``4.0`` the integer 4 too)."""
    if text in ("true", "false"):
        return [text == "true"]
    if text == "null":
        return [None]
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return [int(text)]
    if re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", text):
        value = float(text)
        return [value] if math.isfinite(value) else []
    return []


ENCODER_HELP = "Sentence-transformers model name or local path."


def encoder_option(
    help_text: str = ENCODER_HELP, default: str | None = "all-MiniLM-L6-v2", name: str = "encoder"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--encoder`` (parameter ``name``): a model name or folder, read beside a ``--config`` file
    that names a folder there (:class:`NameOrPath`)."""
    return click.option(
        "--encoder", name, type=NameOrPath(), default=default, show_default=bool(default), help=help_text
    )


def encoder_options(default_encoder: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--encoder``, ``--backend`` and ``--cache-dir`` to a command."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = cache_dir_option()(func)
        func = backend_option(func)
        unset = "" if default_encoder else " [default: the one the index was built with]"
        return encoder_option(ENCODER_HELP[:-1] + unset + ".", default_encoder)(func)

    return decorate


def engine_options(engine_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--engine local|ray``, ``--address`` (``ray_address``) and ``--workers`` of the commands
    whose work can be spread over Ray workers (``ragroute.scale.ray_build``)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="--engine ray: number of workers, one CPU each (at most the cluster's CPUs; more than "
            "the work's shards or a local instance's CPUs start that many) [default: one per CPU].",
        )(func)
        func = click.option(
            "--address",
            "ray_address",
            default=None,
            metavar="HOST:PORT",
            help="--engine ray: join the Ray cluster at this address (auto: the one running on this "
            "machine) [default: start a new Ray instance on this machine].",
        )(func)
        engines = click.Choice(["local", "ray"])
        option = click.option("--engine", type=engines, default="local", show_default=True, help=engine_help)
        return option(func)

    return decorate


def name_list(value: str, option: str) -> list[str]:
    """The comma-separated names given to ``option``; an empty list (``--routers ,``) is a one-line
    error rather than a run that measures nothing and exits 0."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise RagrouteError(f"{option} {value!r} names nothing: give comma-separated names")
    return names


def _column_list(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str] | None:
    """``--metadata-columns a,b`` as ``["a", "b"]``; ``""`` keeps none (``[]``)."""
    if value is None:
        return None
    columns = [name.strip() for name in value.split(",")] if value.strip() else []
    if any(not name for name in columns):
        raise click.BadParameter(f"{value!r}: an empty column name (give names separated by commas)")
    return columns


def column_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--text-column``, ``--id-column``, ``--title-column`` and ``--metadata-columns`` of the commands
    that load a corpus: the column options of a .csv/.tsv/.jsonl corpus
    (:data:`ragroute.loaders.auto.COLUMN_OPTIONS`), passed to the command as one ``columns`` mapping
    holding only those given (e.g. ``{"text_column": "body"}``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ragroute.loaders.auto import COLUMN_OPTIONS

        values = {name: kwargs.pop(name) for name in COLUMN_OPTIONS}
        columns = {name: value for name, value in values.items() if value is not None}
        return func(*args, columns=columns, **kwargs)

    table = "of a .csv, .tsv or .jsonl corpus"
    options = [
        click.option(
            "--text-column",
            default=None,
            metavar="NAME",
            help=f"The column {table} holding the text [default: text].",
        ),
        click.option(
            "--id-column",
            default=None,
            metavar="NAME",
            help=f"The column {table} holding document ids [default: id if the file has one, else STEM-ROW].",
        ),
        click.option(
            "--title-column",
            default=None,
            metavar="NAME",
            help=f"The column {table} holding titles [default: title if the file has one, else none].",
        ),
        click.option(
            "--metadata-columns",
            default=None,
            metavar="A,B,...",
            callback=_column_list,
            help=f"The columns {table} kept as metadata, comma-separated ('' keeps none) [default: every "
            "other column].",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def bench_encoder_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--encoder``, ``--backend`` and ``--cache-dir`` (an embedding cache shared by benchmark runs)."""
    func = cache_dir_option(CACHE_DIR_HELP + " Shared by runs, so repeated runs do not re-encode.")(func)
    func = backend_option(func)
    return encoder_option()(func)


def train_device_option(published: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--device`` of the commands that fine-tune a model; ``published`` says what runs on the CPU
    whatever the device (e.g. "the published adapter or model")."""
    return click.option(
        "--device",
        default="cpu",
        show_default=True,
        help=f"Where the model trains: cpu, or a torch device such as cuda or cuda:1 ({published} "
        "run on the CPU either way); a device torch cannot use here is one error line before any work.",
    )


def rerank_backend_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--rerank-backend``: how a reranker artifact runs (``auto``: bf16 torch where the CPU has native
    bfloat16, else the int8 ONNX export; benchmarks report which ran)."""
    from ragroute.rerank.cross_encoder import BACKENDS as RERANK_BACKENDS

    return click.option(
        "--rerank-backend",
        type=click.Choice(list(RERANK_BACKENDS)),
        default="auto",
        show_default=True,
        help="How the reranker runs: auto = bf16 torch on CPUs with AMX, else its int8 ONNX export "
        "(the JSON's reranker backend says which ran).",
    )(func)


def reranker_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--reranker`` (parameter ``reranker_path``): a ``ragroute rerank train`` artifact, a
    CrossEncoder folder or a CrossEncoder's hub name (:class:`NameOrPath`: a ``--config`` value is read
    beside the file when it names a folder there)."""
    return click.option("--reranker", "reranker_path", type=NameOrPath(), default=None, help=help_text)


def resolve_reranker(
    path: str | Path | None,
    disabled: bool,
    *,
    candidates: int | None = None,
    backend: str = "auto",
    required: bool = False,
) -> tuple[Any, str]:
    """The reranker a command runs and one line saying which: ``path`` when given, else
    ``rerank/default`` when it has been trained, else none (stage 1 only) or, when ``required`` (a
    benchmark whose rows need one), an error saying how to get one; ``disabled`` (``--no-reranker``)
    wins."""
    if disabled:
        return None, "reranker: none (--no-reranker)"
    from ragroute.rerank.cross_encoder import CrossEncoderReranker
    from ragroute.store import artifact_exists

    settings: dict[str, Any] = {"backend": backend}
    if candidates is not None:
        settings["candidates"] = candidates
    if path is not None:
        return CrossEncoderReranker(path, **settings), f"reranker: {path}"
    if artifact_exists(DEFAULT_RERANKER):
        return CrossEncoderReranker(DEFAULT_RERANKER, **settings), f"reranker: {DEFAULT_RERANKER} (default)"
    missing = (
        f"{DEFAULT_RERANKER} not found: train it with `ragroute rerank train --out {DEFAULT_RERANKER}` "
        "or give --reranker"
    )
    if required:
        raise RagrouteError(f"no reranker for the rerank rows: {missing}, or --no-reranker for stage 1 only")
    return None, f"reranker: none ({missing}); stage 1 only"


def _plot_path(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """``--plot``'s file, checked before the benchmark runs (it used to fail only when the plot was
    drawn, hours of benchmark later): a known extension, a folder that exists and can be written,
    and matplotlib installed."""
    if value is None:
        return value
    if value.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise click.BadParameter(f"{value}: give a .png, .svg or .pdf file")
    folder = value.parent if str(value.parent) else Path(".")
    if not folder.is_dir():
        raise click.BadParameter(f"{value}: no folder {folder} to write it in")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{value}: folder {folder} cannot be written")
    if importlib.util.find_spec("matplotlib") is None:
        raise click.BadParameter(f"{value}: drawing needs matplotlib: pip install 'ragroute[plot]'")
    return value


def plot_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--plot FILE.png``: also draw the benchmark's plot (:mod:`ragroute.evaluation.plots`)."""
    return click.option(
        "--plot",
        "plot",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=_plot_path,
        metavar="FILE.png",
        help="Also write the benchmark's plot to this file (.png, .svg or .pdf; needs ragroute[plot]).",
    )(func)


def bench_json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` (``as_json``) of a benchmark: the whole result as one JSON object on the last line."""
    option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on the last line.")
    return option(func)


def split_option(
    help_text: str = "Qrels split whose judged queries are scored (qrels/SPLIT.tsv).",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--split`` (default ``dev``) of a benchmark on BEIR or SKILLS folders."""
    return click.option("--split", default="dev", show_default=True, help=help_text)


def data_root_option(
    help_text: str, default: Path | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--data`` (``root``) of a benchmark reading one data folder: required without a ``default``
    (a folder of ``../shared/data``, relative to where the command runs)."""
    if default is None:  # no ``default=None``: click counts an explicit None as a given value
        return click.option("--data", "root", required=True, type=click.Path(path_type=Path), help=help_text)
    return click.option(
        "--data", "root", default=default, show_default=True, type=click.Path(path_type=Path), help=help_text
    )
