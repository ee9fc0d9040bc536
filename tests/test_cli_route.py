"""`ragroute route CONFIG QUERY` and `ragroute route fit` end to end with the bundled MiniLM (torch)."""

import json

import pytest
from click.testing import CliRunner
from conftest import occupied_out

from ragroute.cli import main
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.types import Document

TOPICS = {
    "astro": [
        "Comets grow an ion tail pushed by the solar wind.",
        "Neutron stars are collapsed stellar cores.",
        "Telescopes gather light with large mirrors.",
    ],
    "cook": [
        "Knead bread dough until it is smooth and elastic.",
        "Whisk oil slowly into egg yolk for mayonnaise.",
        "Braise short ribs in wine for three hours.",
    ],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("routing")
    for topic, texts in TOPICS.items():
        docs = [Document(id=f"{topic}-{i}", text=t) for i, t in enumerate(texts)]
        save_index(build_index(docs, "bm25", name=topic), root / "indexes" / topic)
    config = root / "routing.yaml"
    config.write_text(
        "backend: torch\ncache_dir: cache\n"
        "sources:\n"
        "  astro: {index: indexes/astro, description: Astronomy and space.}\n"
        "  cook: {index: indexes/cook, description: Cooking and recipes.}\n"
        "  wiki: {index: indexes/missing, description: A source whose index was never built.}\n"
        "router: {kind: prototype, threshold: 0.3, max_routes: 2}\n"
        "signals:\n  math: {type: regex, pattern: '\\d+\\s*times\\s*\\d+'}\n"
        "rules:\n  - {name: arithmetic, when: math, then: {route: none}}\n"
    )
    return root, config


def test_route_prints_decision_and_reports_broken_source(workspace):
    _, config = workspace
    result = CliRunner().invoke(main, ["route", str(config), "why do comets have tails?", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["query"] == "why do comets have tails?"
    assert payload["decision"]["chosen"][0] == "astro"
    assert payload["hits"][0]["source"] == "astro" and payload["hits"][0]["doc_id"] == "astro-0"
    assert "wiki" in payload["decision"]["signals"]["unavailable_sources"]
    assert "manifest.json is missing" in payload["decision"]["signals"]["unavailable_sources"]["wiki"] or (
        "does not exist" in payload["decision"]["signals"]["unavailable_sources"]["wiki"]
    )
    # options before CONFIG: "No such option '--json'" until session 37, as `route ask` takes them
    first = CliRunner().invoke(main, ["route", "--json", "-k", "1", str(config), "why do comets have tails?"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["hits"] == payload["hits"][:1]
    assert "Route queries across sources" in CliRunner().invoke(main, ["route", "--help"]).output


TICKETS = """
import datetime

from ragroute.types import Hit


class Tickets:
    name = "tickets"

    def search_many(self, queries, k, **kwargs):
        meta = {"opened": datetime.date(2024, 1, 2), "labels": {"printer", "jam"}}
        return [[Hit(doc_id="t1", score=0.5, source="tickets", rank=1, text="printer jam", metadata=meta)]
                for _ in queries]


def tickets():
    return Tickets()
"""


def test_route_json_of_a_factory_source_whose_hits_carry_values_json_lacks(workspace):
    """A `kind: python` source's hits carry what its retriever put in them (a date, a set): `route
    --json` printed a TypeError traceback ("not JSON serialisable: date") where the text output
    showed the hit; now the line holds them as JSON values (the date in ISO 8601, the set sorted)."""
    root, _ = workspace
    (root / "tickets.py").write_text(TICKETS)
    config = root / "tickets.yaml"
    config.write_text(
        "backend: torch\ncache_dir: cache\n"
        "sources:\n"
        "  astro: {index: indexes/astro, description: Astronomy and space.}\n"
        "  tickets: {kind: python, factory: tickets.py:tickets, description: Printer support tickets.}\n"
        "router: {kind: prototype, threshold: 0.0, max_routes: 2}\n"
    )
    result = CliRunner().invoke(main, ["route", str(config), "the printer has a paper jam", "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    payload = json.loads(result.stdout.splitlines()[-1])
    hit = next(h for h in payload["hits"] if h["source"] == "tickets")
    assert hit["metadata"] == {"opened": "2024-01-02", "labels": ["jam", "printer"]}


def test_route_rule_answers_without_retrieval(workspace):
    _, config = workspace
    result = CliRunner().invoke(main, ["route", str(config), "what is 17 times 3"])
    assert result.exit_code == 0, result.output
    assert "decision: none   decided by rule:arithmetic" in result.output


def test_route_fit_then_route_with_trained_router(workspace):
    root, config = workspace
    queries = root / "labelled.jsonl"
    rows = [
        ("how do stars form", "astro"),
        ("what is a comet made of", "astro"),
        ("biggest telescope mirror", "astro"),
        ("what is a galaxy", "astro"),
        ("how long to knead dough", "cook"),
        ("how to fix split mayonnaise", "cook"),
        ("best wine for braising", "cook"),
        ("how hot should the oven be", "cook"),
        ("hello there", "no"),
        ("thanks a lot", "no"),
        ("good morning", "no"),
        ("how are you", "no"),
    ]
    queries.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    out = root / "router"
    result = CliRunner().invoke(
        main,
        [
            "route",
            "fit",
            "--queries",
            str(queries),
            "--out",
            str(out),
            "--backend",
            "torch",
            "--cache-dir",
            str(root / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "CURRENT").is_file()
    # "no" is read as 'answer without retrieval' as gate fit reads it (it was a route named "no")
    assert "labels astro, cook, none ('no' read as 'answer without retrieval'" in result.output
    # fitted with the settings every routing benchmark measures: hashed n-grams included
    from ragroute.store import open_snapshot

    assert open_snapshot(out).manifest.params["features"]["hashed_dim"] == 4096
    trained = root / "trained.yaml"
    trained.write_text(config.read_text().split("router:")[0] + "router: {kind: trained, model: router}\n")
    result = CliRunner().invoke(
        main, ["route", str(trained), "which telescope has the largest mirror", "--json"]
    )
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout.strip().splitlines()[-1])["decision"]
    assert decision["chosen"] == ["astro"] and decision["decided_by"].startswith("trained")


def test_route_fit_needs_one_input(tmp_path):
    result = CliRunner().invoke(main, ["route", "fit", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "exactly one of --queries" in result.output


def _beir_collection(folder, words, splits):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d0", "text": " ".join(words)}) + "\n")
    rows = [json.dumps({"_id": f"q{i}", "text": f"{word} please"}) for i, word in enumerate(words)]
    (folder / "queries.jsonl").write_text("\n".join(rows) + "\n")
    for split in splits:
        (folder / "qrels" / f"{split}.tsv").write_text("".join(f"q{i}\td0\t1\n" for i in range(len(words))))


def test_route_fit_names_the_split_its_beir_folders_lack(tmp_path, monkeypatch, hashing_encoder):
    monkeypatch.setattr("ragroute.encode.load_encoder", lambda *_args, **_kwargs: hashing_encoder)
    root = tmp_path / "beir"
    _beir_collection(root / "astro", ["comet", "star", "orbit", "galaxy"], ["dev", "test"])
    _beir_collection(root / "cook", ["bread", "yeast", "oven", "sauce"], ["dev", "test"])
    _beir_collection(root / "it", ["printer", "laptop", "network", "driver"], ["dev"])
    fit = ["route", "fit", "--beir-root", str(root), "--out", str(tmp_path / "router")]
    nowhere = CliRunner().invoke(main, [*fit, "--split", "train"])
    assert nowhere.exit_code == 2
    assert (
        nowhere.output
        == f"error: {root}: no BEIR folder in it has qrels/train.tsv (splits there: dev, test)\n"
    )
    partly = CliRunner().invoke(main, [*fit, "--split", "test"])  # a label would be missing without a word
    assert partly.exit_code == 0, partly.output
    assert f"warning: {root}: 1 folder without qrels/test.tsv left out: it" in partly.stderr
    assert "on 8 queries, labels astro, cook" in partly.stdout


def test_route_fit_input_of_a_config_file_yields_to_the_other_one_typed(
    tmp_path, monkeypatch, hashing_encoder
):
    monkeypatch.setattr("ragroute.encode.load_encoder", lambda *_args, **_kwargs: hashing_encoder)
    root = tmp_path / "beir"
    _beir_collection(root / "astro", ["comet", "star", "orbit", "galaxy"], ["dev"])
    _beir_collection(root / "cook", ["bread", "yeast", "oven", "sauce"], ["dev"])
    labels = tmp_path / "labels.jsonl"
    rows = [("what is a comet", "astro"), ("how do stars form", "astro"), ("knead dough", "cook")]
    labels.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text(f"route:\n  fit: {{queries: {labels}, split: dev}}\n")
    fit = ["--config", str(defaults), "route", "fit", "--out", str(tmp_path / "router")]
    from_file = CliRunner().invoke(main, fit)  # the file's split does not apply to its queries: left out
    assert from_file.exit_code == 0 and "on 3 queries" in from_file.output, from_file.output
    typed = CliRunner().invoke(main, [*fit, "--beir-root", str(root)])
    assert typed.exit_code == 0 and "on 8 queries, labels astro, cook" in typed.output, typed.output
    split = CliRunner().invoke(main, [*fit, "--split", "test"])
    assert split.exit_code == 2
    assert (
        split.output
        == "error: --split does not apply to --queries (it names the qrels split of --beir-root)\n"
    )


def test_bad_routing_config_is_one_line(tmp_path):
    config = tmp_path / "routing.yaml"
    config.write_text("router: {kind: prototype}\n")
    result = CliRunner().invoke(main, ["route", str(config), "hello"])
    assert result.exit_code == 2 and result.output.startswith("error:") and "sources" in result.output


def test_invalid_yaml_and_missing_config_are_one_line(tmp_path):
    config = tmp_path / "routing.yaml"
    config.write_text("sources: [unclosed\n")
    result = CliRunner().invoke(main, ["route", str(config), "hello"])
    assert result.exit_code == 2 and "routing config" in result.output and "not valid YAML" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["route", str(tmp_path / "nope.yaml"), "hello"])
    assert result.exit_code == 2 and result.output.startswith("error: cannot read routing config")


def test_eval_scores_the_pipeline_of_a_routing_config(workspace):
    root, config = workspace
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": f"{t}-{i}", "text": x}) for t, xs in TOPICS.items() for i, x in enumerate(xs)
        )
    )
    (beir / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "comet ion tail solar wind"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "knead bread dough"})
    )
    (beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tastro-0\t1\nq2\tcook-0\t1\n")
    result = CliRunner().invoke(main, ["eval", "--config", str(config), "--data", str(beir), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["kind"] == "pipeline" and payload["queries"] == 2
    assert payload["config"] == str(config) and "index" not in payload
    assert payload["hit@1"] == 1.0 and payload["ndcg@10"] == 1.0
    both = CliRunner().invoke(main, ["eval", "--config", str(config), "--index", "x", "--data", str(beir)])
    assert both.exit_code == 2 and "give exactly one of --index" in both.output


def test_route_scope_option_opens_sources_with_access_labels(workspace):
    root, _ = workspace
    config = root / "scoped.yaml"
    config.write_text(
        "backend: torch\ncache_dir: cache\n"
        "sources:\n"
        "  astro: {index: indexes/astro, description: Astronomy and space., access: [staff]}\n"
        "  cook: {index: indexes/cook, description: Cooking and recipes.}\n"
        "router: {kind: prototype, threshold: 0.3, max_routes: 2}\n"
    )
    query = "why do comets have tails?"
    public = CliRunner().invoke(main, ["route", str(config), query, "--json"])
    assert public.exit_code == 0, public.output
    hidden = json.loads(public.stdout.strip().splitlines()[-1])
    assert "astro" not in hidden["decision"]["chosen"]
    assert all(hit["source"] != "astro" for hit in hidden["hits"])
    staff = CliRunner().invoke(main, ["route", str(config), query, "--scope", "staff", "--json"])
    assert staff.exit_code == 0, staff.output
    shown = json.loads(staff.stdout.strip().splitlines()[-1])
    assert shown["decision"]["chosen"][0] == "astro" and shown["hits"][0]["source"] == "astro"


def test_route_fit_reads_the_none_label_as_gate_fit_does_and_says_so():
    from ragroute.cli.route import _none_label
    from ragroute.errors import RagrouteError

    assert _none_label(None, ["a", "no", "b"])[0] == "no"
    assert _none_label(None, ["a", "No_Tool"])[0] == "No_Tool"
    assert _none_label(None, ["a", "No-Tool"])[0] == "No-Tool"  # as gate fit reads it (session 38)
    assert _none_label(None, ["a", "b"]) == (None, "")
    assert _none_label(None, ["a", "none"]) == (None, "")  # "none" is the none route already
    assert _none_label("", ["a", "no"]) == (None, "")  # '' keeps "no" a route
    assert _none_label("skip", ["a", "skip"]) == ("skip", "")
    with pytest.raises(RagrouteError, match="the labels hold no and no_tool"):
        _none_label(None, ["a", "no", "no_tool"])


def test_route_fit_refuses_hidden_units_for_logreg(tmp_path):
    rows = tmp_path / "labels.jsonl"
    rows.write_text('{"text": "a question", "label": "x"}\n')
    result = CliRunner().invoke(
        main, ["route", "fit", "--queries", str(rows), "--out", str(tmp_path / "r"), "--hidden", "64"]
    )
    assert result.exit_code == 2 and "--hidden does not apply to --model logreg" in result.output


@pytest.fixture(scope="module")
def departments(tmp_path_factory):
    """One source whose documents carry a `dept` (and a numeric `year`) in their metadata."""
    root = tmp_path_factory.mktemp("filters")
    rows = [
        ("hr-0", "Holiday leave requests go to your manager.", "hr", 2024),
        ("hr-1", "Parental leave lasts sixteen weeks.", "hr", 2023),
        ("it-0", "Laptop leave-behind policy: lock your screen.", "it", 2024),
        ("it-1", "Request leave of a shared printer through the helpdesk.", "it", 2023),
    ]
    docs = [Document(id=i, text=t, metadata={"dept": d, "year": y}) for i, t, d, y in rows]
    save_index(build_index(docs, "bm25", name="policies"), root / "indexes" / "policies")
    config = root / "routing.yaml"
    config.write_text(
        "backend: torch\ncache_dir: cache\n"
        "sources:\n  policies: {index: indexes/policies, description: Company policies.}\n"
        "router: {kind: prototype}\n"
    )
    return config


def test_route_and_ask_take_filters_as_query_does(departments):
    """`ragroute route CONFIG TEXT --filter dept=hr` was "No such option '--filter'" (only `query` had
    it): the routed commands restrict their hits with the same KEY=VALUE filters, typed values included,
    and refuse a key no document carries in one line."""
    config = str(departments)

    def ids(*args):
        result = CliRunner().invoke(main, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return sorted(h["doc_id"] for h in json.loads(result.stdout.strip().splitlines()[-1])["hits"])

    assert ids("route", config, "leave") == ["hr-0", "hr-1", "it-0", "it-1"]
    assert ids("route", config, "leave", "--filter", "dept=hr") == ["hr-0", "hr-1"]
    assert ids("route", "ask", config, "leave", "--filter", "dept=it", "--filter", "year=2024") == ["it-0"]
    assert ids("route", "--filter", "year=2023", config, "leave") == ["hr-1", "it-1"]  # options first
    # the step-wise command: every step searches with the filters
    asked = CliRunner().invoke(main, ["ask", config, "leave", "--no-llm", "--filter", "dept=it", "--json"])
    assert asked.exit_code == 0, asked.output
    steps = json.loads(asked.stdout.strip().splitlines()[-1])["steps"]
    assert {h["doc_id"] for step in steps for h in step["hits"]} == {"it-0", "it-1"}
    for command in (["route", config], ["ask", config, "--no-llm"]):
        result = CliRunner().invoke(main, [*command, "leave", "--filter", "dpet=hr"])
        assert result.exit_code == 2 and result.stdout == "", result.output
        assert (
            result.stderr.strip()
            == "error: filters: no document has metadata key 'dpet' (keys: dept, year); did you mean 'dept'?"
        )
    bad = CliRunner().invoke(main, ["route", config, "leave", "--filter", "dept"])
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: bad --filter 'dept': expected KEY=VALUE"


def test_ask_refuses_a_timeout_with_no_llm_to_time(departments, tmp_path):
    """`ask --no-llm --timeout 5` ran and said nothing of the timeout it could not apply (until session
    50); a --config default of it is left out where it does not apply, as every such default is."""
    config = str(departments)
    result = CliRunner().invoke(main, ["ask", config, "leave", "--no-llm", "--timeout", "5"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --timeout does not apply to --no-llm (it times the planning")
    # --max-steps likewise (until session 55 accepted, and one step run whatever it said)
    result = CliRunner().invoke(main, ["ask", config, "leave", "--no-llm", "--max-steps", "3"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "error: --max-steps does not apply to --no-llm (it retrieves the question itself, once: one step)\n"
    )
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("ask: {timeout_s: 5, max_steps: 3}\n")
    result = CliRunner().invoke(main, ["--config", str(defaults), "ask", config, "leave", "--no-llm"])
    assert result.exit_code == 0, result.output


def test_ask_without_an_llm_says_a_rule_not_a_gate_routed_to_none(tmp_path):
    """With no gate in the config, a rule routing to `none` was said as "the gate chose the model's
    own answer" (until session 55)."""
    docs = [Document(id="d0", text="Comets grow an ion tail.")]
    save_index(build_index(docs, "bm25", name="astro"), tmp_path / "astro")
    config = tmp_path / "routing.yaml"
    config.write_text(
        "sources:\n  astro: {index: astro, description: Astronomy.}\nrouter: {kind: fixed}\n"
        "signals:\n  sum: {type: regex, pattern: '^\\d+\\+\\d+$'}\n"
        "rules:\n  - {name: arithmetic, when: sum, then: {route: none}}\n"
    )
    result = CliRunner().invoke(main, ["ask", str(config), "2+2", "--no-llm"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "answer: (none: the routing chose no retrieval (none) and --no-llm asks no model; nothing was "
        "retrieved)"
    )
    assert "0 retrieval calls" in result.stdout


def test_route_filters_on_a_store_source_match_the_text_and_say_what_they_cannot(tmp_path):
    """A qdrant/lancedb source matches text and integers: `route --filter price=12.5` (the text and
    the number) failed with the store's error, as `query` did until this session; now the text is
    matched and stderr says the number is not."""
    pytest.importorskip("lancedb")
    rows = [
        {"_id": "p", "text": "blue pen", "price": "12.5"},
        {"_id": "q", "text": "red pen", "price": "9"},
        {"_id": "r", "text": "green pen", "price": "12.5"},
        {"_id": "s", "text": "black pen", "price": "3"},
    ]
    data = tmp_path / "pens.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    build = ["build", str(data), "--out", str(tmp_path / "pens"), "--method", "lancedb"]
    assert CliRunner().invoke(main, [*build, "--lancedb", str(tmp_path / "v")]).exit_code == 0
    config = tmp_path / "r.yaml"
    config.write_text("sources:\n  pens: {index: pens, description: Pens.}\nrouter: {kind: fixed}\n")
    result = CliRunner().invoke(main, ["route", str(config), "pen", "--filter", "price=12.5", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout.strip().splitlines()[-1])["hits"]
    assert sorted(h["doc_id"] for h in hits) == ["p", "r"]
    assert "note: a lancedb index matches text and integers only: --filter price=12.5 matches the text " in (
        result.stderr
    )


def test_route_probabilities_never_read_across_the_threshold_beside_them():
    """Session 43: a route's probability printed to three digits read 0.300 beside threshold=0.3
    for a route not queried (0.29996 < 0.3), and the best route 0.900 beside hedge_below=0.9 for a
    decision that hedged (0.8996 < 0.9): printed with the digits that keep the comparison."""
    from ragroute.cli.route import format_decision
    from ragroute.types import Decision, TraceStep

    def routes_line(routes, chosen, threshold, hedge_below):
        select = {"threshold": threshold, "max_routes": 2, "hedge_below": hedge_below, "chosen": chosen}
        decision = Decision(
            chosen=chosen,
            routes=routes,
            signals={},
            decided_by="ensemble",
            trace=[TraceStep("select", select)],
        )
        return format_decision(decision)[1]

    assert routes_line({"a": 0.29996, "b": 0.70004}, ["b"], 0.3, None) == "  routes: b 0.700, a 0.29996"
    assert routes_line({"a": 0.8996, "b": 0.1004}, ["a", "b"], 0.1, 0.9) == "  routes: a 0.8996, b 0.100"
    assert routes_line({"a": 0.25, "b": 0.75}, ["b", "a"], 0.25, None) == "  routes: b 0.750, a 0.250"


@pytest.mark.parametrize("held", ["artifact", "folder", "under a file", "0.1 router"])
def test_route_fit_checks_its_out_before_any_encoding(tmp_path, monkeypatch, hashing_encoder, held):
    """`route fit --out` at another family's artifact, a folder of the user's files or a path under
    a file was refused only when saving, after every query was encoded and the router trained
    (until session 53); a 0.1 router folder is still refitted in place."""
    rows = tmp_path / "labels.jsonl"
    labelled = [("what is a comet", "astro"), ("how do stars form", "astro"), ("knead dough", "cook")]
    rows.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in labelled))
    if held != "0.1 router":
        out, message = occupied_out(
            tmp_path, held, ("gate", "trained", "gate.npz", "a gate (trained), not a router")
        )
    else:
        out = tmp_path / "router"
        out.mkdir()
        (out / "router.json").write_text("{}")
        (out / "router_weights.npz").write_bytes(b"")
        message = ""

    def no_encoding(*_args, **_kwargs):
        raise AssertionError("an encoder was loaded before --out was checked")

    encoder = no_encoding if message else lambda *_args, **_kwargs: hashing_encoder
    monkeypatch.setattr("ragroute.encode.load_encoder", encoder)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    result = CliRunner().invoke(main, ["route", "fit", "--queries", str(rows), "--out", str(out)])
    if not message:  # the 0.1 files are replaced by the new build
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == [".lock", "CURRENT", "builds"]
        return
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before
