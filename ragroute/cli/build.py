"""``ragroute build``: index a corpus into a directory."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import click

from ragroute.cli.common import (
    ENCODER_OPTIONS,
    applicable,
    corpus_columns,
    counted,
    given_options,
    open_encoder,
    refuse_options,
    user_error_message,
)
from ragroute.cli.options import (
    StoreLocation,
    column_options,
    encoder_options,
    engine_options,
    is_local_location,
    on_error_option,
    source_name_option,
)
from ragroute.corpora import CorpusSpec
from ragroute.encode.resolve import DEFAULT_ENCODER
from ragroute.errors import RagrouteError
from ragroute.index.dense import FACTORIES, DenseParams
from ragroute.index.external import StoreParams
from ragroute.index.fusion import FUSION_METHODS
from ragroute.index.hybrid import FusionParams
from ragroute.registry import INDEX_KINDS
from ragroute.types import Document

DENSE_OPTIONS = ("dense_index", "refine", "ivf_nlist", "ivf_nprobe", "mmap")
"""The options of a faiss index (refused for builds whose vectors are not in one)."""


def ivfpq_option(flag: str, help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A setting of ``--dense-index ivfpq`` (``--refine``, ``--ivf-nlist``, ``--ivf-nprobe``): a
    positive integer N, unset by default (:func:`_dense_params` refuses it for other layouts)."""
    return click.option(
        flag, type=click.IntRange(min=1), default=None, metavar="N", help=f"ivfpq: {help_text}"
    )


