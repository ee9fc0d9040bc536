"""``ragroute demo``: build indexes over the sample corpora, then route and answer the demo queries.

This is the README's main job. The routing config (``corpora/routing.yaml``)
names the corpus definitions and where their indexes go; every query is routed
(policy rules first, then an ensemble of training-free routers), retrieved from
the chosen sources, and printed with its hits and decision trace. A closing line
compares each decision with the source the query was written for.

A last, fast step shows multi-hop retrieval: a knowledge graph is built over the
small multi-hop corpus ``corpora/multihop`` (into ``graph/demo``), and its 2-hop
questions are answered by the graph walk, each hit with the seeds, facts and path
behind it, next to what dense retrieval alone finds (``--no-graph`` skips it).

Then the same questions step by step: a retrieval gate (the documented rarity
gate, no LLM) decides before every sub-question whether to retrieve, and one
everyday question it lets the model answer without retrieval (``--no-steps``
skips it). Then agent skills: tasks routed to the SKILL.md catalogue
``corpora/skills`` (``--no-skills`` skips it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import counted, format_hit, open_encoder
from ragroute.cli.options import DEFAULT_RERANKER, encoder_options
from ragroute.cli.route import format_decision
from ragroute.display import terminal_text
from ragroute.encode.resolve import DEFAULT_ENCODER
from ragroute.errors import RagrouteError

DEFAULT_ROUTING = Path("corpora/routing.yaml")
DEFAULT_QUERIES = Path("corpora/demo_queries.jsonl")
#: Index kinds the demo builds (local: each index whole in the demo's own folder).
DEMO_KINDS = ("bm25", "dense", "hybrid")
DEFAULT_GRAPH_CORPUS = Path("corpora/multihop")
DEFAULT_GRAPH_OUT = Path("graph/demo")
DEFAULT_SKILLS = Path("corpora/skills")
RELATIVE = " (paths are relative to where you run)"
#: A question the gate should let the model answer without retrieval (no rare word in it).
DIRECT_QUESTION = "What is the capital of France?"
#: The demo's unfitted gate: retrieve when a content word is rarer than Zipf 4 in general English
#: (docs/gating.md documents the same gate at 3.0 and fits calibrated gates on labelled questions;
#: 4.0 also sends "Brennan", Zipf 3.65, to retrieval).
DEMO_GATE = {"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": 4.0}

SKILL_TASKS = (
    ("will it snow in Oslo this weekend?", "weather-forecast"),
    ("send the quarterly report to my team", "send-email"),
    ("how many kilometres is 26 miles", "unit-convert"),
    ("put my dentist appointment in the calendar", "calendar-event"),
    ("what is Apple trading at right now", "stock-quote"),
)


def check_targets(folders: list[Path]) -> None:
    """Refuse, before any index is built, an index folder the demo could not publish into (one
    that exists and is not a ragroute index): until session 44 the demo found it only when it came
    to that corpus, after publishing new indexes of the corpora before it."""
    from ragroute.errors import IndexFormatError
    from ragroute.index.io import FAMILY
    from ragroute.store.artifact import building

    for folder in folders:
        with building(folder, FAMILY, IndexFormatError):
            pass


def _run_where() -> str:
    """Where the sample corpora are, when this ragroute runs from a checkout that holds them."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / DEFAULT_ROUTING).is_file():
        return f"; run the demo in {checkout}, which holds corpora/"
    return "; run the demo in the ragroute checkout, which holds corpora/"


def read_queries(path: Path) -> list[dict[str, Any]]:
    """The demo queries of ``path``, each checked to have an ``_id`` and a ``text`` (a one-line error
    naming the line otherwise); read before any index is built (until session 44 a row without
    ``text`` was a ``KeyError`` traceback after every index was built)."""
    from ragroute.loaders import read_jsonl

    rows = []
    for line, row in read_jsonl(path, on_error="raise"):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RagrouteError(f"{path} line {line}: a query needs a non-empty 'text' string")
        row.setdefault("_id", f"line {line}")
        rows.append(row)
    if not rows:
        raise RagrouteError(f"--queries {path}: no queries in it")
    return rows


