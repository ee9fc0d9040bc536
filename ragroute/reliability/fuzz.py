"""Fuzzing every loader and the query path with ``hypothesis``: bad input must end in a one-line error.

:func:`run_fuzz` feeds generated inputs to each loader (BEIR corpus, queries and qrels, HippoRAG
JSON, CSV/TSV tables, SKILL.md folders, MCP JSON, OpenAPI JSON and YAML, routing configs,
``corpora.yaml``, CLI defaults files) and query strings to routing and to BM25, dense and hybrid
search over a tiny index. Inputs are a mix of byte-level mutations of a valid seed file, structured
values built from the format's own keys with values of every type (lone surrogates, NUL, NaN, huge
numbers, deep nesting included) and random bytes.

A case **fails** when the code under test raises anything other than
:class:`~ragroute.errors.RagrouteError` (whose message is one line), or when a loader returns a
record that later stages cannot take (text that is not valid Unicode). Loaders may warn and skip
bad records; that is not a failure. Every case runs in-process; nothing touches the network.

The encoder of the query cases is :class:`TokenHashingEncoder`: the bundled MiniLM's own tokenizer
(the ``tokenizers`` library, as the real encoders use it) with token ids hashed into a small vector,
so text the real tokenizer refuses is refused here too, without loading a model.

Used by ``tests/test_reliability_fuzz.py`` (a few hundred cases per loader) and by
``ragroute bench reliability`` (>= 10,000 cases per loader).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from ragroute.errors import RagrouteError, is_one_line
from ragroute.reliability.workload import HashedEncoder
from ragroute.types import Document

#: at most this many failing inputs are kept per loader (as reprs) in :func:`run_fuzz`'s result
KEEP_FAILURES = 5

# ------------------------------------------------------------------------------------ the encoder


class TokenHashingEncoder(HashedEncoder):
    """A tiny deterministic encoder: the bundled MiniLM tokenizer, token ids hashed into ``dim``
    buckets (bag of tokens, L2-normalised). It implements the ``Encoder`` protocol, refuses what the
    real tokenizer refuses (e.g. lone surrogates: ``TypeError``), and loads no model."""

    backend = "token-hashing"

    def __init__(self, dim: int = 32, model_id: str = "ragroute/fuzz-token-hashing") -> None:
        from tokenizers import Tokenizer

        from ragroute.encode import resolve_model

        self.dim = dim
        self.model_id = model_id
        self._tokenizer = Tokenizer.from_file(str(resolve_model("all-MiniLM-L6-v2").path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(256)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            for token in encoding.ids:
                out[row, (token * 2654435761) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


# ------------------------------------------------------------------------------------ strategies

#: bytes that break parsers: quotes, brackets, separators, invalid UTF-8, BOMs, NUL, escapes
INTERESTING_BYTES = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b"\xef\xbb\xbf",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"\t",
    b"\\",
    b"\\ud800",
    b"\\u0000",
    b"---\n",
    b"- ",
    b"&a ",
    b"*a",
    b"!!python/object:os.system ",
    b"$ref",
    b"#/",
    b"1e999",
    b"NaN",
    b"-",
    b"'",
    b"#",
]

#: strings worth trying wherever text goes
INTERESTING_TEXT = [
    "",
    " ",
    "\x00",
    "\ud800",
    "a\udcffb",
    "\ufeff",
    "\u202e",
    "é",
    "𝔘",
    "\n\n",
    "NaN",
    "none",
    "-1",
    "1e400",
    "#/components/schemas/A",
    "#/definitions/A",
    "#/paths",
    "#",
    "#/",
    "../../../../etc/passwd",
    "x" * 3000,
    "text",
    "title",
    "_id",
    "3.0.0",
    "2.0",
]


def _texts(max_size: int = 40) -> st.SearchStrategy[str]:
    surrogates = st.characters(categories=["Cs"])
    return st.one_of(
        st.text(max_size=max_size),
        st.text(max_size=max_size),
        st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_ ."), max_size=max_size),
        st.sampled_from(INTERESTING_TEXT),
        st.text(st.one_of(surrogates, st.sampled_from(" aé\x00\n\t\\\"'#:")), max_size=max_size),
    )


def _scalars(texts: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, 1, -1, 2, 3, 10, 10**9]),
        st.floats(),
        texts,
    )


def json_values(keys: Sequence[str] = (), values: Sequence[Any] = (), max_leaves: int = 25) -> Any:
    """JSON-like values (``None``, bools, ints, floats with NaN and inf, text with surrogates, lists,
    mappings) whose mapping keys are mostly ``keys`` and whose strings are often ``values``."""
    texts = st.one_of(_texts(), st.sampled_from(list(values))) if values else _texts()
    key_strategy = st.one_of(st.sampled_from(list(keys)), _texts(12)) if keys else _texts(12)
    return st.recursive(
        st.one_of(_scalars(texts), st.sampled_from(list(values))) if values else _scalars(texts),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(key_strategy, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


def _apply_edits(seed_bytes: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    data = bytearray(seed_bytes)
    for position, op, chunk in edits:
        at = position % (len(data) + 1)
        if op == "insert":
            data[at:at] = chunk
        elif op == "replace":
            data[at : at + len(chunk)] = chunk
        elif op == "delete":
            del data[at : at + len(chunk)]
        elif op == "flip" and data:
            data[at % len(data)] ^= 1 << (chunk[0] % 8)
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            data[at:at] = data[at : at + 64]
    return bytes(data)


def mutated(seed_bytes: bytes) -> st.SearchStrategy[bytes]:
    """``seed_bytes`` with a few insertions, replacements, deletions, bit flips, truncations."""
    ops = st.sampled_from(["insert", "replace", "delete", "flip", "truncate", "duplicate"])
    chunk = st.one_of(st.sampled_from(INTERESTING_BYTES), st.binary(min_size=1, max_size=8))
    edit = st.tuples(st.integers(min_value=0, max_value=max(len(seed_bytes), 1) * 2), ops, chunk)
    return st.lists(edit, min_size=1, max_size=6).map(lambda edits: _apply_edits(seed_bytes, edits))


def _json_bytes(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def json_documents(keys: Sequence[str], values: Sequence[Any] = ()) -> st.SearchStrategy[bytes]:
    """Whole JSON files: a generated value serialised with escapes (``\\ud800``) or raw bytes."""
    return st.builds(_json_bytes, json_values(keys, values), st.booleans())


def jsonl_documents(keys: Sequence[str], values: Sequence[Any] = ()) -> st.SearchStrategy[bytes]:
    """JSONL files: generated records (mostly mappings with the format's keys), one per line."""
    record = st.one_of(
        st.dictionaries(st.sampled_from(list(keys)), json_values(keys, values, 6), max_size=len(keys) + 1),
        json_values(keys, values, 8),
    )
    line = st.builds(_json_bytes, record, st.booleans())
    return st.lists(st.one_of(line, line, st.binary(max_size=20)), max_size=6).map(b"\n".join)


def _yaml_bytes(value: Any) -> bytes:
    """``value`` as YAML: UTF-8 text, or escapes (``"\\ud800"``) where it holds lone surrogates."""
    try:
        try:
            return yaml.safe_dump(value, allow_unicode=True, sort_keys=False).encode("utf-8")
        except UnicodeEncodeError:
            return yaml.safe_dump(value, allow_unicode=False, sort_keys=False).encode("ascii")
    except (yaml.YAMLError, ValueError, RecursionError, UnicodeEncodeError):
        return b"{}"


def yaml_documents(keys: Sequence[str], values: Sequence[Any] = ()) -> st.SearchStrategy[bytes]:
    """YAML files from generated values (keys mostly from ``keys``)."""
    return json_values(keys, values).map(_yaml_bytes)


def _tree_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _tree_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _tree_paths(item, (*prefix, index))


def _typo(key: str, pick: int) -> str:
    if not key:
        return "x"
    at = pick % len(key)
    return [key[:at] + key[at + 1 :], key[:at] + key[at] + key[at:], key + "s", key[::-1]][pick % 4] or "x"


def mutate_tree(tree: Any, ops: list[tuple[str, int, Any, Any]]) -> Any:
    """A copy of ``tree`` (parsed JSON/YAML) with ``ops`` applied, each on the node ``pick`` chooses:
    ``replace`` its value, ``delete`` it, ``add`` a key or item to it, ``typo`` its key."""
    tree = copy.deepcopy(tree)
    for op, pick, key, value in ops:
        paths = list(_tree_paths(tree))
        path = paths[pick % len(paths)]
        parent: Any = tree
        for step in path[:-1]:
            parent = parent[step]
        node = parent[path[-1]] if path else tree
        if op == "replace":
            if not path:
                tree = value
            else:
                parent[path[-1]] = value
        elif op == "delete" and path:
            del parent[path[-1]]
        elif op == "add":
            if isinstance(node, dict):
                node[key] = value
            elif isinstance(node, list):
                node.insert(pick % (len(node) + 1), value)
        elif op == "typo" and path and isinstance(parent, dict) and isinstance(path[-1], str):
            parent[_typo(path[-1], pick)] = parent.pop(path[-1])
    return tree


def tree_mutations(
    seeds: Sequence[Any], keys: Sequence[str], values: Sequence[Any] = ()
) -> st.SearchStrategy[Any]:
    """Valid documents (``seeds``) with one to four nodes replaced by values of other types,
    deleted, added (keys mostly from ``keys``) or misspelt: inputs that pass the parser and test
    the loader's checks of keys, types and references."""
    key = st.one_of(st.sampled_from(list(keys)), _texts(10)) if keys else _texts(10)
    op = st.tuples(
        st.sampled_from(["replace", "replace", "delete", "add", "typo"]),
        st.integers(min_value=0, max_value=10**6),
        key,
        json_values(keys, values, 6),
    )
    return st.builds(mutate_tree, st.sampled_from(list(seeds)), st.lists(op, min_size=1, max_size=4))


def file_bytes(
    seed_bytes: bytes, structured: st.SearchStrategy[bytes], trees: st.SearchStrategy[bytes] | None = None
) -> st.SearchStrategy[bytes]:
    """The mix every file loader gets: the seed with byte edits, generated files (``structured``),
    valid documents mutated node by node (``trees``), random bytes, the seed itself."""
    parts = [mutated(seed_bytes), mutated(seed_bytes), structured, structured]
    if trees is not None:
        parts += [trees, trees, trees]
    return st.one_of(*parts, st.binary(max_size=200), st.just(seed_bytes))


# ------------------------------------------------------------------------------------ seeds

BEIR_CORPUS = (
    b'{"_id": "d1", "title": "Comets", "text": "Comets have an ion tail.", "metadata": {"a": 1}}\n'
    b'{"_id": "d2", "title": "", "text": "Sourdough bread needs flour."}\n'
    b'{"_id": 3, "text": "Printers need toner."}\n'
)
BEIR_QUERIES = b'{"_id": "q1", "text": "solar wind tail"}\n{"_id": "q2", "text": "bread", "metadata": {}}\n'
QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"
HIPPORAG = (
    b'[{"title": "Comets", "text": "Comets have an ion tail.", "idx": 0},\n'
    b' {"title": "Bread", "text": "Sourdough needs flour."}]\n'
)
CSV = b'sku,text,title,price\nA1,Red printer toner,Toner,9.5\nA2,"Paper, A4",Paper,3\n'
SKILL_MD = (
    b"---\nname: pdf-tools\ndescription: Extract text from PDF files.\nlicense: Apache-2.0\n"
    b"allowed-tools: [Read, Bash]\n---\n# PDF tools\n\nUse this skill to read PDF files.\n"
)
MCP = json.dumps(
    {
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "inputSchema": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "City name"}},
                    "required": ["city"],
                },
                "annotations": {"title": "Weather"},
            },
            {"name": "ping", "inputSchema": {"$ref": "#/$defs/Empty"}},
        ]
    }
).encode()
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.0",
    "info": {"title": "Pets", "version": "1.0"},
    "paths": {
        "/pets/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {
                "operationId": "getPet",
                "summary": "Get a pet",
                "tags": ["pet"],
                "responses": {
                    "200": {
                        "description": "A pet",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}},
                    }
                },
            },
            "post": {
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}
                },
                "responses": {"405": {"description": "Invalid input"}},
            },
        }
    },
    "components": {
        "schemas": {
            "Pet": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "tags": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}},
                },
            }
        }
    },
}
CORPORA_YAML = (
    b"corpora:\n  astro:\n    path: astro.jsonl\n    description: Astronomy.\n    modality: text\n"
    b"    granularity: section\n    options: {modality: text}\n    access: [science]\n"
    b"  shop:\n    path: shop.csv\n    options: {text_column: text, id_column: sku}\n"
)
CLI_DEFAULTS = b"build:\n  method: bm25\nquery:\n  k: 3\nroute:\n  fit: {model: logreg}\n"

