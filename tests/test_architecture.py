"""The arrows of shared/DESIGN.md "Layout", checked on the source (AST, no imports run).

- ``protocol`` imports nothing of ours; ``ledger`` nothing but itself (and its
  database driver); ``sim`` only ``protocol``.
- The transaction engine (``gateway.acquiring``, ``gateway.upstream``) never
  imports the CLI, reports, back office, jobs, services or the server around it.
- No module takes another module's ``_private`` name.
- No function-level import dodges a cycle: an import inside a function is
  allowed only where the same import at the top would not close a loop.
- The CLI holds no SQL: it changes things through ``gateway.services``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "protocol", "ledger", "sim", "bench", "deploy")
OURS = frozenset(PACKAGES)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (for ``from a import b``: ``a.b`` when that is a module, else ``a``)
    names: tuple[str, ...]  # names taken with ``from ... import``
    line: int
    top_level: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


MODULES = {module_name(p): p for p in source_files()}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES.get(module, Path()).name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    # imports under `if TYPE_CHECKING:` or `try:` at module level count as top level
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):
            top |= {id(child) for child in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), node.lineno, id(node) in top)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            names = tuple(alias.name for alias in node.names)
            submodules = [f"{base}.{name}" for name in names if f"{base}.{name}" in MODULES]
            for target in submodules or [base]:
                yield Import(module, target, names, node.lineno, id(node) in top)


ALL_IMPORTS = [imp for module, path in MODULES.items() for imp in imports_of(module, path)]


def ours(target: str) -> str | None:
    top = target.split(".")[0]
    return top if top in OURS else None


def violations(rule: str) -> list[str]:
    return [f"{MODULES[imp.module].relative_to(ROOT)}:{imp.line}: {imp.module} -> {imp.target}"
            for imp in ALL_IMPORTS if _breaks(rule, imp)]


_ENGINE = ("gateway.acquiring", "gateway.upstream")
_NOT_FOR_THE_ENGINE = ("gateway.cli", "gateway.reports", "gateway.backoffice", "gateway.jobs", "gateway.services",
                       "gateway.server")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _breaks(rule: str, imp: Import) -> bool:
    package, target_package = imp.module.split(".")[0], ours(imp.target)
    if rule == "protocol":
        return package == "protocol" and target_package not in (None, "protocol")
    if rule == "ledger":
        return package == "ledger" and target_package not in (None, "ledger")
    if rule == "sim":
        return package == "sim" and target_package not in (None, "sim", "protocol")
    if rule == "engine":
        return _within(imp.module, _ENGINE) and _within(imp.target, _NOT_FOR_THE_ENGINE)
    raise AssertionError(rule)


@pytest.mark.parametrize("rule", ["protocol", "ledger", "sim", "engine"])
def test_imports_point_one_way(rule: str) -> None:
    assert violations(rule) == []


def test_no_module_takes_another_modules_private_name() -> None:
    found = []
    for imp in ALL_IMPORTS:
        if not ours(imp.target) or imp.target == imp.module:
            continue
        found += [f"{imp.module}:{imp.line} takes {imp.target}.{name}"
                  for name in imp.names if name.startswith("_") and not name.startswith("__")]
    for module, path in MODULES.items():
        imported = {alias.asname or alias.name.split(".")[-1]: imp_target
                    for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom)
                    for alias in node.names
                    if (imp_target := f"{_resolve(module, node)}.{alias.name}") in MODULES and imp_target != module}
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{module}:{node.lineno} takes {imported[node.value.id]}.{node.attr}")
    assert found == []


def _top_level_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL_IMPORTS:
        if imp.top_level and imp.target in MODULES:
            graph[imp.module].add(imp.target)
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = imp.target.split(".")
            graph[imp.module] |= {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES}
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module == goal:
            return True
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return False


def test_no_function_level_import_dodges_a_cycle() -> None:
    graph = _top_level_graph()
    dodges = [f"{imp.module}:{imp.line} imports {imp.target} inside a function, and {imp.target} imports "
              f"{imp.module} back" for imp in ALL_IMPORTS
              if not imp.top_level and imp.target in MODULES and _reaches(graph, imp.target, imp.module)]
    assert dodges == []


_SQL = re.compile(r"\b(INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|SELECT\b[\s\S]*\bFROM)\b", re.IGNORECASE)


def test_the_cli_holds_no_sql() -> None:
    found = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for path in sorted((ROOT / "gateway" / "cli").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.search(node.value)]
    assert found == []


def test_the_checks_see_a_forbidden_arrow() -> None:
    """The rules above would catch what they forbid (so an empty list means something)."""
    assert _breaks("protocol", Import("protocol.spec", "gateway.settings", (), 1, True))
    assert _breaks("sim", Import("sim.load", "gateway.acquiring.store", (), 1, True))
    assert _breaks("ledger", Import("ledger.check", "gateway.db.pool", (), 1, True))
    assert _breaks("engine", Import("gateway.acquiring.router", "gateway.cli.main", (), 1, True))
    assert not _breaks("engine", Import("gateway.server.app", "gateway.acquiring.router", (), 1, True))
    assert _reaches({"a": {"b"}, "b": {"a"}}, "b", "a")
    assert _SQL.search("UPDATE terminals SET status = $1")
    assert len(MODULES) > 40 and len(ALL_IMPORTS) > 200
