"""`ragroute config check`, closest-key suggestions in the loaders, and the stderr warning for a
source left out of a routing config. Offline and fast: indexes are built with a hashing encoder and
no model is loaded."""

from __future__ import annotations

import json
import os
import re
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HashingEncoder

from ragroute.cli import main
from ragroute.errors import RagrouteError, check_keys, unknown_keys_message
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.types import Document

TOPICS = {
    "astro": ["Comets grow an ion tail pushed by the solar wind.", "Neutron stars are collapsed cores."],
    "cook": ["Knead bread dough until it is smooth.", "Whisk oil slowly into egg yolk for mayonnaise."],
}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # what the default `encoder:` resolves to, dim 384


def documents(topic: str) -> list[Document]:
    return [Document(id=f"{topic}-{i}", text=text) for i, text in enumerate(TOPICS[topic])]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """bm25 indexes astro and cook; `minilm`: a dense index recorded as built with the default
    encoder (same id and dim, so the check passes); `other`: one built with another encoder."""
    root = tmp_path_factory.mktemp("config-check")
    for topic in TOPICS:
        save_index(build_index(documents(topic), "bm25", name=topic), root / "indexes" / topic)
    same = HashingEncoder(dim=384, model_id=MINILM)
    save_index(build_index(documents("astro"), "dense", encoder=same), root / "indexes" / "minilm")
    other = HashingEncoder(dim=64, model_id="test/hashing")
    save_index(build_index(documents("cook"), "dense", encoder=other), root / "indexes" / "other")
    (root / "models" / "plain").mkdir(parents=True)  # a plain model folder (a CrossEncoder's files)
    (root / "models" / "plain" / "config.json").write_text('{"max_position_embeddings": 512}')
    return root


GOOD = """\
sources:
  astro: {index: indexes/astro, description: Astronomy and space.}
  cook: {index: indexes/cook, description: Cooking and recipes.}
  dense: {index: indexes/minilm, corpus: indexes/astro, description: Astronomy again.}
router: {kind: prototype, threshold: 0.3, max_routes: 2}
signals:
  math: {type: regex, pattern: '\\d+ times \\d+'}
rules:
  - {name: arithmetic, when: math, then: {route: none}}
"""


def check(path, *args):
    return CliRunner().invoke(main, ["config", "check", str(path), *args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_good_config_passes_and_lists_sources(workspace):
    config = workspace / "routing.yaml"
    config.write_text(GOOD)
    result = check(config)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    assert f"{config}: routing config" in out
    assert f"encoder: all-MiniLM-L6-v2 -> {MINILM}, dim 384" in out
    assert "sources: 3 (3 usable)" in out
    for name, folder, kind in (
        ("astro", "astro", "bm25"),
        ("cook", "cook", "bm25"),
        ("dense", "minilm", "dense"),
    ):
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert str((workspace / "indexes" / folder).resolve()) in line and f"{kind}, 2 documents" in line
    assert f"encoder {MINILM} (dim 384)" in out
    assert "router: prototype (threshold 0.3, max_routes 2)" in out
    assert "policy: 1 signal, 1 rule" in out
    assert out.strip().splitlines()[-1] == "ok"


def test_a_misspelt_source_key_is_a_config_error_not_a_broken_index(workspace):
    """A source whose only problem is a misspelt key (`descripton:`) was listed `BROKEN` beside a
    fine index, as an index that cannot be read is (a user walkthrough): it is a `CONFIG ERROR`, its
    index is still read, and `BROKEN` stays for an index that cannot be."""
    config = workspace / "misspelt.yaml"
    config.write_text(
        GOOD.replace("cook: {index: indexes/cook, description:", "cook: {index: indexes/cook, descripton:")
    )
    result = check(config)
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "unknown key 'descripton'" in result.stderr
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("cook "))
    assert line.endswith("bm25, 2 documents  CONFIG ERROR") and "BROKEN" not in result.stdout
    assert "sources: 3 (2 usable)" in result.stdout
    payload = json.loads(check(config, "--json").stdout.strip().splitlines()[-1])
    assert {s["name"]: s["status"] for s in payload["sources"]}["cook"] == "config error"
    (workspace / "indexes" / "torn").mkdir(exist_ok=True)  # an index folder that cannot be read
    config.write_text(GOOD.replace("indexes/cook", "indexes/torn"))
    result = check(config)
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("cook "))
    assert result.exit_code == 1 and line.endswith("BROKEN")


def test_two_sources_over_one_corpus_without_a_shared_corpus_are_noted(workspace):
    """A BM25 and a dense index built apart over the same documents are two collections unless
    they name one ``corpus:``: fusion lists each document twice. Loading warned; until session 39
    ``config check`` said "ok" and nothing else."""
    config = workspace / "twice.yaml"
    config.write_text(GOOD.replace("corpus: indexes/astro, ", ""))
    result = check(config)
    assert result.exit_code == 0, result.output  # a note, not a problem
    assert result.stderr.strip() == (
        f"warning: {config}: sources 'astro' and 'dense' hold the same 2 document ids in two "
        "collections: their hits of one document would be listed twice; if they index one corpus, "
        "give both the same 'corpus:' (e.g. corpus: indexes/astro)"
    )
    with pytest.warns(UserWarning, match="sources 'astro' and 'dense' hold the same 2 document ids"):
        from ragroute.route.config import load_routing

        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))


def test_sources_of_one_corpus_holding_other_documents_are_noted(workspace):
    """`corpus:` naming an index of other documents: fusion would merge hits of one id as one
    document. Loading warned (session 43); `config check` said "ok" and nothing else."""
    config = workspace / "other-documents.yaml"
    config.write_text(GOOD.replace("corpus: indexes/astro, ", "corpus: indexes/cook, "))
    result = check(config)
    assert result.exit_code == 0, result.output  # a note, not a problem
    assert (
        f"warning: {config}: sources 'cook' and 'dense' are one collection ({workspace}/indexes/cook) "
        "but hold different documents (2 and 2 ids, 4 in only one)"
    ) in result.stderr
    config.write_text(GOOD)
    assert "hold different documents" not in check(config).stderr


def test_damaged_files_and_changed_model_folders_are_problems(workspace, tmp_path):
    """Only manifests were read: an index whose data file was damaged passed as usable (and the
    route then dropped it), as did one built with the config's encoder before its folder changed."""
    import shutil

    from ragroute.store import open_snapshot

    damaged = tmp_path / "damaged"
    shutil.copytree(workspace / "indexes" / "astro", damaged)
    docs = open_snapshot(damaged, family="index", verify=False).path / "docs.jsonl"
    docs.write_text(docs.read_text().replace("Comets", "Komets"))

    class Described(HashingEncoder):
        def describe(self):
            return {**super().describe(), "weights": "0123456789abcdef"}  # another state of the folder

    stale = tmp_path / "stale"
    save_index(build_index(documents("astro"), "dense", encoder=Described(dim=384, model_id=MINILM)), stale)
    config = tmp_path / "routing.yaml"
    config.write_text(f"sources:\n  a: {{index: {damaged}}}\n  b: {{index: {stale}}}\n")
    result = check(config)
    assert result.exit_code == 1
    errors = error_lines(result)
    assert len(errors) == 2, errors
    assert "source 'a'" in errors[0] and "docs.jsonl is corrupt: checksum mismatch" in errors[0]
    assert "source 'b'" in errors[1]
    assert "(weights 0123456789abcdef), whose files have changed since" in errors[1]
    quick = check(config, "--no-verify")  # manifests only: the damaged file goes unread
    assert quick.exit_code == 1 and len(error_lines(quick)) == 1 and "source 'b'" in error_lines(quick)[0]