BEIR_KEYS = ["_id", "title", "text", "metadata"]
HIPPORAG_KEYS = ["title", "text", "idx"]
MCP_KEYS = [
    "tools", "result", "jsonrpc", "id", "name", "description", "inputSchema", "input_schema", "parameters",
    "type", "properties", "required", "items", "enum", "$ref", "$defs", "definitions", "annotations",
    "title", "anyOf", "oneOf", "allOf", "default", "format",
]  # fmt: skip
OPENAPI_KEYS = [
    "openapi", "swagger", "info", "title", "version", "paths", "get", "post", "put", "delete", "parameters",
    "operationId", "summary", "description", "tags", "name", "in", "required", "schema", "requestBody",
    "content", "application/json", "responses", "200", "default", "$ref", "components", "schemas",
    "definitions", "properties", "type", "items", "allOf", "oneOf", "anyOf", "enum", "deprecated",
    "consumes", "additionalProperties", "format", "/pets", "/pets/{id}", "x-extra",
]  # fmt: skip
OPENAPI_VALUES = [
    "3.0.0", "3.1.0", "2.0", "#/components/schemas/Pet", "#/definitions/Pet", "#/", "path", "query", "body",
    "object", "string", "array",
]  # fmt: skip


# ------------------------------------------------------------------------------------ the workspace


