"""``ragroute graph ...``: build, grow, query, describe and export knowledge-graph indexes.

A graph is an index of kind ``graph`` (:class:`ragroute.graph.index.GraphIndex`),
written through the artifact store like every index: ``graph build`` goes through
the same loading and publishing code as ``ragroute build --method graph``. Built
graphs go to ``graph/<corpus name>`` by default. See ``docs/graph.md``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from ragroute.cli.build import load_units, save_built_index
from ragroute.cli.common import (
    CONTEXT,
    applicable,
    counted,
    format_hit,
    load_index_for,
    one_line_errors,
    open_encoder,
)
from ragroute.cli.options import (
    FiniteFloatRange,
    NameOrPath,
    column_options,
    encoder_options,
    on_error_option,
    source_name_option,
    text_argument,
)
from ragroute.cli.output import emit_json
from ragroute.context import QueryContext
from ragroute.display import terminal_text
from ragroute.encode.resolve import DEFAULT_ENCODER
from ragroute.errors import IndexFormatError, RagrouteError, check_query
from ragroute.graph.build import GraphParams
from ragroute.registry import EXTRACTORS

DEFAULT_GRAPH_DIR = Path("graph")
GRANULARITIES = ("document", "section", "paragraph")
EXPLAIN_KEYS = ("seeds", "anchors", "facts", "path")
LLM_ONLY = "it names the LLM of --extractor llm"
"""Why ``--llm`` does not apply to a build or a graph of another extractor."""
LLM_FILE_SUFFIXES = (".yaml", ".yml", ".json")
"""What an ``--llm`` settings file is named (any other value is a kind or a reference, unless a file)."""


@click.group("graph", context_settings=CONTEXT)
def graph_group() -> None:
    """Knowledge graphs: build one from a corpus or triples, add documents, query, stats, export.

    \b
      ragroute graph build corpora/multihop                  # -> graph/multihop
      ragroute graph query graph/multihop "Which river flows through the town where Ada Brennan was born?"
      ragroute graph add graph/multihop more_docs.jsonl
      ragroute graph stats graph/multihop
      ragroute graph export graph/multihop --format graphml --out multihop.graphml
    """


def default_out(corpus: Path | None, triples: Path | None) -> Path:
    """``graph/<stem>``: the corpus folder or file name without suffix (else the triples file's)."""
    source = corpus if corpus is not None else triples
    assert source is not None
    stem = Path(source).absolute().stem
    return DEFAULT_GRAPH_DIR / stem


def llm_option(command: Any) -> Any:
    """``--llm``: the LLM the ``llm`` extractor asks (build and add share it)."""
    return click.option(
        "--llm",
        "llm_spec",
        type=NameOrPath(path_suffixes=LLM_FILE_SUFFIXES),
        default=None,
        metavar="KIND|FILE",
        help="The LLM the `llm` extractor asks (build: with --extractor llm; add: for a graph built "
        "with it): a kind name (`local`: the offline SmolLM2 of the `llm` extra), a YAML file holding "
        "an `llm:` mapping as in a routing config, or package.module:factory [default: local]. Its "
        "answers are cached on disk per model, settings and passage.",
    )(command)


def llm_extractor(llm_spec: str | None, cache_dir: Path | None = None) -> Any:
    """The ``llm`` extractor over the LLM ``--llm`` names (checked before any corpus is read); its
    answers are cached under ``cache_dir``/llm-openie when ``--cache-dir`` is given."""
    from ragroute.graph.extract_llm import LLMExtractor
    from ragroute.llm.settings import llm_from_settings
    from ragroute.yaml_files import read_yaml

    settings: Any = llm_spec or "local"
    where, base = f"--llm {settings}", None
    named_file = llm_spec is not None and Path(llm_spec).suffix in LLM_FILE_SUFFIXES
    if llm_spec is not None and (named_file or Path(llm_spec).is_file()):
        data = read_yaml(llm_spec, "LLM settings file")
        settings = data.get("llm", data) if isinstance(data, dict) else data
        where, base = f"{llm_spec}: llm", Path(llm_spec).parent  # its paths are read beside it
    answers = None if cache_dir is None else Path(cache_dir) / "llm-openie"
    return LLMExtractor(llm_from_settings(settings, where, base=base), cache_dir=answers)


def say_llm_work(extractor: Any) -> None:
    """What the ``llm`` extractor did, on stderr: calls, cache hits, and the first failures' reasons
    (the build's warning counts them; a library user reads ``extractor.failures``)."""
    if getattr(extractor, "name", None) != "llm":
        return
    cached = extractor.cache_hits
    calls, from_cache = counted(extractor.calls, "LLM call"), counted(cached, "passage")
    click.echo(f"llm extractor: {calls}, {from_cache} from its cache", err=True)
    for failure in extractor.failures[:3]:
        click.echo(f"  {failure.passage}: {failure.reason}", err=True)
    if len(extractor.failures) > 3:
        click.echo(f"  ... and {counted(len(extractor.failures) - 3, 'more passage')}", err=True)


@graph_group.command("build")
@click.argument("corpus", type=click.Path(path_type=Path), required=False)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Graph directory to write (replaced atomically) [default: graph/<corpus name>].",
)
@encoder_options(DEFAULT_ENCODER)
@click.option(
    "--extractor",
    type=click.Choice(EXTRACTORS.names()),
    default="rules",
    show_default=True,
    help="How phrases and facts are found in the corpus (registered graph extractors; `llm` asks "
    "the LLM of --llm).",
)
@llm_option
@click.option(
    "--synonym-threshold",
    type=FiniteFloatRange(0.0, 1.0),
    default=GraphParams().synonym_threshold,
    show_default=True,
    help="Cosine between phrase embeddings needed for a synonym edge.",
)
@click.option(
    "--triples",
    "triples_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="User triples (.csv/.tsv/.jsonl with subject, object[, predicate, passage, text, title]) or a "
    ".graphml graph; with CORPUS, triples naming a corpus document by id add facts to it.",
)
@click.option(
    "--granularity",
    type=click.Choice(GRANULARITIES),
    default="document",
    show_default=True,
    help="Passages are whole documents, or chunks that remember their parent.",
)
@source_name_option
@on_error_option("Bad triples always stop the build, listing their line numbers.")
@column_options
@one_line_errors
def build_command(
    corpus: Path | None,
    out_dir: Path | None,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    extractor: str,
    llm_spec: str | None,
    synonym_threshold: float,
    triples_file: Path | None,
    granularity: str,
    name: str | None,
    on_error: str,
    columns: dict[str, Any],
) -> None:
    """Build a knowledge graph over CORPUS (any corpus `ragroute build` reads) and/or --triples.

    Phrases and facts come from --extractor (offline rules by default, no LLM); passages are
    linked to their phrases, phrases to each other by facts and by synonym edges from a
    kNN over phrase embeddings. Progress bars show on a terminal.
    """
    from ragroute.index.build import build_index
    from ragroute.index.io import FAMILY
    from ragroute.store import check_writable

    if corpus is None and triples_file is None:
        raise RagrouteError("give a CORPUS, --triples FILE, or both")
    llm_spec = applicable(
        "llm_spec", llm_spec, extractor == "llm", f"to --extractor {extractor} ({LLM_ONLY})"
    )
    out_dir = out_dir or default_out(corpus, triples_file)
    # before any work, as `ragroute build` does (until session 53 an --out that could not take the
    # graph was refused only when saving it, after the extraction and every phrase was encoded)
    check_writable(out_dir, FAMILY, IndexFormatError)
    chosen: Any = llm_extractor(llm_spec, cache_dir) if extractor == "llm" else extractor
    start = time.perf_counter()
    model = open_encoder(encoder, backend, cache_dir)
    params = GraphParams(synonym_threshold=synonym_threshold)
    units = load_units(corpus, granularity, on_error, columns) if corpus is not None else []
    label = name or out_dir.name
    if triples_file is not None:
        from ragroute.graph.triples import build_graph_from_triples, read_triples

        triple_set = read_triples(triples_file)
        click.echo(
            f"read {counted(len(triple_set.triples), 'triple')} from {triples_file}"
            + (f" ({counted(len(triple_set.passages), 'passage')} with text)" if triple_set.passages else ""),
            err=True,
        )
        index = build_graph_from_triples(
            triple_set, model, documents=units, extractor=chosen, graph_params=params, name=label
        )
    else:
        index = build_index(units, "graph", encoder=model, graph_params=params, extractor=chosen, name=label)
    say_llm_work(chosen)
    manifest = save_built_index(index, out_dir, "graph", start)
    counts = manifest.params.get("counts", {})
    # "pairs": a synonym pair of phrases a fact already links adds no edge of its own (graph stats
    # counts edges by type); and a graph of triples alone ran no extractor: it is what adds use
    unused = " (for passages added later: none ran, the graph is of triples)" if not units else ""
    click.echo(
        f"graph: {_graph_counts(counts)}, {counted(counts.get('synonym_edges', 0), 'synonym pair')}; "
        f"extractor {extractor}" + unused
    )


