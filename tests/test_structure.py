"""Package structure, read from the source with ``ast`` (nothing is imported, no network, no model).

* no import cycles among ragroute's modules (module-level and in-function imports alike);
* click is imported only by the command-line package ``ragroute.cli``;
* every third-party module ragroute imports belongs to a distribution that
  pyproject.toml declares (``[project.dependencies]`` or an extra);
* docs/architecture.md's tables hold for ``ragroute/registry.py`` and the modules they name, and
  llama-index, LangChain and matplotlib are imported only where that page says.

Only explicit import statements count: that importing ``ragroute.a.b`` first runs
``ragroute/a/__init__.py`` is not an edge here.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "ragroute"
CLI_PACKAGE = "ragroute.cli"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: Import names of declared distributions that need not be installed here (extras), so
#: ``packages_distributions()`` cannot name their distribution.
NOT_INSTALLED_DISTRIBUTIONS = {"Stemmer": "PyStemmer"}


def find_modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[tuple[str, str | None, int]]:
    """``(module, name or None, line)`` for every import statement of a file, wherever it stands.

    ``import a.b`` gives ``("a.b", None)``; ``from a import b`` gives ``("a", "b")``;
    relative imports are made absolute.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                yield base, alias.name, node.lineno


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package_dir: Path) -> nx.DiGraph:
    """Edges ``importer -> imported`` between the modules of a package; ``where`` says file:line."""
    modules = find_modules(package_dir)
    top = package_dir.name
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for base, name, line in imported_names(module, path):
            if base.split(".")[0] != top:
                continue
            full = f"{base}.{name}" if name else base
            target = full if full in modules else _known_prefix(base, modules)
            if target and target != module and not graph.has_edge(module, target):
                where = f"{path.relative_to(package_dir.parent)}:{line}"
                graph.add_edge(module, target, where=where)
    return graph


def describe_cycles(graph: nx.DiGraph) -> list[str]:
    """One line per group of modules that import each other: the group and one cycle through it."""
    out = []
    for group in nx.strongly_connected_components(graph):
        if len(group) < 2:
            continue
        cycle = nx.find_cycle(graph.subgraph(group))
        steps = " -> ".join(f"{a} ({graph.edges[a, b]['where']})" for a, b in cycle)
        out.append(f"{len(group)} modules {sorted(group)}; e.g. {steps} -> {cycle[0][0]}")
    return out


def third_party_imports(package_dir: Path) -> dict[str, set[str]]:
    """Top-level name of every absolute non-stdlib import outside the package -> importing modules."""
    used: dict[str, set[str]] = {}
    for module, path in find_modules(package_dir).items():
        for base, _name, _line in imported_names(module, path):
            top = base.split(".")[0]
            if top and top != package_dir.name and top not in sys.stdlib_module_names:
                used.setdefault(top, set()).add(module)
    return used


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared_distributions() -> set[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", r.strip()).group()) for r in requirements}


# --------------------------------------------------------------------------- tests


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT / PACKAGE)
    assert graph.number_of_edges() > 100, "the import graph looks empty: is the parser broken?"
    cycles = describe_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_cycle_check_finds_a_planted_cycle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("import pkg.a\ng = 1\n")
    (package / "d.py").write_text("from pkg.sub.b import f\nfrom . import c\n")  # into the cycle, not in it
    cycles = describe_cycles(import_graph(package))
    assert len(cycles) == 1 and "['pkg.a', 'pkg.c', 'pkg.sub.b']" in cycles[0], cycles


def test_tests_import_their_helpers_as_ci_runs_them() -> None:
    """`.ci/run` runs `.venv/bin/pytest`, where `tests` is no package on the path: a test importing
    `tests.conftest` collected under `python -m pytest` and failed in CI (session 44)."""
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.startswith(("from tests.", "import tests"))
    ]
    assert not offenders, f"import test helpers as `from conftest import ...`: {offenders}"


def test_click_only_in_the_cli_package() -> None:
    users = third_party_imports(ROOT / PACKAGE).get("click", set())
    outside = sorted(m for m in users if m != CLI_PACKAGE and not m.startswith(CLI_PACKAGE + "."))
    assert users, "nothing imports click: is the parser broken?"
    assert not outside, f"click imported outside {CLI_PACKAGE}: {outside}"


def test_imported_distributions_are_declared() -> None:
    declared = declared_distributions()
    providers = packages_distributions()
    problems = []
    for name, importers in sorted(third_party_imports(ROOT / PACKAGE).items()):
        distributions = {_normalise(d) for d in providers.get(name, [])}
        if not distributions:  # not installed here: a known extra, or a distribution named like the module
            distributions = {_normalise(NOT_INSTALLED_DISTRIBUTIONS.get(name, name))}
        if not distributions & declared:
            problems.append(
                f"{name} (distribution {', '.join(sorted(distributions))}), imported by {sorted(importers)}"
            )
    assert not problems, "imported but not declared in pyproject.toml:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- docs/architecture.md

#: registries whose row of the page lists every registered kind (the others describe their entries)
LISTED_REGISTRIES = {"INDEX_KINDS", "SOURCE_KINDS", "ROUTERS", "FUSIONS", "RERANKERS", "GATES", "ARTIFACTS"}
LISTED_REGISTRIES |= {"RELEASES"}
#: methods an entries cell names beside the kinds (``LocalIndex`` subclasses' ``from_options``, ``read``)
ENTRY_METHODS = {"from_options", "read"}