@dataclass
class FuzzWorkspace:
    """A temporary folder with a tiny corpus, its BM25, dense and hybrid indexes, a routing config
    over them (with a policy) and the pipeline it loads; built once per :func:`run_fuzz`."""

    root: Path
    encoder: Any
    indexes: dict[str, Any] = field(default_factory=dict)
    pipeline: Any = None

    def file(self, name: str, data: bytes) -> Path:
        """Write ``data`` to ``root/cases/name`` (replacing the previous case's file) and return it."""
        path = self.root / "cases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


TOPICS = {
    "astro": "telescope star galaxy orbit planet comet nebula",
    "cook": "bread flour yeast oven butter sauce knife",
    "it": "printer laptop password network vpn email driver",
}

ROUTING_CONFIG = {
    "sources": {
        "astro": {"index": "astro", "description": "Astronomy: telescopes, stars, planets."},
        "cook": {"index": "cook", "description": "Cooking: bread, sauces, ovens.", "access": ["staff"]},
        "it": {"index": "it", "description": "IT help: printers, laptops, passwords.", "modality": "text"},
    },
    "router": {"kind": "prototype", "threshold": 0.3, "max_routes": 2},
    "signals": {
        "arithmetic": {"type": "regex", "pattern": r"\d+\s*(\+|-|times)\s*\d+"},
        "short": {"type": "length", "max_words": 2},
        "printer": {"type": "keywords", "any": ["printer", "toner"]},
        "lang": {"type": "language", "is": ["en", "und"]},
    },
    "rules": [
        {"name": "arithmetic", "when": "arithmetic", "then": {"route": "none"}},
        {
            "name": "printers",
            "priority": 5,
            "when": {"all": ["printer", {"not": "short"}]},
            "then": {"route": "it"},
        },
    ],
}


