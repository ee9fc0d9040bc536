"""Labelled queries for fitting routers: a LABELS JSONL file, or BEIR folders (label = folder name)."""

from __future__ import annotations

import warnings
from pathlib import Path

from ragroute.display import counted
from ragroute.errors import RagrouteError, check_query

ANSWER_LABELS = frozenset({"no", "none", "no_tool"})
"""Labels that mean "answer directly" in LABELS files (compared by :func:`is_answer_label`): what
``gate fit`` reads as answer-directly and ``route fit`` as its none label by default."""


def is_answer_label(label: object) -> bool:
    """Whether a LABELS label means "answer directly": one of :data:`ANSWER_LABELS`, case, and a
    hyphen or space for the underscore, aside (``No-Tool`` is ``no_tool``: until session 38 it was
    a label like any other, and a file so labelling its negatives trained them as positives)."""
    return "_".join(str(label).strip().lower().replace("-", " ").split()) in ANSWER_LABELS


def read_labelled_queries(path: str | Path) -> tuple[list[str], list[str]]:
    """Texts and labels from JSONL rows ``{"text": ..., "label": ...}`` (a list label: its first item)."""
    from ragroute.loaders import read_jsonl

    texts, labels = [], []
    for line_no, row in read_jsonl(Path(path), on_error="raise"):
        label = row.get("label")
        label = label[0] if isinstance(label, list) and label else label
        if not isinstance(row.get("text"), str) or not isinstance(label, str):
            raise RagrouteError(f"{path} line {line_no}: expected string fields 'text' and 'label'")
        try:  # the query checks every router and gate applies, with the line that broke them
            check_query(row["text"])
        except RagrouteError as exc:
            raise type(exc)(f"{path} line {line_no}: {exc}") from None
        texts.append(row["text"])
        labels.append(label)
    if not texts:
        raise RagrouteError(f"{path} holds no labelled queries")
    return texts, labels


def beir_labelled_queries(root: str | Path, split: str) -> tuple[list[str], list[str]]:
    """Every query of ``split`` in each BEIR folder under ``root``, labelled with its folder's name.

    A BEIR folder (one with ``qrels/``) without that split is left out with one
    :class:`~ragroute.loaders.common.CorpusWarning` naming it; when none has it, a one-line
    :class:`~ragroute.errors.CorpusFormatError` names the split and the splits there are."""
    from ragroute.errors import CorpusFormatError
    from ragroute.loaders import load_beir
    from ragroute.loaders.beir import available_splits
    from ragroute.loaders.common import CorpusWarning, name_a_few

    collections = sorted(p for p in Path(root).iterdir() if (p / "qrels").is_dir())
    folders = [p for p in collections if (p / "qrels" / f"{split}.tsv").is_file()]
    lacking = [p.name for p in collections if p not in folders]
    if not folders:
        if not collections:
            raise CorpusFormatError(
                f"{root}: no BEIR folder in it (a folder with queries.jsonl and qrels/{split}.tsv)"
            )
        found = sorted({name for p in collections for name in available_splits(p)})
        raise CorpusFormatError(
            f"{root}: no BEIR folder in it has qrels/{split}.tsv (splits there: {', '.join(found) or 'none'})"
        )
    if lacking:
        warnings.warn(
            f"{root}: {counted(len(lacking), 'folder')} without qrels/{split}.tsv left out: "
            f"{name_a_few(lacking)}",
            CorpusWarning,
            stacklevel=2,
        )
    texts: list[str] = []
    labels: list[str] = []
    for folder in folders:
        data = load_beir(folder, split=split)
        texts.extend(q.text for q in data.queries)
        labels.extend(folder.name for _ in data.queries)
    return texts, labels