def table_cells(line: str) -> list[str]:
    """The cells of a markdown table row, split on ``|`` outside code spans."""
    cells, cell, code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            code = not code
        if char == "|" and not code:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
    return [*cells, cell.strip()]


def section_rows(heading: str) -> list[list[str]]:
    """The body rows of the first table under the page's ``## heading``."""
    lines = ARCHITECTURE.read_text(encoding="utf-8").split("\n## " + heading, 1)[1].splitlines()
    table = [line for line in lines[1:] if line.startswith("## ") or line.startswith("|")]
    table = table[: next((i for i, line in enumerate(table) if line.startswith("## ")), len(table))]
    return [table_cells(line) for line in table[2:]]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def registries_in_code() -> dict[str, dict[str, str]]:
    """``NAME -> {kind: "module:attribute"}`` of every ``NAME = Registry(..., {...})`` of registry.py."""
    tree = ast.parse((ROOT / PACKAGE / "registry.py").read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        call = node.value if isinstance(node, ast.Assign) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Registry":
            out[node.targets[0].id] = ast.literal_eval(call.args[1]) if len(call.args) > 1 else {}
    return out


def module_file(reference: str) -> str:
    """``ragroute/a/b.py`` (or ``ragroute/a/__init__.py``) of ``"ragroute.a.b:attribute"``."""
    path = reference.partition(":")[0].replace(".", "/")
    return f"{path}.py" if (ROOT / f"{path}.py").exists() else f"{path}/__init__.py"


def module_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def named_files(cell: str) -> list[Path]:
    """The ragroute modules a cell names (``gate/signals.py``, ``plots.py``: by the end of their path)."""
    files = sorted(str(path.relative_to(ROOT)) for path in (ROOT / PACKAGE).rglob("*.py"))
    named = re.findall(r"[\w/]+\.py", cell)
    return [ROOT / f for name in named for f in files if f == name or f.endswith("/" + name)]


def test_the_registries_table_is_registry_py() -> None:
    """Every registry the page lists exists and holds the kinds it names, with its implementations
    where the page says they live; a registry or kind added in code needs its row or word there."""
    code = registries_in_code()
    rows = {code_spans(cells[0])[0]: cells for cells in section_rows("Registries")}
    assert len(code) > 8, "no registries read from registry.py: is the parser broken?"
    assert sorted(rows) == sorted(code), "registries of docs/architecture.md vs ragroute/registry.py"
    problems = []
    for name, (_, entries, where) in rows.items():
        listed = {span for span in code_spans(entries) if re.fullmatch(r"[a-z][a-z0-9_-]*", span)}
        if name in LISTED_REGISTRIES:
            unlisted = [kind for kind in code[name] if kind not in listed]
            problems += [f"{name}: {kind!r} registered, not in the row" for kind in unlisted]
            problems += [
                f"{name}: the row names {kind!r}, not registered"
                for kind in sorted(listed - set(code[name]) - ENTRY_METHODS)
            ]
        places = [span.rstrip("/") for span in code_spans(where) if span.startswith("ragroute/")]
        if name == "ARTIFACTS" or not places:  # "the family's module": each family's own
            continue
        for kind, reference in code[name].items():
            path = module_file(reference)
            if not any(path == p or path.startswith(p + "/") or fnmatch.fnmatch(path, p) for p in places):
                problems.append(f"{name}: {kind!r} is in {path}, not in {', '.join(places)}")
    assert not problems, "\n".join(problems)


def test_what_the_where_things_go_table_registers_in_exists() -> None:
    """Each upper-case name of the "register it in" column is a registry of registry.py or defined
    in a module the row names (that column's, else the "put it in" column's)."""
    registries = set(registries_in_code())
    rows = section_rows("Where things go")
    assert len(rows) > 30, "the table looks empty: is the parser broken?"
    problems = []
    for adding, put, register in rows:
        for name in (span for span in code_spans(register) if re.fullmatch(r"[A-Z][A-Z_]+", span)):
            files = named_files(register) if "that module" not in register else []
            files = files or named_files(put)
            if name not in registries and not any(name in module_level_names(f) for f in files):
                where = ", ".join(str(f.relative_to(ROOT)) for f in files) or "registry.py"
                problems.append(f"{adding}: {name} is defined in none of {where}")
    assert not problems, "\n".join(problems)


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_frameworks_and_matplotlib_only_where_the_architecture_page_says() -> None:
    """llama-index and LangChain only in ragroute.integrations and the LLM backends of ragroute.llm;
    matplotlib only in ragroute.evaluation.plots."""
    used = third_party_imports(ROOT / PACKAGE)
    allowed = {
        "llama_index": ("ragroute.integrations", "ragroute.llm"),
        "langchain_core": ("ragroute.integrations",),
        "langchain": ("ragroute.integrations",),
        "matplotlib": ("ragroute.evaluation.plots",),
    }
    assert used.get("llama_index") and used.get("matplotlib"), "no importers found: is the parser broken?"
    outside = {}
    for name, places in allowed.items():
        outside[name] = sorted(module for module in used.get(name, ()) if not within(module, places))
    assert not any(outside.values()), f"imported outside the places docs/architecture.md names: {outside}"
