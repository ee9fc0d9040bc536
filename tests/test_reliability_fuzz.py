"""Fuzzing every loader and the query path (``ragroute.reliability.fuzz``): a short, deterministic run
(hypothesis ``derandomize``) must find no unhandled exception; the bugs it found once stay fixed.

The long run (>= 10,000 cases per loader) is ``ragroute bench reliability``.
"""

from __future__ import annotations

import json

import pytest

from ragroute.errors import (
    EmptyQueryError,
    InvalidQueryError,
    RagrouteError,
    check_query,
    check_setting,
    lone_surrogate,
)
from ragroute.reliability.fuzz import TARGETS, mutate_tree, run_fuzz


def test_short_fuzz_run_finds_no_unhandled_exception():
    result = run_fuzz(80, cases={"routing_config": 40, "cli_defaults": 50, "query": 60})
    assert set(result["per_loader"]) == set(TARGETS)
    assert all(stats["cases"] > 0 for stats in result["per_loader"].values()), result["per_loader"]
    assert result["fuzz_cases"] == sum(s["cases"] for s in result["per_loader"].values())
    assert result["fuzz_failures"] == 0, "\n".join(result["failures"])


def test_every_loader_of_the_issue_is_fuzzed():
    assert {
        "beir_corpus", "beir_queries", "beir_qrels", "hipporag_json", "skill_md", "mcp_json", "openapi_json",
        "openapi_yaml", "csv", "routing_config", "corpora_yaml", "query",
    } <= set(TARGETS)  # fmt: skip


def test_tree_mutations_replace_delete_add_and_misspell():
    tree = {"router": {"kind": "knn", "k": 3}}
    assert mutate_tree(tree, [("replace", 3, "", [1])]) == {"router": {"kind": "knn", "k": [1]}}
    assert mutate_tree(tree, [("delete", 3, "", None)]) == {"router": {"kind": "knn"}}
    assert mutate_tree(tree, [("add", 1, "x", 1)]) == {"router": {"kind": "knn", "k": 3, "x": 1}}
    misspelt = mutate_tree(tree, [("typo", 5, "", None)])
    assert list(misspelt) == ["routerr"] and misspelt["routerr"] == tree["router"]
    assert tree == {"router": {"kind": "knn", "k": 3}}  # the seed is never changed