def build_sources(specs: list, method: str, encoder: Any, out_dir: Path) -> None:
    """Build and save one index per corpus definition into ``out_dir/NAME`` (every folder checked
    first)."""
    from ragroute.chunking import chunk_documents
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index

    check_targets([out_dir / spec.name for spec in specs])
    done: list[str] = []
    for spec in specs:
        start = time.perf_counter()
        try:
            documents = spec.load_documents()
            units = chunk_documents(documents, spec.granularity)
            save_index(build_index(units, method, encoder=encoder, name=spec.name), out_dir / spec.name)
        except KeyboardInterrupt as exc:  # as `ragroute build corpora.yaml` says it (until session 44:
            # only that an artifact keeps its previous build, not that out_dir now mixes new and old)
            already = f"; already built in {out_dir}: {', '.join(map(repr, done))}" if done else ""
            raise KeyboardInterrupt(
                f"while building corpus {spec.name!r}{already or '; no corpus was built'}"
            ) from exc
        done.append(spec.name)
        click.echo(
            f"built {spec.name:<15} {method} over {len(documents):>3} documents -> {len(units):>3} "
            f"{spec.granularity} units ({spec.modality}) in {time.perf_counter() - start:.1f}s"
        )


@click.command("demo")
@click.option(
    "--routing",
    "routing_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_ROUTING,
    show_default=True,
    help="Routing config naming the corpus definitions (corpora:) and index folder (index_dir:).",
)
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_QUERIES,
    show_default=True,
    help="Queries to answer (JSONL: _id, text, optional metadata.expected_source).",
)
@click.option(
    "--method",
    # the kinds the demo builds whole in its folder (qdrant kept its vectors in memory, gone with the
    # process, and lancedb needed a location the demo has no option for; graph needs triples)
    type=click.Choice(DEMO_KINDS),
    default="hybrid",
    show_default=True,
    help="Index kind built for each corpus.",
)
@encoder_options(DEFAULT_ENCODER)
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=3, show_default=True, help="Hits shown per query."
)
@click.option(
    "--graph-corpus",
    type=click.Path(path_type=Path),
    default=DEFAULT_GRAPH_CORPUS,
    show_default=True,
    help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) of the multi-hop graph step.",
)
@click.option(
    "--graph-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_GRAPH_OUT,
    show_default=True,
    help="Where the graph step's knowledge graph is written.",
)
@click.option("--no-graph", is_flag=True, help="Skip the multi-hop graph step.")
@click.option(
    "--skills",
    "skills_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_SKILLS,
    show_default=True,
    help="Skill catalogue (SKILL.md folders) for the skill-routing step.",
)
@click.option("--no-skills", is_flag=True, help="Skip the skill-routing step.")
@click.option("--no-steps", is_flag=True, help="Skip the gated step-by-step questions.")
def demo_command(
    routing_file: Path,
    queries_file: Path,
    method: str,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    k: int,
    graph_corpus: Path,
    graph_out: Path,
    no_graph: bool,
    skills_dir: Path,
    no_skills: bool,
    no_steps: bool,
) -> None:
    """Build an index per sample corpus, route the demo queries, print hits and decision traces;
    then answer 2-hop questions by walking a knowledge graph, and route tasks to agent skills."""
    from ragroute.corpora import load_corpus_specs
    from ragroute.route.config import RoutingConfig, load_routing
    from ragroute.yaml_files import read_yaml

    # the demo's own requirement is checked on the raw file first: until session 44 a config without
    # 'corpora:' got the config reader's "expected a 'sources:' mapping" (and one without
    # 'index_dir:' its "'corpora:' needs 'index_dir:'") instead of this message
    if not routing_file.exists():  # until session 55 "cannot read routing config ...: No such file
        # or directory", not that the default paths are relative to where the demo runs
        raise RagrouteError(f"--routing {routing_file}: no such file{RELATIVE}{_run_where()}")
    raw = read_yaml(routing_file, "routing config")
    if isinstance(raw, dict) and ("corpora" not in raw or "index_dir" not in raw):
        raise RagrouteError(f"{routing_file} needs 'corpora:' and 'index_dir:' for the demo to build indexes")
    config = RoutingConfig.read(routing_file)
    if not queries_file.is_file():  # said now, not after every index is built
        raise RagrouteError(f"--queries {queries_file}: no such file{RELATIVE}")
    queries = read_queries(queries_file)
    # the later steps' inputs and output are checked now too, not after the routing part has run
    if not (no_graph and no_steps) and not graph_corpus.is_dir():
        raise RagrouteError(f"--graph-corpus {graph_corpus}: no such folder{RELATIVE}")
    if not no_graph:
        check_targets([graph_out])
    if not no_skills and not skills_dir.exists():
        raise RagrouteError(f"--skills {skills_dir}: no such file or folder{RELATIVE}")
    index_dir = config.resolve(config.data["index_dir"])
    specs = load_corpus_specs(config.resolve(config.data["corpora"]))
    model = open_encoder(encoder, backend, cache_dir)
    build_sources(specs, method, model, index_dir)
    routed = load_routing(routing_file, encoder=model)
    agree, total = 0, 0
    for row in queries:
        result = routed.retrieve(row["text"], k)
        expected = (row.get("metadata") or {}).get("expected_source")
        click.echo(
            terminal_text(f"\nquery {row['_id']}: {row['text']}")
            + (f"   (written for: {expected})" if expected else "")
        )
        for line in format_decision(result.decision):
            click.echo(line)  # escaped by format_decision
        for hit in result.hits:
            click.echo(format_hit(hit))
        if expected:
            total += 1
            agree += expected in result.decision.chosen
    if total:
        click.echo(
            f"\n{agree}/{total} queries were routed to (among others, at most "
            f"{routed.options.max_routes}) the source they were written for."
        )
    if not no_graph:
        graph_step(graph_corpus, graph_out, model, k)
    if not no_steps:
        stepwise_step(graph_corpus, model, k)
    if not no_skills:
        skills_step(skills_dir, model, k)