def test_json_report(workspace):
    config = workspace / "routing.yaml"
    config.write_text(GOOD)
    result = check(config, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["problems"] == []
    assert [s["name"] for s in report["sources"]] == ["astro", "cook", "dense"]
    assert report["sources"][2]["encoder"]["model_id"] == MINILM and report["router"]["kind"] == "prototype"


BAD = {
    "typo'd key": (
        GOOD.replace("sources:", "sorces: {}\nsources:", 1),
        "{config}: unknown key 'sorces'; did you mean 'sources'?",
    ),
    "missing index": (
        GOOD.replace("  dense:", "  wiki: {index: indexes/missing}\n  dense:"),
        "{config}: source 'wiki': index {root}/indexes/missing does not exist",
    ),
    "another encoder": (
        GOOD.replace("indexes/minilm", "indexes/other"),
        "{config}: source 'dense': index {root}/indexes/other was built with encoder 'test/hashing' "
        "(dim 64), not the config's encoder 'all-MiniLM-L6-v2' ("
        + MINILM
        + ", dim 384); set 'encoder: test/hashing' or rebuild the index",
    ),
    "unregistered source kind": (
        GOOD.replace("  dense:", "  web: {kind: lamaindex, factory: 'x:y'}\n  dense:"),
        "{config}: source 'web': unknown source kind 'lamaindex': registered ones are index, llamaindex, "
        "langchain, python; did you mean 'llamaindex'?",
    ),
    "typo'd source key": (
        GOOD.replace("description: Cooking", "descripton: Cooking"),
        "{config}: source 'cook' (kind index): unknown key 'descripton'; did you mean 'description'?",
    ),
    "typo'd router key": (
        GOOD.replace("threshold: 0.3", "treshold: 0.3"),
        "{config}: router: unknown router key 'treshold'; did you mean 'threshold'?",
    ),
    "route threshold above 1": (
        GOOD.replace("threshold: 0.3", "threshold: 1.5"),
        "{config}: router: 'threshold' must be at most 1, not 1.5",
    ),
    "router setting out of range": (
        GOOD.replace("max_routes: 2", "max_routes: 2, bank_dim: 0"),
        "{config}: router: 'bank_dim' must be at least 1, not 0",
    ),
    "none threshold above any similarity": (  # every query would be routed to none
        GOOD.replace("max_routes: 2", "max_routes: 2, none_threshold: 2"),
        "{config}: router: 'none_threshold' must be at most 1, not 2",
    ),
    "temperature of zero": (
        GOOD.replace("max_routes: 2", "max_routes: 2, temperature: 0"),
        "{config}: router: 'temperature' must be above 0, not 0",
    ),
    "exponent YAML reads as text": (
        GOOD.replace("max_routes: 2", "max_routes: 2, temperature: 1e-9"),
        "{config}: router: 'temperature' must be a number, not a string ('1e-9': YAML reads an exponent "
        "without a dot as text",
    ),
    "source named none": (
        GOOD.replace("  dense:", "  none: {index: indexes/astro}\n  dense:"),
        "{config}: source 'none': a source may not be named 'none': the route that retrieves nothing",
    ),
    "threshold gate without a side": (
        GOOD + "gate: {kind: threshold, signal: rarity, value: min_zipf}\n",
        "{config}: gate: a threshold gate needs exactly one of 'above' and 'below'",
    ),
    "threshold gate value the signal lacks": (
        GOOD + "gate: {kind: threshold, signal: rarity, value: nosuch, below: 3}\n",
        "{config}: gate: signal rarity has no value 'nosuch': it has min_zipf, mean_zipf",
    ),
    "gate setting of the wrong type": (
        GOOD + "gate: {kind: threshold, signal: rarity, value: min_zipf, below: abc}\n",
        "{config}: gate: 'below' must be a number, not a string",
    ),
    "gate signal that learns without examples": (
        GOOD + "gate: {kind: threshold, signal: {kind: knn_vote, k: 10}, above: 0.5}\n",
        "{config}: gate: signal knn_vote learns from labelled queries: give 'examples:'",
    ),
    # session 36: each of these passed `config check` and then failed to load, or loaded a gate
    # that decided nonsense (NaN, a flipped confidence, a prompt without the query)
    "threshold gate scale of zero": (
        GOOD + "gate: {kind: threshold, signal: rarity, value: min_zipf, below: 3, scale: 0}\n",
        "{config}: gate: 'scale' must be above 0, not 0",
    ),
    "gate depth of zero": (
        GOOD + "gate: {kind: threshold, signal: rarity, value: min_zipf, below: 3, depth: {deep_k: 0}}\n",
        "{config}: gate 'depth:': 'deep_k' must be at least 1, not 0",
    ),
    "llm gate threshold below 0": (
        GOOD + "gate: {kind: llm, llm: {kind: scripted, replies: ['x']}, threshold: -1}\n",
        "{config}: gate: 'threshold' must be at least 0, not -1",
    ),
    "llm gate prompt without the query": (
        GOOD + "gate: {kind: llm, llm: {kind: scripted, replies: ['x']}, "
        "signals: [{kind: llm_self, prompt: 'Ready?'}]}\n",
        "placeholder, where the query goes",
    ),
    "llm logprob scale of zero": (
        GOOD + "gate: {kind: llm, llm: {kind: scripted, replies: ['x']}, "
        "signals: [{kind: llm_logprob, scale: 0}]}\n",
        "{config}: gate: LLM gate signal llm_logprob: 'scale' must be above 0, not 0",
    ),
    "llm gate weighting every signal 0": (
        GOOD + "gate: {kind: llm, llm: {kind: scripted, replies: ['x']}, signals: [llm_self], "
        "weights: {llm_self: 0}}\n",
        "{config}: gate: weights: every signal is weighted 0, so none could decide",
    ),
    "llm gate naming a signal kind twice": (  # session 49: the first signal's LLM answered unheard
        GOOD + "gate: {kind: llm, llm: {kind: scripted, replies: ['x']}, "
        "signals: [llm_logprob, {kind: llm_logprob, center: -1}]}\n",
        "{config}: gate: signals: two signals of kind 'llm_logprob': an LLM gate takes one signal of "
        "each kind",
    ),
    "unquoted yes read as a boolean": (
        GOOD + "gate: {kind: llm, llm: {kind: scripted, replies: [yes]}}\n",
        "'replies' must be a list of strings, not a list holding a boolean (True) (YAML reads unquoted "
        "yes, no, on, off, true and false as booleans: quote them, 'yes')",
    ),
    "reranker backend unknown": (
        GOOD + "reranker: {kind: cross-encoder, model: models/plain, backend: foo}\n",
        "{config}: reranker: unknown reranker backend 'foo': choose one of auto, torch",
    ),
    "reranker candidates of zero": (
        GOOD + "reranker: {kind: cross-encoder, model: models/plain, candidates: 0}\n",
        "{config}: reranker: 'candidates' must be at least 1, not 0",
    ),
    # session 36: config check opens the reranker as loading does (an index, a token limit
    # beyond the model's positions and an ONNX backend for a plain model all passed until then)
    "reranker model that is an index": (
        GOOD + "reranker: {kind: cross-encoder, model: indexes/astro}\n",
        "{config}: reranker: model 'indexes/astro': ",
    ),
    "reranker token limit beyond the model": (
        GOOD + "reranker: {kind: cross-encoder, model: models/plain, max_length: 1000}\n",
        "{config}: reranker: max_length 1000 is above the 512 tokens model 'models/plain' reads",
    ),
    "reranker onnx backend for a plain model": (
        GOOD + "reranker: {kind: cross-encoder, model: models/plain, backend: onnx}\n",
        "{config}: reranker: backend 'onnx' needs a reranker artifact",
    ),
    "reranker model nowhere": (
        GOOD + "reranker: {kind: cross-encoder, model: no-such-reranker}\n",
        "{config}: reranker: model 'no-such-reranker' is not a folder",
    ),
    "rule to an unknown source": (
        GOOD.replace("route: none", "route: astor"),
        "{config} line 9: rule 'arithmetic' routes to unknown source 'astor'",
    ),
}
LLM_GATE = "gate: {kind: llm, llm: {kind: scripted, replies: ['x']}, "
# session 37 (an audit of `config check` against loading): each passed one or both, and loading
# then failed with a traceback or routed wrongly; test_session_37_cases_are_refused_by_loading_too
SESSION_37 = {
    "boost of infinity": (  # the boosted route's probability was NaN: the query went elsewhere
        GOOD.replace("then: {route: none}", "then: {defer: true, boost: {astro: .inf}}"),
        "{config} line 9: rule 'arithmetic': boost for 'astro' must be a finite number",
    ),
    "signal threshold NaN": (  # a threshold no similarity passes: the signal never fired
        GOOD.replace(
            "math: {type: regex, pattern: '\\d+ times \\d+'}",
            "near: {type: example_bank, examples: [a b], threshold: .nan}",
        ).replace("when: math", "when: near"),
        "signal 'near': 'threshold' must be a finite number, got nan",
    ),
    "llm gate signal prompt of the wrong type": (  # an AttributeError traceback in both
        GOOD + LLM_GATE + "signals: [{kind: llm_self, prompt: 5}]}\n",
        "{config}: gate: LLM gate signal llm_self: 'prompt' must be a string, not an integer",
    ),
    "llm gate signal timeout of zero": (  # every call failed: the gate fell back on every query
        GOOD + LLM_GATE + "signals: [{kind: llm_self, timeout_s: 0}]}\n",
        "{config}: gate: LLM gate signal llm_self: 'timeout_s' must be above 0, not 0",
    ),
    "access listing no label": (  # the source turned public
        GOOD.replace("  cook: {index: indexes/cook,", "  cook: {index: indexes/cook, access: [],"),
        "{config}: source 'cook': access: [] lists no label, which would make the source public",
    ),
    "encoder of the wrong type": (  # a TypeError traceback at load
        "encoder: 5\n" + GOOD,
        "{config}: encoder: expected a non-empty string, not an integer",
    ),
    "backend read as a boolean": (  # an AttributeError traceback at load
        "backend: yes\n" + GOOD,
        "{config}: backend: expected a non-empty string, not a boolean",
    ),
    "cache folder given as a list": (  # a folder named "['a']" was made beside the config
        "cache_dir: [a]\n" + GOOD,
        "{config}: cache_dir: expected a non-empty string, not a list",
    ),
    "negative ensemble sharpness": (  # the least confident member led
        GOOD.replace("kind: prototype, threshold: 0.3", "kind: ensemble, sharpness: -1, threshold: 0.3"),
        "{config}: router: 'sharpness' must be at least 0, not -1",
    ),
}
BAD.update(SESSION_37)


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_input_is_one_line_naming_file_and_key(workspace, case):
    text, expected = BAD[case]
    config = workspace / f"bad-{re.sub(r'[^a-z]', '-', case)}.yaml"
    config.write_text(text)
    result = check(config)
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {config}") and "\n" not in lines[0]
    assert expected.format(config=config, root=workspace.resolve()) in lines[0]
    assert result.stdout.strip().splitlines()[-1] == "1 problem"


@pytest.mark.parametrize("case", list(SESSION_37))
def test_session_37_cases_are_refused_by_loading_too(workspace, case):
    from ragroute.route.config import load_routing

    text, expected = SESSION_37[case]
    config = workspace / f"load-{re.sub(r'[^a-z]', '-', case)}.yaml"
    config.write_text(text)
    with pytest.raises(RagrouteError) as refused:
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
    assert expected.format(config=config, root=workspace.resolve()) in str(refused.value)


def test_signals_without_rules_and_a_null_exposure_are_read_alike_by_check_and_load(workspace):
    """A bad signal without rules was refused by the check and ignored by loading; `exposure: null`
    the other way round (until session 37)."""
    from ragroute.route.config import load_routing

    encoder = HashingEncoder(dim=384, model_id=MINILM)
    config = workspace / "signals-only.yaml"
    config.write_text(GOOD.split("signals:")[0] + "signals:\n  s: {type: regx, pattern: x}\n")
    with pytest.raises(RagrouteError, match="signal 's' has unknown type 'regx'"):
        load_routing(config, encoder=encoder)
    assert check(config).exit_code == 1
    config.write_text(GOOD + "exposure: null\n")
    assert load_routing(config, encoder=encoder).exposure is None and check(config).exit_code == 0
    # every problem of an exposure section is listed (the first only until session 38); loading
    # refuses at the first
    config.write_text(GOOD + "exposure: {max_fraction: 2, hardstop: true, window_s: -1}\n")
    lines = error_lines(check(config))
    assert [line.split(": exposure: ")[1] for line in lines] == [
        "unknown exposure key 'hardstop'; did you mean 'hard_stop'?",
        "max_fraction must be in (0, 1], not 2.0",
        "window_s must be > 0, not -1.0",
    ]
    with pytest.raises(RagrouteError, match="unknown exposure key 'hardstop'"):
        load_routing(config, encoder=encoder)


def test_nulls_mean_the_default_and_an_encoder_folder_is_read_beside_the_config(workspace, tmp_path):
    """``description: null`` was the description 'None', ``modality: null`` a None modality, and a
    relative ``encoder:`` folder was read from the working directory (until session 37)."""
    from ragroute.route.config import RoutingConfig, load_routing

    config = workspace / "nulls.yaml"
    config.write_text(GOOD.replace("description: Cooking and recipes.", "description: null, modality: null"))
    pipeline = load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
    cook = next(s for s in pipeline.sources if s.name == "cook")
    assert cook.description == "" and cook.modality == "text"
    (workspace / "models" / "mine").mkdir(exist_ok=True)
    elsewhere = RoutingConfig(workspace / "r.yaml", {"encoder": "models/mine", "sources": {}})
    assert elsewhere.encoder_settings()["encoder"] == str((workspace / "models" / "mine").resolve())
    defaults = RoutingConfig(workspace / "r.yaml", {"encoder": None, "backend": None}).encoder_settings()
    from ragroute.gate.signals import make_signal

    with pytest.raises(
        RagrouteError, match="'C' must be above 0, not 0"
    ):  # passed the check, refused at load
        make_signal({"kind": "text_probe", "C": 0})
    assert defaults == {"encoder": "all-MiniLM-L6-v2", "backend": "auto", "cache_dir": None}


def test_a_key_written_twice_is_refused_not_the_last_one_kept(workspace):
    """YAML keeps the last of two equal keys: a source listed twice would silently lose one."""
    config = workspace / "twice.yaml"
    config.write_text(GOOD.replace("  cook:", "  astro: {index: indexes/cook}\n  cook:", 1))
    result = check(config)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line == f"error: config {config} is not valid YAML (duplicate key 'astro' at line 3)"
    route = CliRunner().invoke(main, ["route", str(config), "comet tails"])
    assert route.exit_code == 2 and "duplicate key 'astro' at line 3" in route.output


def test_merge_keys_merge_as_yaml_says_and_a_second_one_is_refused(tmp_path):
    """Two merge keys in one mapping: the second's keys silently replaced the first's (the source
    searched indexes/cook, with nothing said), where one merge key takes a list of mappings; and of
    that list, the last mapping's ``index:`` won where YAML says the first one's does (PyYAML 6.0.3
    and later kept the first only for one-letter keys)."""
    from ragroute.route.config import RoutingConfig

    config = tmp_path / "merged.yaml"
    config.write_text("sources:\n  astro:\n    <<: {index: indexes/astro}\n    <<: {index: indexes/cook}\n")
    with pytest.raises(RagrouteError) as raised:
        RoutingConfig.read(config)
    assert str(raised.value) == f"routing config {config} is not valid YAML (duplicate key '<<' at line 4)"
    config.write_text(  # one merge key, a list of them, and a key of the mapping's own: as YAML says
        "sources:\n  astro:\n    <<: [{index: indexes/astro, corpus: a}, {index: indexes/cook}]\n"
        "    corpus: b\n"
    )
    assert RoutingConfig.read(config).data["sources"] == {"astro": {"index": "indexes/astro", "corpus": "b"}}


def test_all_problems_are_reported_together(workspace, monkeypatch):
    monkeypatch.chdir(workspace)  # a model folder is also looked for in the working directory
    config = workspace / "many.yaml"
    config.write_text(
        "sorces: {}\n"
        "sources:\n"
        "  astro: {index: indexes/astro}\n"
        "  wiki: {index: indexes/missing}\n"
        "  other: {index: indexes/other}\n"
        "  web: {kind: lamaindex, factory: 'x:y'}\n"
        "reranker: {kind: cross-encoder, modle: x}\n"
        "gate: {kind: threshold, signal: {kind: knn_vot}, depth: {shallow: 1}}\n"
        "llm: {kind: scripted, reply: [a]}\n"
    )
    result = check(config)
    assert result.exit_code == 1
    lines = error_lines(result)
    expected = [
        "unknown key 'sorces'; did you mean 'sources'?",
        "source 'wiki': index",
        "source 'other': index",
        "unknown source kind 'lamaindex'",
        "reranker: unknown cross-encoder reranker key 'modle'; did you mean 'model'?",
        "reranker: model 'rerank/default' is not a folder",  # (the default, as 'model:' is misspelt)
        "gate: depth: unknown key 'shallow'; did you mean 'shallow_k'?",
        "gate: a threshold gate needs exactly one of 'above' and 'below'",
        "gate: signal: unknown signal kind 'knn_vot'; did you mean 'knn_vote'?",
        "llm: unknown scripted llm key 'reply'; did you mean 'replies'?",
    ]
    assert len(lines) == len(expected), result.stderr
    for line, text in zip(lines, expected):
        assert line.startswith(f"error: {config}") and text in line
    assert "wiki" in result.stdout and "MISSING" in result.stdout


def test_router_key_the_kind_does_not_read_is_a_warning(workspace):
    config = workspace / "unread.yaml"
    config.write_text(GOOD.replace("threshold: 0.3", "threshold: 0.3, model: somewhere"))
    result = check(config)
    assert result.exit_code == 0, result.output
    assert f"warning: {config}: router: key 'model' is not read by a prototype router" in result.stderr


def test_router_words_outside_their_choices_are_errors_and_an_ensemble_names_its_members(workspace):
    config = workspace / "probe.yaml"
    config.write_text(GOOD.replace("kind: prototype", "kind: confidence, probe: fast"))
    result = check(config)
    assert result.exit_code == 1
    assert f"error: {config}: router: 'probe' must be one of auto, exact, not 'fast'" in result.stderr
    ensemble = "kind: ensemble, members: [prototype, centroid], probe: exact"
    config.write_text(GOOD.replace("kind: prototype", ensemble))
    result = check(config)
    assert result.exit_code == 0, result.output
    assert "key 'probe' is not read by this ensemble's members (prototype, centroid)" in result.stderr


def test_expert_sources(workspace):
    from ragroute.store import write_artifact

    for name, kind in (("adapter", "query-lora"), ("full", "full")):
        with write_artifact(workspace / "experts" / name, "expert", kind, params={"base": MINILM}):
            pass
    config = workspace / "experts.yaml"
    config.write_text(
        "sources:\n"
        "  base: {index: indexes/minilm}\n"
        "  tuned: {index: indexes/minilm, expert: experts/adapter}\n"
    )
    result = check(config)
    assert result.exit_code == 0, result.output
    assert f"expert {(workspace / 'experts' / 'adapter').resolve()}" in result.stdout
    config.write_text(
        "sources:\n"
        "  lexical: {index: indexes/astro, expert: experts/adapter}\n"
        "  full: {index: indexes/minilm, expert: experts/full}\n"
        "  gone: {index: indexes/minilm, expert: experts/none}\n"
    )
    lines = error_lines(check(config))
    assert len(lines) == 3
    assert "source 'lexical': expert" in lines[0] and "needs a dense index" in lines[0]
    assert "source 'full': expert" in lines[1] and "is a full expert" in lines[1]
    assert "source 'gone': expert" in lines[2] and "does not exist" in lines[2]


def test_corpus_definitions(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("Some notes.")
    good = tmp_path / "corpora.yaml"
    good.write_text("corpora:\n  notes: {path: notes, description: Notes., granularity: section}\n")
    result = check(good)
    assert result.exit_code == 0, result.output
    assert f"corpus notes: {(tmp_path / 'notes').resolve()} (text, section, folder)" in result.stdout
    bad = tmp_path / "bad-corpora.yaml"
    bad.write_text(
        "corpora:\n"
        "  notes: {path: notes, descripton: Notes.}\n"
        "  gone: {path: nowhere}\n"
        "  table: {path: notes/a.txt, options: {text_colum: body}}\n"
    )
    result = check(bad)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 3, result.stderr
    assert lines[0] == f"error: {bad}: corpus 'notes': unknown key 'descripton'; did you mean 'description'?"
    assert lines[1].startswith(f"error: {bad}: corpus 'gone': path ") and "does not exist" in lines[1]
    assert (
        f"{bad}: corpus 'table':" in lines[2] and "is a text corpus: unknown option 'text_colum'" in lines[2]
    )
    # a table without the text column passed the check, then failed the build (until session 37)
    (tmp_path / "t.csv").write_text("id,body,price\n1,Laptop,999\n")
    table = tmp_path / "table-corpora.yaml"
    table.write_text("corpora:\n  t: {path: t.csv}\n")
    assert error_lines(check(table)) == [
        f"error: {table}: corpus 't': {tmp_path / 't.csv'}: no text column 'text' (available columns: id, "
        "body, price); name the text column with the loader option text_column (--text-column on the command "
        "line)"
    ]
    table.write_text("corpora:\n  t: {path: t.csv, options: {text_column: body}}\n")
    assert check(table).exit_code == 0


def test_routing_config_from_corpora(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("Some notes.")
    (tmp_path / "corpora.yaml").write_text("corpora:\n  notes: {path: notes}\n")
    config = tmp_path / "routing.yaml"
    config.write_text("corpora: corpora.yaml\nindex_dir: indexes\n")
    result = check(config)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {config}: source 'notes': index {(tmp_path / 'indexes' / 'notes').resolve()} does not exist "
        "(build it with `ragroute build ... --out`)"
    ]


def test_corpora_and_index_dir_must_be_paths(tmp_path):
    """`index_dir: null` read the indexes from a folder named 'None' beside the config and
    `corpora: [corpora.yaml]` a file named "['corpora.yaml']" (until session 43): both are one
    line, from loading and from the check."""
    from ragroute.route.config import RoutingConfig

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("Some notes.")
    (tmp_path / "corpora.yaml").write_text("corpora:\n  notes: {path: notes}\n")
    config = tmp_path / "routing.yaml"
    cases = {
        "corpora: corpora.yaml\nindex_dir: null\n": "index_dir: expected a path{}, not empty (null)",
        "corpora: [corpora.yaml]\nindex_dir: indexes\n": "corpora: expected a path{}, not a list",
        "corpora: ''\nindex_dir: indexes\n": "corpora: expected a path{}, not an empty string",
    }
    for text, said in cases.items():
        said = said.format(" (relative to this file)")
        config.write_text(text)
        assert error_lines(check(config)) == [f"error: {config}: {said}"]
        with pytest.raises(RagrouteError) as caught:
            RoutingConfig.read(config)
        assert str(caught.value) == f"{config}: {said}"


def test_corpora_access_is_checked_as_under_sources(tmp_path):
    """An `access: [public]` in the corpora file is applied by loading, but `config check` of the
    routing config dropped it and gave no warning, as it does under sources: (until session 43)."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("Some notes.")
    (tmp_path / "corpora.yaml").write_text("corpora:\n  notes: {path: notes, access: [public]}\n")
    save_index(build_index(documents("astro"), "bm25", name="notes"), tmp_path / "indexes" / "notes")
    config = tmp_path / "routing.yaml"
    config.write_text("corpora: corpora.yaml\nindex_dir: indexes\n")
    result = check(config)
    assert result.exit_code == 0
    assert f"warning: {config}: source 'notes': this source: the access label 'public'" in result.stderr


def test_corpus_key_typo_is_named_before_the_missing_path(tmp_path):
    """`pth: notes` said "needs at least a 'path'" with no word of the typo (until session 43)."""
    defs = tmp_path / "corpora.yaml"
    defs.write_text("corpora:\n  notes: {pth: notes}\n")
    assert error_lines(check(defs)) == [
        f"error: {defs}: corpus 'notes': unknown key 'pth'; did you mean 'path'?"
    ]


def test_cli_defaults_file(tmp_path):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("query: {k: 5}\nbuild: {method: hybrid}\n")
    assert check(defaults).exit_code == 0
    defaults.write_text("query: {kk: 5}\nbulid: {method: hybrid}\nroute: {fit: {modle: mlp}}\n")
    result = check(defaults)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {defaults}: query: unknown option 'kk'; did you mean 'k'?",
        f"error: {defaults}: unknown command 'bulid'; did you mean 'build'?",
        f"error: {defaults}: route: fit: unknown option 'modle'; did you mean 'model'?",
    ]
    # k: 1.5 and k: yes ran as k = 1 (click's int()), and the check said ok (until session 37)
    defaults.write_text("query: {k: 1.5}\nbuild: {workers: yes}\n")
    assert error_lines(check(defaults)) == [
        f"error: {defaults}: query: k: expected an integer, not 1.5",
        f"error: {defaults}: build: workers: expected an integer, not True",
    ]
    defaults.write_text("query: {k: 2.0}\n")  # a whole number written with a dot is that number
    assert check(defaults).exit_code == 0


def test_cli_defaults_keys_of_ragroute_itself(tmp_path, monkeypatch):
    """The keys of ``ragroute``'s own options: ``version: true`` printed the version and ran no command
    (exit status 0); ``config`` named the ``--config`` option, so ``config: {check: ...}`` (defaults
    of ``ragroute config check``) was refused and ``config: other.yaml`` passed the check and was never
    read; ``progress: true`` of a RAGROUTE_CONFIG file was ignored (until session 50)."""
    defaults = tmp_path / "defaults.yaml"
    target = tmp_path / "routing.yaml"
    target.write_text("sources: {}\n")
    runner = CliRunner()
    defaults.write_text("version: true\nquery: {k: 1}\n")
    result = runner.invoke(main, ["--config", str(defaults), "query", str(tmp_path / "nowhere"), "hello"])
    assert result.exit_code == 2 and "version" not in result.stdout
    assert result.stderr.startswith(f"error: --config {defaults}: unknown command 'version'; known: ask,")
    assert error_lines(check(defaults))[0].startswith(f"error: {defaults}: unknown command 'version'")
    defaults.write_text("config: other.yaml\n")
    assert error_lines(check(defaults)) == [
        f"error: {defaults}: config must be a mapping of option defaults, not a string"
    ]
    defaults.write_text("config: {check: {as_json: true, verify: false}}\n")
    assert check(defaults).exit_code == 0
    result = runner.invoke(main, ["--config", str(defaults), "config", "check", str(target)])
    assert json.loads(result.stdout.strip().splitlines()[-1])["path"] == str(target)  # --json, by the file
    seen = []

    def stop(*_args, **_kwargs):
        seen.append(os.environ.get("RAGROUTE_PROGRESS"))
        raise RagrouteError("stopped here")

    monkeypatch.setattr("ragroute.cli.query.load_index_for", stop)
    monkeypatch.delenv("RAGROUTE_PROGRESS", raising=False)
    defaults.write_text("progress: true\n")
    assert check(defaults).exit_code == 0
    query = ["query", str(tmp_path), "hello"]
    from_env = {"RAGROUTE_CONFIG": str(defaults)}
    assert runner.invoke(main, ["--config", str(defaults), *query]).exit_code == 2
    assert runner.invoke(main, query, env=from_env).exit_code == 2
    assert runner.invoke(main, ["--no-progress", *query], env=from_env).exit_code == 2
    assert seen == ["1", "1", "0"]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"sources: [unclosed\n", "is not valid YAML (did not find expected ',' or ']' at line 2)"),
        (b"sources: {caf\xe9: 1}\n", "is not UTF-8 (invalid continuation byte)"),
        # UTF-16 with and without a byte order mark: until session 53 "is not UTF-8 (invalid start
        # byte)" and "is not valid YAML (unacceptable character #x0000 ...)"
        (b"\xff\xfe sources: {}\n", "(e.g. iconv -f utf-16 -t utf-8 FILE > NEW)"),
        ("sources: {}\n".encode("utf-16-le"), "(e.g. iconv -f utf-16le -t utf-8 FILE > NEW)"),
        (b"", "the file is empty"),
        (b"# a comment only\n", "the file is empty"),
        (b"- astro\n- cook\n", "expected a mapping (a routing config, or 'corpora:' definitions)"),
    ],
)
def test_a_file_that_cannot_be_read_is_its_one_error_line_and_nothing_else(tmp_path, content, said):
    """Until session 50 `config check` described a file it never read as "routing config, sources: 0
    (0 usable), reranker: none, gate: none" and "1 problem(s)" around the error."""
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(content)
    result = check(broken)
    assert result.exit_code == 1
    assert result.stdout == "" and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert result.stderr.rstrip().endswith(said), result.stderr
    report = json.loads(check(broken, "--json").stdout)
    assert report["what"] == "" and report["ok"] is False and report["sources"] == []


# --------------------------------------------------------------------------- closest key everywhere


def test_unknown_keys_message():
    assert unknown_keys_message(["sorces"], ["sources", "router"]) == (
        "unknown key 'sorces'; did you mean 'sources'?"
    )
    assert unknown_keys_message(["zzz"], ["sources", "router"]) == "unknown key 'zzz'; known: router, sources"
    assert unknown_keys_message(["sorces", "zzz"], ["sources", "router"], "router key") == (
        "unknown router keys 'sorces' (did you mean 'sources'?), 'zzz'; known: router, sources"
    )
    with pytest.raises(RagrouteError, match="^where: unknown key 'ruter'; did you mean 'router'\\?$"):
        check_keys({"router": 1, "ruter": 2}, ["router"], "where")


def test_loaders_name_the_closest_key(tmp_path, hashing_encoder):
    from ragroute.corpora import load_corpus_specs
    from ragroute.llm.settings import llm_from_settings
    from ragroute.pipeline.build import check_router_settings
    from ragroute.rerank.parents import parents_reranker
    from ragroute.route.config import RoutingConfig, load_routing

    config = tmp_path / "routing.yaml"
    config.write_text("sorces: {a: {index: x}}\n")
    with pytest.raises(RagrouteError, match="unknown key 'sorces'; did you mean 'sources'\\?"):
        RoutingConfig.read(config)
    config.write_text("sources: {a: {indx: x}}\n")
    with pytest.raises(
        RagrouteError, match="source 'a' \\(kind index\\): unknown key 'indx'; did you mean 'index'"
    ):
        load_routing(config, encoder=hashing_encoder)
    corpora = tmp_path / "corpora.yaml"
    corpora.write_text("corpora: {a: {path: a, granularty: section}}\n")
    with pytest.raises(RagrouteError, match="unknown key 'granularty'; did you mean 'granularity'\\?"):
        load_corpus_specs(corpora)
    with pytest.raises(RagrouteError, match="unknown router key 'max_route'; did you mean 'max_routes'\\?"):
        check_router_settings({"kind": "prototype", "max_route": 2}, "r.yaml")
    with pytest.raises(RagrouteError, match="unknown scripted llm key 'reply'; did you mean 'replies'\\?"):
        llm_from_settings({"kind": "scripted", "reply": ["a"]})
    with pytest.raises(RagrouteError, match="unknown parents reranker key 'k'"):
        parents_reranker({"kind": "parents", "k": 3}, None)


# --------------------------------------------------------------------------- no silent drop


def route_with(workspace, monkeypatch, name: str, config_text: str, query: str):
    """``ragroute route`` over a config written into the workspace, every encoder the hashing one."""
    import ragroute.encode

    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *args, **kwargs: HashingEncoder())
    config = workspace / name
    config.write_text(config_text)
    return CliRunner().invoke(main, ["route", str(config), query])


def test_route_warns_on_stderr_for_a_source_left_out(workspace, monkeypatch):
    config_text = (
        "sources:\n"
        "  astro: {index: indexes/astro, description: Astronomy and space.}\n"
        "  cook: {index: indexes/cook, description: Cooking and recipes.}\n"
        "  wiki: {index: indexes/missing, description: Never built.}\n"
        "  web: {kind: python, factory: 'no_such_module_here:make'}\n"
    )
    result = route_with(workspace, monkeypatch, "left-out.yaml", config_text, "why do comets have tails?")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.stderr
    config = workspace / "left-out.yaml"
    assert warnings[0].startswith(f"warning: {config}: source 'wiki' left out: ")
    assert warnings[1] == (
        f"warning: {config}: source 'web' left out: cannot load factory 'no_such_module_here:make' "
        "(ModuleNotFoundError: No module named 'no_such_module_here')"
    )
    assert "decision: astro" in result.stdout


def test_load_routing_warns_once_per_source_left_out(workspace, hashing_encoder):
    from ragroute.errors import SourceWarning
    from ragroute.route.config import load_routing

    config = workspace / "left-out-lib.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n  wiki: {index: indexes/missing}\nrouter: {kind: fixed}\n"
    )
    with pytest.warns(SourceWarning, match="source 'wiki' left out") as record:
        pipeline = load_routing(config, encoder=hashing_encoder)
    assert len(record) == 1 and [p.name for p in pipeline.problems] == ["wiki"]