def build_workspace(root: Path, encoder: Any = None) -> FuzzWorkspace:
    """Build the tiny indexes and routing config of the query and config cases under ``root``."""
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    workspace = FuzzWorkspace(root, encoder or TokenHashingEncoder())
    rng = np.random.default_rng(7)
    docs = {
        topic: [
            Document(
                id=f"{topic}-{i}", text=" ".join(rng.choice(words.split(), size=10)), title=f"{topic} {i}"
            )
            for i in range(6)
        ]
        for topic, words in TOPICS.items()
    }
    everything = [doc for topic_docs in docs.values() for doc in topic_docs]
    for method in ("bm25", "dense", "hybrid"):
        index = build_index(everything, method, encoder=workspace.encoder, name=method)
        save_index(index, root / method)
        workspace.indexes[method] = index
    for topic, topic_docs in docs.items():
        save_index(build_index(topic_docs, "dense", encoder=workspace.encoder, name=topic), root / topic)
    (root / "routing.yaml").write_text(yaml.safe_dump(ROUTING_CONFIG, sort_keys=False), encoding="utf-8")
    (root / "labels.jsonl").write_text('{"text": "telescope", "label": "astro"}\n', encoding="utf-8")
    corpora = {
        "corpora": {
            topic: {"path": topic, "description": f"About {words}."} for topic, words in TOPICS.items()
        }
    }
    (root / "corpora.yaml").write_text(yaml.safe_dump(corpora), encoding="utf-8")
    workspace.pipeline = load_routing(root / "routing.yaml", encoder=workspace.encoder)
    return workspace


# ------------------------------------------------------------------------------------ checks


class LoaderBug(Exception):
    """A loader returned something later stages cannot take (reported as a failure)."""


def _check_text(value: Any, what: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LoaderBug(f"{what} is not valid Unicode text ({exc.reason})") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, what)
            _check_text(item, what)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_text(item, what)


def _check_documents(docs: Sequence[Any]) -> None:
    for doc in docs:
        _check_text(doc.id, "document id")
        _check_text(doc.text, "document text")
        _check_text(doc.title, "document title")
        _check_text(doc.metadata, "document metadata")
        json.dumps(doc.metadata, allow_nan=True)


def _check_catalogue(catalogue: Any) -> None:
    _check_documents([skill.to_document() for skill in catalogue.skills])


def every_step(*steps: Callable[[], Any]) -> None:
    """Run each of ``steps`` (the ways one case's input is read) on the case: a step that refuses
    it in one line (a :class:`RagrouteError`) does not keep the next ones from running; a refusal
    that is not one line is a failure (:class:`LoaderBug`), whichever step it came from.

    (A case used to stop at its first refusal: the second reader of a file, ``load_corpus`` after
    ``load_hipporag_corpus`` or ``load_catalogue``'s detection after ``load_mcp``, ran only on the
    inputs the first one took, 1 case in 10 for MCP files, while the count said every case.)"""
    for step in steps:
        try:
            step()
        except RagrouteError as exc:
            if not is_one_line(str(exc)):
                raise LoaderBug(f"{type(exc).__name__} without a one-line message: {str(exc)!r}") from None


def _on_error(data: bytes) -> str:
    return "raise" if len(data) % 3 == 0 else "skip"


def fuzz_beir_corpus(ws: FuzzWorkspace, data: bytes) -> None:
    """A BEIR ``corpus.jsonl``, directly and through :func:`~ragroute.loaders.load_corpus`."""
    from ragroute.loaders import load_beir_corpus, load_corpus

    path = ws.file("beir/corpus.jsonl", data)
    every_step(
        lambda: _check_documents(load_beir_corpus(path, on_error=_on_error(data))),
        lambda: _check_documents(load_corpus(path)),
    )


def fuzz_beir_queries(ws: FuzzWorkspace, data: bytes) -> None:
    """A BEIR ``queries.jsonl``."""
    from ragroute.loaders import load_beir_queries

    for query in load_beir_queries(ws.file("beir/queries.jsonl", data), on_error=_on_error(data)):
        _check_text(query.id, "query id")
        _check_text(query.text, "query text")
        _check_text(query.metadata, "query metadata")