@graph_group.command("add")
@click.argument("graph_dir", type=click.Path(path_type=Path))
@click.argument("corpus", type=click.Path(path_type=Path))
@encoder_options(None)
@click.option(
    "--granularity",
    type=click.Choice(GRANULARITIES),
    default="document",
    show_default=True,
    help="Cut the new documents as the graph's passages were cut.",
)
@on_error_option()
@column_options
@llm_option
@one_line_errors
def add_command(
    graph_dir: Path,
    corpus: Path,
    encoder: str | None,
    backend: str,
    cache_dir: Path | None,
    granularity: str,
    on_error: str,
    columns: dict[str, Any],
    llm_spec: str | None,
) -> None:
    """Add the documents of CORPUS that GRAPH_DIR does not hold yet (by id), incrementally.

    Only the new passages are extracted, and only their new phrases are encoded and searched
    for synonyms; the result is published as a new build (readers keep the old one until then).
    """
    from ragroute.index.io import save_index
    from ragroute.store import artifact_lock

    start = time.perf_counter()
    with artifact_lock(graph_dir):  # a concurrent add waits, so neither loses the other's passages
        index = _load_graph(graph_dir, encoder, backend, cache_dir)
        built_by = (index.extractor or {}).get("name")
        reason = f"to {graph_dir}, a graph built with --extractor {built_by} ({LLM_ONLY})"
        llm_spec = applicable("llm_spec", llm_spec, built_by == "llm", reason)
        extractor = llm_extractor(llm_spec, cache_dir) if built_by == "llm" else None
        units = load_units(corpus, granularity, on_error, columns)
        _check_same_cut(index.store.documents, units, granularity, graph_dir)
        new = [u for u in units if u.id not in index.store]
        known = len(units) - len(new)
        _warn_changed(index.store, units, corpus, graph_dir)
        if not new:
            if not units:  # "all 0 passages ... are already in" until session 38
                click.echo(f"nothing to add: {corpus} holds no passage with text")
            else:
                click.echo(
                    f"nothing to add: all {counted(known, 'passage')} of {corpus} are already in {graph_dir}"
                )
            return
        index.add(new, extractor=extractor)
        say_llm_work(extractor)
        manifest = save_index(index, graph_dir)
    counts = manifest.params.get("counts", {})
    click.echo(
        f"added {counted(len(new), 'new passage')} ({known} already in the graph, skipped) in "
        f"{time.perf_counter() - start:.1f}s -> {graph_dir} (build {manifest.build}); now "
        f"{_graph_counts(counts)}"
    )


