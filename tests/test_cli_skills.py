"""``ragroute skills build`` / ``ragroute skills route``: outputs, JSON line shape, the default
reranker message, loader warnings and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragroute.cli import main

DATA = Path(__file__).parent / "data" / "skills"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("skills") / "index"
    cache = out.parent / ".cache"
    result = CliRunner().invoke(
        main,
        ["skills", "build", str(DATA / "router"), "--out", str(out), "--backend", "torch"]
        + ["--cache-dir", str(cache)],
    )
    assert result.exit_code == 0, result.output
    return out, result


def _build(catalogue: Path, out: Path, tmp_path: Path):
    """`skills build CATALOGUE --out OUT` with torch MiniLM and a cache under ``tmp_path``."""
    command = ["skills", "build", str(catalogue), "--out", str(out), "--backend", "torch"]
    return CliRunner().invoke(main, [*command, "--cache-dir", str(tmp_path / ".cache")])


def _built_jsonl(skills: list[dict], tmp_path: Path) -> Path:
    """The index `skills build` makes of ``skills`` (SKILLS jsonl records) under ``tmp_path``."""
    catalogue = tmp_path / "skills.jsonl"
    catalogue.write_text("".join(json.dumps(s) + "\n" for s in skills))
    out = tmp_path / "index"
    built = _build(catalogue, out, tmp_path)
    assert built.exit_code == 0, built.output
    return out


def _route(*args: str, cwd: Path | None = None):
    return CliRunner().invoke(main, ["skills", "route", *args, "--backend", "torch"])


def test_build_reports_the_index(built):
    out, result = built
    assert f"built {out}: 20 skills (skills_jsonl), dense weight" in result.output
    assert "1 near-duplicate group, 0 warnings" in result.output
    assert (out / "CURRENT").is_file()


def test_build_of_a_catalogue_too_small_to_tune_says_its_weight_is_fixed(tmp_path):
    tools = [
        {"name": f"tool_{i}", "description": text, "inputSchema": {"type": "object"}}
        for i, text in enumerate(["Send an email.", "Read a calendar.", "Convert units."])
    ]
    catalogue = tmp_path / "tools.json"
    catalogue.write_text(json.dumps({"tools": tools}))
    out = tmp_path / "small"
    result = _build(catalogue, out, tmp_path)
    assert result.exit_code == 0, result.output
    assert "dense weight 0.50 (fewer than 10 skills" in result.output and "adaptive" not in result.output


def test_build_with_rrf_fusion_names_no_dense_weight(tmp_path):
    """Reciprocal rank fusion weighs neither side: the build line said "dense weight 0.50 (rrf)",
    a weight the fused scores never apply, until session 55."""
    command = ["skills", "build", str(DATA / "router"), "--out", str(tmp_path / "rrf"), "--fusion", "rrf"]
    result = CliRunner().invoke(main, [*command, "--backend", "torch", "--cache-dir", str(tmp_path / ".c")])
    assert result.exit_code == 0, result.output
    assert "20 skills (skills_jsonl), rrf fusion (no dense weight), 1 near-duplicate group" in result.output
    assert "dense weight 0" not in result.output


def test_build_counts_one_warning_and_one_group_in_the_singular(tmp_path):
    """`skills build` said "1 near-duplicate groups, 1 warnings" until session 50."""
    forecast = {"name": "getForecast", "description": "Weather forecast for a city: rain and wind.",
                "body": "Parameters: city (string). Returns rain and wind for the next days."}  # fmt: skip
    skills = [{"_id": "forecast", **forecast}, {"_id": "forecast_v2", **forecast},
              {"_id": "convert", "description": "Convert units of length and weight."}]  # fmt: skip
    catalogue = tmp_path / "skills.jsonl"
    catalogue.write_text("".join(json.dumps(s) + "\n" for s in skills))
    result = _build(catalogue, tmp_path / "index", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("fixed weight), 1 near-duplicate group, 1 warning"), result.stdout
    assert result.stderr == f"warning: {catalogue}: 1 skill without 'name' (line 3); the id is used\n"


def test_route_one_task_as_text_and_json(built, tmp_path, monkeypatch):
    out, _ = built
    monkeypatch.chdir(tmp_path)  # no rerank/default here
    text = _route(str(out), "convert 10 miles to km", "-k", "3")
    assert text.exit_code == 0, text.output
    assert "reranker: none (rerank/default not found: train it with" in text.output
    assert "  1. " in text.output and "unit_convert" in text.output
    # what the number is: a stage-1 score above 1 read as a probability (session 39)
    assert "score: stage-1 relevance (BM25 and dense fused; not a probability)" in text.stdout
    # without an abstention model it named a threshold that could not apply (until session 37)
    assert "abstain: no (no abstention model applies to this route)" in text.output
    # and --candidates without a reranker was taken, then unused
    ignored = _route(str(out), "convert 10 miles to km", "--candidates", "5")
    assert ignored.exit_code == 2 and "--candidates does not apply without a reranker" in ignored.output
    js = _route(str(out), "convert 10 miles to km", "-k", "2", "--json")
    line = json.loads(js.stdout.strip().splitlines()[-1])
    assert set(line) >= {"id", "skills", "abstain"} and isinstance(line["abstain"], bool)
    assert len(line["skills"]) == 2 and set(line["skills"][0]) >= {"id", "name", "score", "metadata"}
    assert line["skills"][0]["id"] == "unit_convert"


def test_route_queries_file_gives_one_json_line_each(built, tmp_path):
    out, _ = built
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        '{"_id": "a", "text": "send an email to bob"}\n{"id": "b", "text": "share price of apple"}\n'
    )
    result = _route(str(out), "--queries", str(queries), "--json", "--no-reranker", "--trace")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert [x["id"] for x in lines] == ["a", "b"]
    assert lines[0]["skills"][0]["id"] == "send_email" and lines[1]["skills"][0]["id"] == "stock_quote"
    assert [s["stage"] for s in lines[0]["trace"]][0] == "retrieve"
    assert "reranker: none (--no-reranker)" in result.stderr


def test_route_refuses_what_would_be_silently_ignored_or_ambiguous(built, tmp_path):
    out, _ = built
    no_model = _route(str(out), "convert 10 miles to km", "--no-reranker", "--threshold", "0.9")
    assert no_model.exit_code == 2
    assert no_model.output.splitlines()[-1] == (
        f"error: --threshold does not apply to {out}, which has no abstention model (build it with "
        "--abstain-data or --abstain-gate)"
    )
    queries = tmp_path / "twice.jsonl"
    queries.write_text('{"id": "t1", "text": "send an email"}\n{"id": "t1", "text": "stock price"}\n')
    twice = _route(str(out), "--queries", str(queries), "--json", "--no-reranker")
    assert twice.exit_code == 2
    assert twice.output.splitlines()[-1] == f"error: {queries} line 2: task id 't1' repeats line 1"
    # a line without an id is its line number: a collision with a real id "2" says so (it blamed the id)
    queries.write_text('{"text": "send an email"}\n{"text": "stock price"}\n{"id": "2", "text": "weather"}\n')
    numbered = _route(str(out), "--queries", str(queries), "--json", "--no-reranker")
    assert numbered.exit_code == 2 and numbered.output.splitlines()[-1] == (
        f"error: {queries} line 3: task id '2' repeats line 2 (line 2 has no id: its line number is its id)"
    )
    # a null or object id read as "None" / "{'x': 1}" until session 36
    for bad, shown in (
        ('{"id": null, "text": "convert miles"}', "None"),
        ('{"_id": {"x": 1}, "text": "w"}', "{'x': 1}"),
    ):
        queries.write_text(bad + "\n")
        result = _route(str(out), "--queries", str(queries), "--json", "--no-reranker")
        assert (
            result.exit_code == 2
            and f"must be a non-empty string or an integer, not {shown}" in result.output
        )
    queries.write_text('{"id": 7, "text": "convert miles"}\n')
    assert '"id": "7"' in _route(str(out), "--queries", str(queries), "--json", "--no-reranker").output


def test_route_defaults_of_a_config_file_apply_where_they_can(built, tmp_path):
    out, _ = built
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "a", "text": "send an email to bob"}\n')
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text(f"skills:\n  route: {{threshold: 0.3, queries_path: {queries}, no_reranker: true}}\n")
    run = ["--config", str(defaults), "skills", "route", str(out), "--backend", "torch", "--json"]
    from_file = CliRunner().invoke(main, run)  # the file's tasks; its threshold left out: no abstention model
    assert from_file.exit_code == 0, from_file.output
    assert [json.loads(line)["id"] for line in from_file.stdout.splitlines()] == ["a"]
    typed = CliRunner().invoke(
        main, [*run, "convert 10 miles to km"]
    )  # a TASK overrides the file's --queries
    assert typed.exit_code == 0, typed.output
    assert json.loads(typed.stdout.strip().splitlines()[-1])["skills"][0]["id"] == "unit_convert"


def test_route_with_a_reranker_and_collapse(built, tmp_path):
    import torch

    from ragroute.rerank.train import Pair, PairSet, TrainParams, train_reranker

    torch.set_num_threads(1)
    pairs = [Pair("rain tomorrow", "Weather | rain", 1.0), Pair("rain tomorrow", "Mail | send", 0.0)] * 4
    model = tmp_path / "rr"
    params = TrainParams(layers=1, max_length=32, epochs=2, batch_size=8, threads=1)
    train_reranker(PairSet(train=pairs, calibration=pairs), model, params, show_progress=False)
    args = ["rain in paris tomorrow", "--reranker", str(model), "--overlap", "collapse"]
    result = _route(str(built[0]), *args)
    assert result.exit_code == 0, result.output
    assert f"reranker: {model}" in result.output and "near-duplicates" in result.output
    assert "score: the reranker's probability that the skill applies" in result.stdout
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("skills:\n  route: {no_reranker: true}\n")  # yields to a --reranker typed
    run = ["--config", str(defaults), "skills", "route", str(built[0]), *args, "--backend", "torch"]
    result = CliRunner().invoke(main, run)
    assert result.exit_code == 0 and f"reranker: {model}" in result.output, result.output


def test_build_prints_loader_warnings(tmp_path):
    result = CliRunner().invoke(
        main,
        ["skills", "build", str(DATA / "skill_md"), "--out", str(tmp_path / "i"), "--backend", "torch"]
        + ["--cache-dir", str(tmp_path / "c"), "--fusion", "fixed"],
    )
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "broken front matter" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", str(DATA / "duplicates"), "--out", "X"], "duplicate skill ids"),
        (["build", str(DATA / "nope"), "--out", "X"], "no such file or folder"),
        (["route", "NOWHERE", "task"], "no skill index"),
        (["route", "NOWHERE"], "give either a TASK or --queries"),
        # accepted and ignored until session 36
        (["build", str(DATA / "nope"), "--out", "X", "--fusion", "rrf", "--dense-weight", "0.9"],
         "--dense-weight does not apply to --fusion rrf"),
        (["route", "NOWHERE", "task", "--reranker", "rerank/x", "--no-reranker"],
         "give --reranker and --no-reranker, not both"),
    ],  # fmt: skip
)
def test_bad_input_is_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["skills", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.startswith("error: ")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("held", ["index", "folder"])
def test_build_into_an_out_it_may_not_replace_is_refused_before_any_encoding(held, tmp_path, monkeypatch):
    """`skills build --out` at another family's artifact (or a folder that is no ragroute artifact)
    was refused only when saving, after the encoder loaded and every skill was encoded (until
    session 47); `ragroute build` checks first, and so does it now, with the same one line."""
    out = tmp_path / "out"
    if held == "index":
        notes = tmp_path / "notes"
        notes.mkdir()
        (notes / "comets.md").write_text("# Comets\n\nComets have an ion tail.\n")
        built = CliRunner().invoke(main, ["build", str(notes), "--out", str(out), "--method", "bm25"])
        assert built.exit_code == 0, built.output
        message = f"refusing to replace {out}: it holds an index (bm25), not a skill index; remove it first"
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        message = f"refusing to overwrite {out}: it exists and is not a ragroute artifact"

    def no_encoding(*_args, **_kwargs):
        raise AssertionError("an encoder was loaded before --out was checked")

    monkeypatch.setattr("ragroute.encode.load_encoder", no_encoding)
    monkeypatch.setattr("ragroute.skills.load_catalogue", no_encoding)
    result = CliRunner().invoke(main, ["skills", "build", str(DATA / "router"), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1


def test_bad_queries_line_is_named(built, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "a", "text": "x"}\n{broken\n')
    result = _route(str(built[0]), "--queries", str(queries))
    assert result.exit_code == 2 and "q.jsonl line 2: invalid JSON" in result.output


@pytest.mark.parametrize(
    "line, message",
    [
        (b'{"_id": "b", "text": "\xff\xfe tools"}', "q.jsonl line 2: invalid UTF-8 (byte 0xff"),
        (b'{"_id": "b", "text": "\\ud800 tools"}', "q.jsonl line 2: not valid text: lone surrogate U+D800"),
        (b'{"_id": "b", "text": "' + b"x" * 100_001 + b'"}', "q.jsonl line 2: query is 100,001 characters"),
    ],
)
def test_undecodable_or_invalid_task_text_is_one_line(line, message, tmp_path, monkeypatch):
    # invalid UTF-8 in a --queries file was a UnicodeDecodeError traceback; a lone surrogate or an
    # over-long text failed later without naming the line (the tasks are read before the index)
    monkeypatch.chdir(tmp_path)
    queries = tmp_path / "q.jsonl"
    queries.write_bytes(b'{"_id": "a", "text": "x"}\n' + line + b"\n")
    result = CliRunner().invoke(main, ["skills", "route", "NOWHERE", "--queries", str(queries)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1


def test_route_says_what_an_abstention_model_it_cannot_apply_needs(built, tmp_path, monkeypatch):
    """A model fitted with the reranker's probability, routed without a reranker: "no abstention
    model applies" and a --threshold error about "another encoder or other signals" (until session
    40); and p_applies 0.99987 against 0.9999 printed as 1.000 and 1.000 beside "abstain: yes"."""
    import math

    from ragroute.skills.router import AbstentionModel, SkillRouter

    out, _ = built
    monkeypatch.chdir(tmp_path)  # no rerank/default here
    router = SkillRouter.load(out, backend="torch")
    encoder = router.index.encoder.model_id
    rerank = AbstentionModel(["rerank_top"], [1.0], 0.0, [0.5], [0.1], encoder=encoder)
    needs = tmp_path / "needs_reranker"
    router.with_options(abstention=rerank).save(needs)
    routed = _route(str(needs), "convert 10 miles to km", "-k", "1")
    assert routed.exit_code == 0, routed.output
    assert routed.output.splitlines()[-1] == (
        "abstain: no (the index's abstention model needs the reranker it was fitted with: pass --reranker)"
    )
    refused = _route(str(needs), "convert 10 miles to km", "--no-reranker", "--threshold", "0.9")
    assert refused.exit_code == 2 and refused.output.splitlines()[-1] == (
        f"error: --threshold does not apply without a reranker: the abstention model of {needs} was "
        "fitted with the reranker's probability (rerank_top); pass --reranker (it needs the reranker it "
        "was fitted with)"
    )
    p = 0.99987
    sure = AbstentionModel(["dense_top"], [0.0], math.log(p / (1 - p)), [0.0], [1.0], encoder=encoder)
    close = tmp_path / "close"
    router.with_options(abstention=sure).save(close)
    result = _route(str(close), "convert 10 miles to km", "-k", "1", "--no-reranker", "--threshold", "0.9999")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "abstain: yes: no skill applies (p_applies 0.99987, threshold 0.99990)"
    )
    plain = _route(str(close), "convert 10 miles to km", "-k", "1", "--no-reranker", "--threshold", "0.5")
    assert plain.output.splitlines()[-1] == "abstain: no (p_applies 1.000, threshold 0.500)"


def test_route_answers_as_a_caller_without_scopes_unless_given_scope(tmp_path):
    """``skills route`` routed over the whole catalogue: a skill with access labels was listed to
    a caller holding no scope, though every command answers as one (docs/config.md; until session 43)."""
    skills = [
        {"_id": "weather", "description": "Weather forecast for a city: rain and wind.", "metadata": {}},
        {"_id": "units", "description": "Convert miles to km and pounds to kg.", "metadata": {}},
        {"_id": "payroll_export", "description": "Export the salary payroll.", "metadata": {"access": "hr"}},
    ]
    out = _built_jsonl(skills, tmp_path)
    task = "export the salary payroll"
    for args in ([], ["--json", "--trace"]):
        public = _route(str(out), task, "--no-reranker", *args)
        assert public.exit_code == 0, public.output
        assert "payroll_export" not in public.output and "weather" in public.output
    held = _route(str(out), task, "--no-reranker", "--scope", "hr")
    assert held.exit_code == 0, held.output
    assert "  1. " in held.output and "payroll_export" in held.output.split("  1. ")[1].splitlines()[0]


def test_route_of_a_caller_who_may_read_no_skill_says_it_abstains(tmp_path):
    """Every skill carries an access label the caller's --scope does not meet: the route abstains
    with no skill, and the text said "abstain: no (no abstention model applies to this route)"
    beside the JSON's "abstain": true (until session 49)."""
    skills = [
        {"_id": "payroll_export", "description": "Export the salary payroll.", "metadata": {"access": "hr"}},
        {"_id": "payroll_import", "description": "Import the salary payroll.", "metadata": {"access": "hr"}},
    ]
    out = _built_jsonl(skills, tmp_path)
    text = _route(str(out), "export the payroll", "--no-reranker")
    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[-1].startswith("abstain: yes: no skill this caller may read")
    js = _route(str(out), "export the payroll", "--no-reranker", "--json")
    line = json.loads(js.stdout.splitlines()[-1])
    assert line == {"id": "task", "skills": [], "abstain": True, "p_applies": None}
    held = _route(str(out), "export the payroll", "--no-reranker", "--scope", "hr")
    assert held.output.splitlines()[-1] == "abstain: no (no abstention model applies to this route)"
