"""The import graph of zoo/ has no circle: every `import zoo...` / `from zoo... import ...` in every
zoo/**/*.py, at module level or inside a function, is an edge from that module to the zoo module it
names (`from zoo.x import y` names zoo.x.y when y is a submodule, else zoo.x)."""
from __future__ import annotations

import ast
from pathlib import Path

ZOO = Path(__file__).resolve().parents[2] / "zoo"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ZOO.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ZOO.rglob("*.py")) if "__pycache__" not in p.parts}


def imported(mod: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The zoo modules that `mod` (at `path`) imports anywhere in its source."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:      # relative: from . import x / from .x import y
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "zoo":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    out.add(sub)
                elif target in known:
                    out.add(target)
    out.discard(mod)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {mod: imported(mod, path, known) for mod, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a -> ... -> a) through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:     # Tarjan; the graph has ~100 nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [circle_in(graph, set(c)) for c in components]


def components_of(graph: dict[str, set[str]]) -> list[str]:
    """Each circle, and the other modules caught in the same knot (its strongly connected component)."""
    out = []
    for circle in cycles(graph):
        start = circle[0]
        knot = sorted(m for m in _reachable(graph, start) if start in _reachable(graph, m) and m not in circle)
        out.append(" -> ".join(circle) + (f"  (also in this knot: {', '.join(knot)})" if knot else ""))
    return out


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def circle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest circle from the component's first module back to itself (breadth-first)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    chain = [v]
                    while chain[-1] != start:
                        chain.append(prev[chain[-1]])
                    return chain[::-1] + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_the_graph_sees_lazy_and_submodule_imports():
    graph = import_graph()
    assert "zoo.runtimes.base" in graph["zoo.runtimes"]           # from zoo.runtimes.base import ...
    assert "zoo.stats" in graph["zoo.cli"]                         # inside a function
    assert "zoo.logs" in graph["zoo.peaks"]                        # from zoo import logs (a submodule)
    assert "zoo.stages" in graph["zoo.shard"]                      # from zoo.stages import log (a function)
    assert graph.keys() >= {"zoo", "zoo.stages", "zoo.stages.config", "zoo.runtimes.torch_rt"}


def test_the_zoo_import_graph_has_no_circle():
    found = components_of(import_graph())
    for circle in found:
        print("import circle: " + circle)
    assert not found, "import circles in zoo/:\n" + "\n".join(found)