def test_router_routes_must_name_the_sources(workspace, hashing_encoder):
    """A kNN router whose examples say 'cooking' where the source is 'cook' would send those
    queries nowhere and never choose 'cook': refused by `config check` and at load. A router that
    knows fewer or more sources than the config opens is warned about, not refused."""
    from ragroute.errors import SourceWarning
    from ragroute.route.config import load_routing

    def config_with(labels, extra=""):
        examples = workspace / f"examples-{'-'.join(labels)}.jsonl"
        examples.write_text(
            "".join(
                json.dumps({"text": f"{label} question {i}", "label": label}) + "\n"
                for label in labels
                for i in range(3)
            )
        )
        config = workspace / f"knn-{'-'.join(labels)}.yaml"
        config.write_text(
            "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
            f"router: {{kind: knn, examples: {examples.name}{extra}}}\n"
        )
        return config

    renamed = config_with(["astro", "cooking"])
    expected = (
        "router: the router's routes (astro, cooking) name no source 'cooking', and source 'cook' is "
        "none of them, so it could never be chosen"
    )
    _refused_by_check_and_load(renamed, expected, hashing_encoder)

    fewer = config_with(["astro"])
    assert check(fewer).exit_code == 0
    with pytest.warns(SourceWarning, match="source 'cook' is none of the router's routes"):
        load_routing(fewer, encoder=hashing_encoder)
    reached = config_with(["astro"], ", always: [cook]")  # `always:` reaches cook: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_routing(reached, encoder=hashing_encoder)


