"""The declared dependencies match what the code imports: every third-party module imported under
src/domaintune comes from a distribution pyproject.toml declares (at module level: a runtime dependency; inside
a function: a runtime dependency or an extra), and the runtime package never imports a development tool
(trl, lm-eval, selenium) at module level. An undeclared import works here only because something else pulled
the package in; a fresh install elsewhere would fail."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

from tests.conftest import ROOT

SRC = ROOT / "src" / "domaintune"
DEV_TOOLS = {"trl", "lm_eval", "selenium"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], set[str]]:
    """(runtime distributions, extras' distributions), normalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda spec: normalise(re.split(r"[<>=!~; \[]", spec, maxsplit=1)[0])
    runtime = {name(s) for s in project["dependencies"]}
    extras = {name(s) for specs in project["optional-dependencies"].values() for s in specs}
    return runtime, extras


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level module names imported by a file: (at module level, inside functions or classes' methods)."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    nested: set[str] = set()

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            (nested if inside else top).update(n.split(".")[0] for n in names)
            visit(child, inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return top, nested


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("domaintune", "__future__")}


def test_every_import_under_src_is_a_declared_dependency() -> None:
    runtime, extras = declared()
    dists = packages_distributions()
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        top, nested = imports(path)
        for module in sorted(third_party(top) | third_party(nested)):
            owners = {normalise(d) for d in dists.get(module, [])}
            where = path.relative_to(ROOT)
            if not owners:
                problems.append(f"{where}: imports {module}, which no installed distribution provides")
            elif module in top and not owners & runtime:
                problems.append(f"{where}: imports {module} at module level; declare {sorted(owners)} in dependencies")
            elif not owners & (runtime | extras):
                problems.append(f"{where}: imports {module}; declare {sorted(owners)} in dependencies or an extra")
    assert not problems, "\n".join(problems)


def test_the_runtime_package_never_imports_a_development_tool_at_module_level() -> None:
    found = {f"{path.relative_to(ROOT)}: {m}" for path in SRC.rglob("*.py") for m in imports(path)[0] & DEV_TOOLS}
    assert not found, sorted(found)


def test_the_checker_sees_an_undeclared_import(tmp_path: Path) -> None:
    """The import walk finds module-level and nested imports (a planted file)."""
    planted = tmp_path / "x.py"
    planted.write_text("import yaml\nfrom numpy import array\n\ndef f():\n    import trl.trainer\n    return array\n")
    assert imports(planted) == ({"yaml", "numpy"}, {"trl"})