# ----------------------------------------------------------------------------- query text: refused


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" \t\n", "empty"),
        (b"caf\xe9".decode("utf-8", "surrogateescape"), "undecodable byte 0xe9 at character 4"),
        ("half \ud800 pair", "lone surrogate U+D800"),
        ("x" * 100_001, "the limit is 100,000"),
        # nothing but NUL / zero-width / direction marks / BOM: it was searched and returned the
        # nearest documents for a query with no content
        ("\x00", "no visible characters"),
        (" \u200b\u200f\ufeff\x00 ", "first U+200B"),
    ],
)
def test_queries_that_are_not_searchable_text_are_refused_in_one_line(text, message):
    with pytest.raises(InvalidQueryError) as caught:
        check_query(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_empty_query_error_is_an_invalid_query_error_and_nul_is_kept():
    assert issubclass(EmptyQueryError, InvalidQueryError)
    assert check_query(" a\x00b ") == "a\x00b"
    assert check_query("\U0001d518 " * 3) == "\U0001d518 \U0001d518 \U0001d518"


def test_lone_surrogates_are_found_in_nested_values():
    assert lone_surrogate({"a": ["fine", {"b": "x\udc80"}]}).startswith("undecodable byte 0x80")
    assert lone_surrogate({"\ud83d": 1}).startswith("lone surrogate U+D83D")
    assert lone_surrogate({"a": ["\U0001f600"]}) is None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The fuzzer's tiny indexes and routing config (token-hashing encoder, no model)."""
    from ragroute.reliability.fuzz import build_workspace

    return build_workspace(tmp_path_factory.mktemp("fuzz-workspace"))


def test_search_and_routing_refuse_surrogates_before_the_tokenizer(workspace):
    for index in workspace.indexes.values():
        with pytest.raises(InvalidQueryError):
            index.search("comet \udcff", 3)
    with pytest.raises(InvalidQueryError):
        workspace.pipeline.retrieve("telescope \ud800")


# ----------------------------------------------------------------------------- loaders: found bugs


def test_json_escape_of_half_a_surrogate_pair_is_a_bad_record(tmp_path):
    from ragroute.errors import CorpusFormatError
    from ragroute.loaders import LoadReport, load_beir_corpus, load_hipporag_corpus

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"_id": "a", "text": "fine \\ud83d\\ude00"}\n{"_id": "b", "text": "broken \\ud800"}\n',
        encoding="utf-8",
    )
    report = LoadReport()
    with pytest.warns(UserWarning, match="lone surrogate"):
        docs = load_beir_corpus(corpus, report=report)
    assert [d.id for d in docs] == ["a"] and docs[0].text == "fine \U0001f600" and report.n_skipped == 1
    with pytest.raises(CorpusFormatError, match="line 2: not valid text"):
        load_beir_corpus(corpus, on_error="raise")
    hipporag = tmp_path / "corpus.json"
    hipporag.write_text(json.dumps([{"title": "t", "text": "\ud800"}, {"text": "ok"}]), encoding="utf-8")
    with pytest.warns(UserWarning, match="lone surrogate"):
        assert [d.text for d in load_hipporag_corpus(hipporag)] == ["ok"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: 2001-02-30\n", "invalid YAML value"),
        ("a: !!int x\n", "invalid YAML value"),
        ("a: !!timestamp x\n", "invalid YAML value"),
        ("a: !!bool maybe\n", "invalid YAML value"),  # a KeyError traceback until session 55
        ("a: !!int\n", "invalid YAML value"),  # an IndexError traceback until session 55
        ("a: &a [*a]\n", "an alias refers to a value that contains it"),
        ("[" * 5000 + "]" * 5000, "invalid YAML"),
        ('a: "\\ud800"\n', "invalid YAML"),
    ],
)
def test_yaml_files_that_parse_into_nonsense_are_one_line_errors(tmp_path, text, problem):
    from ragroute.yaml_files import read_yaml

    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RagrouteError) as caught:
        read_yaml(path, "routing config")
    assert problem.replace("invalid", "not valid") in str(caught.value) or problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_yaml_alias_bombs_are_refused():
    from ragroute.yaml_files import MAX_YAML_VALUES, YamlProblem, parse_yaml

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert MAX_YAML_VALUES < 10**9
    with pytest.raises(YamlProblem, match="aliases expand it"):
        parse_yaml("\n".join(lines))


@pytest.mark.parametrize("tag", ["!!pairs", "!!omap"])
def test_yaml_alias_bombs_inside_pairs_are_refused(tag):
    """``!!pairs`` and ``!!omap`` build lists of tuples, and the expansion check did not look into
    tuples until session 55: 10**7 values passed it (and lone_surrogate walked all of them)."""
    from ragroute.yaml_files import YamlProblem, parse_yaml

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 7):
        lines.append(f"a{i}: &a{i} {tag} [{', '.join(f'{{k{j}: *a{i - 1}}}' for j in range(10))}]")
    with pytest.raises(YamlProblem, match="aliases expand it"):
        parse_yaml("\n".join(lines))
    assert parse_yaml(f"p: {tag} [{{a: 1}}, {{b: [2]}}]") == {"p": [("a", 1), ("b", [2])]}