def skills_step(catalogue_path: Path, encoder: Any, k: int, reranker: Path | None = DEFAULT_RERANKER) -> int:
    """Route the demo tasks to the skills of ``catalogue_path`` and print the ranked skills with the
    stage-1 signals (and the reranker's probability when ``reranker`` exists); returns how many
    tasks got the skill they were written for first."""
    from ragroute.skills import load_catalogue
    from ragroute.skills.router import SkillRouter
    from ragroute.store.artifact import artifact_exists

    start = time.perf_counter()
    catalogue = load_catalogue(catalogue_path)
    # a published reranker, as cli/options.py looks for the default one: until session 55 any folder (an
    # interrupted `rerank train` leaves one without a build) was loaded, and the demo stopped with
    # "reranker model rerank/default cannot be loaded" after the whole routing part
    use_reranker = reranker is not None and artifact_exists(reranker)
    router = SkillRouter(catalogue, str(reranker) if use_reranker else None, encoder=encoder)
    click.echo(
        f"\nskills: {len(catalogue)} skills from {catalogue_path} ({catalogue.kind}), indexed in "
        f"{time.perf_counter() - start:.1f}s; stage 1 BM25 + dense (dense weight "
        f"{router.index.dense_weight:.2f}: {router.index.weight_origin}), "
        + ("then the cross-encoder reranker" if use_reranker else "no reranker (rerank/default not built)")
    )
    right = 0
    for task, expected in SKILL_TASKS:
        route = router.route(task, k)
        click.echo(terminal_text(f"\nskill task: {task}   (written for: {expected})"))
        stage1 = {c["id"]: c for c in route.trace[0].detail.get("candidates", [])}
        for skill in route.skills:
            signals = stage1.get(skill.id, {})
            detail = ", ".join(f"{key} {signals[key]:.2f}" for key in ("bm25_z", "dense_z") if key in signals)
            click.echo(
                terminal_text(f"  {skill.rank}. {skill.score:8.3f}  {skill.id}: {skill.description[:70]}")
                + f"  [{detail}]"
            )
        right += bool(route.skills) and route.skills[0].id == expected
    click.echo(f"\nskills: {right}/{len(SKILL_TASKS)} tasks got the skill they were written for first")
    return right


