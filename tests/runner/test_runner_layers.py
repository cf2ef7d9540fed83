"""The runner's modules import each other without a circle (runner/docker.py and
runner/image_store.py once formed one), and every runner module stays small enough to read: one
job each, a module that outgrows it split by job (issue 24: the Docker runner's parts, the report's
and the matrix's).

Read from the source (every import, those inside functions included), not from sys.modules: a
circle that only shows when a function runs is a circle too."""
from __future__ import annotations

import ast

import pytest

from runner import ROOT

RUNNER = ROOT / "runner"
# The Docker runner's parts (runner/docker.py names their public API).
DOCKER_PARTS = ("docker", "docker_errors", "devices", "image_plan", "container", "engine", "engine_check",
                "image_store")
MAX_LINES = 600
# Every runner module: about 600 lines at most (a module over it is split by job, as report.py and matrix.py were).
MODULES = sorted(p.stem for p in RUNNER.glob("*.py"))
MODULE_MAX_LINES = 620


def _imports(path) -> set[str]:
    """The runner modules ``path`` imports (``from runner import x``, ``from runner.x import``,
    ``import runner.x``), anywhere in it."""
    modules = {p.stem for p in RUNNER.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "runner":
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runner."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("runner.")}
    return found - {path.stem, "__init__"}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order, the first repeated), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for dep in sorted(graph.get(module, ())):
            found = visit(dep, path + [module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


def test_the_circle_finder_finds_one():
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_in_the_runner():
    graph = {p.stem: _imports(p) for p in RUNNER.glob("*.py") if p.stem != "__init__"}
    circle = _circle(graph)
    assert circle is None, "import circle: " + " -> ".join(f"runner/{m}.py" for m in circle)
    assert "docker" not in set().union(*(graph[m] for m in DOCKER_PARTS if m != "docker"))  # the facade is a leaf


def test_every_runner_module_is_checked():
    assert set(DOCKER_PARTS) | {"report", "report_data", "report_tables", "report_plots", "matrix",
                                "matrix_plan"} <= set(MODULES)


@pytest.mark.parametrize("module", DOCKER_PARTS)
def test_docker_parts_stay_small(module):
    lines = len((RUNNER / f"{module}.py").read_text().splitlines())
    assert lines <= MAX_LINES, f"runner/{module}.py has {lines} lines (more than {MAX_LINES}): split it by job"


@pytest.mark.parametrize("module", MODULES)
def test_runner_modules_stay_small(module):
    lines = len((RUNNER / f"{module}.py").read_text().splitlines())
    assert lines <= MODULE_MAX_LINES, (f"runner/{module}.py has {lines} lines (more than {MODULE_MAX_LINES}): "
                                       "split it by job")
