"""The query-taking commands (`query`, `route`, `skills route`, `gate decide`, `ask --no-llm`) under
adversarial input, in process through click's CliRunner: control characters, NUL, lone
surrogates, direction marks, zero-width characters, very long texts, odd `-k` and `--filter`
values, and `--queries` files with a BOM, CRLF, invalid UTF-8, lines that are not objects.

What every run must keep (README "Bad input", docs/config.md "Command-line input"): exit 0 or 2;
on exit 2 a last stderr line `error: ...` (informational lines before it) and no traceback; with
`--json` stdout lines of JSON, the last with the documented keys; every task of a `--queries`
file answered in order or the run refused; a task routed through `--queries` answered as the
same task given as an argument. The artifacts are built once per module with cheap encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import HashingEncoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gate import FLAGS, TEXTS

from ragroute.cli import main
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.types import Document

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SKILLS = Path(__file__).parent / "data" / "skills" / "router"

#: characters that break naive text handling: NUL and other controls, CR / LF and the other line
#: ends, direction marks and overrides, zero-width characters, a BOM, a lone surrogate
ODD = (
    "\x00\x01\x07\x1b\x7f\t\r\n\x0b\x0c\x85\u2028\u2029"
    "\u200b\u200c\u200d\u200e\u200f\u202e\u2066\ufeff\ud800\udfff"
)
texts = st.text(
    alphabet=st.one_of(st.sampled_from(ODD), st.sampled_from("comets tail bread ?!.,"), st.characters()),
    max_size=40,
) | st.sampled_from(["!!!???", "...", "\u200b\u200f", "comets\r\ntail", "x" * 100_001, "comets " * 14_000])
k_values = st.sampled_from(["1", "3", "99999999999999999999"])
BAD_K = ["0", "-1", "abc", "1.5", "1e3", "", "nan"]
filter_values = st.sampled_from(
    ["lang=en", "year=2019", "year=2019.0", "ok=true", "ok=1", "clé=é", "year=null", "lang=en=fr",
     "year=1e999", "year=-0", "lang=", "ok=True"]
)  # fmt: skip
BAD_FILTERS = ["k=v=x=y", "=en", "lang", "pth=x", "\u200b=x", "=", "title=x"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A bm25 index with number, boolean and unicode metadata; a fixed-router config over it (no
    encoder); a skill index and a rarity gate, both encoding with the test hashing encoder."""
    from ragroute.gate import TrainedGate
    from ragroute.skills import load_catalogue
    from ragroute.skills.router import SkillRouter

    root = tmp_path_factory.mktemp("fuzz")
    meta = [
        {"year": 2019, "lang": "en", "ok": True, "k=v": "x=y", "clé": "é"},
        {"year": "2020", "lang": "fr", "ok": False},
        {"year": 2021, "lang": "en"},
    ]
    texts_ = [
        "Comets grow an ion tail pushed by the solar wind.",
        "Neutron stars are collapsed stellar cores.",
        "Telescopes gather light with large mirrors.",
    ]
    docs = [
        Document(id=f"a{i}", text=t, metadata=m) for i, (t, m) in enumerate(zip(texts_, meta, strict=True))
    ]
    save_index(build_index(docs, "bm25", name="astro"), root / "astro")
    cook = [Document(id="c0", text="Knead bread dough until smooth.", metadata={"lang": "en"})]
    save_index(build_index(cook, "bm25", name="cook"), root / "cook")
    sources = (
        "sources:\n  astro: {index: astro, description: Astronomy.}\n"
        "  cook: {index: cook, description: Cooking.}\nrouter: {kind: fixed}\n"
    )
    (root / "fixed.yaml").write_text(sources)
    (root / "scripted.yaml").write_text(sources + 'llm: {kind: scripted, default: "ANSWER: ion tails"}\n')
    SkillRouter.build(load_catalogue(SKILLS), HashingEncoder(dim=128)).save(root / "skills")
    TrainedGate.fit(TEXTS, FLAGS, None, signals=["rarity", "complexity"]).save(root / "gate")
    return root