def stepwise_step(corpus: Path, encoder: Any, k: int) -> list[Any]:
    """Answer the multi-hop questions of ``corpus`` one sub-question at a time, a retrieval gate
    before each, then :data:`DIRECT_QUESTION`; print every step. Returns the step-wise results.

    The sub-questions and their intermediate answers are the questions' own decomposition
    metadata (as MuSiQue ships it): the demo needs no LLM. With one, ``ragroute ask`` plans
    and answers with the same controller.
    """
    from ragroute.context import QueryContext
    from ragroute.gate.controller import StepwiseController
    from ragroute.gate.factories import threshold as threshold_gate
    from ragroute.gate.planners import DecompositionPlanner, Planner, QuestionOncePlanner
    from ragroute.index.build import build_index
    from ragroute.loaders import load_beir
    from ragroute.route.factories import RouterBuild

    dataset = load_beir(corpus, "test", on_error="raise")
    index = build_index(dataset.corpus, "dense", encoder=encoder, name=Path(corpus).name)
    rarity = threshold_gate(DEMO_GATE, RouterBuild([], encoder, where="demo"))
    click.echo(
        "\nstep by step (sub-questions and their answers from the questions' decomposition metadata): "
        "each sub-question passes a retrieval gate first (retrieve when a content word "
        f"is rare: min Zipf frequency <= {DEMO_GATE['below']}, wordfreq, no LLM)"
    )
    runs: list[tuple[QueryContext, Planner]] = [
        (QueryContext(q.text, id=q.id, metadata=dict(q.metadata)), DecompositionPlanner())
        for q in dataset.queries
        if q.metadata.get("question_decomposition")
    ]
    runs.append((QueryContext(DIRECT_QUESTION, id="direct"), QuestionOncePlanner()))
    results = []
    for context, planner in runs:
        result = StepwiseController(planner, index, gate=rarity, max_steps=3, k=k).run(context)
        results.append(result)
        click.echo(terminal_text(f"\nquestion {context.id}: {context.text}"))
        for step in result.steps:
            gate = step.gate or {}
            click.echo(
                f"  step {step.index + 1}: {terminal_text(step.question)}\n"
                f"    gate: {gate.get('action', '-')} (p_retrieve {gate.get('p_retrieve', 0):.2f}; "
                f"{terminal_text(gate.get('reason', ''))})"
            )
            for hit in step.hits[:2]:
                click.echo(
                    terminal_text(f"    {hit.rank}. {hit.doc_id}: {' '.join(hit.text.split())[:80]}")
                )  # one line
            if step.answer:
                click.echo(terminal_text(f"    answer: {step.answer} ({step.answer_from})"))
        retrieved = sum(s.retrieved for s in result.steps)
        answer = (
            f"{terminal_text(result.answer)} (the decomposition's answer; an LLM answers from the hits)"
            if result.answer
            else "(the model answers: no retrieval)"
        )
        click.echo(
            f"  -> {answer}; {counted(retrieved, 'retrieval call')} in {counted(len(result.steps), 'step')}, "
            f"{result.ms:.0f} ms"
        )
    return results


def graph_step(corpus: Path, out_dir: Path, encoder: Any, k: int) -> tuple[int, int, int]:
    """Build a graph over the multi-hop BEIR folder ``corpus`` into ``out_dir``, answer its
    questions (split ``test``) with the walk, and print the hits with their seeds, facts and path.

    Returns ``(gold passages the walk found in the top k, the same for dense retrieval alone,
    gold passages in all)``.
    """
    from ragroute.cli.graph import explain_lines, shared_explain
    from ragroute.evaluation.metrics import relevant
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.loaders import load_beir

    start = time.perf_counter()
    dataset = load_beir(corpus, "test", on_error="raise")
    index: Any = build_index(dataset.corpus, "graph", encoder=encoder, name=Path(corpus).name)  # a GraphIndex
    manifest = save_index(index, out_dir)
    counts = manifest.params["counts"]
    click.echo(
        f"\nmulti-hop: built a knowledge graph over {counts['passages']} passages of {corpus} "
        f"({counts['phrases']} phrases, {counts['facts']} facts; offline rule extractor, no LLM) "
        f"in {time.perf_counter() - start:.1f}s -> {out_dir}"
    )
    found = dense_found = total = 0
    for query in dataset.queries:
        # the passages judged relevant (a grade-0 judgement is no needed passage)
        gold = set(relevant(dataset.qrels.get(query.id, {})))
        hits = index.search(query.text, k)
        dense_ids = {h.doc_id for h in index.dense.search(query.text, k)}
        needs = ", ".join(sorted(gold))
        click.echo(terminal_text(f"\ngraph query {query.id}: {query.text}   (needs: {needs})"))
        shared = shared_explain(hits)
        for line in explain_lines(shared):
            click.echo(f"  {line}")
        for hit in hits:
            head, _, snippet = format_hit(hit).partition("\n")
            click.echo(head + ("   <- needed" if hit.doc_id in gold else "") + "\n" + snippet)
            own = {key: value for key, value in hit.explain.items() if key not in shared}
            for line in explain_lines(own):
                click.echo(f"       {line}")
        hit_ids = {h.doc_id for h in hits}
        found += len(gold & hit_ids)
        dense_found += len(gold & dense_ids)
        total += len(gold)
        click.echo(
            f"  top {k}: the walk found {len(gold & hit_ids)}/{len(gold)} needed passages, "
            f"dense retrieval alone {len(gold & dense_ids)}/{len(gold)}"
        )
    click.echo(
        f"\nmulti-hop: the graph walk found {found}/{total} needed passages in the top {k}, "
        f'dense retrieval alone {dense_found}/{total} (try: ragroute graph query {out_dir} "...")'
    )
    return found, dense_found, total
