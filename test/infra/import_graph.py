"""The project's import graph, read from the source (no module is imported).

Every ``import`` statement counts, including those inside functions: an import that is
hidden in a function still ties the two modules together, and a cycle through it is still a
cycle (it only fails later, at call time). Used by ``test_import_graph.py``.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

__all__ = ["module_files", "import_edges", "cycles", "wrong_arrows"]


def module_files(root: Path, packages: Iterable[str]) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every ``.py`` file of ``packages``."""
    modules: dict[str, tuple[Path, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join(parts)] = (path, is_package)
    return modules


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
             known: dict[str, tuple[Path, bool]]) -> list[str]:
    """The absolute names an import statement refers to (``from a import b`` -> ``a.b`` when
    that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    names = []
    for alias in node.names:
        candidate = f"{prefix}.{alias.name}"
        names.append(candidate if candidate in known else prefix)
    return names


def import_edges(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> every name it imports (project modules resolved to the deepest module that
    exists; third-party names kept as written)."""
    known = module_files(root, packages)
    edges: dict[str, set[str]] = {}
    for module, (path, is_package) in known.items():
        out = edges.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(module, is_package, node, known):
                resolved = target
                while resolved and resolved not in known:
                    resolved = resolved.rpartition(".")[0]
                name = resolved or target
                if name != module:
                    out.add(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative, so a deep graph cannot hit the recursion limit
        nonlocal counter
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def wrong_arrows(edges: dict[str, set[str]],
                 forbidden: Iterable[tuple[str, str]]) -> list[str]:
    """``"a -> b"`` for every import of a module under ``b`` by a module under ``a``, for each
    forbidden ``(a, b)`` pair."""
    rules = list(forbidden)
    return sorted(f"{source} -> {target}"
                  for source, targets in edges.items() for target in targets
                  for a, b in rules if _within(source, a) and _within(target, b))
