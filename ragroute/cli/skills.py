"""``ragroute skills ...``: index a skill catalogue and route tasks to skills."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import click

from ragroute.cli.common import (
    CONTEXT,
    applicable,
    counted,
    exclusive_options,
    one_line_errors,
    refuse_options,
)
from ragroute.cli.options import (
    FiniteFloatRange,
    backend_option,
    cache_dir_option,
    encoder_option,
    reranker_option,
    resolve_reranker,
    scope_option,
    text_argument,
)
from ragroute.cli.output import emit_json
from ragroute.display import shown_pair, terminal_text
from ragroute.errors import RagrouteError


@click.group("skills", context_settings=CONTEXT)
def skills_group() -> None:
    """Skill / tool catalogues: build a skill router over one, route tasks to skills.

    \b
      ragroute skills build path/to/skills --out indexes/skills
      ragroute skills route indexes/skills "fill in a PDF form" -k 3
      ragroute skills route indexes/skills --queries tasks.jsonl --json
    """


@skills_group.command("build")
@click.argument("catalogue", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Skill index to write."
)
@click.option(
    "--kind",
    type=click.Choice(["skill_md", "mcp", "openapi", "skills_jsonl"]),
    default=None,
    help="Catalogue format [default: detected from the path].",
)
@encoder_option("Encoder name or folder.")
@backend_option
@cache_dir_option()
@click.option(
    "--fusion",
    type=click.Choice(["adaptive", "fixed", "rrf"]),
    default="adaptive",
    show_default=True,
    help="How BM25 and dense are fused (adaptive: dense weight tuned on pseudo-queries from the catalogue).",
)
@click.option(
    "--dense-weight",
    type=FiniteFloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Weight for --fusion fixed.",
)
@click.option(
    "--overlap",
    type=click.Choice(["collapse", "diversify", "keep"]),
    default="diversify",
    show_default=True,
    help="What routing does with near-duplicate skills (saved with the index).",
)
@click.option(
    "--duplicate-threshold",
    type=FiniteFloatRange(0, 1),
    default=0.97,
    show_default=True,
    help="Embedding cosine at or above which two skills are near-duplicates.",
)
@click.option(
    "--bm25-stopwords",
    type=click.Choice(["nltk", "lucene"]),
    default="nltk",
    show_default=True,
    help="Words BM25 leaves out: NLTK's English function words (pronouns, auxiliaries, prepositions: "
    "the 'I', 'you', 'my' of task-like queries), or Lucene's 33 English stopwords.",
)
@click.option(
    "--abstain-data",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='LABELS .jsonl to fit this router\'s abstention on, {"text", "label"} per line as gate fit '
    "reads (label no_tool, no or none: no skill applies; any other label: one does) [default: no "
    "abstention model: the router never abstains. The model shipped with ragroute, fitted on "
    "metatool_need_tool, is SkillRouter(..., abstention='default') in Python; it does not transfer "
    "to other catalogues].",
)
@click.option(
    "--abstain-gate",
    type=click.Path(path_type=Path),
    default=None,
    help="A gate folder written by `ragroute gate fit` (tool / no_tool labels) to abstain through: "
    "its 'answer' means no skill applies. Saved by absolute path, not copied.",
)
@one_line_errors
def build_command(
    catalogue: Path,
    out: Path,
    kind: str | None,
    encoder: str,
    backend: str,
    cache_dir: Path | None,
    fusion: str,
    dense_weight: float,
    overlap: str,
    duplicate_threshold: float,
    bm25_stopwords: str,
    abstain_data: Path | None,
    abstain_gate: Path | None,
) -> None:
    """Index CATALOGUE (a SKILL.md folder, an OpenAPI file or folder, an MCP tools/list JSON or a
    folder of MCP tool files, or a SKILLS .jsonl / folder) for skill routing, into --out."""
    from ragroute.encode import load_encoder
    from ragroute.skills import load_catalogue
    from ragroute.skills.index import FAMILY, SkillIndexParams
    from ragroute.skills.router import SkillRouter, fit_abstention
    from ragroute.store import building

    abstain_data, abstain_gate = exclusive_options(
        {"abstain_data": abstain_data, "abstain_gate": abstain_gate},
        "give --abstain-data or --abstain-gate, not both",
    )
    if fusion != "fixed":  # accepted and ignored until session 36 (a build with rrf reported it)
        refuse_options(("dense_weight",), f"to --fusion {fusion} (it is the dense weight of --fusion fixed)")
    # --out is checked before any work, as `ragroute build` checks it: until session 47 a folder that
    # holds another family's artifact, or is no ragroute artifact, was refused only when saving,
    # after the catalogue was read and every skill encoded
    with building(out, FAMILY):
        pass
    labelled = None
    if abstain_data is not None:  # read before any model loads: a bad line fails at once
        from ragroute.route.labels import read_labelled_queries

        labelled = read_labelled_queries(abstain_data)  # the LABELS files of gate fit and route fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_catalogue(catalogue, kind=kind)
    for line in loaded.warnings:
        click.echo(f"warning: {line}", err=True)
    if len(loaded) == 0:
        raise RagrouteError(f"{catalogue}: the catalogue holds no skills")
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    params = SkillIndexParams(
        fusion=fusion,
        dense_weight=dense_weight,
        duplicate_threshold=duplicate_threshold,
        bm25_stopwords=bm25_stopwords,
    )
    router = SkillRouter.build(loaded, enc, params, overlap=overlap)
    if labelled is not None:
        from ragroute.gate.signals import label_counts, needs_retrieval

        texts, labels = labelled
        model = fit_abstention(
            router, texts, [needs_retrieval(label) for label in labels], name=str(abstain_data)
        )
        router = router.with_options(abstention=model)
        click.echo(
            f"abstention fitted on {counted(len(texts), 'labelled task')} of {abstain_data} "
            f"({label_counts(labels, ('where a skill applies', 'where none does'))})",
            err=True,
        )
    if abstain_gate is not None:
        router = router.with_options(abstention={"gate": abstain_gate})
        click.echo(f"abstention through gate {abstain_gate.resolve()} (saved by path)", err=True)
    router.save(out)
    index = router.index
    # rrf weighs neither side: until session 55 this said "dense weight 0.50 (rrf)", a weight unused
    weighed = (
        "rrf fusion (no dense weight)"
        if index.params.fusion == "rrf"
        else f"dense weight {index.dense_weight:.2f} ({index.weight_origin})"
    )
    click.echo(
        f"built {out}: {counted(len(index), 'skill')} ({loaded.kind}), {weighed}, "
        f"{counted(len(index.duplicates), 'near-duplicate group')}, "
        f"{counted(len(loaded.warnings), 'warning')}"
    )


@skills_group.command("route")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("task", required=False, callback=text_argument)
@click.option(
    "--queries",
    "queries_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='JSONL of tasks ({"_id" or "id", "text"} per line) instead of TASK.',
)
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Skills returned per task."
)
@reranker_option("Reranker artifact or CrossEncoder folder [default: rerank/default if it exists].")
@click.option("--no-reranker", is_flag=True, help="Stage 1 only.")
@click.option(
    "--candidates", type=click.IntRange(min=1), default=None, help="Candidates reranked [default: saved, 20]."
)
@click.option(
    "--overlap",
    type=click.Choice(["collapse", "diversify", "keep"]),
    default=None,
    help="Near-duplicate handling [default: saved with the index].",
)
@click.option(
    "--threshold",
    type=FiniteFloatRange(0, 1),
    default=None,
    help="Abstain when p(best skill applies) is below this [default: the model's, 0.5].",
)
@scope_option
@backend_option
@cache_dir_option()
@click.option(
    "--trace", "show_trace", is_flag=True, help="Include every stage's scores (JSON) or print them."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per task.")
@one_line_errors
def route_command(
    index_dir: Path,
    task: str | None,
    queries_path: Path | None,
    k: int,
    reranker_path: str | None,
    no_reranker: bool,
    candidates: int | None,
    overlap: str | None,
    threshold: float | None,
    scopes: tuple[str, ...],
    backend: str,
    cache_dir: Path | None,
    show_trace: bool,
    as_json: bool,
) -> None:
    """Route TASK (or every task of --queries) to the skills of the index at INDEX_DIR."""
    from ragroute.encode import load_encoder
    from ragroute.errors import check_query
    from ragroute.skills.router import SkillRouter

    task, queries_path = exclusive_options(
        {"task": task, "queries_path": queries_path},
        "give either a TASK or --queries FILE (not both, not neither)",
        required=True,
    )
    reranker_path, no_reranker = exclusive_options(  # both typed: the named reranker was dropped
        {"reranker_path": reranker_path, "no_reranker": no_reranker},
        "give {given}, not both (--no-reranker routes by stage 1 alone)",
    )
    tasks = read_tasks(queries_path) if queries_path is not None else [("task", check_query(task or ""))]
    model_id = _skill_index_encoder(index_dir)
    reranker, said = resolve_reranker(reranker_path, bool(no_reranker))
    click.echo(said, err=True)
    encoder = load_encoder(model_id, backend=backend, cache_dir=cache_dir)
    overrides: dict[str, Any] = {}
    candidates = applicable(
        "candidates",
        candidates,
        reranker is not None,
        "without a reranker (it counts the hits a reranker reads)",
    )
    if candidates is not None:
        overrides["candidates"] = candidates
    if overlap is not None:
        overrides["overlap"] = overlap
    router = SkillRouter.load(index_dir, reranker=reranker, encoder=encoder, **overrides)
    blend = (router.describe()["reranker"] or {}).get("blend")
    if blend is not None and not blend["applied"]:  # said only in the --trace until session 43
        click.echo(
            f"warning: {index_dir}: its rerank blend (`ragroute skills tune`) is not applied: "
            f"{blend['why']}; this reranker's own calibration is used (tune again with it)",
            err=True,
        )
    # a model this router cannot apply (fitted with the reranker's signal, routed without one; or
    # with another encoder) abstains from nothing either: --threshold was accepted and did nothing
    abstains, why = router.abstention_status()
    # a model fitted with the reranker's probability, routed without it: said as "fitted with another
    # encoder or needs other signals" until session 40
    if router.abstention_needs_reranker:
        reason = (
            f"without a reranker: the abstention model of {index_dir} was fitted with the reranker's "
            "probability (rerank_top); pass --reranker (it needs the reranker it was fitted with)"
        )
    elif router.abstention:
        reason = (
            f"to {index_dir}, which has no abstention model this route can apply "
            f"({why}; build one with --abstain-data or --abstain-gate)"
        )
    else:
        reason = (
            f"to {index_dir}, which has no abstention model (build it with --abstain-data or --abstain-gate)"
        )
    threshold = applicable("threshold", threshold, abstains, reason)
    if threshold is not None:
        router = router.with_options(threshold=threshold)
    # as a caller holding --scope (none: public skills only), as every command answers; until
    # session 43 it routed over the whole catalogue, skills with access labels included
    routes = router.route_many([t for _, t in tasks], k, ids=[i for i, _ in tasks], scopes=list(scopes))
    if not as_json:  # what the number beside each skill is (a stage-1 score above 1 read as a probability)
        click.echo(
            "score: the reranker's probability that the skill applies"
            if reranker is not None
            else "score: stage-1 relevance (BM25 and dense fused; not a probability)"
        )
    for route in routes:
        if as_json:
            payload = route.to_dict(trace=show_trace)
            emit_json(payload)
            continue
        if len(routes) > 1:
            click.echo(terminal_text(f"# {route.id}: {route.task}"))
        for skill in route.skills:
            line = f"{skill.rank:>3}. {skill.score:8.4f}  {skill.id}"
            if skill.name and skill.name != skill.id:
                line += f"  {skill.name}"
            if skill.duplicates:
                line += f"  (+{len(skill.duplicates)} near-duplicates: {', '.join(skill.duplicates)})"
            click.echo(terminal_text(line))
            if skill.description:
                click.echo(terminal_text(f"       {_snippet(skill.description)}"))
        if route.p_applies is None:  # it named a threshold that could not apply until session 37
            if route.abstain:  # until session 49 "abstain: no" beside the JSON's "abstain": true
                click.echo(
                    "abstain: yes: no skill this caller may read (each carries access labels "
                    "no --scope given meets)"
                )
            elif router.abstention_needs_reranker:  # not said until session 40
                click.echo(
                    "abstain: no (the index's abstention model needs the reranker it was fitted with: "
                    "pass --reranker)"
                )
            else:
                click.echo("abstain: no (no abstention model applies to this route)")
        else:
            verdict = "yes: no skill applies" if route.abstain else "no"
            p_text, threshold_text = shown_pair(route.p_applies, route.threshold)
            click.echo(f"abstain: {verdict} (p_applies {p_text}, threshold {threshold_text})")
        if show_trace:
            for step in route.trace:
                click.echo(
                    terminal_text(f"  [{step.stage}] {json.dumps(step.detail, ensure_ascii=False)[:2000]}")
                )


@skills_group.command("tune")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option(
    "--queries",
    "queries_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help='JSONL of labelled tasks ({"_id" or "id", "text"} per line) for this catalogue.',
)
@click.option(
    "--qrels",
    "qrels_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TSV of judgements (query-id, skill-id, grade; a header line is allowed).",
)
@reranker_option("Reranker the blend is fitted for (and applies to) [default: rerank/default].")
@click.option(
    "--max-queries", type=click.IntRange(min=10), default=None, help="Fit on the first N judged tasks only."
)
@backend_option
@cache_dir_option()
@one_line_errors
def tune_command(
    index_dir: Path,
    queries_path: Path,
    qrels_path: Path,
    reranker_path: str | None,
    max_queries: int | None,
    backend: str,
    cache_dir: Path | None,
) -> None:
    """Fit how much stage 1 weighs against the reranker on this catalogue, from labelled tasks, and
    save it with the index at INDEX_DIR (a new build; `skills route` with the same reranker uses it).

    Each task is routed once; the stage-1 weight with the best nDCG@10 over the tasks is kept and the
    reranker's probabilities are re-calibrated on them. Tasks you report numbers on must not be
    among them. See docs/skills.md#tuning-the-rerank-blend.
    """
    from ragroute.encode import load_encoder
    from ragroute.loaders.beir import load_qrels
    from ragroute.loaders.common import name_a_few
    from ragroute.skills.blend import fit_rerank_blend
    from ragroute.skills.router import SkillRouter
    from ragroute.store import artifact_lock

    # the index is read, fitted for and written back under its writer lock: a `skills build` that
    # published meanwhile was silently replaced by the catalogue read here until session 41; now a
    # concurrent build waits for the tune (and a tune for a build) and neither is lost
    with artifact_lock(index_dir):
        model_id = _skill_index_encoder(index_dir)
        tasks = read_tasks(queries_path)
        qrels = load_qrels(qrels_path)
        reranker, said = resolve_reranker(reranker_path, False)
        if reranker is None:
            raise RagrouteError(f"tuning the rerank blend needs a reranker: {said}")
        click.echo(said, err=True)
        encoder = load_encoder(model_id, backend=backend, cache_dir=cache_dir)
        router = SkillRouter.load(index_dir, reranker=reranker, encoder=encoder)
        unknown = sorted({sid for judged in qrels.values() for sid in judged} - set(router.catalogue.ids))
        if unknown:
            raise RagrouteError(
                f"{qrels_path}: {counted(len(unknown), 'judged skill id')} not in the index: "
                f"{', '.join(unknown[:5])}"
            )
        known = {qid for qid, _ in tasks}
        absent = [qid for qid in qrels if qid not in known]  # in file order
        if absent:  # their judgements would be dropped without a word
            click.echo(
                f"warning: {qrels_path}: {counted(len(absent), 'judged task')} not in {queries_path}, "
                "left out: "
                f"{name_a_few(absent)}",
                err=True,
            )
        # tasks with a relevant skill: the fit leaves the others out, and --max-queries counted them
        # (a fit could fail with too few tasks when the file held plenty, until session 36)
        judged = [(qid, text) for qid, text in tasks if any(g > 0 for g in qrels.get(qid, {}).values())]
        judged = judged[:max_queries]
        fitting = f"fitting on {counted(len(judged), 'task')} with a relevant skill, of {len(tasks)} ..."
        click.echo(fitting, err=True)
        blend = fit_rerank_blend(router, judged, qrels, name=str(queries_path))
        router.with_options(rerank_blend=blend).save(index_dir)
    chosen, curve = blend.summary()
    click.echo(
        f"{index_dir}: {chosen} for reranker {blend.reranker['name']} "
        f"(nDCG@10 of the {blend.report['tasks']} tasks by weight: {curve})"
    )


def _skill_index_encoder(index_dir: Path) -> str:
    """The encoder model id of the skill index at ``index_dir``; one clear error when there is none."""
    from ragroute.store import artifact_exists, open_snapshot
    from ragroute.store.artifact import family_with_article

    if not artifact_exists(index_dir):
        raise RagrouteError(f"{index_dir}: no skill index here (build one with `ragroute skills build`)")
    manifest = open_snapshot(index_dir, verify=False).manifest
    if manifest.family != "skills":
        raise RagrouteError(f"{index_dir} holds {family_with_article(manifest.family)}, not a skill index")
    return str((manifest.encoder or {}).get("model_id", ""))


def read_tasks(path: Path) -> list[tuple[str, str]]:
    """``(id, text)`` per line of a JSONL task file; one error line naming the first bad line (broken
    JSON or UTF-8, a missing or empty text, a text :func:`~ragroute.errors.check_query` refuses)."""
    from ragroute.errors import InvalidQueryError, check_query
    from ragroute.loaders.common import BadRecord
    from ragroute.loaders.jsonl import read_records

    if not path.is_file():
        raise RagrouteError(f"{path}: no such file")

    def task(row: dict[str, Any], line_no: int) -> tuple[str, str, bool]:
        text = row.get("text", row.get("query"))
        if not isinstance(text, str) or not text.strip():
            raise BadRecord('missing or empty "text"')
        try:
            text = check_query(text)
        except InvalidQueryError as exc:
            raise BadRecord(str(exc)) from None
        key = "_id" if "_id" in row else "id" if "id" in row else None
        if key is None:
            return str(line_no), text, True
        task_id = row[key]
        # output lines are matched to tasks by id: null or an object read as "None" or "{'x': 1}"
        if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or str(task_id) == "":
            raise BadRecord(f'"{key}" must be a non-empty string or an integer, not {task_id!r}'[:200])
        return str(task_id), text, False

    tasks: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    numbered: set[str] = set()  # ids taken from the line number of a line without one
    for line_no, (task_id, text, by_line) in read_records(path, task, on_error="raise"):
        if task_id in first_line:  # the output lines are matched to tasks by id
            line = first_line[task_id]
            numbered_line = line_no if by_line else line if task_id in numbered else None
            why = f" (line {numbered_line} has no id: its line number is its id)" if numbered_line else ""
            raise RagrouteError(f"{path} line {line_no}: task id {task_id!r} repeats line {line}{why}")
        if by_line:
            numbered.add(task_id)
        first_line[task_id] = line_no
        tasks.append((task_id, text))
    if not tasks:
        raise RagrouteError(f"{path}: no tasks in it")
    return tasks


def _snippet(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
