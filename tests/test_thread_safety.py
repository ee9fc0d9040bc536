"""Library facilities ragroute calls from query threads that are not safe to use from two threads at
once: each test forces the interleaving that broke (events, stand-ins for the library call), so it
fails on the old code every time rather than by luck.

* CPython 3.11's AST constructor keeps one recursion counter per interpreter: two threads parsing at
  once (``ast.literal_eval``, numpy's ``.npy`` headers) may raise a spurious ``SystemError``. A
  step-wise planner's answer in Python-literal form is read with ``ast.literal_eval`` at query time
  (``graph/extract_llm.parse_json``); ragroute's parses take turns (``ragroute.pyast``).
* torch's global generator: a sampled local-LLM answer seeds it and then draws from it, so two
  threads sampling at once read each other's streams (``llm/local.py``).
"""

from __future__ import annotations

import ast
import threading
from types import SimpleNamespace

import pytest

AST_RACE = "AST constructor recursion depth mismatch (before=5, after=4)"


def _racing_literal_eval(monkeypatch, first_inside: threading.Event, second_inside: threading.Event):
    """``ast.literal_eval`` as CPython 3.11 behaves: the first call waits (briefly) inside for a
    second thread to come in; if one does, both raise the spurious ``SystemError``."""
    real = ast.literal_eval
    state = {"inside": 0, "overlapped": False}
    lock = threading.Lock()

    def literal_eval(text):
        with lock:
            state["inside"] += 1
            first = not first_inside.is_set()
            if state["inside"] > 1:
                state["overlapped"] = True
        try:
            if first:
                first_inside.set()
                second_inside.wait(0.3)  # the other thread comes in now, unless it waits its turn
            else:
                second_inside.set()
            if state["overlapped"]:
                raise SystemError(AST_RACE)
            return real(text)
        finally:
            with lock:
                state["inside"] -= 1

    monkeypatch.setattr(ast, "literal_eval", literal_eval)


def test_two_threads_reading_python_literal_plans_at_once_both_read_them(monkeypatch):
    """Two step-wise controllers' planners read answers written as Python dicts (single quotes, as
    small LLMs write them: json fails, ``ast.literal_eval`` reads them) at once: until session 50
    the second parse raised CPython 3.11's spurious ``SystemError``, which no caller caught (the
    query failed)."""
    from ragroute.gate.planners import ASK, parse_plan

    first_inside, second_inside = threading.Event(), threading.Event()
    _racing_literal_eval(monkeypatch, first_inside, second_inside)
    plans = {
        "a": "{'action': 'search', 'query': 'who founded Kellow'}",
        "b": "{'action': 'answer', 'answer': 7}",
    }
    got: dict[str, object] = {}

    def read(name):
        try:
            got[name] = parse_plan(plans[name])
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever escaped
            got[name] = exc

    first = threading.Thread(target=read, args=("a",))
    first.start()
    assert first_inside.wait(5)
    second = threading.Thread(target=read, args=("b",))
    second.start()
    first.join(5)
    second.join(5)
    assert got == {"a": (ASK, "who founded Kellow"), "b": ("answer", "7")}


def test_a_parse_meeting_the_spurious_ast_error_is_tried_again(monkeypatch):
    """A thread outside ragroute may be parsing at the moment (the lock cannot hold it back): the
    spurious error is tried again; any other ``SystemError`` is raised as it is."""
    from ragroute import pyast

    real = ast.literal_eval
    calls = []

    def once_raced(text):
        calls.append(text)
        if len(calls) == 1:
            raise SystemError(AST_RACE)
        return real(text)

    monkeypatch.setattr(ast, "literal_eval", once_raced)
    assert pyast.literal_eval("{'a': [1, 2]}") == {"a": [1, 2]} and len(calls) == 2

    def broken(text):
        raise SystemError("another internal error")

    monkeypatch.setattr(ast, "literal_eval", broken)
    with pytest.raises(SystemError, match="another"):
        pyast.literal_eval("1")


def _sampling_llm(torch, seeded: threading.Event | None = None, other_done: threading.Event | None = None):
    """A ``LocalLLM`` whose model samples three tokens from torch's global generator; the first
    thread to generate waits (briefly) after seeding, for another thread to sample meanwhile."""
    from ragroute.llm.local import LocalLLM

    class Tokenizer:
        chat_template = None
        eos_token_id = 0

        def __call__(self, text, **kwargs):
            return {"input_ids": torch.zeros((1, 2), dtype=torch.long)}

        def decode(self, tokens, skip_special_tokens=False):
            return " ".join(str(int(t)) for t in tokens)

    def generate(input_ids, **kwargs):
        second = threading.current_thread().name == "second"
        if seeded is not None and other_done is not None and not second:
            seeded.set()
            other_done.wait(0.3)  # another thread samples now, unless it waits its turn
        drawn = torch.randint(1, 50, (3,))
        if other_done is not None and second:
            other_done.set()
        logits = [torch.zeros((1, 50)) for _ in range(3)]
        return SimpleNamespace(sequences=torch.cat([input_ids[0], drawn])[None, :], logits=logits)

    llm = LocalLLM(max_new_tokens=3, temperature=0.7)
    llm._model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192), generate=generate)
    llm._tokenizer = Tokenizer()
    return llm


def test_two_threads_sampling_the_local_llm_get_their_own_seeds_answers():
    """A sampled answer (temperature above 0) is the seed's answer whatever another thread samples
    meanwhile: until session 50 the second thread's seeding reset torch's one global generator
    between the first thread's seeding and its draws, so the first answered with the second's stream."""
    torch = pytest.importorskip("torch")
    alone = _sampling_llm(torch)
    expected = {seed: alone.generate("q", seed=seed)[0] for seed in (1, 2)}
    assert expected[1] != expected[2]
    seeded, other_done = threading.Event(), threading.Event()
    llm = _sampling_llm(torch, seeded, other_done)
    got: dict[int, object] = {}

    def answer(seed):
        got[seed] = llm.generate("q", seed=seed)[0]

    first = threading.Thread(target=answer, args=(1,), name="first")
    first.start()
    assert seeded.wait(5)
    second = threading.Thread(target=answer, args=(2,), name="second")
    second.start()
    first.join(5)
    second.join(5)
    assert got == expected
