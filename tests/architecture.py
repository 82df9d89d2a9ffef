"""The repository's import graph, read from the source (ast): what tests/test_architecture.py holds.

Modules are named as Python names them (facectx.training.loop, pipelines.training, components.ingest).
Every import counts, at module level or inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"facectx": REPO / "src" / "facectx", "pipelines": REPO / "pipelines", "components": REPO / "components"}


@cache
def module_files() -> dict[str, Path]:
    """{module name: its file} for every module of facectx, pipelines and components."""
    found = {}
    for package, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported_modules(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The repository modules the import statements in `path` load (relative imports resolved).
    `import a.b.c` runs a/__init__ and a/b/__init__ too, except where the importer lives inside
    them (its own packages are loaded already); `from a.b import c` loads module a.b.c when there
    is one, and a.b's __init__ when c is a name defined there."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
            named.update(submodules)
            if len(submodules) < len(node.names):
                named.add(base)
    loaded = set()
    for name in named:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            candidate = ".".join(parts[:end])
            inside = module.startswith(candidate + ".")
            if candidate in modules and candidate != module and not (inside and end < len(parts)):
                loaded.add(candidate)
    return loaded


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """{module: the repository modules it imports}."""
    modules = module_files()
    return {module: frozenset(_imported_modules(path, module, modules)) for module, path in modules.items()}


def closure(start: str) -> set[str]:
    """`start` and every repository module it imports, directly or not."""
    graph, seen, todo = import_graph(), set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


def cycles() -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    graph = import_graph()
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def code_files(entry: str, leave_out: tuple[str, ...] = ()) -> set[Path]:
    """The source files of `entry` and of every repository module it imports, directly or not,
    except the units in leave_out (and what only they import)."""
    graph, files, seen, todo = import_graph(), module_files(), set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen or any(module == u or module.startswith(u + ".") for u in leave_out):
            continue
        seen.add(module)
        todo.extend(graph[module])
    return {files[m] for m in seen}


def covering(files: set[Path]) -> list[str]:
    """The shortest list of folders and files (relative to the repository) that holds exactly
    `files`: a folder wherever every module under it is one of them."""
    every = set(module_files().values())
    chosen: list[str] = []
    for path in sorted(files):
        parents = [p for p in reversed(path.parents) if p.is_relative_to(REPO / "src" / "facectx")]
        for folder in parents:
            if folder != REPO / "src" / "facectx" and all(f in files for f in every if f.is_relative_to(folder)):
                entry = folder.relative_to(REPO).as_posix()
                break
        else:
            entry = path.relative_to(REPO).as_posix()
        if entry not in chosen:
            chosen.append(entry)
    return chosen
