"""Differential test of `ragroute config check` against loading (`load_routing` and one query).

Random routing configs are built around small valid ones (BM25 and hashing-encoder dense indexes,
every router kind that needs no fitted artifact, gates, a reranker, an exposure budget, a policy,
`corpora:` / `index_dir:`) and mutated: misspelt keys, values of the wrong type (strings for
numbers, YAML booleans, lists for scalars, null), numbers out of range, unknown kinds, missing
files, source names YAML reads apart but loading reads as one, `none`, empty lists. For each:

* the check passes => the config loads and a query runs;
* the check fails => loading fails too, unless every problem is one the docs say only the check
  reports (docs/config.md): a source that cannot be opened (missing or broken index, a factory
  not found) is left out by loading, which goes on with the others; the top-level `llm:` is read
  by `ragroute ask`, not by `load_routing`;
* every failure of either is one line naming the file, never a traceback;
* neither writes a file.

Offline and fast: no model is loaded (the dense index records the default encoder's id and
dimension, as in test_config_check.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import HashingEncoder
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ragroute.cli import main
from ragroute.errors import RagrouteError
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.route.config import load_routing
from ragroute.types import Document

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # what the default `encoder:` resolves to, dim 384
TOPICS = {
    "astro": ["Comets grow an ion tail pushed by the solar wind.", "Neutron stars are collapsed cores."],
    "cook": ["Knead bread dough until it is smooth.", "Whisk oil slowly into egg yolk for mayonnaise."],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("config-differential")
    for topic, texts in TOPICS.items():
        docs = [Document(id=f"{topic}-{i}", text=text) for i, text in enumerate(texts)]
        save_index(build_index(docs, "bm25", name=topic), root / "indexes" / topic)
        (root / "corpus").mkdir(exist_ok=True)
        (root / "corpus" / f"{topic}.jsonl").write_text(
            "".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in docs)
        )
    docs = [Document(id=f"astro-{i}", text=text) for i, text in enumerate(TOPICS["astro"])]
    dense = build_index(docs, "dense", encoder=HashingEncoder(dim=384, model_id=MINILM))
    save_index(dense, root / "indexes" / "minilm")
    (root / "labels.jsonl").write_text(
        '{"text": "comet tail", "label": "astro"}\n{"text": "bread dough", "label": "cook"}\n'
    )
    (root / "corpora.yaml").write_text(
        "corpora:\n"
        "  astro: {path: corpus/astro.jsonl, description: Astronomy.}\n"
        "  cook: {path: corpus/cook.jsonl, description: Cooking.}\n"
    )
    return root


# ----------------------------------------------------------------------------- valid configs

SOURCES = {
    "astro": {"index": "indexes/astro", "description": "Astronomy and space."},
    "cook": {"index": "indexes/cook", "description": "Cooking and recipes."},
    "dense": {"index": "indexes/minilm", "corpus": "indexes/astro", "description": "Astronomy again."},
}
ROUTERS: list[dict[str, Any]] = [
    {"kind": "prototype", "threshold": 0.3, "max_routes": 2},
    {"kind": "prototype", "none_threshold": 0.1, "temperature": 0.05, "hedge_below": 0.9},
    {"kind": "centroid", "depth": 5, "fusion": "rrf", "route_weights": "probability"},
    {"kind": "fixed", "routes": ["astro"], "scores": "fusion"},
    {"kind": "knn", "examples": "labels.jsonl", "k": 1},
    {"kind": "ensemble", "members": ["prototype", "centroid"], "sharpness": 2.0},
    {"kind": "confidence", "probe": "exact", "always": ["cook"]},
    {
        "kind": "llm",
        "llm": {"kind": "scripted", "replies": ["astro"], "cycle": True},
        "fallback": "prototype",
    },
]
GATES: list[dict[str, Any]] = [
    {"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": 3.0},
    {"kind": "threshold", "signal": {"kind": "retrieval", "k": 2}, "above": 0.1, "depth": {"deep_k": 4}},
    {
        "kind": "llm",
        "llm": {"kind": "scripted", "replies": ["Paris"], "cycle": True},
        "signals": ["llm_self"],
    },
]
EXTRAS: dict[str, list[Any]] = {
    "reranker": [{"kind": "parents"}],
    "exposure": [{"max_fraction": 0.5, "min_documents": 10, "hard_stop": True}],
    "signals": [{"math": {"type": "regex", "pattern": r"\d+ times \d+"}}],
    "rules": [[{"name": "arithmetic", "when": "math", "then": {"route": "none"}}]],
    "llm": [{"kind": "scripted", "replies": ["x"]}],
}


@st.composite
def valid_configs(draw) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if draw(st.booleans()) and draw(st.booleans()):
        config.update({"corpora": "corpora.yaml", "index_dir": "indexes"})
    else:
        names = draw(st.lists(st.sampled_from(sorted(SOURCES)), min_size=1, max_size=3, unique=True))
        config["sources"] = {name: dict(SOURCES[name]) for name in ["astro", *names]}
    config["router"] = copy.deepcopy(draw(st.sampled_from(ROUTERS)))
    if draw(st.booleans()):
        config["gate"] = copy.deepcopy(draw(st.sampled_from(GATES)))
    for key in draw(st.lists(st.sampled_from(sorted(EXTRAS)), unique=True, max_size=3)):
        config[key] = copy.deepcopy(draw(st.sampled_from(EXTRAS[key])))
    if "rules" in config or "signals" in config:
        config["signals"], config["rules"] = (
            copy.deepcopy(EXTRAS["signals"][0]),
            copy.deepcopy(EXTRAS["rules"][0]),
        )
    return config


# ----------------------------------------------------------------------------- mutations

NASTY: list[Any] = [
    None, True, False, "yes", "no", "", "none", "None", 0, -1, 1, 2, 0.5, 1.5, 1e6, "0.3", "abc",
    [], ["astro"], [None], [5], {}, {"kind": "nosuch"}, "astro", "cook", "nosuch", "indexes/missing",
    "labels.jsonl", "prototype", "ensemble", "rrf", "exact", "llm_self", "rarity", float("nan"),
]  # fmt: skip
KEYS = [
    "kind", "index", "threshold", "max_routes", "depth", "hedge_below", "always", "fusion",
    "route_weights", "scores", "members", "routes", "examples", "k", "signal", "signals", "value",
    "above", "below", "model", "candidates", "per", "max_fraction", "description", "access",
    "corpus", "expert", "factory", "temperature", "none_threshold", "sharpness", "fallback",
]  # fmt: skip


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a mapping key or list item in ``value``."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found.append((*prefix, key))
        found.extend(paths(item, (*prefix, key)))
    return found


def parent_of(config: dict[str, Any], path: tuple) -> Any:
    node = config
    for key in path[:-1]:
        node = node[key]
    return node


def typo(key: str, draw) -> str:
    at = draw(st.integers(0, max(len(key) - 1, 0)))
    return key[:at] + key[at + 1 :] if len(key) > 2 else key + "x"


@st.composite
def mutated_configs(draw) -> dict[str, Any]:
    config = draw(valid_configs())
    for _ in range(draw(st.integers(0, 3))):
        where = paths(config)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent, key = parent_of(config, path), path[-1]
        op = draw(st.sampled_from(["value", "value", "typo", "delete", "add", "rename"]))
        if op == "value":
            parent[key] = copy.deepcopy(draw(st.sampled_from(NASTY)))
        elif op == "delete":
            del parent[key]
        elif op == "typo" and isinstance(parent, dict) and isinstance(key, str):
            parent[typo(key, draw)] = parent.pop(key)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = copy.deepcopy(draw(st.sampled_from(NASTY)))
        elif op == "rename" and isinstance(parent, dict) and path[0] == "sources" and len(path) == 2:
            # names YAML keeps apart and loading reads alike, reserved, or empty
            parent[draw(st.sampled_from(["none", "", "  ", 5, "5", True, "True", None, "astro"]))] = (
                parent.pop(key)
            )
    return config


# ----------------------------------------------------------------------------- the property


def digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def check_only(report: dict[str, Any], config: Path) -> bool:
    """Whether every problem the check reports is one the docs say loading passes over: a source
    that cannot be opened beside one that can (left out with a warning), or the top-level `llm:`
    (read by `ragroute ask`)."""
    unusable = {s["name"] for s in report["sources"] if s["status"] in ("missing", "broken")}
    usable = [s for s in report["sources"] if s["status"] == "ok"]
    for problem in report["problems"]:
        if problem.startswith(f"{config}: llm"):
            continue
        names = [name for name in unusable if problem.startswith(f"{config}: source {name!r}")]
        if not (names and usable):
            return False
    return True


def one_line_for_several(error: str) -> bool:
    """Where loading gives one line for several problems and the check one line per problem, by
    design: every unknown key of a mapping (``unknown keys 'a', 'b'``), every source that could not
    be opened (``no source could be opened (a: ...; b: ...)``). Such a refusal is compared by
    verdict only."""
    return re.search(r": unknown \w+s '", error) is not None or ": no source could be opened (" in error


#: wordings loading and the check still give apart (found in session 51, left for now; some are
#: KNOWN cases of test_single_key_refusals_are_the_line_loading_refuses_with): compared by verdict.
#: Gate lines are left out whole: loading says `gate llm:`, `unknown threshold gate key`, `unknown
#: gate signal` where the check says `gate: llm:`, `gate: unknown ...`, `gate: signal: ...`.
LEFT_APART = (
    "gate",
    " reranker key ",
    "cannot read corpus",
    "routes (",  # a fitted router's labels that name no source: the check adds `router: `
    "router llm",
)


def agree(root: Path, config: dict[str, Any], left_apart: tuple[str, ...] = LEFT_APART) -> str:
    """Check and load ``config`` (written as ``routing.yaml`` in ``root``), assert they agree, and
    say how (``check passes, load passes``...)."""
    path = root / "routing.yaml"
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    path.write_text(text)
    before = digest(root)
    result = CliRunner().invoke(main, ["config", "check", str(path), "--json"])
    assert result.exit_code in (0, 1), (text, result.output, result.exception)
    for line in result.stderr.splitlines():  # one line per problem or note, no traceback
        assert line.startswith(("error: ", "warning: ")), (text, result.stderr)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] == (result.exit_code == 0)
    loaded, error = None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pipeline = load_routing(path, encoder=HashingEncoder(dim=384, model_id=MINILM))
            loaded = pipeline.retrieve("comet tail", k=2)
        except RagrouteError as exc:
            error = str(exc)
    assert digest(root) == before, text  # neither writes a file
    if error is not None:
        # one line naming the file at fault: the config, or the corpus definitions it names
        assert "\n" not in error and str(root) in error, (text, error)
    if report["ok"]:
        assert error is None and loaded is not None, (text, error)
    elif error is None:
        assert check_only(report, path), (text, report["problems"])
    elif not one_line_for_several(error) and not any(part in error for part in left_apart):
        # both refuse: loading's one line is among the check's (the same words, not only the verdict)
        lines = [
            line.removeprefix("error: ") for line in result.stderr.splitlines() if line.startswith("error: ")
        ]
        # (until session 51 only the verdicts were compared: a kNN router's missing `examples:` file
        # was `FILE: PATH: no such file` to loading and `FILE: router: examples file PATH does not
        # exist` to the check)
        assert error in lines, (text, error, lines)
    return f"check {'passes' if report['ok'] else 'fails'}, load {'fails' if error else 'passes'}"


@settings(
    # a longer hunt: DIFF_EXAMPLES=3000 DIFF_SEED=1 pytest ... --hypothesis-seed=N
    max_examples=int(os.environ.get("DIFF_EXAMPLES", "300")),
    derandomize="DIFF_SEED" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(config=mutated_configs())
def test_config_check_agrees_with_loading(workspace, config):
    event(agree(workspace, config))


@pytest.mark.parametrize(
    "sources",
    [
        {"astro": SOURCES["astro"], "": SOURCES["cook"]},
        {"astro": SOURCES["astro"], "  ": SOURCES["cook"]},
        {5: SOURCES["astro"], "5": SOURCES["cook"]},
        {True: SOURCES["astro"], "True": SOURCES["cook"]},
        {"astro": SOURCES["astro"], "none": SOURCES["cook"]},
        {"astro": SOURCES["astro"], "cook": {"index": "indexes/missing"}},
    ],
)
def test_source_names_and_left_out_sources_agree(workspace, sources):
    """The cases the property found or must keep finding, run every time."""
    agree(workspace, {"sources": sources})


def KNOWN(reason: str) -> pytest.MarkDecorator:  # noqa: N802
    """A mismatch of wording still left (found in session 51, not yet given one shared line)."""
    return pytest.mark.xfail(strict=True, reason=reason)


BASE: dict[str, Any] = {"sources": {"astro": SOURCES["astro"], "cook": SOURCES["cook"]}}
#: one key changed from a valid config: (what, value) with ``what`` the top-level key it replaces
VARIATIONS: list[Any] = [
    ("router", {"kind": "knn", "examples": "missing.jsonl"}),  # until session 51 worded apart
    ("router", {"kind": "knn"}),
    ("router", {"kind": "knn", "examples": "labels.jsonl", "k": "abc"}),
    ("router", {"kind": "trained"}),
    ("router", {"kind": "trained", "model": "missing"}),
    ("router", {"kind": "nosuch"}),
    ("router", {"kind": "prototype", "threshold": 1.5}),
    ("router", {"kind": "prototype", "max_routes": 0}),
    ("router", {"kind": "prototype", "max_routes": "abc"}),
    ("router", {"kind": "prototype", "thresold": 0.3}),
    ("router", {"kind": "prototype", "always": ["nosuch"]}),
    ("router", {"kind": "prototype", "always": "astro"}),
    ("router", {"kind": "prototype", "hedge_below": "x"}),
    ("router", {"kind": "fixed", "routes": ["nosuch"]}),
    ("router", {"kind": "fixed"}),
    ("router", {"kind": "ensemble", "members": ["ensemble"]}),
    ("router", {"kind": "ensemble", "members": ["nosuch"]}),
    ("router", {"kind": "ensemble", "members": ["knn"], "examples": "missing.jsonl"}),
    ("router", {"kind": "llm", "llm": {"kind": "scripted", "replies": ["astro"]}, "fallback": "llm"}),
    ("router", {"kind": "centroid", "fusion": "nosuch"}),
    ("router", {"kind": "centroid", "route_weights": "nosuch"}),
    ("router", {"kind": "confidence", "probe": "nosuch"}),
    ("router", "prototype"),
    ("gate", {"signal": "rarity"}),
    ("gate", {"kind": "nosuch"}),
    pytest.param(
        "gate",
        {"kind": "threshold", "signal": "nosuch", "below": 3.0},
        marks=KNOWN("loading: `gate: unknown gate signal`, the check: `gate: signal: unknown signal kind`"),
    ),
    ("gate", {"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": "abc"}),
    ("gate", {"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": 3.0, "depth": 5}),
    ("gate", {"kind": "llm", "llm": {"kind": "scripted", "replies": ["x"]}, "fallback": {"below": 3}}),
    (
        "gate",
        {
            "kind": "llm",
            "llm": {"kind": "scripted", "replies": ["x"]},
            "fallback": {"kind": "llm", "llm": {"kind": "scripted", "replies": ["x"]}},
        },
    ),
    ("reranker", {"model": "x"}),
    ("reranker", {"kind": "nosuch"}),
    ("reranker", {"kind": "parents", "nosuch": 1}),  # loading left out `reranker: ` until session 51
    ("reranker", {"kind": "cross-encoder", "model": "x", "nosuch": 1}),
    ("exposure", {"max_fraction": 1.5}),
    pytest.param(
        "corpora",
        "missing.yaml",
        marks=KNOWN("loading names the corpus file only, not `ROUTING: corpora: `"),
    ),
    ("index_dir", "missing"),
]


@pytest.mark.parametrize(("key", "value"), VARIATIONS)
def test_single_key_refusals_are_the_line_loading_refuses_with(workspace, key, value):
    """Each refusal of loading is one of the check's lines, word for word."""
    config = copy.deepcopy(BASE)
    if key in ("corpora", "index_dir"):
        config = {"corpora": "corpora.yaml", "index_dir": "indexes", key: value}
    config["router"] = config.get("router", {"kind": "prototype"})
    config[key] = copy.deepcopy(value)
    agree(workspace, config, left_apart=())
