"""Package structure, read from the source with ``ast`` (nothing is imported, no network, no model).

* no import cycles among ragroute's modules (module-level and in-function imports alike);
* click is imported only by the command-line package ``ragroute.cli``;
* every third-party module ragroute imports belongs to a distribution that
  pyproject.toml declares (``[project.dependencies]`` or an extra).

Only explicit import statements count: that importing ``ragroute.a.b`` first runs
``ragroute/a/__init__.py`` is not an edge here.
"""

from __future__ import annotations

import ast
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
