"""`ragroute graph build/add/query/stats/export` end to end (hashing encoder), and their one-line errors."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from click.testing import CliRunner
from conftest import occupied_out

import ragroute.cli.build as cli_build
import ragroute.cli.common as cli_common
import ragroute.cli.graph as cli_graph
from ragroute.cli import main
from ragroute.graph.views import graph_stats
from ragroute.index.io import load_index, read_index_manifest
from ragroute.registry import EXTRACTORS

QUESTION = "Which river flows through the town where Ada Brennan was born?"
BASE = [
    {
        "_id": "p1",
        "title": "Ada Brennan",
        "text": "Ada Brennan was a painter. She was born in Kellow in 1901.",
    },
    {
        "_id": "p4",
        "title": "Otto Lind",
        "text": "Otto Lind was a sculptor born in Dressel. He studied in Paris.",
    },
    {"_id": "p5", "title": "Dressel", "text": "Dressel is a village on the Amber Lake, far from any river."},
    {"_id": "p6", "title": "Painting", "text": "Painting is the practice of applying paint to a surface."},
]
ADDED = [
    {
        "_id": "p2",
        "title": "Kellow",
        "text": "Kellow is a market town. The Varne River flows through Kellow.",
    },
    {
        "_id": "p3",
        "title": "Varne River",
        "text": "The Varne River rises in the Marl Hills and meets the sea.",
    },
]


@pytest.fixture
def workspace(tmp_path, monkeypatch, hashing_encoder):
    """A working directory with two corpora, every command's encoder replaced by the hashing one."""

    def open_encoder(name, backend, cache_dir):
        return hashing_encoder

    for module in (cli_graph, cli_common, cli_build):
        monkeypatch.setattr(module, "open_encoder", open_encoder)
    monkeypatch.chdir(tmp_path)
    for name, rows in (("base", BASE), ("all", BASE + ADDED)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return tmp_path


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_build_and_add_read_a_table_by_its_named_columns(workspace):
    """`graph build` and `graph add` load corpora as `ragroute build` does, column options included."""
    rows = [(r["_id"], r["title"], r["text"]) for r in BASE]
    table = workspace / "people.tsv"
    table.write_text("key\tname\tbody\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows), "utf-8")
    result = run("graph", "build", table, "--out", "g")
    assert result.exit_code == 2
    assert "no text column 'text' (available columns: key, name, body)" in result.output
    columns = ["--text-column", "body", "--id-column", "key", "--title-column", "name"]
    result = run("graph", "build", table, "--out", "g", *columns)
    assert result.exit_code == 0, result.output
    assert "built graph index of 4 units" in result.output
    more = workspace / "more.jsonl"
    more.write_text("".join(json.dumps({"key": r["_id"], "body": r["text"]}) + "\n" for r in ADDED), "utf-8")
    result = run("graph", "add", "g", more, "--text-column", "body", "--id-column", "key")
    assert result.exit_code == 0, result.output
    assert "added 2 new passages" in result.output


def test_a_graph_of_one_passage_is_counted_in_the_singular(workspace):
    """`graph build`, `stats` and `export` said "1 passages" (and "1 nodes", "1 edges") until session 50."""
    one = workspace / "one"
    one.mkdir()
    (one / "corpus.jsonl").write_text(json.dumps({"_id": "p9", "text": "Kellow."}) + "\n", "utf-8")
    result = run("graph", "build", one, "--out", "g")
    assert result.exit_code == 0, result.output
    counts = read_index_manifest(workspace / "g").params["counts"]
    assert counts["passages"] == 1 and "1 passage," in result.output and "1 passages" not in result.output
    stats = run("graph", "stats", "g")
    assert stats.exit_code == 0 and " 1 passage;" in stats.output, stats.output


def test_build_defaults_to_graph_folder_and_matches_ragroute_build(workspace):
    result = run("graph", "build", "all")
    assert result.exit_code == 0, result.output
    assert "built graph index of 6 units" in result.output and "-> graph/all" in result.output
    manifest = read_index_manifest(workspace / "graph" / "all")
    assert manifest.kind == "graph" and manifest.name == "all"
    assert manifest.params["extractor"]["name"] == "rules"
    assert manifest.params["graph"]["synonym_threshold"] == 0.8
    counts = manifest.params["counts"]
    assert f"graph: {counts['phrases']} phrases, 6 passages, {counts['facts']} facts" in result.output
    # the same build as `ragroute build --method graph`: identical files through the same store path
    assert run("build", "all", "--out", "indexes/all", "--method", "graph").exit_code == 0
    other = read_index_manifest(workspace / "indexes" / "all")
    assert {f: i["sha256"] for f, i in other.files.items()} == {
        f: i["sha256"] for f, i in manifest.files.items()
    }
    # options reach the build
    result = run("graph", "build", "all", "--out", "g2", "--synonym-threshold", "0.5", "--name", "kg")
    assert result.exit_code == 0, result.output
    manifest = read_index_manifest(workspace / "g2")
    assert manifest.params["graph"]["synonym_threshold"] == 0.5 and manifest.name == "kg"


def test_extractor_choices_are_the_registry(workspace):
    option = next(p for p in cli_graph.build_command.params if p.name == "extractor")
    assert list(option.type.choices) == EXTRACTORS.names()
    result = run("graph", "build", "all", "--extractor", "nope")
    assert result.exit_code == 2 and "'nope' is not one of" in result.output


def test_query_prints_seeds_facts_and_path_and_json(workspace):
    assert run("graph", "build", "all").exit_code == 0
    result = run("graph", "query", "graph/all", QUESTION, "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"query: {QUESTION}"
    assert any(line.startswith("  seeds: ") and "ada brennan" in line for line in lines)
    assert any(line.startswith("  facts: ") and "ada brennan | kellow" in line for line in lines)
    assert any(line.lstrip().startswith("1. ") and " p1 " in line for line in lines)
    result = run("graph", "query", "graph/all", QUESTION, "-k", "3", "--json")
    payload = last_json(result)
    hits = payload["hits"]
    assert {h["doc_id"] for h in hits[:3]} >= {"p1", "p2"}
    assert hits[0]["explain"]["method"] == "ppr" and "ada brennan" in hits[0]["explain"]["seeds"]
    assert payload["query"] == QUESTION and payload["search_ms"] >= 0
    if "path" in hits[0]["explain"]:  # printed when the walk reports it
        assert "path: " in run("graph", "query", "graph/all", QUESTION).output


def test_explain_lines_print_path_and_fallback():
    lines = cli_graph.explain_lines(
        {"method": "ppr", "seeds": ["a", "b"], "facts": ["a | b (0.9)"], "path": ["a", "b", "passage p1"]}
    )
    assert lines == ["seeds: a, b", "facts: a | b (0.9)", "path: a -> b -> passage p1"]
    assert cli_graph.explain_lines({"method": "dense", "fallback": "no link"}) == ["dense fallback: no link"]


def test_add_only_new_documents_and_publish_a_new_build(workspace):
    assert run("graph", "build", "base", "--out", "graph/kg").exit_code == 0
    before = read_index_manifest(workspace / "graph" / "kg").build
    assert "p2" not in {
        h["doc_id"] for h in last_json(run("graph", "query", "graph/kg", QUESTION, "--json"))["hits"]
    }
    result = run("graph", "add", "graph/kg", "all")
    assert result.exit_code == 0, result.output
    assert "added 2 new passages (4 already in the graph, skipped)" in result.output
    manifest = read_index_manifest(workspace / "graph" / "kg")
    assert manifest.build != before and manifest.params["counts"]["passages"] == 6
    hits = last_json(run("graph", "query", "graph/kg", QUESTION, "-k", "3", "--json"))["hits"]
    assert {h["doc_id"] for h in hits} >= {"p1", "p2"}
    result = run("graph", "add", "graph/kg", "all")
    assert result.exit_code == 0 and "nothing to add: all 6 passages" in result.output
    assert read_index_manifest(workspace / "graph" / "kg").build == manifest.build
    assert "warning" not in result.stderr
    # an edited passage under a known id is said, not counted as unchanged (until session 40)
    edited = [
        {**row, "text": row["text"] + " Edited since."} if i == 1 else row for i, row in enumerate(BASE)
    ]
    (workspace / "edited.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edited))
    result = run("graph", "add", "graph/kg", "edited.jsonl")
    assert result.exit_code == 0 and "nothing to add" in result.stdout
    assert (
        f"\nwarning: 1 passage of edited.jsonl differs from the text graph/kg holds under the same id "
        f"({edited[1]['_id']!r}): not taken in"
    ) in result.stderr
    # documents without text: "all 0 passages ... are already in" the graph until session 38
    (workspace / "blank.jsonl").write_text('{"_id": "e1", "text": " "}\n')
    result = run("graph", "add", "graph/kg", "blank.jsonl")
    assert result.exit_code == 0 and "nothing to add: blank.jsonl holds no passage with text" in result.output
    # another cut would add every passage again under new ids (p1 beside p1#p0): refused
    result = run("graph", "add", "graph/kg", "all", "--granularity", "paragraph")
    assert result.exit_code == 2
    assert "holds document-level passages but --granularity paragraph" in result.output
    assert read_index_manifest(workspace / "graph" / "kg").build == manifest.build


def test_stats_and_export(workspace, hashing_encoder):
    assert run("graph", "build", "all").exit_code == 0
    result = run("graph", "stats", "graph/all", "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    payload = last_json(result)
    index = load_index(workspace / "graph" / "all", hashing_encoder)
    expected = graph_stats(index, top=3)
    assert {k: payload[k] for k in expected} == json.loads(json.dumps(expected))
    assert payload["extractor"]["name"] == "rules" and payload["encoder"]["model_id"] == "test/hashing"
    assert payload["build"] == index.manifest.build and payload["from_triples"] == 0
    text = run("graph", "stats", "graph/all").output
    assert f"{expected['phrases']} phrases, 6 passages" in text and "hubs:" in text and "kellow" in text
    assert "degree phrase" in text and "rules" in text and "test/hashing" in text
    result = run("graph", "export", "graph/all", "--format", "graphml", "--out", "out/g.graphml")
    assert result.exit_code == 0, result.output
    graph = nx.read_graphml(workspace / "out" / "g.graphml")
    assert graph.number_of_edges() == expected["edges"] and f"{expected['edges']} edges" in result.output
    assert f"of {graph.number_of_nodes()} nodes and" in result.output
    result = run("graph", "export", "graph/all", "--format", "edgelist", "--out", "g.tsv")
    assert result.exit_code == 0
    lines = (workspace / "g.tsv").read_text().splitlines()
    assert len(lines) == expected["edges"] + 1
    # the nodes said are the nodes in the file: those without an edge said apart (until session 51
    # "N nodes" counted them though an edge list cannot hold them)
    in_file = {end for line in lines[1:] for end in line.split("\t")[:2]}
    assert len(in_file) == graph.number_of_nodes() and f"of {len(in_file)} nodes and" in result.output
    lonely = workspace / "lonely"
    lonely.mkdir()
    rows = [*BASE, {"_id": "p7", "title": "", "text": "It was so."}]  # a passage no phrase is drawn from
    (lonely / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert run("graph", "build", "lonely").exit_code == 0
    result = run("graph", "export", "graph/lonely", "--format", "edgelist", "--out", "lonely.tsv")
    lines = (workspace / "lonely.tsv").read_text().splitlines()
    in_file = {end for line in lines[1:] for end in line.split("\t")[:2]}
    stats = graph_stats(load_index(workspace / "graph" / "lonely", hashing_encoder))
    without = stats["phrases"] + stats["passages"] - len(in_file)
    assert without > 0 and f"of {len(in_file)} nodes ({without} " in result.output, result.output
    # never over a file that exists (a corpus, say) without --force, never inside an artifact
    again = run("graph", "export", "graph/all", "--format", "graphml", "--out", "g.tsv")
    assert again.exit_code == 2 and "g.tsv exists: give --force" in again.output
    assert len((workspace / "g.tsv").read_text().splitlines()) == expected["edges"] + 1
    export = ("graph", "export", "graph/all", "--format")
    assert run(*export, "graphml", "--out", "g.tsv", "--force").exit_code == 0
    assert (workspace / "g.tsv").read_text().startswith("<?xml")
    pointer = (workspace / "graph" / "all" / "CURRENT").read_bytes()
    inside = run(*export, "edgelist", "--out", "graph/all/CURRENT", "--force")
    assert inside.exit_code == 2 and "is inside the artifact" in inside.output
    assert (workspace / "graph" / "all" / "CURRENT").read_bytes() == pointer


def test_build_from_triples_alone_and_with_a_corpus(workspace):
    triples = workspace / "facts.csv"
    triples.write_text(
        "subject,predicate,object,passage\n"
        "Ada Brennan,born in,Kellow,\n"
        "Varne River,flows through,Kellow,\n"
        "Otto Lind,studied in,Paris,p4\n",
        encoding="utf-8",
    )
    result = run("graph", "build", "--triples", triples)
    assert result.exit_code == 0, result.output
    assert "read 3 triples" in result.output and "-> graph/facts" in result.output
    # no extractor ran on a graph of triples alone (the summary named it as if it had, until session 39)
    assert "extractor rules (for passages added later: none ran, the graph is of triples)" in result.output
    hits = last_json(run("graph", "query", "graph/facts", QUESTION, "-k", "2", "--json"))["hits"]
    assert [h["doc_id"] for h in hits] == ["triple-2", "triple-3"]
    assert last_json(run("graph", "stats", "graph/facts", "--json"))["from_triples"] == 3
    result = run("graph", "build", "base", "--triples", triples, "--out", "mixed")
    assert result.exit_code == 0, result.output
    assert "1 synonym pair; extractor rules\n" in result.output  # the corpus was extracted
    manifest = read_index_manifest(workspace / "mixed")
    assert manifest.params["counts"]["passages"] == 4 + 2  # p4 is a corpus document: its triple joins it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["graph", "build"], "error: give a CORPUS, --triples FILE, or both"),
        (["graph", "build", "missing"], "missing"),
        (["graph", "build", "--triples", "bad.jsonl"], "2 bad triples at lines 2, 3"),
        (["graph", "build", "--triples", "empty.csv"], "no triples"),
        (["graph", "query", "nowhere", "text"], "does not exist"),
        (["graph", "query", "graph/all", "  "], "query is empty"),
        (["graph", "query", "bm25", "text"], "holds a bm25 index, not a graph"),
        (["graph", "stats", "bm25"], "holds a bm25 index, not a graph"),
        (["graph", "add", "graph/all", "missing"], "missing"),
        (["graph", "export", "bm25", "--format", "graphml", "--out", "x.graphml"], "not a graph"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(workspace, args, message):
    assert run("graph", "build", "all").exit_code == 0
    assert run("build", "all", "--out", "bm25", "--method", "bm25").exit_code == 0
    (workspace / "bad.jsonl").write_text('{"subject": "a", "object": "b"}\n{"subject": "a"}\n{"object": 1}\n')
    (workspace / "empty.csv").write_text("")
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_graph_help(workspace):
    for args in (
        ["graph", "--help"],
        *[["graph", c, "--help"] for c in ("build", "add", "query", "stats", "export")],
    ):
        result = run(*args)
        assert result.exit_code == 0 and "Usage:" in result.output, args


def openie_settings(**llm: str) -> dict:
    """An `llm:` settings file's content: a scripted LLM answering the OpenIE prompts with one
    triple (Varne River flows through Kellow) and its two entities."""
    rules = {
        "RDF": json.dumps({"triples": [["Varne River", "flows through", "Kellow"]]}),
        "named entities": json.dumps({"named_entities": ["Varne River", "Kellow"]}),
    }
    return {"llm": {"kind": "scripted", **llm, "rules": rules}}


def test_llm_extractor_from_the_command_line(workspace, monkeypatch, hashing_encoder):
    """`--extractor llm` asks the LLM `--llm` names (here a scripted one from a YAML file), in
    build and in add; `--llm` with another extractor is a one-line error before anything loads."""
    monkeypatch.setenv("RAGROUTE_CACHE", str(workspace / "cache"))  # the OpenIE answers' cache
    settings = openie_settings(model="scripted-openie")
    (workspace / "llm.yaml").write_text(json.dumps(settings))
    result = run("graph", "build", "base", "--extractor", "llm", "--llm", "llm.yaml", "--out", "graph/kg")
    assert result.exit_code == 0, result.output
    assert "llm extractor: 8 LLM calls, 0 passages from its cache" in result.stderr  # 4 passages, 2 asks
    again = run("graph", "build", "base", "--extractor", "llm", "--llm", "llm.yaml", "--out", "graph/kg2nd")
    assert "llm extractor: 0 LLM calls, 4 passages from its cache" in again.stderr
    stats = last_json(run("graph", "stats", "graph/kg", "--json"))
    assert stats["extractor"]["name"] == "llm" and ":scripted-openie@" in stats["extractor"]["model"]
    tables = load_index(workspace / "graph" / "kg", hashing_encoder).tables
    assert {"varne river", "kellow"} <= set(tables.phrases)  # the scripted answer, not the rules
    assert "amber lake" not in tables.phrases  # what the rule extractor finds in p5
    # another script for the same model name: answers are cached per LLM settings, so it is asked
    # again (its old answers were reused, and a fixed LLM silently rebuilt the same graph)
    other = json.loads(json.dumps(settings))
    other["llm"]["rules"] = {
        "RDF": json.dumps({"triples": [["Otto Lind", "born in", "Dressel"]]}),
        "named entities": json.dumps({"named_entities": ["Otto Lind", "Dressel"]}),
    }
    (workspace / "llm2.yaml").write_text(json.dumps(other))
    result = run("graph", "build", "base", "--extractor", "llm", "--llm", "llm2.yaml", "--out", "graph/kg2")
    assert result.exit_code == 0, result.output
    phrases = set(load_index(workspace / "graph" / "kg2", hashing_encoder).tables.phrases)
    assert "dressel" in phrases and "varne river" not in phrases
    result = run("graph", "add", "graph/kg", "all", "--llm", "llm2.yaml")  # one graph, one extractor
    assert result.exit_code == 2 and "extractor" in result.output, result.output
    result = run("graph", "add", "graph/kg", "all", "--llm", "llm.yaml")
    assert result.exit_code == 0, result.output
    assert "added 2 new passages" in result.output
    for args, message in (
        (["graph", "build", "base", "--llm", "llm.yaml"], "--llm does not apply to --extractor rules"),
        (["graph", "build", "base", "--extractor", "llm", "--llm", "none.yaml"], "cannot read LLM settings"),
        (["graph", "build", "base", "--extractor", "llm", "--llm", "gpt"], "unknown llm kind 'gpt'"),
    ):
        result = run(*args)
        assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
    assert run("graph", "build", "base", "--out", "graph/rules").exit_code == 0
    result = run("graph", "add", "graph/rules", "all", "--llm", "llm.yaml")
    assert (
        result.exit_code == 2
        and "--llm does not apply to graph/rules, a graph built with --extractor rules" in result.output
    )


def test_an_llm_settings_file_named_in_a_config_file_is_read_beside_it(workspace, monkeypatch):
    """`--llm` as a --config default names a file beside that file, as its path options do (it was
    read from the working directory: `cannot read LLM settings file llm.yaml`)."""
    monkeypatch.setenv("RAGROUTE_CACHE", str(workspace / "cache"))
    conf = workspace / "conf"
    conf.mkdir()
    rules = {
        "RDF": json.dumps({"triples": [["Varne River", "flows through", "Kellow"]]}),
        "named entities": json.dumps({"named_entities": ["Varne River", "Kellow"]}),
    }
    llm = {"llm": {"kind": "scripted", "model": "scripted-openie", "rules": rules}}
    (conf / "llm.yaml").write_text(json.dumps(llm))
    (conf / "defaults.yaml").write_text("graph: {build: {extractor: llm, llm_spec: llm.yaml}}\n")
    result = run("--config", "conf/defaults.yaml", "graph", "build", "base", "--out", "graph/kg")
    assert result.exit_code == 0, result.output
    assert "llm extractor: 8 LLM calls" in result.stderr
    assert last_json(run("graph", "stats", "graph/kg", "--json"))["extractor"]["name"] == "llm"


def test_bench_graph_builds_its_graph_with_the_llm_extractor_of_llm(workspace, monkeypatch, hashing_encoder):
    """`bench graph --extractor llm` was offered and always failed (no LLM to ask) until session 36;
    now it asks the LLM `--llm` names, and `--llm` with another extractor is a one-line error."""
    import ragroute.encode

    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **k: hashing_encoder)
    data = workspace / "mq"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in BASE + ADDED))
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": QUESTION}) + "\n")
    (data / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq1\tp2\t1\n")
    (workspace / "llm.yaml").write_text(json.dumps(openie_settings()))
    result = run("bench", "graph", "--data", "mq", "--extractor", "llm", "--llm", "llm.yaml", "--json")
    assert result.exit_code == 0, result.output
    assert "llm extractor: " in result.stderr and " LLM calls" in result.stderr
    refused = run("bench", "graph", "--data", "mq", "--llm", "llm.yaml")
    assert refused.exit_code == 2
    assert refused.output == (
        "error: --llm does not apply to --extractor rules: it names the LLM of --extractor llm\n"
    )


@pytest.mark.parametrize("held", ["artifact", "folder", "under a file"])
def test_build_into_an_out_it_cannot_write_is_refused_before_any_work(workspace, monkeypatch, held):
    """`graph build --out` at another family's artifact, a folder of the user's files or a path under
    a file was refused only when saving, after the extraction and every phrase was encoded (with an
    LLM extractor, after hours; until session 53); `ragroute build` checks first, and so does it now."""
    skills = ("skills", "skill-index", "skills.jsonl", "a skill index (skill-index), not an index")
    out, message = occupied_out(workspace, held, skills)

    def no_work(*_args, **_kwargs):
        raise AssertionError("the build started before --out was checked")

    monkeypatch.setattr(cli_graph, "open_encoder", no_work)
    monkeypatch.setattr(cli_graph, "load_units", no_work)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    result = run("graph", "build", "base", "--out", out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before