def _write_examples(path, labels, per_label=3):
    """A kNN router's labelled examples: ``per_label`` questions per label."""
    path.write_text(
        "".join(
            json.dumps({"text": f"{label} question {i}", "label": label}) + "\n"
            for label in labels
            for i in range(per_label)
        )
    )


def test_an_ensemble_members_routes_must_name_the_sources(workspace, hashing_encoder):
    """An ensemble's kNN member whose examples say 'cooking' where the source is 'cook' never
    chooses 'cook' and sends its share nowhere, as a kNN router alone would: refused by `config
    check` and at load, naming the member. The ensemble's routes together (its prototype member
    knows 'cook') used to pass with a warning."""

    examples = workspace / "examples-member.jsonl"
    _write_examples(examples, ("astro", "cooking"))
    config = workspace / "ensemble-renamed.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        f"router: {{kind: ensemble, members: [prototype, knn], examples: {examples.name}}}\n"
    )
    expected = (
        "router: ensemble member knn: the router's routes (astro, cooking) name no source 'cooking', "
        "and source 'cook' is none of them, so it could never be chosen"
    )
    _refused_by_check_and_load(config, expected, hashing_encoder)


def test_an_llm_routers_fallback_routes_must_name_the_sources(workspace, hashing_encoder):
    """An llm router's kNN fallback whose examples say 'cooking' where the source is 'cook' sends
    every query the LLM cannot place, that it would give 'cooking', nowhere (its share went to the
    other sources), as a kNN router alone would: refused by `config check` and at load, naming the
    fallback. The llm router's own routes (every source) hid it, and neither checked it; nor did
    the check read a fallback ensemble's kNN member, which loading refuses without 'examples:'."""

    examples = workspace / "examples-fallback.jsonl"
    _write_examples(examples, ("astro", "cooking"))
    sources = "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
    llm = "{kind: scripted, default: no idea}"
    config = workspace / "llm-fallback-renamed.yaml"
    config.write_text(
        sources + f"router: {{kind: llm, llm: {llm}, fallback: knn, examples: {examples.name}}}\n"
    )
    expected = (
        "router: llm fallback knn: the router's routes (astro, cooking) name no source 'cooking', "
        "and source 'cook' is none of them, so it could never be chosen"
    )
    _refused_by_check_and_load(config, expected, hashing_encoder)

    nested = workspace / "llm-fallback-ensemble-renamed.yaml"
    nested.write_text(
        sources + f"router: {{kind: llm, llm: {llm}, fallback: ensemble, members: [prototype, knn], "
        f"examples: {examples.name}}}\n"
    )
    _refused_by_check_and_load(
        nested, expected.replace("llm fallback knn", "ensemble member knn"), hashing_encoder
    )

    unnamed = workspace / "llm-fallback-ensemble-no-examples.yaml"
    unnamed.write_text(sources + f"router: {{kind: llm, llm: {llm}, fallback: ensemble, members: [knn]}}\n")
    _refused_by_check_and_load(unnamed, "router: a knn router needs 'examples:'", hashing_encoder)


