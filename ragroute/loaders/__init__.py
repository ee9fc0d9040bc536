"""Corpus loaders: BEIR folders, HippoRAG JSON, folders of files, CSV/JSONL tables, auto-detection.

Every loader returns :class:`~ragroute.types.Document` s with unique ids and
follows one bad-record policy (see :mod:`ragroute.loaders.common`): by default
unreadable records are skipped and ONE :class:`CorpusWarning` per file says
how many and where; ``on_error="raise"`` stops at the first one with a
:class:`~ragroute.errors.CorpusFormatError` naming file and line. Pass a
:class:`LoadReport` as ``report=`` to get the skipped records back.
"""

from ragroute.loaders.auto import detect_format, load_corpus
from ragroute.loaders.beir import (
    BeirDataset,
    load_beir,
    load_beir_corpus,
    load_beir_queries,
    load_qrels,
)
from ragroute.loaders.common import CorpusWarning, LoadReport, Skipped
from ragroute.loaders.folder import linearise_table, load_text_file, load_text_folder
from ragroute.loaders.hipporag import load_hipporag_corpus
from ragroute.loaders.jsonl import read_jsonl
from ragroute.loaders.tabular import load_table_file

__all__ = [
    "BeirDataset",
    "CorpusWarning",
    "LoadReport",
    "Skipped",
    "detect_format",
    "linearise_table",
    "load_beir",
    "load_beir_corpus",
    "load_beir_queries",
    "load_corpus",
    "load_hipporag_corpus",
    "load_qrels",
    "load_table_file",
    "load_text_file",
    "load_text_folder",
    "read_jsonl",
]