@click.command("build")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Index directory to write (replaced atomically if it already holds an index).",
)
@click.option(
    "--method",
    type=click.Choice(INDEX_KINDS.names()),
    default="hybrid",
    show_default=True,
    help="bm25 (lexical), dense (embeddings on faiss), hybrid (both, fused), graph, qdrant (embeddings "
    "in a Qdrant collection: give --qdrant) or lancedb (embeddings in a LanceDB table: give --lancedb).",
)
@encoder_options(DEFAULT_ENCODER)
@click.option(
    "--granularity",
    type=click.Choice(["document", "section", "paragraph"]),
    default="document",
    show_default=True,
    help="Index whole documents, or chunks that remember their parent.",
)
@click.option(
    "--dense-index",
    type=click.Choice(FACTORIES),
    default="flat",
    show_default=True,
    help="faiss layout: flat (exact), hnsw (fast approximate), ivfpq (compact approximate).",
)
@ivfpq_option(
    "--refine",
    "re-rank N x k candidates by exact scores (float32 vectors kept; 50 reached recall@10 0.97 at 1M "
    "vectors, searched with --ivf-nprobe 1024) [default: off].",
)
@ivfpq_option(
    "--ivf-nlist",
    "inverted lists the vectors are clustered into (training needs 4 x max(N, 256) documents, and "
    "reads 39 vectors a list) [default: 4 sqrt(documents), at most 4,096; past ~1M vectors raise it].",
)
@ivfpq_option(
    "--ivf-nprobe",
    "lists a query searches, recorded with the index (more: higher recall, slower; at most "
    "--ivf-nlist) [default: 16].",
)
@click.option(
    "--mmap",
    is_flag=True,
    default=False,
    help="Load the dense index memory-mapped when queried (for indexes larger than RAM).",
)
@click.option(
    "--fusion",
    type=click.Choice(FUSION_METHODS),
    default="rrf",
    show_default=True,
    help="How hybrid fuses BM25 and dense lists.",
)
@click.option(
    "--qdrant",
    "qdrant_location",
    type=StoreLocation(),
    default=None,
    metavar="URL|FOLDER",
    help="--method qdrant: a Qdrant server URL (API key from $QDRANT_API_KEY) or an embedded store's folder.",
)
@click.option(
    "--lancedb",
    "lancedb_location",
    type=StoreLocation(),
    default=None,
    metavar="FOLDER|URI",
    help="--method lancedb: the LanceDB database (a folder, or a URI such as s3://...; credentials from "
    "the environment).",
)
@source_name_option
@engine_options(
    "local: this process; ray: shards encoded and counted (graph: extracted) by Ray workers (bm25, "
    "dense, hybrid, graph; extra ragroute[ray]), the same index."
)
@on_error_option()
@column_options
def build_command(
    corpus: Path,
    out_dir: Path,
    method: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    granularity: str,
    dense_index: str,
    refine: int | None,
    ivf_nlist: int | None,
    ivf_nprobe: int | None,
    mmap: bool,
    fusion: str,
    qdrant_location: str | None,
    lancedb_location: str | None,
    name: str | None,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    on_error: str,
    columns: dict[str, Any],
) -> None:
    """Index CORPUS (a BEIR folder, a folder of .txt/.md/.csv files, a .jsonl/.csv/.tsv file
    with a text column, or a HippoRAG-style .json list) into --out.

    A table file's text column is `text` unless --text-column names another (ids: --id-column,
    titles: --title-column, metadata: --metadata-columns).

    CORPUS may also be a corpus definitions file (corpora.yaml): every corpus it names is built
    into --out/NAME at its own granularity, modality and loader options, the index folders a
    routing config with `corpora: FILE` and `index_dir: OUT` reads.

    The build writes into a temporary folder beside --out and renames it into place
    only when complete, so an interrupted build leaves the previous index loadable.
    """
    start = time.perf_counter()
    if method == "bm25":
        # each refused option with its own reason: --fusion read "(BM25 encodes nothing)"
        why = {
            "BM25 encodes nothing": given_options(*ENCODER_OPTIONS, *DENSE_OPTIONS),
            "only a hybrid index fuses two lists": given_options("fusion"),
        }
        reasons = "; ".join(reason for reason, given in why.items() if given)
        refuse_options((*ENCODER_OPTIONS, *DENSE_OPTIONS, "fusion"), f"to --method bm25 ({reasons})")
    elif method != "hybrid":
        refuse_options(("fusion",), f"to --method {method} (only a hybrid index fuses two lists)")
    if method == "graph":
        refuse_options(DENSE_OPTIONS, "to --method graph (use ragroute graph build for graph options)")
    locations = {"qdrant": (qdrant_location, "URL|FOLDER"), "lancedb": (lancedb_location, "FOLDER|URI")}
    for store in locations:
        if method != store:
            refuse_options((f"{store}_location",), f"to --method {method} (only {store} indexes use it)")
    location = None
    if method in locations:
        reason = f"to --method {method} (the vectors live in {method})"
        refuse_options(DENSE_OPTIONS, reason)
        location, metavar = locations[method]
        if not location:
            raise RagrouteError(f"--method {method} needs --{method} {metavar} (where the vectors go)")
        if location == ":memory:":  # gone when the build ends: the index on disk would find nothing
            raise RagrouteError(
                f"--{method} :memory: keeps the vectors only while the build runs: give a folder or URL"
            )
        if is_local_location(location):  # a folder: recorded absolute, for any cwd
            location = str(Path(location).expanduser().resolve())
    if engine == "local":
        refuse_options(("ray_address", "workers"), "to --engine local (they configure --engine ray)")
    elif method not in ("bm25", "dense", "hybrid", "graph"):
        raise RagrouteError(f"--engine ray builds bm25, dense, hybrid and graph indexes, not {method}")
    dense_params = _dense_params(dense_index, refine, ivf_nlist, ivf_nprobe, mmap)
    settings = _Build(
        method, location, dense_params, fusion, engine, encoder, backend, cache_dir, ray_address, workers,
        on_error,
    )  # fmt: skip
    definitions = _corpus_definitions(corpus)
    if definitions is None:
        _build_one(corpus, granularity, columns, out_dir, name or out_dir.name, settings, None, start)
        return
    # a corpus definitions file: one index per corpus, each loaded and cut as the file says
    reason = f"to {corpus}, a corpus definitions file (each corpus sets its own)"
    refuse_options(("granularity", "name", *columns), reason)
    # every index folder is checked and every corpus loaded before any is built: until session 41
    # a corpus with no documents stopped the build with "no documents to index", naming no corpus,
    # after the corpora before it were published
    from ragroute.errors import IndexFormatError
    from ragroute.index.io import FAMILY
    from ragroute.store.artifact import building

    for spec in definitions:
        with _about(spec, "; no corpus was built"), building(out_dir / spec.name, FAMILY, IndexFormatError):
            pass
    loaded = []
    for spec in definitions:
        with _about(spec, "; no corpus was built"):
            units = load_units(spec, spec.granularity, on_error)
            if not units:
                raise RagrouteError(f"no documents to index in {spec.path}")
        loaded.append((spec, units))
    model = open_encoder(encoder, backend, cache_dir) if method != "bm25" else None
    done: list[str] = []
    while loaded:
        spec, units = loaded.pop(0)  # each corpus's documents are let go once it is built
        began = time.perf_counter()
        already = f"; already built in {out_dir}: {', '.join(map(repr, done))}" if done else ""
        with _about(spec, already or "; no corpus was built"), _interrupted(spec, already):
            _build_one(
                spec, spec.granularity, {}, out_dir / spec.name, spec.name, settings, model, began, units
            )
        done.append(spec.name)
    built = counted(len(definitions), "corpus index", "corpus indexes")
    click.echo(
        f"built {built} into {out_dir}: a routing config reads them with 'corpora: {corpus.resolve()}' "
        f"and 'index_dir: {out_dir.resolve()}'"
    )


