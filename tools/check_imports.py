"""The package's import rules, checked from its source (`make check` runs this; so does a test).

1. No import cycle between the package's modules, hidden or not: imports inside functions count, and so
   do those under ``if TYPE_CHECKING:`` (a type-only cycle is still two modules that know each other).
2. The core never imports Dagster: ``ledger/``, ``store/``, ``snapshot/``, ``query/``, ``quality/`` and
   ``reports/`` (DESIGN §7: Dagster is the orchestration shell around a plain library).
3. Nothing imports the faces (``cli/``, ``api/``) but the faces (``serve`` runs the API).

Usage: ``python tools/check_imports.py [PACKAGE_DIR]``; prints every violation and exits 1 if any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = ("ledger", "store", "snapshot", "query", "quality", "reports")
FACES = ("cli", "api")


def module_name(package_dir: Path, path: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST):
    """Every import node of a module: at the top, inside functions, under ``if TYPE_CHECKING:``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imports_of(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package modules (and ``dagster`` as an external marker) that module ``name`` imports."""
    found: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name if is_package else name.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rsplit(".", 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            if target.split(".")[0] == "dagster" or target.startswith("dagster_"):
                found.add("dagster")
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                found.add(target)
    return found


def graph(package_dir: Path) -> dict[str, set[str]]:
    paths = sorted(package_dir.rglob("*.py"))
    modules = {module_name(package_dir, p): p for p in paths}
    return {name: imports_of(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py",
                             set(modules)) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def violations(package_dir: Path) -> list[str]:
    edges = graph(package_dir)
    root = package_dir.name
    problems = [f"import cycle: {' -> '.join(component)}" for component in cycles(edges)]
    for source, targets in sorted(edges.items()):
        layer = source.split(".")[1] if source.count(".") else ""
        if layer in CORE and "dagster" in targets:
            problems.append(f"{source} imports dagster (the core never does)")
        for target in sorted(targets):
            face = target.split(".")[1] if target.startswith(root + ".") and target.count(".") else ""
            if face in FACES and layer not in FACES:
                problems.append(f"{source} imports the face {target}")
    return problems


def main(argv: list[str]) -> int:
    package_dir = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1] / "snapshot_pipeline")
    problems = violations(package_dir)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} import rule violation(s) in {package_dir}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
