"""The import graph of `imgcls`, read from the source with `ast` (function-level imports included,
`if TYPE_CHECKING:` blocks excluded): no cycles anywhere, the model registry is a leaf, the Keras
package never reaches the backbone dispatcher, and no module imports another's private (`_name`) names.
The layers themselves are import-linter's contract in pyproject.toml (`lint-imports`, run by `make test`).

Run as a script (`python tests/test_import_graph.py`) it prints the graph and any cycles."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import imgcls

PACKAGE = "imgcls"
MODELS = "imgcls.models"
ROOT = Path(imgcls.__file__).parent


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package's name is its __init__)."""
    files = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join((PACKAGE, *parts))] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except under `if TYPE_CHECKING:` (its `else:` counts)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]], list[str]]:
    """(edges inside the package, every imgcls module each one imports, private names imported across modules)."""
    files = module_files()
    edges: dict[str, set[str]] = {name: set() for name in files}
    imgcls_imports: dict[str, set[str]] = {name: set() for name in files}
    private: list[str] = []
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = []
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in files:
                        targets.append(submodule)
                    else:
                        targets.append(base)
                        is_private = alias.name.startswith("_") and not alias.name.startswith("__")
                        if is_private and base.startswith("imgcls"):
                            private.append(f"{name} imports {alias.name} from {base}")
            for target in targets:
                if target == "imgcls" or target.startswith("imgcls."):
                    imgcls_imports[name].add(target)
                if target in files and target != name:
                    edges[name].add(target)
    return edges, imgcls_imports, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    return seen - {start}


def test_the_graph_is_read() -> None:
    edges, _, _ = import_graph()
    assert f"{MODELS}.keras.model" in edges[f"{MODELS}.keras.h5"]  # a module-level import
    assert f"{MODELS}.backbones" in edges[f"{MODELS}.transfer"]  # a function-level import


def test_no_import_cycles() -> None:
    assert cycles(import_graph()[0]) == []


def test_the_registry_is_a_leaf() -> None:
    _, imgcls_imports, _ = import_graph()
    assert imgcls_imports[f"{MODELS}.registry"] == {"imgcls.errors"}


def test_the_keras_package_does_not_reach_the_backbone_dispatcher() -> None:
    edges, _, _ = import_graph()
    for name in edges:
        if name == f"{MODELS}.keras" or name.startswith(f"{MODELS}.keras."):
            assert f"{MODELS}.backbones" not in reachable(edges, name), name


def test_no_private_names_are_imported_across_modules() -> None:
    assert import_graph()[2] == []


if __name__ == "__main__":
    graph, _, private_imports = import_graph()
    for module in sorted(graph):
        print(f"{module} -> {', '.join(sorted(graph[module])) or '-'}")
    found = cycles(graph)
    print("cycles:", found or "none")
    print("private imports:", private_imports or "none")
    sys.exit(1 if found or private_imports else 0)