def fuzz_beir_qrels(ws: FuzzWorkspace, data: bytes) -> None:
    """A BEIR ``qrels/*.tsv``."""
    from ragroute.loaders import load_qrels

    for query_id, judged in load_qrels(ws.file("beir/qrels/dev.tsv", data)).items():
        _check_text(query_id, "qrels query id")
        _check_text(list(judged), "qrels document id")


def fuzz_hipporag(ws: FuzzWorkspace, data: bytes) -> None:
    """A HippoRAG ``corpus.json`` array."""
    from ragroute.loaders import load_corpus, load_hipporag_corpus

    path = ws.file("hipporag/corpus.json", data)
    every_step(
        lambda: _check_documents(load_hipporag_corpus(path, on_error=_on_error(data))),
        lambda: _check_documents(load_corpus(path, id_prefix="p")),
    )


def fuzz_csv(ws: FuzzWorkspace, data: bytes) -> None:
    """CSV and TSV tables, with default and explicit column options."""
    from ragroute.loaders import load_corpus, load_table_file

    path = ws.file("table/rows.csv", data)
    every_step(
        lambda: _check_documents(load_table_file(path, on_error=_on_error(data))),
        lambda: _check_documents(
            load_corpus(
                path, text_column="text", id_column="sku", title_column="title", metadata_columns=["price"]
            )
        ),
        lambda: _check_documents(load_table_file(ws.file("table/rows.tsv", data.replace(b",", b"\t")))),
    )