def _refused_by_check_and_load(config, expected: str, encoder) -> None:
    """`config check` fails on ``config`` with ``expected`` as its first error line, and loading it
    raises the same error (without the ``router:`` prefix the check adds)."""
    from ragroute.route.config import load_routing

    result = check(config)
    assert result.exit_code == 1 and expected in error_lines(result)[0]
    with pytest.raises(RagrouteError, match=re.escape(expected.removeprefix("router: "))):
        load_routing(config, encoder=encoder)


def test_router_and_gate_artifacts_are_opened_not_only_found(workspace, tmp_path):
    # `config check` said "ok" for a gate fitted on other signals than configured, a gate or
    # router of a newer format, and a router model that is a gate: each failed only when loaded
    import hashlib

    from test_gate import ANSWER, RETRIEVE

    from ragroute.gate.trained import TrainedGate
    from ragroute.store.manifest import canonical_checksum

    texts = list(RETRIEVE) + list(ANSWER)
    gate = TrainedGate.fit(texts, [True] * len(RETRIEVE) + [False] * len(ANSWER), signals=["rarity"])
    gate.save(tmp_path / "gate")
    head = GOOD.split("signals:")[0].replace("indexes/", f"{workspace}/indexes/")
    config = tmp_path / "routing.yaml"
    config.write_text(head + "gate: {kind: trained, path: gate, signals: [rarity]}\n")
    assert check(config).exit_code == 0, check(config).output
    config.write_text(head + "gate: {kind: trained, path: gate, signals: [rarity, knn_vote]}\n")
    lines = error_lines(check(config))
    assert len(lines) == 1 and "was fitted on signals rarity, but rarity, knn_vote are configured" in lines[0]
    # an operating point out of range is one problem (said twice, by two checks, until session 38)
    config.write_text(head + "gate: {kind: trained, path: gate, threshold: 1.5}\n")
    lines = error_lines(check(config))
    assert len(lines) == 1 and "'threshold' must be at most 1, not 1.5" in lines[0]
    config.write_text(head.replace("router: {kind: prototype", "router: {kind: trained, model: gate"))
    lines = error_lines(check(config))
    assert len(lines) == 1 and f"{tmp_path}/gate holds a gate (trained), not a router" in lines[0]
    pointer = json.loads((tmp_path / "gate" / "CURRENT").read_text())
    manifest_path = tmp_path / "gate" / "builds" / pointer["build"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] += 1
    manifest["checksum"] = canonical_checksum(manifest)
    manifest_path.write_bytes(raw := json.dumps(manifest).encode())
    pointer["manifest_sha256"] = hashlib.sha256(raw).hexdigest()
    (tmp_path / "gate" / "CURRENT").write_text(json.dumps(pointer))
    config.write_text(head + "gate: {kind: trained, path: gate}\n")
    lines = error_lines(check(config))
    assert len(lines) == 1 and f"has format version {manifest['format_version']}, newer" in lines[0]


def test_expert_routers_are_opened_as_loading_opens_them(workspace, tmp_path):
    """A pilot or quality router folder holding another kind, or fitted on experts the config does
    not list, passed the check ("ok") and then failed to load."""
    import numpy as np

    from ragroute.route.pilot import PilotRouter

    pilot = tmp_path / "pilot"
    pilots = np.eye(3, 384, dtype=np.float32)  # the config encoder's width (no encoder recorded)
    PilotRouter(["astro", "cook", "wiki"], pilots, np.arange(3)).save(pilot)

    def config(kind: str):
        path = tmp_path / f"{kind}.yaml"
        path.write_text(
            f"sources:\n  astro: {{index: {workspace}/indexes/astro}}\n"
            f"  cook: {{index: {workspace}/indexes/cook}}\n"
            f"router: {{kind: {kind}, model: {pilot}}}\n"
        )
        return path

    wrong_kind = check(config("quality"))
    assert wrong_kind.exit_code == 1
    assert error_lines(wrong_kind) == [
        f"error: {tmp_path / 'quality.yaml'}: router: {pilot} holds a pilot router, not a quality router"
    ]
    other_experts = check(config("pilot"))
    assert other_experts.exit_code == 1 and len(error_lines(other_experts)) == 1
    assert (
        "the router was fitted on experts astro, cook, wiki, but wiki is not among the sources"
        in (error_lines(other_experts)[0])
    )