def test_openapi_and_mcp_schemas_with_odd_types_load(tmp_path):
    from ragroute.skills.load_mcp import load_mcp
    from ragroute.skills.load_openapi import load_openapi

    schema = {
        "type": "object",
        "required": [["x"]],
        "properties": {"x": {"type": "string"}},
        "allOf": [{"properties": [1], "required": 3}],
    }
    mcp = {"tools": [{"name": "t", "description": "d", "inputSchema": schema}]}
    (tmp_path / "tools.json").write_text(json.dumps(mcp), encoding="utf-8")
    assert [s.name for s in load_mcp(tmp_path / "tools.json").skills] == ["t"]
    operation = {"operationId": "a", "summary": "A", "tags": True, "parameters": -1}
    spec = {"openapi": "3.0.0", "info": {"title": "T"}, "paths": {"/a": {"get": operation}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    assert len(load_openapi(tmp_path / "spec.json").skills) == 1
    body = {"in": "body", "name": "pet", "schema": {"type": "object"}}
    swagger = {"swagger": "2.0", "consumes": True,
               "paths": {"/p": {"post": {"operationId": "p", "parameters": [body]}}}}  # fmt: skip
    (tmp_path / "swagger.json").write_text(json.dumps(swagger), encoding="utf-8")
    with pytest.warns(UserWarning, match="no summary or description"):
        assert "Request body (True)" in load_openapi(tmp_path / "swagger.json").skills[0].body


def test_settings_name_the_expected_type():
    with pytest.raises(RagrouteError, match=r"^r.yaml: router: 'threshold' must be a number, not a list$"):
        check_setting([1], "number", "r.yaml: router", "threshold")
    with pytest.raises(RagrouteError, match="'k' must be at least 1, not 0"):
        check_setting(0, "integer", "", "k", minimum=1)
    with pytest.raises(RagrouteError, match="must be an integer, not a boolean"):
        check_setting(True, "integer", "", "k")
    assert check_setting(None, "number", "", "temperature", optional=True) is None
    # an integer past a float's range (YAML's 1 and 400 zeros): an OverflowError until session 51
    with pytest.raises(RagrouteError, match="'threshold' must be a number, not an integer past a float's"):
        check_setting(10**400, "number", "", "threshold")


@pytest.mark.parametrize(
    ("router", "message"),
    [
        ({"kind": "prototype", "threshold": [0.3]}, "'threshold' must be a number, not a list"),
        ({"kind": "prototype", "max_routes": 0}, "'max_routes' must be at least 1"),
        ({"kind": "knn", "examples": "labels.jsonl", "k": {"a": 1}}, "'k' must be an integer, not a mapping"),
        ({"kind": "ensemble", "members": "prototype"}, "'members' must be a list of strings, not a string"),
    ],
)
def test_router_settings_of_the_wrong_type_are_refused(workspace, router, message):
    import yaml

    from ragroute.reliability.fuzz import ROUTING_CONFIG
    from ragroute.route.config import load_routing

    config = workspace.root / "case.yaml"
    config.write_text(
        yaml.safe_dump({"sources": ROUTING_CONFIG["sources"], "router": router}), encoding="utf-8"
    )
    with pytest.raises(RagrouteError, match=message):
        load_routing(config, encoder=workspace.encoder)


def test_gate_settings_of_the_wrong_type_are_refused(workspace):
    import yaml

    from ragroute.reliability.fuzz import ROUTING_CONFIG
    from ragroute.route.config import load_routing

    config = workspace.root / "case.yaml"
    for gate, message in (
        (
            {"kind": "threshold", "signal": "rarity", "value": ["min_zipf"], "below": 3},
            "'value' must be a string",
        ),
        ({"kind": "threshold", "signal": [1], "below": 3}, "a gate signal is a kind name or a"),
        (
            {"kind": "threshold", "signal": {"kind": "knn_vote", "k": "ten"}, "above": 0.5},
            "'k' must be an integer",
        ),
    ):
        config.write_text(
            yaml.safe_dump({"sources": ROUTING_CONFIG["sources"], "gate": gate}), encoding="utf-8"
        )
        with pytest.raises(RagrouteError, match=message):
            load_routing(config, encoder=workspace.encoder)


def test_llm_and_reranker_settings_of_the_wrong_type_are_refused():
    from ragroute.llm.settings import check_llm_settings
    from ragroute.rerank.cross_encoder import cross_encoder_reranker

    with pytest.raises(RagrouteError, match="llm: 'max_new_tokens' must be at least 1, not 0"):
        check_llm_settings({"kind": "local", "max_new_tokens": 0})
    with pytest.raises(RagrouteError, match="'replies' must be a list of strings, not a string"):
        check_llm_settings({"kind": "scripted", "replies": "Paris"})
    with pytest.raises(RagrouteError, match="'rules' must map substrings to replies"):
        check_llm_settings({"kind": "scripted", "rules": {"capital": ["Paris"]}})
    with pytest.raises(RagrouteError, match="reranker: 'candidates' must be an integer, not a string"):
        cross_encoder_reranker({"kind": "cross-encoder", "candidates": "20"}, None)


# ----------------------------------------------------------------------------- the harness itself


def test_every_reader_of_a_case_runs_even_after_another_refused_it(workspace, monkeypatch):
    """An MCP file is read by `load_mcp` and by `load_catalogue`'s detection: a file the first one
    refuses (in one line) must still reach the second (it reached it in 1 case of 10)."""
    import ragroute.skills

    real, calls = ragroute.skills.load_catalogue, []
    monkeypatch.setattr(ragroute.skills, "load_catalogue", lambda *a, **k: calls.append(a) or real(*a, **k))
    TARGETS["mcp_json"].check(workspace, b'{"tools": [{"name": ')  # load_mcp: not valid JSON
    assert len(calls) == 1