def _graph_counts(counts: Mapping[str, Any]) -> str:
    """``3 phrases, 1 passage, 2 facts``: what a graph holds, from its manifest's or stats' counts."""
    return ", ".join(counted(counts.get(noun + "s", 0), noun) for noun in ("phrase", "passage", "fact"))


def _warn_changed(store: Any, units: Sequence[Any], corpus: Path, graph_dir: Path) -> None:
    """Say which of ``units`` the graph holds under the same id with other text: an add skips them
    (a graph cannot replace a passage), and until session 40 an edited passage was counted as
    "already in the graph" like an unchanged one while the graph answered from its old text."""
    changed = [u.id for u in units if u.id in store and store.get(u.id).full_text() != u.full_text()]
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        shown = ", ".join(map(repr, changed[:5])) + more
        click.echo(
            f"warning: {counted(len(changed), 'passage')} of {corpus} "
            f"{'differs' if len(changed) == 1 else 'differ'} from the text {graph_dir} "
            f"holds under the same id ({shown}): not taken in (a graph cannot replace a passage); "
            "rebuild the graph with `ragroute graph build` to use the new text",
            err=True,
        )


@graph_group.command("query")
@click.argument("graph_dir", type=click.Path(path_type=Path))
@click.argument("text", callback=text_argument)
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Number of passages.")
@encoder_options(None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (hits with explanations) last.")
@one_line_errors
def query_command(
    graph_dir: Path,
    text: str,
    k: int,
    encoder: str | None,
    backend: str,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Walk GRAPH_DIR for TEXT and print the ranked passages with the seeds, facts and path behind each."""
    text = check_query(text)
    start = time.perf_counter()
    index = _load_graph(graph_dir, encoder, backend, cache_dir)
    load_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    hits = index.search_contexts([QueryContext.of(text)], k)[0]  # public documents only, as every command
    search_ms = (time.perf_counter() - start) * 1000
    if as_json:
        emit_json(
            {
                "query": text,
                "graph": str(graph_dir),
                "hits": [h.to_dict() for h in hits],
                "load_ms": round(load_ms, 2),
                "search_ms": round(search_ms, 2),
            }
        )
        return
    click.echo(terminal_text(f"query: {text}"))
    shared = shared_explain(hits)
    for line in explain_lines(shared):
        click.echo(f"  {line}")
    for hit in hits:
        click.echo(format_hit(hit))
        own = {key: value for key, value in hit.explain.items() if key not in shared}
        for line in explain_lines(own):
            click.echo(f"       {line}")
    click.echo(f"({counted(len(hits), 'passage')}; load {load_ms:.0f} ms, walk {search_ms:.1f} ms)")


def shared_explain(hits: list[Any]) -> dict[str, Any]:
    """The explanation entries every hit has alike (a walk's seeds, anchors and facts), to print once."""
    if len(hits) < 2:
        return {}
    first = hits[0].explain or {}
    return {
        key: value
        for key, value in first.items()
        if key in EXPLAIN_KEYS and all((h.explain or {}).get(key) == value for h in hits[1:])
    }


def explain_lines(explain: dict[str, Any], *, limit: int = 5) -> list[str]:
    """A graph hit's explanation as short lines: seeds, anchors, facts, path (when present)."""
    if not explain:
        return []
    if explain.get("method") == "dense":
        return [terminal_text(f"dense fallback: {explain.get('fallback', '')}")]
    lines = []
    for key in EXPLAIN_KEYS:
        value = explain.get(key)
        if not value:
            continue
        if key == "path":
            lines.append("path: " + " -> ".join(map(str, value)))
        elif isinstance(value, list):
            more = f" (+{len(value) - limit})" if len(value) > limit else ""
            sep = "; " if key == "facts" else ", "
            lines.append(f"{key}: {sep.join(map(str, value[:limit]))}{more}")
        else:
            lines.append(f"{key}: {value}")
    return [terminal_text(line) for line in lines]


@graph_group.command("stats")
@click.argument("graph_dir", type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Hub phrases shown.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object last.")
@one_line_errors
def stats_command(graph_dir: Path, top: int, as_json: bool) -> None:
    """Counts, edge types, degree distribution, hub phrases, extractor, encoder and build of GRAPH_DIR."""
    from ragroute.graph.views import graph_stats

    index = _load_graph_offline(graph_dir)
    manifest = index.manifest
    stats = graph_stats(index, top=top)
    stats["from_triples"] = sum(1 for d in index.store.documents if d.metadata.get("origin") == "triples")
    info = {
        "graph": str(graph_dir),
        "name": manifest.name,
        "build": manifest.build,
        "created": manifest.created,
        "library_version": manifest.library_version,
        "extractor": manifest.params.get("extractor"),
        "encoder": manifest.encoder,
        "graph_params": manifest.params.get("graph"),
        "walk": manifest.params.get("walk"),
        **stats,
    }
    if as_json:
        emit_json(info)
        return
    enc = manifest.encoder or {}
    click.echo(f"graph {graph_dir} ({manifest.name}), build {manifest.build} of {manifest.created}")
    click.echo(f"  extractor: {info['extractor']}")
    click.echo(f"  encoder:   {enc.get('model_id')} ({enc.get('backend')}, dim {enc.get('dim')})")
    click.echo(f"  params:    {info['graph_params']}")
    origin = f" ({stats['from_triples']} from triples)" if stats["from_triples"] else ""
    click.echo(
        f"  nodes:     {counted(stats['phrases'], 'phrase')}, "
        f"{counted(stats['passages'], 'passage')}{origin}; "
        f"{counted(stats['facts'], 'fact')}"
    )
    types = ", ".join(f"{n} {t}" for t, n in stats["edge_types"].items())
    click.echo(f"  edges:     {stats['edges']} ({types}); synonym pairs found: {stats['synonym_edges']}")
    for kind, summary in stats["degree"].items():
        click.echo(
            f"  degree {kind:<8} mean {summary['mean']:.2f}, median {summary['median']:g}, "
            f"max {summary['max']}"
        )
    if stats["hubs"]:
        hubs = ", ".join(f"{h['phrase']} ({h['degree']})" for h in stats["hubs"])
        click.echo(f"  hubs:      {hubs}")


@graph_group.command("export")
@click.argument("graph_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["graphml", "edgelist"]),
    required=True,
    help="graphml (nodes with name/type/passage/title/text, edges with weight/type; networkx, igraph, "
    "Gephi read it) or edgelist (TSV: source, target, names, weight, type).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File to write (refused if it exists, unless --force).",
)
@click.option("--force", is_flag=True, help="Replace --out if the file exists.")
@one_line_errors
def export_command(graph_dir: Path, fmt: str, out_file: Path, force: bool) -> None:
    """Write GRAPH_DIR's graph as GraphML or a TSV edge list (to a new file, or --force)."""
    from ragroute.graph.views import edges, write_edgelist, write_graphml

    _check_export_target(out_file, force)
    index = _load_graph_offline(graph_dir)
    tmp = out_file.with_name(f".{out_file.name}.partial")  # a failed export leaves OUT as it was
    try:
        (write_graphml if fmt == "graphml" else write_edgelist)(index, tmp)
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    rows, cols, *_ = edges(index)
    n_nodes = index.tables.n_phrases + len(index.store)
    # an edge list holds only the nodes an edge touches: said so (until session 51 it read "N
    # nodes", the passages and phrases without an edge counted though not in the file)
    held = n_nodes if fmt == "graphml" else len(set(rows.tolist()) | set(cols.tolist()))
    left = f" ({counted(n_nodes - held, 'node')} without an edge not in it)" if held < n_nodes else ""
    click.echo(f"wrote {fmt} of {counted(held, 'node')}{left} and {counted(len(rows), 'edge')} -> {out_file}")


def _cut_of(documents: Any) -> str:
    """How passages were cut, read from their ids (``doc#p3`` paragraph, ``doc#s1`` section, a
    whole document otherwise): the graph's manifest does not record it."""
    for doc in documents:
        if doc.parent_id:
            suffix = doc.id.rsplit("#", 1)[-1][:1]
            return {"p": "paragraph", "s": "section"}.get(suffix, "chunk")
    return "document"


def _check_same_cut(held: Any, units: Any, granularity: str, graph_dir: Path) -> None:
    """``graph add`` with another ``--granularity`` than the build would add every passage again
    under new ids (``doc`` beside ``doc#p0``): refused."""
    if not held or not units:
        return
    before, now = _cut_of(held), _cut_of(units)
    if before != now:
        raise RagrouteError(
            f"{graph_dir} holds {before}-level passages but --granularity {granularity} cut the corpus "
            f"into {now}s: add with the granularity the graph was built with"
        )


def _check_export_target(out_file: Path, force: bool) -> None:
    """An export never writes inside an artifact (its CURRENT pointer or a build's files) and never
    replaces an existing file unless asked to."""
    from ragroute.store import artifact_exists

    for folder in out_file.absolute().parents:
        if artifact_exists(folder):
            raise RagrouteError(f"refusing to write {out_file}: it is inside the artifact {folder}")
    if out_file.exists() and not force:
        raise RagrouteError(f"{out_file} exists: give --force to replace it, or another --out")


# ---------------------------------------------------------------------------------------------- loading


def _check_graph(manifest: Any, graph_dir: Path) -> None:
    if manifest.kind != "graph":
        raise IndexFormatError(
            f"{graph_dir} holds a {manifest.kind} index, not a graph (build one with `ragroute graph build`)"
        )


def _load_graph(graph_dir: Path, encoder: str | None, backend: str, cache_dir: Path | None) -> Any:
    """The graph index at ``graph_dir`` with the encoder it was built with (or ``encoder``, checked)."""
    # both from one build: a rebuild between a read of the manifest and the load (until session 47)
    # was "built with encoder X, not Y" (load_index_for)
    return load_index_for(graph_dir, encoder, backend, cache_dir, check=_check_graph)


def _load_graph_offline(graph_dir: Path) -> Any:
    """The graph index at ``graph_dir`` without loading its encoder (for stats and export)."""
    from ragroute.index.io import RecordedEncoder, load_index_choosing

    def recorded(manifest: Any) -> Any:  # the loaded build's (a second read of it until session 47)
        _check_graph(manifest, graph_dir)
        return RecordedEncoder(manifest.encoder)

    return load_index_choosing(graph_dir, recorded)