@pytest.mark.parametrize("kind", ["pilot", "quality"])
def test_an_expert_routers_arrays_are_read_as_loading_reads_them(workspace, tmp_path, kind):
    # a truncated arrays.npz whose checksum matches passed the check ("ok") and failed at query time
    from conftest import replace_published_file

    from ragroute.route.expert_gains import ExpertGains
    from ragroute.route.expert_quality import QualityRouter
    from ragroute.route.pilot import PilotRouter
    from ragroute.store.artifact import published_path

    vectors = np.vstack([np.eye(8)[:1]] * 6 + [np.eye(8)[1:2]] * 6)
    gains = np.array([[0.9, 0.1]] * 6 + [[0.1, 0.9]] * 6)
    data = ExpertGains(["astro", "cook"], [f"q{i}" for i in range(12)], vectors, gains)
    encoder = HashingEncoder(dim=8)
    # the quality router's encoder recorded too: without a record its 8-d width is now checked
    # against the config's 384-d encoder (until session 54 it passed, and routing raised)
    router = (
        PilotRouter.fit(data, encoder=encoder, folds=0)
        if kind == "pilot"
        else QualityRouter.fit(data, encoder=encoder)
    )
    model = tmp_path / kind
    router.save(model)
    config = tmp_path / "routing.yaml"
    config.write_text(
        f"sources:\n  astro: {{index: {workspace}/indexes/astro}}\n"
        f"  cook: {{index: {workspace}/indexes/cook}}\n"
        f"router: {{kind: {kind}, model: {model}}}\n"
    )
    assert check(config).exit_code == 0
    whole = (published_path(model) / "arrays.npz").read_bytes()
    replace_published_file(model, "arrays.npz", whole[: len(whole) // 2])
    result = check(config)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {config}: router: {model}: arrays.npz is not a readable .npz file (")
    assert check(config, "--no-verify").exit_code == 0  # reads only the manifests


@pytest.mark.parametrize("kind", ["pilot", "quality"])
def test_an_expert_router_warns_at_load_about_a_source_it_was_not_fitted_on(workspace, kind):
    # a source added after `expert fit-router` was never routed and `route` said nothing (only
    # `config check` warned); the trained router's warning is now given for expert routers too
    from ragroute.errors import SourceWarning
    from ragroute.route.config import load_routing
    from ragroute.route.expert_gains import ExpertGains
    from ragroute.route.expert_quality import QualityRouter
    from ragroute.route.pilot import PilotRouter

    encoder = HashingEncoder(dim=8)
    vectors = np.vstack([np.eye(8)[:1]] * 6 + [np.eye(8)[1:2]] * 6)
    gains = np.array([[0.9, 0.1]] * 6 + [[0.1, 0.9]] * 6)
    data = ExpertGains(["astro", "cook"], [f"q{i}" for i in range(12)], vectors, gains)
    # the quality router's encoder recorded too: without a record its 8-d width is now checked
    # against the config's 384-d encoder (until session 54 it passed, and routing raised)
    router = (
        PilotRouter.fit(data, encoder=encoder, folds=0)
        if kind == "pilot"
        else QualityRouter.fit(data, encoder=encoder)
    )
    router.encoder_info = None
    router.save(workspace / f"expert-{kind}")
    sources = (
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        "  extra: {index: indexes/astro}\n"
    )
    config = workspace / f"extra-{kind}.yaml"
    config.write_text(sources + f"router: {{kind: {kind}, model: expert-{kind}}}\n")
    with pytest.warns(SourceWarning, match="source 'extra' is none of the router's routes"):
        load_routing(config, encoder=encoder)
    reached = workspace / f"extra-{kind}-always.yaml"  # `always:` reaches it: nothing to say
    reached.write_text(sources + f"router: {{kind: {kind}, model: expert-{kind}, always: [extra]}}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_routing(reached, encoder=encoder)


def test_config_check_reads_factories_and_llm_references_without_running_them(tmp_path):
    """`config check` imported a factory's file, running its top level: checking a config from
    elsewhere ran its code."""
    from ragroute.route.config_check import check_config

    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n\ndef make():\n    return None\n"
    )
    (tmp_path / "r.yaml").write_text(
        "sources:\n"
        "  web: {kind: python, factory: 'evil.py:make'}\n"
        "  typo: {kind: python, factory: 'evil.py:mkae'}\n"
        "  gone: {kind: python, factory: 'no_such_module_here.sub:make'}\n"
        "router: {kind: llm, llm: 'evil.py:make', fallback: prototype}\n"
    )
    report = check_config(tmp_path / "r.yaml")
    assert not marker.exists()
    problems = "\n".join(report.problems)
    assert "cannot load factory 'evil.py:mkae' (" in problems
    assert "evil.py defines no top-level 'mkae'; read, not run)" in problems
    assert (
        "cannot load factory 'no_such_module_here.sub:make' (no module named 'no_such_module_here'; "
        "searched for, not imported)"
    ) in problems
    assert "'evil.py:make'" not in problems
    assert next(s for s in report.sources if s.name == "web").notes == ["factory found (read, not run)"]


def test_a_factory_file_defining_a_dataclass_loads(tmp_path):
    """A factory file was run without being registered as a module, so a dataclass in it (with
    postponed annotations) failed to load: "cannot load factory ... (AttributeError: 'NoneType'
    object has no attribute '__dict__')"."""
    from ragroute.references import import_reference

    (tmp_path / "dc.py").write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n\n"
        "@dataclass\nclass Settings:\n    k: int = 3\n\n"
        "def make():\n    return Settings()\n"
    )
    assert import_reference("dc.py:make", "r.yaml: source 'web'", base=tmp_path)().k == 3
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RagrouteError, match=r"cannot load factory 'broken.py:make' \(RuntimeError: boom\)"):
        import_reference("broken.py:make", "r.yaml: source 'web'", base=tmp_path)


def test_a_factory_that_calls_sys_exit_leaves_its_source_out(tmp_path, hashing_encoder):
    """A factory file that is a script (a top-level argparse or `sys.exit`), or a factory calling
    `sys.exit`, ended the whole load with SystemExit until session 53, naming no source (`ragroute
    route` printed the script's usage and exited). Like any failing factory, it leaves its source out."""
    from ragroute.errors import SourceWarning
    from ragroute.route.config import load_routing

    save_index(build_index(documents("astro"), "bm25", name="astro"), tmp_path / "idx" / "astro")
    (tmp_path / "script.py").write_text("import sys\nsys.exit('usage: script.py FILE')\n")
    (tmp_path / "quits.py").write_text("import sys\n\ndef make():\n    sys.exit(2)\n")
    config = tmp_path / "r.yaml"
    config.write_text(
        "sources:\n"
        "  astro: {index: idx/astro, description: Astronomy.}\n"
        "  script: {kind: python, factory: 'script.py:make'}\n"
        "  quits: {kind: python, factory: 'quits.py:make'}\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline = load_routing(config, encoder=hashing_encoder)
    said = [str(w.message) for w in caught if issubclass(w.category, SourceWarning)]
    assert said == [
        f"{config}: source 'script' left out: cannot load factory 'script.py:make' "
        "(SystemExit: usage: script.py FILE)",
        f"{config}: source 'quits' left out: factory 'quits.py:make' failed (SystemExit: 2)",
    ]
    assert [s.name for s in pipeline.sources] == ["astro"]


def test_a_config_whose_factory_loads_it_again_is_refused_in_one_line(tmp_path, hashing_encoder):
    """A `kind: python` factory returning a nested pipeline (`load_routing` of another config) that
    leads back to the config being loaded recursed until session 53: the levels near the recursion
    limit failed and built on, for minutes. The config is refused where it comes round again, in one
    line naming the cycle, and that factory's source is left out (this factory stops at depth 5, so
    the old code loads a deep nest instead of hanging)."""
    from ragroute.errors import SourceWarning
    from ragroute.route.config import load_routing

    save_index(build_index(documents("astro"), "bm25", name="astro"), tmp_path / "idx" / "astro")
    (tmp_path / "nest.py").write_text(
        "import sys\n"
        "from conftest import HashingEncoder\n"
        "from ragroute.route.config import load_routing\n\n"
        "def nested(path, config_dir):\n"
        "    frame, depth = sys._getframe(), 0\n"
        "    while frame is not None:  # the file is run again at each level: count the calls\n"
        "        depth, frame = depth + (frame.f_code.co_name == 'nested'), frame.f_back\n"
        "    if depth > 5:\n"
        "        raise RuntimeError('too deep')\n"
        "    return load_routing(config_dir / path, encoder=HashingEncoder())\n"
    )
    (tmp_path / "sub").mkdir()
    a, b = tmp_path / "a.yaml", tmp_path / "sub" / "b.yaml"
    for config, up, other in ((a, "", "sub/b.yaml"), (b, "../", "../a.yaml")):
        config.write_text(
            "sources:\n"
            f"  astro: {{index: {up}idx/astro, description: Astronomy.}}\n"
            f"  inner: {{kind: python, factory: '{up}nest.py:nested', options: {{path: {other}}}, "
            "corpus: astro, description: Nested.}\n"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline = load_routing(a, encoder=hashing_encoder)
    said = [
        str(w.message)
        for w in caught
        if issubclass(w.category, SourceWarning) and "left out" in str(w.message)
    ]
    cycle = (
        f"{b.parent / '../a.yaml'}: a routing config that loads itself through a factory ({a} -> {b} -> {a})"
    )
    assert said == [
        f"{b}: source 'inner' left out: factory '../nest.py:nested' failed (RagrouteError: {cycle})"
    ]
    assert [s.name for s in pipeline.sources] == ["astro", "inner"]


def test_two_sources_holding_the_same_documents_apart_are_warned_about(tmp_path, hashing_encoder):
    """A BM25 and a dense index built apart over one corpus, without a shared `corpus:`: fusion listed
    each document twice, once per source, and nothing said so (until session 36)."""
    import warnings

    from ragroute.errors import SourceWarning
    from ragroute.route.config import load_routing

    save_index(build_index(documents("astro"), "bm25", name="a"), tmp_path / "lex")
    save_index(build_index(documents("astro"), "dense", encoder=hashing_encoder), tmp_path / "sem")
    apart = tmp_path / "apart.yaml"
    apart.write_text("sources:\n  lex: {index: lex}\n  sem: {index: sem}\nrouter: {kind: fixed}\n")
    with pytest.warns(
        SourceWarning, match=r"sources 'lex' and 'sem' hold the same 2 document ids in two collections"
    ):
        load_routing(apart, encoder=hashing_encoder)
    shared = tmp_path / "shared.yaml"
    shared.write_text(
        "sources:\n  lex: {index: lex, corpus: sem}\n  sem: {index: sem}\nrouter: {kind: fixed}\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", SourceWarning)
        load_routing(shared, encoder=hashing_encoder)


def test_a_fixed_router_naming_a_source_that_failed_to_open_routes_around_it(workspace, hashing_encoder):
    """As `always:` and a knn or trained router do: the source is left out (warned once), the
    config loads, and each decision drops the route (its `unavailable-routes` step says why). Until
    then the whole config was refused, saying the source was no source."""
    from ragroute.errors import SourceWarning
    from ragroute.route.config import load_routing

    config = workspace / "fixed-left-out.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        "  wiki: {index: indexes/missing}\nrouter: {kind: fixed, routes: [wiki, cook]}\n"
    )
    with pytest.warns(SourceWarning, match="source 'wiki' left out"):
        pipeline = load_routing(config, encoder=hashing_encoder)
    decision = pipeline.decide("why do comets have tails?")
    assert decision.chosen == ["cook"] and decision.routes == {"cook": 1.0}
    dropped = [step.detail for step in decision.trace if step.stage == "unavailable-routes"]
    assert list(dropped[0]["dropped"]) == ["wiki"]
    config.write_text(config.read_text().replace("[wiki, cook]", "[wiki, web]"))
    with pytest.warns(SourceWarning), pytest.raises(RagrouteError) as info:
        load_routing(config, encoder=hashing_encoder)
    assert str(info.value) == f"{config}: fixed route web is not a source (astro, cook, wiki)"


@pytest.mark.parametrize(
    ("router", "message"),
    [
        (
            "{kind: ensemble, members: []}",
            "router: 'members' is an empty list: name at least one router kind, or leave 'members' "
            "out for the default (prototype, confidence)",
        ),
        (
            "{kind: fixed, routes: []}",
            "router: 'routes' is an empty list: name at least one source, or leave 'routes' out to "
            "query every source",
        ),
    ],
)
def test_an_empty_members_or_routes_list_is_refused_by_check_and_load(
    workspace, hashing_encoder, router, message
):
    """`members: []` quietly became [prototype, confidence] and a fixed router's `routes: []` every
    source; leaving the key out keeps those defaults."""
    from ragroute.route.config import load_routing

    config = workspace / "empty-list.yaml"
    config.write_text(GOOD.replace("{kind: prototype, threshold: 0.3, max_routes: 2}", router))
    result = check(config)
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {config}: {message}"]
    with pytest.raises(RagrouteError) as info:
        load_routing(config, encoder=hashing_encoder)
    assert str(info.value) == f"{config}: {message}"
    config.write_text(GOOD.replace("{kind: prototype, threshold: 0.3, max_routes: 2}", "{kind: fixed}"))
    assert check(config).exit_code == 0


def test_an_empty_route_is_refused_by_config_check(workspace):
    config = workspace / "route-null.yaml"
    config.write_text(GOOD.replace("then: {route: none}", "then: {route: }"))
    result = check(config)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {config} line 9: rule 'arithmetic': 'route' is empty: name a source or none"
    ]


def test_route_text_shows_rule_and_signal_descriptions(workspace, monkeypatch):
    config_text = (
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        "signals:\n  comets: {type: keywords, any: [comets], description: 'Mentions comets, tails.'}\n"
        "rules:\n  - name: space\n    description: Comet questions go to astro.\n"
        "    when: comets\n    then: {route: astro}\n"
    )
    result = route_with(workspace, monkeypatch, "described.yaml", config_text, "why do comets have tails?")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert '  signal: signal=comets, type=keywords, description="Mentions comets, tails.", fired=true, ' in (
        "\n".join(lines)
    )
    assert any(
        line.startswith('  rule: rule=space, description="Comet questions go to astro.", priority=0')
        for line in lines
    )


def test_a_pilot_router_without_an_encoder_record_is_checked_by_its_pilots_width(workspace, tmp_path):
    # saved without an encoder (PilotRouter's default), 128-d pilots passed the check ("ok") and
    # routing 384-d queries raised numpy's matmul traceback
    from ragroute.errors import EncoderMismatchError
    from ragroute.route.pilot import PilotRouter

    pilots = np.eye(2, 128, dtype=np.float32)
    PilotRouter(["astro", "cook"], pilots, np.arange(2)).save(tmp_path / "pilot")
    result = check(_saved_router_config(workspace, tmp_path, "pilot"))
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "has 128-d pilots" in lines[0] and "384-d query vectors" in lines[0]
    with pytest.raises(EncoderMismatchError, match=r"has 128-d pilots, but encoder test/hashing gives 64-d"):
        PilotRouter.load(tmp_path / "pilot", HashingEncoder(dim=64))
    assert PilotRouter.load(tmp_path / "pilot", HashingEncoder(dim=128)).pilots.shape == (2, 128)


def _saved_router_config(workspace, tmp_path, kind: str):
    """A routing config over the workspace's two indexes whose router is the ``kind`` router saved
    at ``tmp_path / kind``."""
    config = tmp_path / "routing.yaml"
    config.write_text(
        f"sources:\n  astro: {{index: {workspace}/indexes/astro}}\n"
        f"  cook: {{index: {workspace}/indexes/cook}}\n"
        f"router: {{kind: {kind}, model: {tmp_path / kind}}}\n"
    )
    return config


def test_a_quality_router_without_an_encoder_record_is_checked_by_its_width(workspace, tmp_path):
    # as a pilot router's: until session 54 a quality router of 128-d coefficients passed ("ok")
    from ragroute.route.expert_quality import QualityRouter
    from ragroute.route.features import CHEAP_FEATURE_NAMES

    width = 128 + len(CHEAP_FEATURE_NAMES)
    QualityRouter(["astro", "cook"], np.zeros((2, width)), np.zeros(2), np.zeros(width), np.ones(width)).save(
        tmp_path / "quality"
    )
    result = check(_saved_router_config(workspace, tmp_path, "quality"))
    assert result.exit_code == 1
    lines = error_lines(result)
    assert (
        len(lines) == 1 and "fitted on 128-d query vectors" in lines[0] and "384-d query vectors" in lines[0]
    )


def test_an_expert_is_checked_against_the_index_by_its_base_models_weights(workspace, tmp_path):
    # by name only until session 40: a copy of the base was refused, another model under the base's
    # name (a folder replaced after training) passed
    from ragroute.store import write_artifact

    class Weighed(HashingEncoder):
        def __init__(self, model_id: str, weights: str) -> None:
            super().__init__(dim=384, model_id=model_id)
            self.weights = weights

        def describe(self):
            return {**super().describe(), "weights": self.weights}

    params = {"base": MINILM, "base_weights": "a" * 16}
    with write_artifact(tmp_path / "experts" / "e", "expert", "query-lora", params=params):
        pass
    for name, encoder in (
        ("copy", Weighed("/elsewhere/mini", "a" * 16)),
        ("other", Weighed(MINILM, "b" * 16)),
    ):
        save_index(build_index(documents("astro"), "dense", encoder=encoder), tmp_path / "indexes" / name)
    config = tmp_path / "experts.yaml"
    config.write_text("sources:\n  tuned: {index: indexes/copy, expert: experts/e}\n")
    from ragroute.route.config_check import check_config

    expert = f"expert {(tmp_path / 'experts' / 'e').resolve()} "
    # (the index's own encoder check is another problem: the config's encoder is the bundled model)
    assert not [p for p in check_config(config).problems if expert in p]
    config.write_text("sources:\n  tuned: {index: indexes/other, expert: experts/e}\n")
    problems = [p for p in check_config(config).problems if expert in p]
    assert len(problems) == 1
    assert f"source 'tuned': {expert}was trained over" in problems[0]
    assert "retrain the expert over this model, or use the base model it was trained on" in problems[0]


def test_a_threshold_gate_signal_problem_is_said_once(workspace):
    """An unknown setting of a threshold gate's signal was listed twice (`signal knn_vote: unknown
    setting 'kk'`, then `gate signal knn_vote: unknown setting 'kk'`); a wrong type still is said."""
    config = workspace / "gate-signal.yaml"
    config.write_text(GOOD + "gate: {kind: threshold, signal: {kind: knn_vote, kk: 3}, above: 0.5}\n")
    lines = error_lines(check(config))
    assert len(lines) == 1 and "unknown setting 'kk'; did you mean 'k'?" in lines[0], lines
    config.write_text(GOOD + "gate: {kind: threshold, signal: {kind: knn_vote, k: x}, above: 0.5}\n")
    lines = error_lines(check(config))
    assert len(lines) == 1 and "'k' must be an integer, not a string" in lines[0], lines


# session 44: a differential test of `config check` against loading (tests/test_config_differential.py)
@pytest.mark.parametrize(
    "sources, expected",
    [
        ("  astro: {index: indexes/astro}\n  '': {index: indexes/cook}\n", "source '': a source's name"),
        ("  astro: {index: indexes/astro}\n  '  ': {index: indexes/cook}\n", "a source's name must hold"),
        # until session 49 `5:` and `'5'` were one name, refused as twins; `no:` alone the source 'False'
        ("  5: {index: indexes/astro}\n  '5': {index: indexes/cook}\n", "as a number, not as text: write"),
        ("  true: {index: indexes/astro}\n  'True': {index: indexes/cook}\n", "as a boolean, not as text"),
        ("  astro: {index: indexes/astro}\n  no: {index: indexes/cook}\n", "source 'False': YAML read"),
    ],
)
def test_source_names_loading_refuses_are_refused_by_the_check_alike(workspace, sources, expected):
    """Until session 44 `config check` passed a source named '' or '  ', and two names YAML keeps
    apart (`5` and `'5'`, `true` and `'True'`) that loading reads as one; loading refused them, the
    empty name without naming the file. Both now refuse them in the same line."""
    from ragroute.route.config import load_routing

    config = workspace / "names.yaml"
    config.write_text("sources:\n" + sources)
    result = check(config)
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result)
    assert line.startswith(f"error: {config}: source ") and expected in line
    with pytest.raises(RagrouteError) as refused:
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
    # the check's line quotes the name as loading does ('  ' shown as ' ' until session 51)
    assert "error: " + str(refused.value) == line


