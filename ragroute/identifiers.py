"""Identifiers read as words: ``getWeatherForecast`` is three words to a tokenizer, not one.

Tool and API names are identifiers (camelCase, snake_case, kebab-case). BM25 and the
cross-encoder's tokenizer cannot match ``analyze the emotion in speech`` to
``analyzeSpeechEmotion`` unless the words are split out, so both read the name followed by its
words (:func:`name_with_words`).
"""

from __future__ import annotations

import re

# a word starts at a capital after a lower-case letter or digit, and at the last capital of a run
# followed by lower case (``HTTPServer``), except a plural ``s`` ending the run's acronym
# (``GetFAQsByTopic``: "FAQs", not "FA Qs", until session 49)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])(?![A-Z]s(?:[^a-z]|$))")


def split_identifier(text: str) -> str:
    """The words of an identifier: ``getWeatherForecast`` / ``get_weather-forecast`` ->
    ``get Weather Forecast``; an acronym keeps its plural ``s`` (``listAPIs`` -> ``list APIs``)."""
    return " ".join(_CAMEL.sub(" ", text.replace("_", " ").replace("-", " ")).split())


def name_with_words(name: str) -> str:
    """``name`` followed by its words when splitting it changes more than case
    (``analyzeSpeechEmotion analyze Speech Emotion``); else ``name`` unchanged."""
    words = split_identifier(name)
    return f"{name} {words}" if words and words.lower() != name.lower() else name
