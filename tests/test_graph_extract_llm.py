"""The LLM OpenIE extractor (ragroute.graph.extract_llm) with a scripted llama-index LLM."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from ragroute.errors import RagrouteError
from ragroute.graph.build import extract_passages
from ragroute.graph.extract import Extraction, ExtractionWarning, Fact, resolve_extractor
from ragroute.graph.extract_llm import (
    PROMPT_VERSION,
    ExtractionFailure,
    LLMExtractor,
    parse_entities,
    parse_json,
    parse_triples,
)
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.types import Document

DOCS = [
    Document(id="p1", title="Ada Brennan", text="Ada Brennan was a painter. She was born in Kellow in 1901."),
    Document(id="p2", title="Kellow", text="Kellow is a market town. The Varne River flows through Kellow."),
    Document(id="p3", title="Otto Lind", text="Otto Lind was a sculptor born in Dressel."),
]
ADDED = [Document(id="p4", title="Varne River", text="The Varne River rises in the Marl Hills.")]

# title -> (NER answer, triples answer), in the untidy forms LLMs give
ANSWERS = {
    "Ada Brennan": (
        '```json\n{"named_entities": ["Ada Brennan", "Kellow", "1901"]}\n```\nHope this helps!',
        'Here are the triples:\n{"triples": [["Ada Brennan", "is a", "painter"], '
        '["Ada Brennan", "born in", "Kellow"], ["Ada Brennan", "born in", "1901"]]} Done.',
    ),
    "Kellow": (
        "{'named_entities': ['Kellow', 'Varne River', 'England',]}",
        "{'triples': [['Kellow', 'is a', 'market town'], "
        "['Varne River', 'flows through', 'Kellow'], ['bad']]}",
    ),
    "Otto Lind": (
        '["Otto Lind", "Dressel"]',
        '{"triples": [{"subject": "Otto Lind", "relation": "born in", "object": "Dressel"}]}',
    ),
    "Varne River": (
        '{"named_entities": ["Varne River", "Marl Hills"]}',
        '{"triples": [["Varne River", "rises in", "Marl Hills"]]}',
    ),
}


class ScriptedLLM(CustomLLM):
    """Answers from a script keyed by the passage title; records every prompt."""

    answers: dict[str, Any] = Field(default_factory=dict)
    prompts: list[str] = Field(default_factory=list)
    model: str = "scripted-1"
    fail_titles: list[str] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        title = prompt.rsplit("Paragraph:\n```\n", 1)[1].split("\n", 1)[0]
        if title in self.fail_titles:
            raise ConnectionError("server went away")
        stage = 0 if "extract named entities" in prompt else 1
        return CompletionResponse(text=self.answers[title][stage])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError


def scripted(**changes: Any) -> ScriptedLLM:
    return ScriptedLLM(answers={**ANSWERS, **changes.pop("answers", {})}, **changes)


def build(docs, encoder, extractor):
    return build_index(docs, "graph", encoder=encoder, extractor=extractor, name="kg", show_progress=False)


# --------------------------------------------------------------------------- parsing


def test_parse_json_reads_untidy_answers():
    assert parse_json('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert parse_json('Sure! {"a": "Bob\'s [x]"} and then {"b": 2}') == {"a": "Bob's [x]"}
    assert parse_json("{'a': ['x', 'y',], 'b': true, 'c': null}") == {"a": ["x", "y"], "b": True, "c": None}
    assert parse_json('The answer: ["Kellow", "1901"]') == ["Kellow", "1901"]
    for bad, reason in [
        ("I cannot help with that.", "no JSON"),
        ('{"named_entities": ["a", "b"', "unterminated"),
        ("{named_entities: [a]}", "malformed"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_json(bad)


def test_parse_entities_and_triples_shapes():
    assert parse_entities('{"named_entities": ["A", " ", 7, null, "B"]}') == ["A", "7", "B"]
    assert parse_triples(
        '{"triples": [["a", "r", "b"], ["x", "y"], {"subject": "c", "predicate": "p", "object": "d"}]}'
    ) == [
        ("a", "r", "b"),
        ("c", "p", "d"),
    ]
    assert parse_triples('{"triples": []}') == []
    with pytest.raises(ValueError, match="no well-formed triple"):
        parse_triples('{"triples": [["only", "two"]]}')
    with pytest.raises(ValueError, match="'triples'"):
        parse_triples('{"facts": []}')


# --------------------------------------------------------------------------- extraction


def test_extracts_entities_triples_relations_and_title_links(tmp_path):
    llm = scripted()
    extractor = LLMExtractor(llm, cache_dir=tmp_path)
    out = extractor.extract(DOCS[0])
    assert out.passage == "p1"
    assert out.phrases == ["ada brennan", "kellow", "1901", "painter"]
    assert out.facts == [
        Fact("ada brennan", "painter", "p1", 0, relation="is a"),
        Fact("ada brennan", "kellow", "p1", 1, relation="born in"),
        Fact("ada brennan", "1901", "p1", 2, relation="born in"),
    ]  # every phrase is already linked to the title by a triple: no extra title link
    kellow = extractor.extract(DOCS[1])
    assert ("varne river", "kellow", "flows through") in {
        (f.subject, f.object, f.relation) for f in kellow.facts
    }
    title_links = [(f.object, f.relation) for f in kellow.facts if f.subject == "kellow" and not f.relation]
    assert title_links == [("england", "")]  # the title is linked to the phrase no triple links it to
    assert len(llm.prompts) == 4 and extractor.calls == 4
    assert "Ada Brennan\nAda Brennan was a painter." in llm.prompts[0]
    assert (
        '"named_entities": ["Ada Brennan", "Kellow", "1901"]' in llm.prompts[1]
    )  # entities feed the triples
    assert extractor.failures == []


def test_fact_stays_backward_compatible():
    fact = Fact("a", "b", "p", 3)
    assert fact.relation == "" and fact == Fact("a", "b", "p", 3, "")


def test_description_and_resolution_need_the_object(tmp_path):
    extractor = LLMExtractor(scripted(model="m-7"), cache_dir=tmp_path)
    description = extractor.describe()
    assert description["name"] == "llm" and description["prompt_version"] == PROMPT_VERSION
    assert "ScriptedLLM:m-7@" in description["model"]  # and a hash of its generation settings
    assert resolve_extractor(extractor) is extractor
    for spec in ("llm", description):
        with pytest.raises(RagrouteError, match="pass the extractor as an object") as info:
            resolve_extractor(spec)
        assert "\n" not in str(info.value)


def test_cache_key_covers_model_prompt_version_and_passage(tmp_path, monkeypatch):
    a = LLMExtractor(scripted(model="m-1"), cache_dir=tmp_path)
    b = LLMExtractor(scripted(model="m-2"), cache_dir=tmp_path)
    key = a.cache_key(DOCS[0])
    assert len(key) == 64 and key == LLMExtractor(scripted(model="m-1"), cache_dir=tmp_path).cache_key(
        DOCS[0]
    )
    assert key != b.cache_key(DOCS[0])
    # the same model asked with other settings answers otherwise: a rebuild must ask again
    briefed = LLMExtractor(scripted(model="m-1", system_prompt="Be brief."), cache_dir=tmp_path)
    assert key != briefed.cache_key(DOCS[0])
    assert key != a.cache_key(Document(id="p1", title="Ada Brennan", text=DOCS[0].text + " "))
    monkeypatch.setattr("ragroute.graph.extract_llm.PROMPT_VERSION", "other")
    assert key != a.cache_key(DOCS[0])


# --------------------------------------------------------------------------- building


def test_rebuild_answers_from_the_cache_with_zero_llm_calls(tmp_path, hashing_encoder):
    first_llm = scripted()
    first = build(DOCS, hashing_encoder, LLMExtractor(first_llm, cache_dir=tmp_path))
    assert len(first_llm.prompts) == 2 * len(DOCS)
    assert (tmp_path / "openie.sqlite").is_file()
    again_llm = scripted()
    again_extractor = LLMExtractor(again_llm, cache_dir=tmp_path)
    again = build(DOCS, hashing_encoder, again_extractor)
    assert again_llm.prompts == [] and again_extractor.calls == 0
    assert again_extractor.cache_hits == len(DOCS)
    assert again.tables.phrases == first.tables.phrases
    assert (again.tables.adjacency != first.tables.adjacency).nnz == 0
    assert again.extractor == first.extractor == again_extractor.describe()
    # the graph links the two hops through the LLM's phrases
    phrases = again.tables.phrases
    assert {"ada brennan", "kellow", "varne river", "market town", "dressel"} <= set(phrases)
    # another model does not reuse the first model's answers
    other_llm = scripted(model="scripted-2")
    build(DOCS, hashing_encoder, LLMExtractor(other_llm, cache_dir=tmp_path))
    assert len(other_llm.prompts) == 2 * len(DOCS)


def test_a_cache_file_sqlite_cannot_use_is_one_line_naming_it(tmp_path):
    # until session 47 a sqlite3.DatabaseError traceback: when the extractor was made (`ragroute
    # graph build --extractor llm`), or, the file damaged during a build, at the next passage
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "openie.sqlite").write_bytes(b"not a database " * 200)
    with pytest.raises(RagrouteError) as info:
        LLMExtractor(scripted(), cache_dir=bad)
    message = str(info.value)
    assert "\n" not in message and str(bad / "openie.sqlite") in message and "delete it" in message
    good = tmp_path / "good"
    extractor = LLMExtractor(scripted(), cache_dir=good)
    (good / "openie.sqlite").write_bytes(b"not a database " * 200)
    with pytest.raises(RagrouteError, match="is corrupt .*delete it"):
        extractor.extract(DOCS[0])  # the cache's error, not a failure of the passage
    assert extractor.failures == []


def test_a_cache_schema_damaged_into_non_utf8_text_is_the_one_line_error(tmp_path):
    """SQLite's message for a damaged schema quotes its text: bytes that are not UTF-8 there made
    Python's sqlite3 raise a bare UnicodeDecodeError out of the LLM answer cache (until session 50;
    the embedding cache was mended in session 49)."""
    LLMExtractor(scripted(), cache_dir=tmp_path)  # its schema into the file
    path = tmp_path / "openie.sqlite"
    data = bytearray(path.read_bytes())
    data[data.index(b"CREATE TABLE openie") + len("CREATE TAB")] ^= 0x80  # "L" becomes 0xCC
    path.write_bytes(bytes(data))
    with pytest.raises(RagrouteError, match=r"openie\.sqlite is corrupt .*delete it") as info:
        LLMExtractor(scripted(), cache_dir=tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("ner, triples", [(None, None), (b"\xff\xfe", None), ("{}", b"[]")])
def test_a_damaged_cache_entry_is_asked_again_with_a_cache_warning(tmp_path, ner, triples):
    """An answer that is no text in the cache (NULL, a blob): until session 51 its parse
    raised a TypeError out of extract, and the graph build stopped with a traceback."""
    import sqlite3

    from ragroute.encode.cache import CacheWarning

    first = LLMExtractor(scripted(), cache_dir=tmp_path)
    expected = first.extract(DOCS[0])
    with sqlite3.connect(tmp_path / "openie.sqlite") as db:
        db.execute("UPDATE openie SET ner = ?, triples = ?", (ner, triples))
    again = LLMExtractor(scripted(), cache_dir=tmp_path)
    with pytest.warns(CacheWarning, match=r"openie\.sqlite: a damaged entry"):
        extraction = again.extract(DOCS[0])
    assert again.calls == 2 and again.failures == []
    assert extraction.phrases == expected.phrases and extraction.facts == expected.facts
    mended = LLMExtractor(scripted(), cache_dir=tmp_path)  # the row was replaced
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mended.extract(DOCS[0]).phrases == expected.phrases
    assert mended.calls == 0 and mended.cache_hits == 1


def test_unparseable_output_is_recorded_and_the_build_goes_on(tmp_path, hashing_encoder):
    llm = scripted(answers={"Kellow": ("I am sorry, I cannot do that.", "unused")})
    extractor = LLMExtractor(llm, cache_dir=tmp_path)
    with pytest.warns(ExtractionWarning, match="1 of 3 passages could not be extracted"):
        index = build(DOCS, hashing_encoder, extractor)
    assert extractor.failures == [ExtractionFailure("p2", "named entities: no JSON object in the answer")]
    assert len(llm.prompts) == 5  # the failed passage's triples were not asked for
    assert len(index) == 3
    kellow_doc = index.tables.n_phrases + [d.id for d in index.store.documents].index("p2")
    linked = {
        index.tables.phrases[i] for i in np.flatnonzero(index.tables.adjacency[[kellow_doc], :].toarray()[0])
    }
    assert linked == {"kellow"}  # title-only phrases
    # the unparseable answer is cached: a rebuild records the same failure without asking
    llm_again = scripted(answers={"Kellow": ("I am sorry, I cannot do that.", "unused")})
    again = LLMExtractor(llm_again, cache_dir=tmp_path)
    with pytest.warns(ExtractionWarning):
        build(DOCS, hashing_encoder, again)
    assert llm_again.prompts == [] and [f.passage for f in again.failures] == ["p2"]


def test_bad_triples_and_failed_calls_are_failures(tmp_path, hashing_encoder):
    llm = scripted(answers={"Otto Lind": ('["Otto Lind"]', '{"triples": [["x"]]}')}, fail_titles=["Kellow"])
    extractor = LLMExtractor(llm, cache_dir=tmp_path)
    with pytest.warns(ExtractionWarning, match="2 of 3"):
        build(DOCS, hashing_encoder, extractor)
    reasons = {f.passage: f.reason for f in extractor.failures}
    assert reasons == {
        "p2": "LLM call failed: ConnectionError: server went away",
        "p3": "triples: no well-formed triple",
    }
    # a failed call is not cached: the next build asks again (and now succeeds)
    retry_llm = scripted(answers={"Otto Lind": ('["Otto Lind"]', '{"triples": [["x"]]}')})
    retry = LLMExtractor(retry_llm, cache_dir=tmp_path)
    with pytest.warns(ExtractionWarning, match="1 of 3"):
        build(DOCS, hashing_encoder, retry)
    assert len(retry_llm.prompts) == 2 and [f.passage for f in retry.failures] == ["p3"]


def test_add_checks_the_extractor_description(tmp_path, hashing_encoder):
    index = build(DOCS, hashing_encoder, LLMExtractor(scripted(), cache_dir=tmp_path))
    with pytest.raises(RagrouteError, match="built with extractor"):
        index.add(ADDED, extractor=LLMExtractor(scripted(model="other"), cache_dir=tmp_path))
    with pytest.raises(RagrouteError, match="pass the extractor as an object"):
        index.add(ADDED)  # the stored description cannot rebuild an LLM extractor
    assert len(index) == 3
    save_index(index, tmp_path / "kg")
    loaded = load_index(tmp_path / "kg", hashing_encoder)
    assert loaded.extractor["name"] == "llm"
    llm = scripted()
    loaded.add(ADDED, extractor=LLMExtractor(llm, cache_dir=tmp_path))
    assert len(loaded) == 4 and len(llm.prompts) == 2  # only the new passage was asked about
    assert "marl hills" in loaded.tables.phrases


def test_extract_passages_batches_extract_many_and_warns_only_for_new_failures():
    class Batched:
        name = "batched"

        def __init__(self):
            self.batches: list[int] = []
            self.failures = ["old failure"]

        def describe(self):
            return {"name": self.name}

        def extract(self, document):
            raise AssertionError("extract_many is used when present")

        def extract_many(self, documents):
            self.batches.append(len(documents))
            return [Extraction(d.id, phrases=[d.id]) for d in documents]

    extractor = Batched()
    docs = [Document(id=f"d{i}", text="x") for i in range(150)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure recorded before this run is not reported
        out = extract_passages(docs, extractor, batch=64)
    assert extractor.batches == [64, 64, 22]
    assert [e.passage for e in out] == [d.id for d in docs]


def test_parse_json_reads_the_answer_not_a_stray_bracket_or_a_later_fence():
    """Until session 38 a code fence after the JSON answer (the prompt's own one-shot pattern) was
    read instead of it, the first bracket anywhere was the answer ("Found [2] entities" gave the
    entity "2"), and an answer nested a thousand deep raised RecursionError and stopped the build."""
    answer = '{"named_entities": ["Ada", "Kellow"]}\nParagraph:\n```\nsomething else\n```'
    assert parse_entities(answer) == ["Ada", "Kellow"]
    assert parse_entities('Found [2] entities: {"named_entities": ["Ada", "Kellow"]}') == ["Ada", "Kellow"]
    triples = 'Triples for [1]: {"triples": [["Ada", "born in", "Kellow"]]}'
    assert parse_triples(triples) == [("Ada", "born in", "Kellow")]
    with pytest.raises(ValueError):
        parse_json("[" * 5000 + "]" * 5000 + " and " + "{" * 3000)
    with pytest.raises(ValueError):
        parse_entities('{"named_entities": ' + "[" * 5000 + "]" * 5000 + "}")
    # flags and non-finite numbers are no entity or triple part
    assert parse_entities('{"named_entities": [true, NaN, Infinity, 1901, "Ada"]}') == ["1901", "Ada"]
    assert parse_triples('[[true, "is", "x"], ["Ada", "born", 1901]]') == [("Ada", "born", "1901")]


def test_a_triple_the_llm_repeats_is_one_fact(tmp_path):
    """Until session 44 a triple listed twice in one passage's answer (LLMs repeat themselves) was
    two facts, and the built edge weighed 2 for one statement. Another relation between the same
    phrases is still a fact of its own."""
    triples = (
        '{"triples": [["Ada Brennan", "born in", "Kellow"], ["Ada Brennan", "is a", "painter"], '
        '["ada brennan", "Born  in", "Kellow"], ["Ada Brennan", "lived in", "Kellow"]]}'
    )
    llm = scripted(answers={"Ada Brennan": (ANSWERS["Ada Brennan"][0], triples)})
    out = LLMExtractor(llm, cache_dir=tmp_path).extract(DOCS[0])
    assert [(f.subject, f.object, f.sentence, f.relation) for f in out.facts if f.relation] == [
        ("ada brennan", "kellow", 0, "born in"),
        ("ada brennan", "painter", 1, "is a"),
        ("ada brennan", "kellow", 3, "lived in"),
    ]


def test_a_number_too_large_for_a_float_is_a_term_not_a_crash(tmp_path, hashing_encoder):
    """A model that writes a long digit string as a JSON number (an ISBN run together, a garbled
    year) gave an int that ``math.isfinite`` cannot convert: an ``OverflowError`` from the triples
    answer stopped the build (again on every rebuild, from the cache), and from the NER answer was
    recorded as a failed LLM call, never cached, so each rebuild asked again."""
    big = "9" * 400
    assert parse_entities(f'{{"named_entities": ["Ada Brennan", {big}]}}') == ["Ada Brennan", big]
    assert parse_triples(f'[["Ada Brennan", "catalogued as", {big}]]') == [
        ("Ada Brennan", "catalogued as", big)
    ]
    answers = {
        "Ada Brennan": (
            f'{{"named_entities": ["Ada Brennan", "Kellow", {big}]}}',
            f'{{"triples": [["Ada Brennan", "born in", "Kellow"], ["Ada Brennan", "catalogued as", {big}]]}}',
        )
    }
    extractor = LLMExtractor(scripted(answers=answers), cache_dir=tmp_path)
    index = build(DOCS, hashing_encoder, extractor)
    assert extractor.failures == [] and extractor.calls == 2 * len(DOCS)
    assert {"ada brennan", "kellow", big} <= set(index.tables.phrases)
    again = LLMExtractor(scripted(answers=answers), cache_dir=tmp_path)
    build(DOCS, hashing_encoder, again)
    assert again.calls == 0 and again.failures == []  # every answer, the long number's too, was cached


def test_entities_written_as_objects_are_read_and_a_list_of_none_is_a_failure(tmp_path):
    """Until session 49 ``[{"name": "Paris"}]`` (as many models answer) read as no entity and no
    failure: the passage kept its title alone, and the triples were asked with no entity."""
    assert parse_entities('[{"name": "Paris", "type": "LOC"}, {"entity": "Seine"}, {"text": 1901}]') == [
        "Paris",
        "Seine",
        "1901",
    ]
    mixed = '{"named_entities": [{"name": "Ada"}, "Kellow", {"type": "LOC"}]}'
    assert parse_entities(mixed) == ["Ada", "Kellow"]
    # the list of objects is the answer, not a stray bracket before it
    assert parse_entities('Found [2] entities: [{"name": "Ada"}, {"name": "Kellow"}]') == ["Ada", "Kellow"]
    assert parse_entities('{"named_entities": []}') == [] and parse_entities('[" "]') == []  # as before
    for answer in ('[{"name": null}, {"type": "LOC"}]', '{"named_entities": [true, null]}'):
        with pytest.raises(ValueError, match="no well-formed entity"):
            parse_entities(answer)
    objects = '{"named_entities": [{"name": "Otto Lind"}, {"name": "Dressel"}]}'
    llm = scripted(answers={"Otto Lind": (objects, ANSWERS["Otto Lind"][1])})
    extractor = LLMExtractor(llm, cache_dir=tmp_path)
    assert extractor.extract(DOCS[2]).phrases == ["otto lind", "dressel"]
    assert extractor.failures == [] and '"named_entities": ["Otto Lind", "Dressel"]' in llm.prompts[-1]
    bad = scripted(answers={"Otto Lind": ('[{"type": "PERSON"}]', "unused")})
    extractor = LLMExtractor(bad, cache_dir=tmp_path / "bad")
    assert extractor.extract(DOCS[2]).phrases == ["otto lind"]  # the title alone
    assert extractor.failures == [ExtractionFailure("p3", "named entities: no well-formed entity")]


def test_null_true_and_false_inside_a_string_are_kept_as_written(tmp_path):
    """An answer read leniently (a trailing comma, single quotes) had JSON's literals replaced
    everywhere, inside strings too: until session 55 "null and void" became the phrase "none and
    void", and a relation "is true to" read "is True to"."""
    from ragroute.gate.planners import parse_plan

    triples = (
        "{'triples': [['Ada Brennan', 'is true to', 'Kellow'], ['the will', 'declared', 'null and void'],]}"
    )
    assert parse_triples(triples) == [
        ("Ada Brennan", "is true to", "Kellow"),
        ("the will", "declared", "null and void"),
    ]
    assert parse_entities('{"named_entities": ["Null Island", "false dawn",]}') == [
        "Null Island",
        "false dawn",
    ]
    assert parse_json("{'a': true, 'b': [null, false], 'c': 'it\\'s null',}") == {
        "a": True,
        "b": [None, False],
        "c": "it's null",
    }
    assert parse_plan("{'action': 'answer', 'answer': 'null and void',}") == ("answer", "null and void")
    llm = scripted(answers={"Ada Brennan": (ANSWERS["Ada Brennan"][0], triples)})
    out = LLMExtractor(llm, cache_dir=tmp_path).extract(DOCS[0])
    assert ("will", "null and void", "declared") in {(f.subject, f.object, f.relation) for f in out.facts}
    assert "none and void" not in out.phrases