def test_an_unknown_encoder_backend_is_refused_by_loading_as_by_the_check(workspace):
    """Until session 44 `backend: nosuch` was refused by `config check` only: loading with an
    encoder handed in took it, and loading the config's encoder refused it without naming the file."""
    from ragroute.route.config import load_routing

    config = workspace / "backend.yaml"
    config.write_text("backend: nosuch\n" + GOOD)
    (line,) = error_lines(check(config))
    expected = f"{config}: backend: unknown encoder backend 'nosuch': expected auto, torch, onnx, onnx-int8"
    assert line == f"error: {expected}"
    with pytest.raises(RagrouteError) as refused:
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
    assert str(refused.value) == expected
    with pytest.raises(RagrouteError) as refused:  # refused before any model is looked for
        load_routing(config)
    assert str(refused.value) == expected


@pytest.mark.parametrize(
    "signals, shown",
    [
        ("5", "an integer"),
        ("[5]", "a list holding an integer (5)"),
        ("[null]", "a list holding empty (null) (None)"),
        ("[[llm_self]]", "a list holding a list (['llm_self'])"),
        ("llm_self", "a string"),
    ],
)
def test_llm_gate_signals_of_the_wrong_type_are_one_line(workspace, signals, shown):
    """Until session 44 an LLM gate's `signals: 5`, `[5]` or `[null]` was a traceback at load (a
    TypeError), and `signals: llm_self` was read letter by letter: `config check` said "unknown
    signal kind 'l'" eight times."""
    from ragroute.route.config import load_routing

    config = workspace / "llm-signals.yaml"
    config.write_text(GOOD + LLM_GATE + f"signals: {signals}}}\n")
    expected = (
        f"{config}: gate: 'signals' must be a list of LLM signal kinds or {{kind: ...}} mappings, not {shown}"
    )
    assert error_lines(check(config)) == [f"error: {expected}"]
    with pytest.raises(RagrouteError) as refused:
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
    assert str(refused.value) == expected


def test_a_threshold_gate_value_of_empty_text_is_refused_by_loading_too(workspace):
    """`value: ''` was refused by `config check` (no value of that name) and read as the signal's
    first value by loading, until session 44."""
    from ragroute.route.config import load_routing

    config = workspace / "empty-value.yaml"
    config.write_text(GOOD + "gate: {kind: threshold, signal: rarity, value: '', below: 3}\n")
    (line,) = error_lines(check(config))
    assert "gate: signal rarity has no value '': it has min_zipf" in line
    with pytest.raises(RagrouteError, match="signal rarity has no value '': it has min_zipf"):
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            ("kind: prototype", "kind: fixed, routes: astro"),
            "'routes' must be a list of strings, not a string",
        ),
        (("kind: prototype", "kind: ensemble, members: [5]"), "'members' must be a list of strings"),
        (
            ("kind: prototype", "kind: knn, examples: [labels.jsonl]"),
            "'examples' must be a string, not a list",
        ),
        (("{index: indexes/cook,", "{index: null,"), "'index' must be a string, not empty (null)"),
        (("{index: indexes/cook,", "{index: indexes/cook, expert: 5,"), "'expert' must be a string"),
        (("  dense:", "  web: {kind: python, factory: 5}\n  dense:"), "factory '5' is not"),
        (("rules:", "gate: {kind: trained, path: 5}\nrules:"), "'path' must be a string, not an integer"),
        (
            ("rules:", "gate: {kind: threshold, signal: rarity, value: 5, below: 3}\nrules:"),
            "'value' must be",
        ),
        (("rules:", LLM_GATE + "timeout_s: 0}\nrules:"), "'timeout_s' must be above 0, not 0"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_problem_as_loading_says(workspace, change, expected):
    """Until session 44 `config check` went on to use a value it had refused, and said more: the
    fixed routes 'a', 's', 't', 'r', 'o' of `routes: astro`, an index folder named `None`, an
    examples file named `['labels.jsonl']`, the same factory problem twice. Loading says one line."""
    from ragroute.route.config import load_routing

    config = workspace / "wrong-type.yaml"
    config.write_text(GOOD.replace(*change))
    lines = error_lines(check(config))
    assert len(lines) == 1 and expected in lines[0], lines
    with pytest.raises(RagrouteError) as refused:
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
    assert f"error: {refused.value}" == lines[0]


def test_a_reranker_calibration_loading_refuses_is_a_problem(workspace, tmp_path):
    """`config check` read a reranker artifact's calibration.json as JSON only: a coefficient that is
    not a number (checksums hold: it was published so) passed the check and failed loading, until
    session 48. Both now read it with one function."""
    from ragroute.route.config import load_routing
    from ragroute.store import write_artifact

    with write_artifact(tmp_path / "rr", "reranker", "cross-encoder") as build:
        (build.path / "calibration.json").write_text('{"a": "x"}')
    config = tmp_path / "routing.yaml"
    config.write_text(
        GOOD.replace("indexes/", f"{workspace}/indexes/")
        + f"reranker: {{kind: cross-encoder, model: {tmp_path / 'rr'}}}\n"
    )
    expected = "calibration.json is corrupt: 'a' is 'x', not a finite number"
    result = check(config)
    assert result.exit_code == 1, result.output
    assert [line for line in error_lines(result) if expected in line], result.stderr
    with pytest.raises(RagrouteError, match=expected):
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))


def test_a_factory_defined_in_a_loop_a_match_or_try_star_block_is_found_by_reading(tmp_path):
    """Only def/class/assignments/imports at the top level or inside if/try/with counted until
    session 49: a factory bound by a for loop, a while or match block, or try/except* (3.11) was said
    to be missing although loading finds it."""
    from ragroute.references import locate_reference

    blocks = {
        "loop": "for make in [lambda: None]:\n    pass\n",
        "loop_body": "for _ in range(1):\n    def make():\n        return None\n",
        "while_": "while True:\n    def make():\n        return None\n    break\n",
        "match_": "match 1:\n    case 1:\n        def make():\n            return None\n",
    }
    if sys.version_info >= (3, 11):
        blocks["star"] = "try:\n    def make():\n        return None\nexcept* ValueError:\n    pass\n"
    for name, code in blocks.items():
        (tmp_path / f"{name}.py").write_text(code)
        assert locate_reference(f"{name}.py:make", "r.yaml", base=tmp_path).endswith(f"{name}.py")
    with pytest.raises(RagrouteError, match="defines no top-level 'mkae'"):
        locate_reference("loop.py:mkae", "r.yaml", base=tmp_path)