@dataclass(frozen=True)
class _Build:
    """How ``ragroute build`` builds each index (the command's options)."""

    method: str
    location: str | None
    dense_params: DenseParams
    fusion: str
    engine: str
    encoder: str
    backend: str
    cache_dir: Path | None
    ray_address: str | None
    workers: int | None
    on_error: str


@contextlib.contextmanager
def _about(spec: CorpusSpec, after: str) -> Iterator[None]:
    """A user error of the body as one line naming the corpus ``spec``, ``after`` added."""
    try:
        yield
    except (RagrouteError, OSError) as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        raise RagrouteError(f"corpus {spec.name!r}: {message}{after}") from exc


@contextlib.contextmanager
def _interrupted(spec: CorpusSpec, already: str) -> Iterator[None]:
    """Ctrl-C naming the corpus being built and those published before it (``already``): until
    session 43 the one line said only that an artifact being written keeps its previous build, not
    that --out now held new indexes of the corpora before it and old ones after."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(
            f"while building corpus {spec.name!r}{already or '; no corpus was built'}"
        ) from exc


def _corpus_definitions(corpus: Path) -> list[CorpusSpec] | None:
    """The corpora of a corpus definitions file (a ``.yaml`` / ``.yml`` CORPUS), else None."""
    if corpus.suffix.lower() not in (".yaml", ".yml"):
        return None
    from ragroute.corpora import load_corpus_specs

    return load_corpus_specs(corpus)


def _build_one(
    corpus: Path | CorpusSpec,
    granularity: str,
    columns: Mapping[str, Any],
    out_dir: Path,
    name: str,
    settings: _Build,
    model: Any,
    start: float,
    units: list[Document] | None = None,
) -> None:
    """Build one index of ``corpus`` (a path, or a :class:`~ragroute.corpora.CorpusSpec`) into
    ``out_dir`` through the artifact store (``model``: the encoder, opened here when None and needed;
    ``units``: the corpus's units when loaded already)."""
    from ragroute.errors import IndexFormatError
    from ragroute.index.build import build_index
    from ragroute.index.io import FAMILY
    from ragroute.store.artifact import building

    method = settings.method
    # --out is checked before any work, and a store collection the build never publishes is dropped
    location = settings.location
    store_params = StoreParams(location=location, collection=name) if location else None
    with building(out_dir, FAMILY, IndexFormatError):
        if model is None and method != "bm25":  # resolved first: a missing model fails before any work
            model = open_encoder(settings.encoder, settings.backend, settings.cache_dir)
        if units is None:
            units = load_units(corpus, granularity, settings.on_error, columns)
        if settings.engine == "ray":
            index = _build_on_ray(
                units, method, model, settings.encoder, settings.cache_dir, settings.dense_params,
                settings.fusion, name, settings.ray_address, settings.workers,
            )  # fmt: skip
        else:
            index = build_index(
                units,
                method,
                encoder=model,
                dense_params=settings.dense_params,
                store_params=store_params,
                fusion=FusionParams(method=settings.fusion),
                name=name,
            )
        save_built_index(index, out_dir, method, start)


def _dense_params(
    dense_index: str, refine: int | None, ivf_nlist: int | None, ivf_nprobe: int | None, mmap: bool
) -> DenseParams:
    """The faiss layout the options give. The IVF-PQ options (``--refine``, ``--ivf-nlist``,
    ``--ivf-nprobe``) given to another layout are a one-line error; as ``--config`` defaults they
    are left out there (:func:`~ragroute.cli.common.applicable`)."""
    what = {
        "refine": (refine, "it re-ranks the candidates of --dense-index ivfpq"),
        "ivf_nlist": (
            ivf_nlist,
            "it sets how many inverted lists --dense-index ivfpq clusters the vectors into",
        ),
        "ivf_nprobe": (ivf_nprobe, "it sets how many inverted lists of --dense-index ivfpq a query searches"),
    }
    given = {}
    for name, (value, does) in what.items():
        value = applicable(name, value, dense_index == "ivfpq", f"to --dense-index {dense_index} ({does})")
        if value is not None:
            given[name] = value
    nlist, nprobe = given.get("ivf_nlist"), given.get("ivf_nprobe")
    if nlist is not None and nprobe is not None and nprobe > nlist:
        raise RagrouteError(
            f"--ivf-nprobe {nprobe} is more than --ivf-nlist {nlist} (a query searches at most every list)"
        )
    return DenseParams(factory=dense_index, mmap=mmap, **given)


def _build_on_ray(
    units: list[Document],
    method: str,
    model: Any,
    encoder: str,
    cache_dir: Path | None,
    dense_params: DenseParams,
    fusion: str,
    name: str,
    address: str | None,
    workers: int | None,
) -> Any:
    """``--engine ray``: each worker loads the driver's model (same backend, one thread, no cache)."""
    import functools

    from ragroute.encode import load_encoder
    from ragroute.scale.ray_build import build_graph_ray, build_index_ray

    factory = None
    if model is not None:
        factory = functools.partial(
            load_encoder, encoder, backend=model.backend, cache_dir=cache_dir, use_cache=False, threads=1
        )
    timings: dict[str, float] = {}
    if method == "graph":  # the rule extractor and default graph settings, as --engine local builds
        index = build_graph_ray(
            units, encoder=model, encoder_factory=factory, name=name, workers=workers, address=address,
            timings=timings,
        )  # fmt: skip
    else:
        index = build_index_ray(
            units,
            method,
            encoder=model,
            encoder_factory=factory,
            dense_params=dense_params,
            fusion=FusionParams(method=fusion),
            name=name,
            workers=workers,
            address=address,
            timings=timings,
        )
    click.echo(
        f"ray: start-up {timings['startup_s']:.1f}s, workers {timings['workers_start_s']:.1f}s, "
        f"build {timings['build_s']:.1f}s",
        err=True,
    )
    return index


def load_units(
    corpus: Path | CorpusSpec, granularity: str, on_error: str, columns: Mapping[str, Any] | None = None
) -> list[Document]:
    """The corpus's documents cut at ``granularity``, with a one-line report on stderr (what was
    skipped, left out or dropped is counted there, the warnings before it name them); ``columns``
    are the command's :func:`~ragroute.cli.options.column_options`. ``corpus`` is a path, or a
    corpus definition (loaded with its own options and modality)."""
    from ragroute.chunking import ChunkStats, Granularity, chunk_documents
    from ragroute.loaders import LoadReport, load_corpus

    report, stats = LoadReport(), ChunkStats()
    if isinstance(corpus, CorpusSpec):
        documents = corpus.load_documents(on_error=on_error, report=report)
        corpus = corpus.path
    else:
        options = corpus_columns(corpus, columns or {})
        documents = load_corpus(corpus, on_error=on_error, report=report, **options)
    units = chunk_documents(documents, cast(Granularity, granularity), stats=stats)
    # a folder corpus skips whole files, the other formats records (lines, items); a skipped file was
    # counted as "1 bad records" before
    bad = Counter(
        "record" if entry.where.startswith(("line ", "item ")) else "file" for entry in report.skipped
    )
    left_out = [f"{counted(n, f'bad {unit}')} skipped" for unit, n in bad.items()]
    # "empty" / "not read" files of a folder corpus, "empty" rows (documents) of a BEIR corpus
    kinds = Counter(
        (entry.reason, "documents" if entry.where.startswith("line ") else "files")
        for entry in report.ignored
    )
    said = ", ".join(f"{n} {kind} {unit if n > 1 else unit[:-1]}" for (kind, unit), n in kinds.items())
    left_out += [f"left out: {said}"] if kinds else []
    if not documents and report.skipped:  # else "no documents to index", with no word of why
        first = report.skipped[0]
        raise RagrouteError(
            f"no documents to index: nothing in {corpus} could be read ({', '.join(left_out)}; "
            f"{first.where}: {first.reason})"
        )
    read_with = _columns_read(report.columns)
    loaded = f"{counted(len(documents), 'document')} from {corpus}" + (
        f" ({', '.join(left_out)})" if left_out else ""
    )
    dropped = f" ({stats.empty} with no text dropped)" if stats.empty else ""
    units_said = counted(len(units), f"{granularity} unit")
    click.echo(f"loaded {loaded}{read_with} -> {units_said}{dropped}", err=True)
    _say_open_sounding_labels(documents)
    return units


def _columns_read(columns: Mapping[str, Mapping[str, str]]) -> str:
    """`` (columns: text 'body', id 'id', title 'title')``: the columns a table file was read
    with, named or found by default (``id``, ``title``); empty for other corpora."""
    if len(columns) != 1:  # a table file is one corpus; a BEIR folder's files are read by name
        return ""
    (read,) = columns.values()
    return " (columns: " + ", ".join(f"{role} {column!r}" for role, column in read.items()) + ")"


def _say_open_sounding_labels(documents: Sequence[Document]) -> None:
    """Warn when documents carry an access label that reads as "everyone" (``access: public``):
    it hides them from every caller without that scope, the CLI's included."""
    from ragroute.scopes import ACCESS_KEY, labels_of, open_sounding, open_sounding_note

    carriers = [d.id for d in documents if open_sounding(labels_of(d.metadata.get(ACCESS_KEY)))]
    if carriers:
        labels = {label for d in documents for label in open_sounding(labels_of(d.metadata.get(ACCESS_KEY)))}
        named = ", ".join(carriers[:3]) + (f" and {len(carriers) - 3} more" if len(carriers) > 3 else "")
        carrying = f"{counted(len(carriers), 'document')} ({named})"
        click.echo(f"warning: {open_sounding_note(labels, carrying)}", err=True)


def save_built_index(index: Any, out_dir: Path, method: str, start: float) -> Any:
    """Publish ``index`` at ``out_dir`` through the artifact store and print what was built.

    ``ragroute build`` and ``ragroute graph build`` write through this one path.
    """
    from ragroute.index.io import save_index

    manifest = save_index(index, out_dir)
    elapsed = time.perf_counter() - start
    encoder_text = (
        f", encoder {manifest.encoder['model_id']} ({manifest.encoder['backend']})"
        if manifest.encoder
        else ""
    )
    click.echo(
        f"built {method} index of {counted(manifest.params['documents'], 'unit')} in {elapsed:.1f}s"
        f"{encoder_text} -> {out_dir}"
    )
    return manifest