def fuzz_skill_md(ws: FuzzWorkspace, data: bytes) -> None:
    """A folder of ``SKILL.md`` files (one at the top, one nested, one beside a side file)."""
    from ragroute.skills import load_catalogue

    folder = ws.root / "cases" / "skills"
    ws.file("skills/a/SKILL.md", data)
    ws.file("skills/a/b/SKILL.md", data[: len(data) // 2])
    ws.file("skills/a/reference.md", data[len(data) // 2 :])
    _check_catalogue(load_catalogue(folder, on_error=_on_error(data)))


def fuzz_mcp(ws: FuzzWorkspace, data: bytes) -> None:
    """An MCP ``tools/list`` JSON file."""
    from ragroute.skills import load_catalogue
    from ragroute.skills.load_mcp import load_mcp

    path = ws.file("mcp/tools.json", data)
    every_step(  # detection may call it another kind: that is a (one-line) error
        lambda: _check_catalogue(load_mcp(path, on_error=_on_error(data))),
        lambda: _check_catalogue(load_catalogue(path)),
    )


def _fuzz_openapi(ws: FuzzWorkspace, name: str, data: bytes) -> None:
    from ragroute.skills import load_catalogue
    from ragroute.skills.load_openapi import load_openapi

    path = ws.file(f"openapi/{name}", data)
    every_step(
        lambda: _check_catalogue(load_openapi(path, on_error=_on_error(data))),
        lambda: _check_catalogue(load_catalogue(path)),
    )


def fuzz_openapi_json(ws: FuzzWorkspace, data: bytes) -> None:
    """An OpenAPI 3 / Swagger 2 spec as JSON."""
    _fuzz_openapi(ws, "spec.json", data)


def fuzz_openapi_yaml(ws: FuzzWorkspace, data: bytes) -> None:
    """An OpenAPI 3 / Swagger 2 spec as YAML."""
    _fuzz_openapi(ws, "spec.yaml", data)


def fuzz_corpora_yaml(ws: FuzzWorkspace, data: bytes) -> None:
    """A corpus definitions file."""
    from ragroute.corpora import load_corpus_specs
    from ragroute.route.config_check import check_config

    check_config(ws.file("corpora/corpora.yaml", data))
    for spec in load_corpus_specs(ws.file("corpora/corpora.yaml", data)):
        _check_text(spec.name, "corpus name")
        _check_text(spec.description, "corpus description")


SAFE_FACTORY = "ragroute_fuzz_no_such_module:make"


def _defuse(value: Any) -> Any:
    """A routing config the fuzzer may load: factories never import a real module, no model is
    loaded (cross-encoder rerankers, local LLMs), no file outside the workspace is named absolutely."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("factory", "llm", "model") and not isinstance(item, (dict, list)):
                item = SAFE_FACTORY if key != "model" else "no-such-model-folder"
            elif key == "kind" and item == "local":
                item = "scripted"
            out[key] = _defuse(item)
        if out.get("kind") == "cross-encoder":  # its settings are checked, its model never found
            out["model"] = "no-such-model-folder"
        return out
    if isinstance(value, list):
        return [_defuse(item) for item in value]
    if isinstance(value, str) and value.startswith("/"):
        return value.lstrip("/")
    return value


ROUTING_SEEDS: list[dict[str, Any]] = [
    ROUTING_CONFIG,
    {
        "sources": ROUTING_CONFIG["sources"],
        "router": {
            "kind": "centroid", "threshold": 0.2, "max_routes": 2, "hedge_below": 0.9, "fusion": "rrf",
            "route_weights": "probability", "depth": 5, "always": ["astro"], "none_threshold": 0.1,
        },
        "reranker": {"kind": "parents"},
    },
    {"sources": ROUTING_CONFIG["sources"], "router": {"kind": "knn", "examples": "labels.jsonl", "k": 3}},
    {
        "sources": ROUTING_CONFIG["sources"],
        "router": {"kind": "ensemble", "members": ["prototype", "confidence"], "sharpness": 2.0},
        "gate": {"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": 3.0},
        "llm": {"kind": "scripted", "replies": ["astro"], "default": "none"},
    },
    {
        "corpora": "corpora.yaml",
        "index_dir": ".",
        "router": {"kind": "confidence", "temperature": 0.1},
        "signals": {"bank": {"type": "example_bank", "examples": ["my printer jams"], "threshold": 0.5}},
        "rules": [{"name": "bank", "when": {"any": ["bank"]}, "then": {"defer": True, "boost": {"it": 0.2}}}],
    },
]  # fmt: skip


def routing_documents() -> st.SearchStrategy[bytes]:
    """Routing configs: valid ones mutated node by node (values of other types, keys added,
    deleted or misspelt), generated sections, and byte edits, as YAML."""
    from ragroute.route.config_check import accepted_keys

    keys = sorted({key for section in accepted_keys().values() for key in section})
    values = sorted(
        {"prototype", "centroid", "confidence", "knn", "trained", "ensemble", "fixed", "pilot", "quality",
         "index", "python", "parents", "threshold", "scripted", "rrf", "calibrated", "minmax", "zscore",
         "regex", "keywords", "length", "language", "example_bank", "bank_margin", "rarity", "complexity",
         "astro", "cook", "it", "none", "labels.jsonl", "bm25", "dense", "hybrid", "even", "probability",
         "arithmetic", "short", "printer", "(", "[a-", "text", "table", "section", "min_zipf", "."}
    )  # fmt: skip
    trees = tree_mutations(ROUTING_SEEDS, keys, values).map(_defuse).map(_yaml_bytes)
    section = json_values(keys, values, 12)
    generated = (
        st.fixed_dictionaries(
            {"sources": st.one_of(st.just(ROUTING_CONFIG["sources"]), section)},
            optional={key: section for key in ("router", "signals", "rules", "reranker", "gate", "llm")},
        )
        .map(_defuse)
        .map(_yaml_bytes)
    )
    seed_bytes = yaml.safe_dump(ROUTING_CONFIG, sort_keys=False).encode()
    return st.one_of(trees, trees, trees, trees, generated, mutated(seed_bytes).map(_defuse_bytes))


def _defuse_bytes(data: bytes) -> bytes:
    try:
        value = yaml.safe_load(data)
    except (yaml.YAMLError, ValueError, RecursionError):
        return data  # a file that does not parse loads nothing
    return _yaml_bytes(_defuse(value)) if value is not None else data


def fuzz_routing_config(ws: FuzzWorkspace, data: bytes) -> None:
    """A routing config over the workspace's indexes: checked (``ragroute config check``: problems
    are listed, never raised), loaded, then asked one query."""
    from ragroute.route.config import load_routing
    from ragroute.route.config_check import check_config

    path = ws.root / "routing-case.yaml"
    path.write_bytes(data)
    check_config(path)
    pipeline = load_routing(path, encoder=ws.encoder)
    pipeline.retrieve("telescope printer 2 + 2", k=3)


def fuzz_cli_defaults(ws: FuzzWorkspace, data: bytes) -> None:
    """A CLI defaults file (``ragroute --config FILE query ...``): refused in one line or used."""
    path = ws.file("defaults.yaml", data)
    outcome = cli_testing().invoke(["--config", str(path), "query", str(ws.root / "bm25"), "telescope"])
    if outcome.traceback is not None:
        raise LoaderBug(outcome.traceback.strip().splitlines()[-1])
    if outcome.exit_code not in (0, 2):
        raise LoaderBug(f"exit {outcome.exit_code}: {outcome.stderr.strip()[-200:]}")
    if outcome.exit_code == 2 and not outcome.one_line_error:
        raise LoaderBug(f"exit 2 without a one-line error: {outcome.stderr.strip()[-200:]}")


def cli_testing() -> Any:
    """:mod:`ragroute.cli.testing`, imported when first needed: the harnesses sit below the command
    line in the import graph (``ragroute bench reliability`` calls them), so they reach it by name,
    as the registries do."""
    return importlib.import_module("ragroute.cli.testing")


def query_strings() -> st.SearchStrategy[str]:
    """Query text: any Unicode (lone surrogates, NUL, controls, right-to-left marks), undecodable
    bytes as the CLI sees them (``surrogateescape``), whitespace only, and very long text."""
    return st.one_of(
        st.text(max_size=60),
        _texts(60),
        st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.sampled_from(INTERESTING_TEXT),
        st.builds(lambda word, n: word * n, st.sampled_from(["telescope ", "é", "\x00", "2+2 "]),
                  st.integers(1, 40_000)),
    )  # fmt: skip


def fuzz_query(ws: FuzzWorkspace, text: str) -> None:
    """One query through BM25, dense and hybrid search and through the routing pipeline."""
    for index in ws.indexes.values():
        index.search(text, 3)
    ws.pipeline.retrieve(text, k=3)
    ws.pipeline.decide(text)


@dataclass(frozen=True)
class FuzzTarget:
    """One fuzzed loader: how inputs are generated and what is done with each."""

    strategy: Callable[[], st.SearchStrategy[Any]]
    check: Callable[[FuzzWorkspace, Any], None]


def _seeded(
    seed_bytes: bytes,
    structured: Callable[[], st.SearchStrategy[bytes]],
    trees: Callable[[], st.SearchStrategy[bytes]] | None = None,
) -> Callable[[], Any]:
    return lambda: file_bytes(seed_bytes, structured(), trees() if trees else None)


def _lines(cell: st.SearchStrategy[str], separator: str) -> st.SearchStrategy[bytes]:
    rows = st.lists(st.lists(cell, max_size=5).map(separator.join), max_size=6)
    return rows.map(lambda rows: "\n".join(rows).encode("utf-8", "surrogatepass"))


def _front_matter(front: bytes, body: bytes) -> bytes:
    return b"---\n" + front + b"---\n" + body


SWAGGER2: dict[str, Any] = {
    "swagger": "2.0",
    "info": {"title": "Pets", "version": "1"},
    "paths": {
        "/pets": {
            "post": {
                "operationId": "addPet",
                "parameters": [{"in": "body", "name": "body", "schema": {"$ref": "#/definitions/Pet"}}],
                "responses": {"405": {"description": "Invalid input"}},
            }
        }
    },
    "definitions": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}}}},
}
SKILL_KEYS = ["name", "description", "license", "allowed-tools", "metadata"]
CORPORA_KEYS = ["corpora", "astro", "path", "description", "modality", "granularity", "options", "access",
                "text_column", "id_column"]  # fmt: skip
CLI_KEYS = ["build", "query", "route", "fit", "graph", "k", "method", "encoder", "model", "cache_dir",
            "as_json", "filters", "progress", "backend"]  # fmt: skip


def _json_trees(seeds: Sequence[Any], keys: Sequence[str], values: Sequence[Any] = ()) -> Any:
    return lambda: st.builds(_json_bytes, tree_mutations(seeds, keys, values), st.booleans())


def _yaml_trees(seeds: Sequence[Any], keys: Sequence[str], values: Sequence[Any] = ()) -> Any:
    return lambda: tree_mutations(seeds, keys, values).map(_yaml_bytes)


def _records(seed: bytes) -> list[Any]:
    return [json.loads(line) for line in seed.splitlines() if line.strip()]


def _jsonl_trees(seed: bytes, keys: Sequence[str]) -> Any:
    """JSONL files: the seed's records, each mutated node by node."""
    records = _records(seed)
    line = st.builds(_json_bytes, tree_mutations(records, keys), st.booleans())
    return lambda: st.lists(st.one_of(line, st.sampled_from([json.dumps(r).encode() for r in records])),
                            min_size=1, max_size=5).map(b"\n".join)  # fmt: skip


#: every fuzzed loader by name (the ``per_loader`` keys of :func:`run_fuzz`)
TARGETS: dict[str, FuzzTarget] = {
    "beir_corpus": FuzzTarget(
        _seeded(BEIR_CORPUS, lambda: jsonl_documents(BEIR_KEYS), _jsonl_trees(BEIR_CORPUS, BEIR_KEYS)),
        fuzz_beir_corpus,
    ),
    "beir_queries": FuzzTarget(
        _seeded(BEIR_QUERIES, lambda: jsonl_documents(BEIR_KEYS), _jsonl_trees(BEIR_QUERIES, BEIR_KEYS)),
        fuzz_beir_queries,
    ),
    "beir_qrels": FuzzTarget(_seeded(QRELS, lambda: _lines(_texts(8), "\t")), fuzz_beir_qrels),
    "hipporag_json": FuzzTarget(
        _seeded(
            HIPPORAG,
            lambda: json_documents(HIPPORAG_KEYS),
            _json_trees([json.loads(HIPPORAG)], HIPPORAG_KEYS),
        ),
        fuzz_hipporag,
    ),
    "csv": FuzzTarget(_seeded(CSV, lambda: _lines(_texts(10), ",")), fuzz_csv),
    "skill_md": FuzzTarget(
        _seeded(
            SKILL_MD,
            lambda: st.builds(_front_matter, yaml_documents(SKILL_KEYS), st.binary(max_size=60)),
            lambda: st.builds(
                _front_matter,
                _yaml_trees([yaml.safe_load(SKILL_MD.split(b"---")[1])], SKILL_KEYS)(),
                st.just(b"# PDF tools\n\nRead PDF files.\n"),
            ),
        ),
        fuzz_skill_md,
    ),
    "mcp_json": FuzzTarget(
        _seeded(
            MCP,
            lambda: json_documents(MCP_KEYS, ["object", "string", "#/$defs/X"]),
            _json_trees([json.loads(MCP)], MCP_KEYS, ["object", "string", "#/$defs/X"]),
        ),
        fuzz_mcp,
    ),
    "openapi_json": FuzzTarget(
        _seeded(
            json.dumps(OPENAPI).encode(),
            lambda: json_documents(OPENAPI_KEYS, OPENAPI_VALUES),
            _json_trees([OPENAPI, SWAGGER2], OPENAPI_KEYS, OPENAPI_VALUES),
        ),
        fuzz_openapi_json,
    ),
    "openapi_yaml": FuzzTarget(
        _seeded(
            yaml.safe_dump(OPENAPI, sort_keys=False).encode(),
            lambda: yaml_documents(OPENAPI_KEYS, OPENAPI_VALUES),
            _yaml_trees([OPENAPI, SWAGGER2], OPENAPI_KEYS, OPENAPI_VALUES),
        ),
        fuzz_openapi_yaml,
    ),
    "corpora_yaml": FuzzTarget(
        _seeded(
            CORPORA_YAML,
            lambda: yaml_documents(CORPORA_KEYS, ["text", "table", "section", "astro.jsonl"]),
            _yaml_trees(
                [yaml.safe_load(CORPORA_YAML)], CORPORA_KEYS, ["text", "table", "section", "astro.jsonl"]
            ),
        ),
        fuzz_corpora_yaml,
    ),
    "routing_config": FuzzTarget(routing_documents, fuzz_routing_config),
    "cli_defaults": FuzzTarget(
        _seeded(
            CLI_DEFAULTS,
            lambda: yaml_documents(CLI_KEYS, ["bm25", "3", "logreg"]),
            _yaml_trees([yaml.safe_load(CLI_DEFAULTS)], CLI_KEYS, ["bm25", "3", "logreg", "hybrid"]),
        ),
        fuzz_cli_defaults,
    ),
    "query": FuzzTarget(query_strings, fuzz_query),
}


# ------------------------------------------------------------------------------------ the runner


def _describe(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def scratch_folder() -> str | None:
    """Where the harnesses write their many small files: ``/dev/shm`` (memory) when it is there and
    writable (opening a file there costs ~100x less than on a disk), else the default temp folder."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def fuzz_target(
    name: str, workspace: FuzzWorkspace, cases: int, *, random_seed: int | None = None
) -> dict[str, Any]:
    """Run ``cases`` generated inputs through one target; ``{"cases", "failures", "examples"}``.

    Deterministic when ``random_seed`` is ``None`` (hypothesis' ``derandomize``), else seeded.
    Failures are counted, not raised, so every case runs (no shrinking).
    """
    target = TARGETS[name]
    stats: dict[str, Any] = {"cases": 0, "failures": 0, "examples": []}

    def record(value: Any, problem: str) -> None:
        stats["failures"] += 1
        if len(stats["examples"]) < KEEP_FAILURES:
            stats["examples"].append(f"{name}: {problem} <- {_describe(value)}")

    def one_case(value: Any) -> None:
        stats["cases"] += 1
        try:
            with _quiet():
                target.check(workspace, value)
        except RagrouteError as exc:
            message = str(exc)
            if not is_one_line(message):
                record(value, f"{type(exc).__name__} without a one-line message: {message!r}")
        except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
            where = traceback.extract_tb(exc.__traceback__)[-1]
            record(
                value, f"{type(exc).__name__}: {_describe(str(exc), 160)} at {where.filename}:{where.lineno}"
            )

    test = given(target.strategy())(one_case)
    test = settings(
        max_examples=cases,
        derandomize=random_seed is None,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )(test)
    if random_seed is not None:
        test = seed(random_seed)(test)
    test()
    return stats


def run_fuzz(
    cases_per_loader: int,
    *,
    loaders: Sequence[str] | None = None,
    random_seed: int | None = None,
    encoder: Any = None,
    cases: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Fuzz every loader (or ``loaders``, names of :data:`TARGETS`) with ``cases_per_loader`` cases
    (``cases``: other counts for some loaders, e.g. ``{"routing_config": 50}``).

    Returns ``{"fuzz_cases": N, "fuzz_failures": K, "per_loader": {name: {"cases", "failures"}},
    "failures": [first few failing inputs, as reprs]}``. ``encoder`` replaces the tiny
    :class:`TokenHashingEncoder` of the query and routing cases.
    """
    names = list(loaders) if loaders is not None else list(TARGETS)
    per_loader: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ragroute-fuzz-", dir=scratch_folder()) as tmp, _quiet():
        workspace = build_workspace(Path(tmp), encoder)
        for name in names:
            count = (cases or {}).get(name, cases_per_loader)
            stats = fuzz_target(name, workspace, count, random_seed=random_seed)
            per_loader[name] = {"cases": stats["cases"], "failures": stats["failures"]}
            failures.extend(stats["examples"])
    return {
        "fuzz_cases": sum(s["cases"] for s in per_loader.values()),
        "fuzz_failures": sum(s["failures"] for s in per_loader.values()),
        "per_loader": per_loader,
        "failures": failures[: KEEP_FAILURES * 4],
    }