@pytest.fixture
def hashing_encoders(monkeypatch):
    """`skills route` loads the index's encoder by name: the test hashing encoder here."""
    import ragroute.encode

    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **kw: HashingEncoder(dim=128))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def check_outcome(result: Result, *, as_json: bool = False, last_keys: set[str] = frozenset()) -> None:
    """Exit 0 or 2; on 2, a last stderr line `error: ...` and nothing but short notes before it; no
    traceback; with --json every stdout line JSON and the last one holding ``last_keys``."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    err = result.stderr.splitlines()
    if result.exit_code == 2:
        assert err and err[-1].startswith("error: "), result.stderr
        assert not result.stdout, result.stdout
        assert all(line.startswith(("warning: ", "note: ", "reranker: ")) for line in err[:-1]), err
        return
    if as_json:
        lines = result.stdout.splitlines()
        assert lines, result.output
        payloads = [json.loads(line) for line in lines]
        assert set(payloads[-1]) >= last_keys, payloads[-1]


@pytest.mark.parametrize("bad", [*(["-k", k] for k in BAD_K), *(["--filter", f] for f in BAD_FILTERS)])
def test_bad_k_and_filter_values_are_one_line_errors(workspace, bad):
    for command in (
        ["query", str(workspace / "astro"), "comets"],
        ["route", str(workspace / "fixed.yaml"), "comets"],
        ["ask", str(workspace / "fixed.yaml"), "comets", "--no-llm"],
    ):
        check_outcome(invoke(*command, *bad, "--json"))
        assert invoke(*command, *bad).exit_code == 2


def one_line_error(result: Result, starts: str) -> None:
    check_outcome(result)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1].startswith(f"error: {starts}"), result.stderr


@FUZZ
@given(text=texts, k=k_values, filters=st.lists(filter_values, max_size=2))
def test_query_survives_adversarial_input(workspace, text, k, filters):
    args = ["query", str(workspace / "astro"), text, "-k", k, "--json"]
    for value in filters:
        args += ["--filter", value]
    check_outcome(invoke(*args), as_json=True, last_keys={"query", "index", "hits", "trace"})


@FUZZ
@given(text=texts, k=k_values, filters=st.lists(filter_values, max_size=2))
def test_route_survives_adversarial_input(workspace, text, k, filters):
    args = ["route", str(workspace / "fixed.yaml"), text, "-k", k, "--json"]
    for value in filters:
        args += ["--filter", value]
    check_outcome(invoke(*args), as_json=True, last_keys={"query", "decision", "hits"})


@FUZZ
@given(text=texts, filters=st.lists(filter_values, max_size=2))
def test_ask_without_llm_survives_adversarial_input(workspace, text, filters):
    args = ["ask", str(workspace / "fixed.yaml"), text, "--no-llm", "--json"]
    for value in filters:
        args += ["--filter", value]
    result = invoke(*args)
    check_outcome(result)
    if result.exit_code == 0:  # the printed run, then one JSON object on the last line
        assert {"answer", "steps", "complete"} <= set(json.loads(result.stdout.splitlines()[-1]))


@FUZZ
@given(text=texts)
def test_gate_decide_survives_adversarial_input(workspace, text):
    keys = {"action", "p_retrieve", "threshold", "reason", "signals"}
    check_outcome(
        invoke("gate", "decide", str(workspace / "gate"), text, "--json"), as_json=True, last_keys=keys
    )


@FUZZ
@given(text=texts, k=k_values)
def test_skills_route_survives_adversarial_input(workspace, hashing_encoders, text, k):
    args = ["skills", "route", str(workspace / "skills"), text, "-k", k, "--no-reranker", "--json"]
    check_outcome(invoke(*args), as_json=True, last_keys={"id", "skills", "abstain"})


tasks = st.lists(
    st.text(
        alphabet=st.one_of(st.sampled_from(ODD[:-2]), st.sampled_from("convert miles email ?")), max_size=20
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(tasks=tasks, bom=st.booleans(), crlf=st.booleans())
def test_skills_queries_file_answers_every_task_as_the_argument_would(
    workspace, hashing_encoders, tmp_path, tasks, bom, crlf
):
    """Each task of a --queries file gets its line, in order, under its id, with the skills and
    scores the same task gets as an argument; or the whole run is refused in one line."""
    lines = [json.dumps({"id": f"t{i}", "text": text}) for i, text in enumerate(tasks)]
    end = "\r\n" if crlf else "\n"
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(("\ufeff" if bom else "").encode() + end.join(lines).encode() + end.encode())
    index = str(workspace / "skills")
    result = invoke("skills", "route", index, "--queries", str(path), "--no-reranker", "-k", "3", "--json")
    check_outcome(result, as_json=True, last_keys={"id", "skills", "abstain"})
    if result.exit_code != 0:
        return
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["id"] for p in payloads] == [f"t{i}" for i in range(len(tasks))]
    for text, payload in zip(tasks, payloads, strict=True):
        alone = invoke("skills", "route", index, text, "--no-reranker", "-k", "3", "--json")
        assert alone.exit_code == 0, alone.output
        single = json.loads(alone.stdout.splitlines()[-1])
        assert single["skills"] == payload["skills"]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b'{"id": "a", "text": "convert \\ud800 miles"}\n', "not valid text: lone surrogate U+D800"),
        (b'{"id": "a", "text": "convert \xff miles"}\n', "invalid UTF-8 (byte 0xff"),
        (b'{"id": "a", "text": "convert"}\n[1, 2]\n', "expected a JSON object, got list"),
        (b'{"id": "a", "text": "convert"}\n"task"\n', "expected a JSON object, got str"),
        (b'{"id": "a", "text": "convert"}\n{"id": "a", "text": "email"}\n', "task id 'a' repeats line 1"),
        (b'{"id": 1, "text": "convert"}\n{"id": "1", "text": "email"}\n', "task id '1' repeats line 1"),
        (b'{"id": "a", "text": "convert"}\n{"id": "b"}\n', 'missing or empty "text"'),
        (b'{"id": "a", "text": "\\u200b\\u200f"}\n', "query has no visible characters"),
        (b'{"id": 1.5, "text": "convert"}\n', '"id" must be a non-empty string or an integer'),
        (b"", "no tasks in it"),
    ],
)
def test_skills_queries_file_refuses_a_bad_line_in_one_line(
    workspace, hashing_encoders, tmp_path, content, said
):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(content)
    result = invoke(
        "skills", "route", str(workspace / "skills"), "--queries", str(path), "--no-reranker", "--json"
    )
    one_line_error(result, f"{path}")
    assert said in result.stderr


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "NaN", "0", "-1"])
def test_ask_timeout_that_is_no_positive_finite_number_is_one_line_error(workspace, timeout):
    """`ask --timeout nan` was taken (NaN passes every range check): each LLM call then timed out at
    once and the run answered from a top hit, said only in `note:` lines; `inf` overflowed in each
    call the same way."""
    result = invoke("ask", str(workspace / "scripted.yaml"), "comets tail", "--timeout", timeout, "--json")
    one_line_error(result, "Invalid value for '--timeout'")
    assert len(result.stderr.splitlines()) == 1
    fine = invoke("ask", str(workspace / "scripted.yaml"), "comets tail", "--timeout", "30", "--json")
    assert fine.exit_code == 0, fine.output
    assert "TimeoutError" not in fine.stdout and "OverflowError" not in fine.stdout, fine.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["skills", "build", "NOWHERE", "--out", "X", "--dense-weight"], "--dense-weight"),
        (["skills", "build", "NOWHERE", "--out", "X", "--duplicate-threshold"], "--duplicate-threshold"),
        (["route", "fit", "NOWHERE", "--out", "X", "--C"], "--C"),
        (["graph", "build", "NOWHERE", "--out", "X", "--synonym-threshold"], "--synonym-threshold"),
        (["gate", "decide", "NOWHERE", "query", "--threshold"], "--threshold"),
    ],
)
def test_nan_given_to_a_number_option_is_refused_by_its_name(args, option):
    """NaN compares false with every bound, so click's FloatRange took `--dense-weight nan` and the
    rest (until session 45): each option is now refused by name, before anything runs."""
    result = invoke(*args, "nan")
    one_line_error(result, f"Invalid value for '{option}'")
    assert "is not a finite number" in result.stderr
