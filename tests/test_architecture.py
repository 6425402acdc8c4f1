"""Dependencies point inwards: the core (bot/) never imports a platform or database library.
bot/cli.py is the composition root and may import adapters and storage (lazily)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = ("telegram", "discord", "sqlalchemy", "alembic", "adapters", "storage")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted(p for p in (ROOT / "bot").rglob("*.py") if p.name != "cli.py"), ids=str
)
def test_core_imports_no_platform_or_database(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN_IN_CORE}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "storage").rglob("*.py")), ids=str)
def test_storage_knows_no_platform(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ("telegram", "discord")}
    assert not bad, f"{path} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "adapters").rglob("*.py")), ids=str)
def test_adapters_do_not_touch_storage(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ("storage", "sqlalchemy")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


# One home per concern (issue 17): a module past this many lines, or a class past that many, holds
# more than one concern.
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
# Files whose size is what it is for a reason that outweighs the limits.
EXEMPT: dict[str, str] = {}
# Files over a limit today, with the work that brings them under it.
KNOWN_OVER: dict[str, str] = {}


@pytest.mark.parametrize(
    "path",
    sorted(p for pkg in ("bot", "adapters", "storage") for p in (ROOT / pkg).rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_modules_and_classes_stay_small(path: Path) -> None:
    name = path.relative_to(ROOT).as_posix()
    if name in EXEMPT or name in KNOWN_OVER:
        pytest.skip(EXEMPT.get(name) or KNOWN_OVER[name])
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines (at most {MAX_MODULE_LINES})"
    big = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    }
    assert not big, f"{name}: classes over {MAX_CLASS_LINES} lines: {big}"


PROJECT_PACKAGES = ("bot", "adapters", "storage")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement (also inside functions), except under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _type_checking_only(node):
            children = node.orelse  # the `if` body is for the type checker only
        stack.extend(children)
    return found


def import_graph() -> dict[str, set[str]]:
    """The project's modules and which of them each imports (`from a import b` counts as
    importing a.b when b is a module; a module is not said to import its parent packages)."""
    paths = {_module_name(p): p for pkg in PROJECT_PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                           for a in node.names]  # fmt: skip
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_among_the_projects_modules() -> None:
    graph = import_graph()
    assert "bot.config" in graph["bot.cli"]  # the parse sees imports
    cycles = [group for group in strongly_connected(graph) if len(group) > 1]
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(g for g in strongly_connected(graph) if len(g) > 1) == [["a", "b", "c"]]
