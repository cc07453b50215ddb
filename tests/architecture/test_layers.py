"""The shape of the code, checked by machine: layers, no import cycles, no imports hidden in functions, short
functions, and the linters (ruff with complexity, mypy) clean. A newcomer can trust the tree to mean what it says."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "connectors", "postings", "mappings")
CODE = ("agent", "connectors", "postings")  # where the function-length rule applies
MAX_FUNCTION_LINES = 60
# Imports that may stay inside a function, and why: each is a platform-only or heavy optional module.
DEFERRED_OK = {
    "msvcrt": "Windows only",
    "fcntl": "POSIX only",
    "pwd": "POSIX only",
    "grp": "POSIX only",
    "keyrings.alt.file": "only the headless file backend needs it",
    "psycopg": "only a PostgreSQL server check needs it",
    "adbc_driver_postgresql.dbapi": "the optional bulk extra: loaded only once bulk_unavailable() found it",
    "pyarrow": "the optional bulk extra, some 45 MB: loaded by the first bulk read only",
    "pyarrow.compute": "the optional bulk extra, some 45 MB: loaded by the first bulk read only",
    "pyarrow.ipc": "the optional bulk extra, some 45 MB: loaded by the first bulk read only",
    "adbc_driver_sqlite.dbapi": "the optional bulk extra, in the child process that reads a SQLite source only",
    "alembic": "a store already at its newest revision is opened without it, some 11 MB (agent.state.store)",
    "alembic.config": "a store already at its newest revision is opened without it, some 11 MB (agent.state.store)",
    "alembic.runtime.migration": "a store already at its newest revision is opened without it (agent.state.store)",
    "alembic.script": "a store already at its newest revision is opened without it (agent.state.store)",
    "connectorx": "the optional bulk-mysql extra, some 180 MB: loaded by a MariaDB or MySQL bulk read only",
    "pyodbc": "its extension needs unixODBC's libodbc: the test kit asks whether it loads before anything uses it",
}


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def test_layers_contract_is_kept() -> None:
    """pyproject.toml's [tool.importlinter] layers contract, run by import-linter itself."""
    run = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (strongly connected components)."""
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    reaches: dict[str, set[str]] = {}

    def reachable(start: str) -> set[str]:
        if start not in reaches:
            seen: set[str] = set()
            todo = list(imports[start])
            while todo:
                module = todo.pop()
                if module not in seen:
                    seen.add(module)
                    todo.extend(imports.get(module, ()))
            reaches[start] = seen
        return reaches[start]

    groups = {frozenset({m, *(o for o in reachable(m) if m in reachable(o))}) for m in imports if m in reachable(m)}
    return sorted(sorted(g) for g in groups)


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    # a package's __init__ re-exporting its own submodule is not a cycle between stages
    for module in list(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                graph.remove_import(importer=module, imported=imported)
    assert _cycles(graph) == []


def _deferred_imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    yield from ((inner.lineno, alias.name) for alias in inner.names)
                elif isinstance(inner, ast.ImportFrom):
                    yield inner.lineno, inner.module or ""


def test_no_import_is_deferred_to_dodge_a_cycle() -> None:
    hidden = [f"{path.relative_to(ROOT)}:{line} imports {name}"
              for path in _sources(*PACKAGES) for line, name in _deferred_imports(path) if name not in DEFERRED_OK]
    assert hidden == []


def test_functions_are_short() -> None:
    long = []
    for path in _sources(*CODE):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} has {size} lines")
    assert long == []


def test_ruff_is_clean_with_the_complexity_rule() -> None:
    run = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:]


def test_every_module_says_why_it_exists() -> None:
    silent = [str(path.relative_to(ROOT)) for path in _sources(*PACKAGES)
              if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert silent == []


@pytest.mark.timeout(600)
def test_mypy_is_clean() -> None:
    """[tool.mypy] in pyproject.toml: strict for every package and for the tests."""
    run = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:]


def test_mypy_checks_everything_strictly() -> None:
    """A clean run means something only if it covers the tree: strict at the top, no override turning it off."""
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert mypy["strict"] is True
    assert {*PACKAGES, "tests"} <= set(mypy["files"])
    assert [o["module"] for o in mypy.get("overrides", []) if o.get("strict") is False] == []


STATE_TABLES = {"postings": "state", "links": "status", "payments": "status", "collections": "status"}


def _state_writes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``update(<table>)....values(<state column>=...)``: a stored state written around agent.state.statuses.move."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values"):
            continue
        tables = {n.args[0].id for n in ast.walk(node.func.value) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name) and n.func.id == "update" and n.args
                  and isinstance(n.args[0], ast.Name)}
        for table in tables & set(STATE_TABLES):
            if any(k.arg == STATE_TABLES[table] for k in node.keywords):
                yield node.lineno, table


def test_stored_states_change_only_through_move() -> None:
    """Posting, link, payment and collection states change through agent.state.statuses.move, which refuses a move
    its state machine does not allow; an UPDATE that sets one directly would slip past it."""
    found = [f"{path.relative_to(ROOT)}:{line} sets {table}'s state directly"
             for path in _sources(*CODE) if path.name != "statuses.py"
             for line, table in _state_writes(ast.parse(path.read_text()))]
    assert not found, "\n".join(found)
    sample = ast.parse("conn.execute(update(postings).where(postings.c.id == 1).values(state='posted'))")
    assert list(_state_writes(sample)) == [(1, "postings")]  # the check itself sees what it looks for
