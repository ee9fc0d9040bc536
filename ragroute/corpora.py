"""Corpus definitions: named corpora with a description, modality and granularity, from YAML.

A definitions file (``corpora/corpora.yaml``) looks like::

    corpora:
      astronomy:
        path: astronomy              # relative to the YAML file
        description: Encyclopedic articles on astronomy and astrophysics.
        modality: text               # text | table | image
        granularity: section         # document | section | paragraph

Each entry becomes a :class:`CorpusSpec`; unknown keys or values fail at load
time with the entry named.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError, check_keys, check_setting, not_one_of
from ragroute.scopes import access_labels
from ragroute.types import Document
from ragroute.yaml_files import path_beside, read_as_other_than_text, read_yaml

MODALITIES = ("text", "table", "image")
GRANULARITIES = ("document", "section", "paragraph")
#: the keys of one corpus entry under ``corpora:``
CORPUS_KEYS = frozenset({"path", "description", "modality", "granularity", "options", "access"})


@dataclass(frozen=True)
class CorpusSpec:
    """One named corpus: where it is and how it should be indexed and described."""

    name: str
    path: Path
    description: str = ""
    modality: str = "text"
    granularity: str = "document"
    options: dict[str, Any] = field(default_factory=dict)
    access: tuple[str, ...] = ()  # access labels of the corpus's source (see ragroute.scopes); none: public

    def load_documents(self, **loading: Any) -> list[Document]:
        """The corpus's documents, each of the definition's ``modality`` where the file left it at
        the default: a single CSV of product rows under ``modality: table`` loaded as text, so a
        ``modality=table`` filter found none of them and chunking cut them (until session 37).
        ``loading``: how to load (``on_error``, ``report``), beside the definition's options. A
        folder of images under ``modality: image`` is read by caption (:meth:`loads_images`).
        An option the corpus's loader does not take is refused in one line, as ``config check``
        refuses it (``on_error``, ``report`` or ``path`` among the options was a TypeError
        traceback from ``ragroute build``, or was obeyed)."""
        from ragroute.loaders import load_corpus
        from ragroute.loaders.auto import COLUMN_OPTIONS, check_options, detect_format

        if self.loads_images():
            from ragroute.encode.image import image_documents

            return image_documents(self.path, recursive=True)
        detection = {key: value for key, value in self.options.items() if key in COLUMN_OPTIONS}
        check_options(self.path, detect_format(self.path, **detection), self.options)
        documents = load_corpus(self.path, **loading, **self.options)
        if self.modality == "text":
            return documents
        return [d if d.modality != "text" else replace(d, modality=self.modality) for d in documents]

    def loads_images(self) -> bool:
        """Whether the corpus is a folder of images read by caption
        (:func:`ragroute.encode.image.image_documents`, recursive): ``modality: image`` on a folder
        that is not a BEIR folder and holds image files. Until session 42 such a folder was read as
        a text folder: its images were passed over without a word and its caption sidecars
        (``cat.txt``) indexed as documents of their own, or nothing was built."""
        if self.modality != "image" or not self.path.is_dir():
            return False
        from ragroute.encode.image import image_files
        from ragroute.loaders.beir import corpus_files

        if corpus_files(self.path) or not image_files(self.path, recursive=True):
            return False
        if self.options:
            raise RagrouteError(
                f"corpus {self.name!r}: {self.path} is a folder of images (modality: image), "
                f"read by caption: it takes no loader options ({', '.join(sorted(self.options))})"
            )
        return True


def load_corpus_specs(path: str | Path) -> list[CorpusSpec]:
    """Read a corpus definitions file; paths in it are relative to the file."""
    path = Path(path)
    data = read_yaml(path, "corpus definitions")
    if (
        isinstance(data, dict) and data and "corpora" not in data
    ):  # a typo (`corpra:`) was "expected a top-level corpora:" until session 42
        check_keys(data, {"corpora"}, str(path))
    entries = data.get("corpora") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise RagrouteError(f"{path}: expected a top-level 'corpora:' mapping of names to definitions")
    check_keys(data, {"corpora"}, str(path))
    return [corpus_spec(name, entry, path) for name, entry in entries.items()]


def check_corpus_name(name: Any, source: str | Path) -> str:
    """``name`` (a key under ``corpora:`` of the file ``source``) as a corpus name, else one
    :class:`RagrouteError` line naming the entry and the rule. A corpus name is the name of its
    index folder (under ``ragroute build --out`` and a routing config's ``index_dir``), so it is
    one folder name: text (not what YAML reads as a number, boolean, date or null), not empty, not
    ``.`` or ``..``, without ``/``, ``\\`` or control characters, without blanks at either end.
    Until session 41 names were not checked: ``../prod`` built an index outside ``--out``
    (replacing whatever index was there) and ``a/b`` nested folders."""
    misread = read_as_other_than_text(name)  # `no:` was the corpus 'False', `0x10:` the corpus '16'
    if misread or not isinstance(name, str):
        raise RagrouteError(f"{source}: corpus {name!r}: {misread}")
    text = name
    where = f"{source}: corpus {text!r}"
    rule = "a corpus name is the name of its index folder"
    if not text.strip():
        raise RagrouteError(f"{where}: a corpus name may not be empty")
    if text in (".", ".."):
        raise RagrouteError(f"{where}: {rule}, so it may not be '.' or '..' (a folder and the one above it)")
    if "/" in text or "\\" in text:
        raise RagrouteError(f"{where}: {rule}, so it may not hold '/' or '\\' (a path)")
    odd = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if odd is not None:
        raise RagrouteError(f"{where}: {rule}, so it may not hold control characters ({odd!r})")
    if text != text.strip():
        raise RagrouteError(f"{where}: {rule}, so it may not start or end with a blank")
    return text


def corpus_spec(name: str, entry: Any, source: Path) -> CorpusSpec:
    """One entry of a definitions file at ``source`` (relative paths resolved against it)."""
    name = check_corpus_name(name, source)
    where = f"{source}: corpus {name!r}"
    if isinstance(entry, dict):  # a typo first: `pth: a` was "needs at least a 'path'" until session 43
        check_keys(entry, CORPUS_KEYS, where)
    if not isinstance(entry, dict) or "path" not in entry:
        raise RagrouteError(f"{where} needs at least a 'path'")
    check_setting(entry["path"], "string", where, "path")
    if not entry["path"].strip():  # it was the definitions file's own folder, every corpus in one
        raise RagrouteError(
            f"{where}: 'path' is empty; name the corpus's file or folder ('.' for this file's folder)"
        )
    check_setting(entry.get("description"), "string", where, "description", optional=True)
    options = entry.get("options")
    if options is not None and not isinstance(options, dict):
        raise RagrouteError(f"{where}: 'options' must be a mapping of loader options")
    # null: the default, as in a routing config; any other value is checked (`modality: []`, `0` or
    # `false` read as the default, silently, until session 48)
    modality = "text" if entry.get("modality") is None else entry["modality"]
    granularity = "document" if entry.get("granularity") is None else entry["granularity"]
    if modality not in MODALITIES:
        raise RagrouteError(f"{where}: {not_one_of('modality', modality, MODALITIES)}")
    if granularity not in GRANULARITIES:
        raise RagrouteError(f"{where}: {not_one_of('granularity', granularity, GRANULARITIES)}")
    return CorpusSpec(
        name=name,
        path=path_beside(source, entry["path"]),
        description=str(entry.get("description") or "").strip(),  # null: none (not the text 'None')
        modality=modality,
        granularity=granularity,
        options=dict(entry.get("options") or {}),
        access=tuple(sorted(access_labels(entry["access"], where))) if "access" in entry else (),
    )
