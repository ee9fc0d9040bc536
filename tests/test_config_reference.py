"""docs/config.md lists every key the config loaders accept, and nothing else.

Each table of keys in the page follows a marker ``<!-- keys: SECTION[, SECTION...] -->``; its first
column holds the backticked keys. The sections and their keys must equal
:func:`ragroute.route.config_check.accepted_keys`, which reads them from the code that checks
them (TOP_KEYS, the source kinds, router_keys / ROUTER_SETTINGS, RERANKER_SETTINGS, GATE_SETTINGS,
LLM_SETTINGS, the policy signal classes and rule keys, the corpus spec keys, ...).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragroute.registry import GATES, RERANKERS, ROUTERS, SIGNALS, SOURCE_KINDS
from ragroute.route.config_check import accepted_keys

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"
MARKER = re.compile(r"^<!-- keys: (.+?) -->\s*$")
KEY = re.compile(r"^\|\s*`([^`]+)`")


def documented_keys(text: str) -> dict[str, set[str]]:
    """Section -> keys of the table right after each marker (no table: no keys)."""
    lines = text.splitlines()
    sections: dict[str, set[str]] = {}
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        keys: set[str] = set()
        rows = iter(lines[i + 1 :])
        row = next(rows, "")
        while row.strip().startswith("|"):
            key = KEY.match(row.strip())
            if key:
                keys.add(key.group(1))
            row = next(rows, "")
        for name in (part.strip() for part in match.group(1).split(",")):
            assert name not in sections, f"docs/config.md documents section {name!r} twice"
            sections[name] = keys
    return sections


@pytest.fixture(scope="module")
def documented() -> dict[str, set[str]]:
    return documented_keys(PAGE.read_text(encoding="utf-8"))


def test_every_section_of_the_loaders_is_documented(documented):
    accepted = accepted_keys()
    assert sorted(set(accepted) - set(documented)) == [], "sections the loaders have and docs/config.md lacks"
    assert sorted(set(documented) - set(accepted)) == [], "sections docs/config.md has and the loaders lack"


def test_every_key_is_documented_and_every_documented_key_is_accepted(documented):
    for section, keys in accepted_keys().items():
        missing, extra = sorted(keys - documented[section]), sorted(documented[section] - keys)
        assert (missing, extra) == ([], []), (
            f"docs/config.md section {section!r}: missing {missing}, extra {extra}"
        )


def test_every_registered_kind_has_a_section():
    """A new router, source kind, reranker, gate or signal type needs its own table."""
    sections = accepted_keys()
    for prefix, registry in (
        ("sources", SOURCE_KINDS),
        ("router", ROUTERS),
        ("reranker", RERANKERS),
        ("gate", GATES),
        ("signals", SIGNALS),
    ):
        for kind in registry.names():
            assert f"{prefix}.{kind}" in sections, f"{prefix} kind {kind!r} has no settings list in the code"


def test_the_parser_sees_tables_and_empty_sections():
    text = (
        "<!-- keys: a, b -->\n| key | type |\n|---|---|\n| `x` | int |\n| `y` | str |\n\n"
        "<!-- keys: c -->\ntakes nothing\n"
    )
    assert documented_keys(text) == {"a": {"x", "y"}, "b": {"x", "y"}, "c": set()}


def test_a_new_key_in_the_code_fails(monkeypatch, documented):
    from ragroute.route import factories

    monkeypatch.setitem(factories.ROUTER_SETTINGS, "knn", factories.ROUTER_SETTINGS["knn"] | {"weights"})
    assert accepted_keys()["router.knn"] - documented["router.knn"] == {"weights"}