def test_a_path_under_the_home_folder_is_read_there(tmp_path, monkeypatch):
    """`~/...` in a routing config or a corpora file read `<the file's folder>/~/...` until session
    50 (a CLI defaults file already expanded it): an index under the home folder was "not found"."""
    from ragroute.route.config import RoutingConfig, load_routing

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    docs = [Document(id=f"d{i}", text=f"comet orbit tail {i}") for i in range(4)]
    save_index(build_index(docs, "bm25", name="sky"), home / "idx" / "sky")
    folder = tmp_path / "cfg"
    folder.mkdir()
    config = folder / "routing.yaml"
    config.write_text(
        "sources:\n  sky: {index: ~/idx/sky, description: comets}\nrouter: {kind: fixed}\n"
        "cache_dir: ~/cache\n",
        encoding="utf-8",
    )
    result = check(config)
    assert result.exit_code == 0, result.output
    assert RoutingConfig.read(config).cache_dir() == home / "cache"
    pipeline = load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
    assert [h.doc_id for h in pipeline.retrieve("comet orbit tail 2", k=1).hits] == ["d2"]
    corpora = folder / "corpora.yaml"
    (home / "docs").mkdir()
    (home / "docs" / "a.md").write_text("# Comets\n\nTails point away from the sun.\n", encoding="utf-8")
    corpora.write_text("corpora:\n  notes: {path: ~/docs}\n", encoding="utf-8")
    from ragroute.corpora import load_corpus_specs

    assert [spec.path for spec in load_corpus_specs(corpora)] == [home / "docs"]


def test_a_path_under_an_unknown_users_home_is_one_line(tmp_path):
    """`~nosuchuser/...` (a home folder of no user) raised pathlib's RuntimeError, a traceback, from
    `config check`, loading and a factory file until session 55; it is read as written, as a shell
    leaves it, and named as missing."""
    from ragroute.references import import_reference, locate_reference
    from ragroute.yaml_files import path_beside

    user = "~ragroute-no-such-user-55"
    assert path_beside(tmp_path / "r.yaml", f"{user}/idx") == tmp_path / user / "idx"
    config = tmp_path / "routing.yaml"
    sources = f"sources:\n  sky: {{index: {user}/idx, description: comets}}\n"
    config.write_text(sources + "router: {kind: fixed}\n")
    result = check(config)
    assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError), result.output
    assert any(f"{user}/idx does not exist" in line for line in error_lines(result)), result.stderr
    for find in (import_reference, locate_reference):
        with pytest.raises(RagrouteError, match=f"factory file .*{user}/make.py does not exist"):
            find(f"{user}/make.py:make", "r.yaml", base=tmp_path)
    from ragroute.route.factories import RouterBuild

    # a router setting's path and a CLI defaults file's path likewise (tracebacks until session 55)
    resolved = RouterBuild([], None, base=tmp_path).resolve(f"{user}/x.jsonl")
    assert resolved == (tmp_path / user / "x.jsonl").resolve()
    from ragroute.cli.options import _in

    assert _in(tmp_path, f"{user}/idx") == tmp_path / user / "idx"


@pytest.mark.parametrize("value", ["!!bool maybe", "!!int"])
def test_a_rules_file_value_yaml_cannot_build_is_one_line(value):
    """`!!bool maybe` raised KeyError and an empty `!!int` IndexError out of the rules' YAML reader
    (tracebacks) until session 55."""
    from ragroute.route.policy import load_yaml

    with pytest.raises(RagrouteError, match="invalid YAML value"):
        load_yaml(f"a: {value}\n", "rules.yaml")


@pytest.mark.parametrize(
    "router",
    [
        "{kind: nosuch}",
        "{kind: prototype, treshold: 0.3}",
        "{kind: fixed, routes: [astro, web, blog]}",
        "{kind: fixed, routes: [astro, blog]}",  # one name: "fixed route blog is not a source"
        "{kind: prototype, always: [astro, web]}",
        "{kind: prototype, always: [astro, web, blog]}",
    ],
)
def test_router_problems_are_the_line_loading_refuses_with(workspace, hashing_encoder, router):
    """Until session 51 loading said `FILE: unknown router ...` where the check said `FILE: router:
    unknown router ...`, and the check said a fixed route or an `always:` name that is not a source
    once per name, worded apart from loading's one line."""
    from ragroute.route.config import load_routing

    config = workspace / "router-lines.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        "  gone: {index: indexes/missing}\n"
        f"router: {router}\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RagrouteError) as info:
            load_routing(config, encoder=hashing_encoder).retrieve("comet tail", k=2)
    assert str(info.value) in [line.removeprefix("error: ") for line in error_lines(check(config))]


def test_router_and_gate_files_under_home_are_read_as_the_check_reads_them(
    workspace, hashing_encoder, tmp_path, monkeypatch
):
    """`examples: ~/labels.jsonl` passed the check (the home folder) and failed loading, which read
    `<config folder>/~/labels.jsonl` (until session 51)."""
    from ragroute.route.config import load_routing

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "labels.jsonl").write_text(
        '{"text": "comet tail", "label": "astro"}\n{"text": "bread dough", "label": "cook"}\n'
    )
    config = workspace / "home-examples.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        "router: {kind: knn, examples: ~/labels.jsonl, k: 1}\n"
    )
    assert check(config).exit_code == 0, check(config).stderr
    assert load_routing(config, encoder=hashing_encoder).decide("comet tail").chosen == ["astro"]


def test_a_routing_config_over_corpora_does_not_need_the_corpus_files(workspace, hashing_encoder):
    """A routing config reads the indexes under `index_dir:`, not the corpora: a corpus file moved
    away after its build failed the check (`path ... does not exist`) of a config that loads (until
    session 51). Checking the corpora file itself still says it."""
    from ragroute.route.config import load_routing

    corpora = workspace / "moved-corpora.yaml"
    corpora.write_text("corpora:\n  astro: {path: gone/astro.jsonl, description: Astronomy.}\n")
    config = workspace / "moved-routing.yaml"
    config.write_text(f"corpora: {corpora.name}\nindex_dir: indexes\n")
    load_routing(config, encoder=hashing_encoder).retrieve("comet tail", k=1)
    result = check(config)
    assert result.exit_code == 0, result.stderr
    assert "does not exist" in " ".join(error_lines(check(corpora)))


@pytest.mark.parametrize(
    "extra",
    [
        "fallback: ensemble",  # the fallback ensemble holds the llm member: it would ask the LLM
        "fallback: knn",  # a knn fallback without its examples
        "fallback: nosuch",
    ],
)
def test_an_ensembles_llm_member_is_checked_as_an_llm_router_is(workspace, hashing_encoder, extra):
    """An ensemble's llm member builds its fallback from the same mapping, as an llm router does,
    and loading refused these; `config check` read the fallback only of a router of kind llm and
    said ok (until session 54)."""
    from ragroute.route.config import load_routing

    config = workspace / "ensemble-llm-member.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        "router: {kind: ensemble, members: [llm, prototype], "
        f"llm: {{kind: scripted, replies: [astro], cycle: true}}, {extra}}}\n"
    )
    with pytest.raises(RagrouteError) as info:
        load_routing(config, encoder=hashing_encoder)
    result = check(config)
    assert result.exit_code == 1, result.output
    assert str(info.value) in [line.removeprefix("error: ") for line in error_lines(result)]


def test_an_ensembles_llm_member_reference_is_found_by_the_check(workspace):
    """The llm: of an ensemble's llm member was not looked for by `config check` (until session 54):
    a module that is not there passed the check and failed loading."""
    config = workspace / "ensemble-llm-member-missing.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n  cook: {index: indexes/cook}\n"
        "router: {kind: ensemble, members: [llm, prototype], llm: 'nosuch_llm_module.x:make'}\n"
    )
    result = check(config)
    assert result.exit_code == 1
    assert any(
        "router llm: cannot load llm 'nosuch_llm_module.x:make'" in line for line in error_lines(result)
    )


def test_a_factory_file_under_the_home_folder_is_read_there(
    workspace, hashing_encoder, tmp_path, monkeypatch
):
    """`factory: ~/rag/retrievers.py:make` (and an llm reference so written) read `<the config's
    folder>/~/rag/retrievers.py` until session 54, where every other path of a config reads `~/` as
    the home folder: the check said the file does not exist and loading left the source out."""
    from ragroute.route.config import load_routing

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "rag").mkdir()
    (tmp_path / "rag" / "home_retrievers.py").write_text(
        "from ragroute.index.build import build_index\n"
        "from ragroute.types import Document\n"
        "def make():\n"
        "    return build_index([Document(id='w-1', text='comet tails and orbits')], 'bm25', name='wiki')\n"
    )
    config = workspace / "home-factory.yaml"
    config.write_text(
        "sources:\n  astro: {index: indexes/astro}\n"
        "  wiki: {kind: python, factory: '~/rag/home_retrievers.py:make', description: Wiki.}\n"
        "router: {kind: fixed, routes: [wiki]}\n"
    )
    result = check(config)
    assert result.exit_code == 0, result.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no source left out
        pipeline = load_routing(config, encoder=hashing_encoder)
    assert [h.doc_id for h in pipeline.retrieve("comet tails", k=1).hits] == ["w-1"]


def test_an_encoder_folder_written_as_a_path_is_read_beside_the_config(tmp_path, monkeypatch):
    """`encoder: ./models/enc` was read beside the config only when that folder was there; else
    from the working directory (until session 54): the same config loaded another model depending
    on where the command ran, and `config check` checked the indexes against it."""
    from ragroute.route.config import RoutingConfig

    elsewhere = tmp_path / "cwd" / "models" / "enc"
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "cwd")
    folder = tmp_path / "cfg"
    folder.mkdir()
    config = folder / "routing.yaml"
    config.write_text("encoder: ./models/enc\nsources:\n  sky: {index: idx}\n")
    assert RoutingConfig.read(config).encoder_settings()["encoder"] == str(
        folder.resolve() / "models" / "enc"
    )
    result = check(config)
    assert any(
        "encoder:" in line and str(folder.resolve() / "models" / "enc") in line
        for line in error_lines(result)
    ), result.output


def test_examples_for_a_signal_that_learns_nothing_are_refused_by_check_and_load(workspace):
    """A threshold gate's `examples:` for a signal that learns nothing from them (rarity) was
    accepted and left unread until session 56."""
    from ragroute.route.config import load_routing

    labels = workspace / "gate-labels.jsonl"
    labels.write_text(
        '{"text": "Who founded Zorblat?", "label": "doc"}\n{"text": "What is 2 + 2?", "label": "no"}\n'
    )
    config = workspace / "rarity-examples.yaml"
    config.write_text(
        GOOD + f"gate: {{kind: threshold, signal: rarity, below: 3.0, examples: {labels.name}}}\n"
    )
    said = f"{config}: gate: signal rarity learns nothing from labelled queries: leave 'examples' out"
    result = check(config)
    assert result.exit_code == 1 and error_lines(result) == [f"error: {said}"], result.output
    with pytest.raises(RagrouteError, match="learns nothing from labelled queries"):
        load_routing(config, encoder=HashingEncoder(dim=384, model_id=MINILM))
