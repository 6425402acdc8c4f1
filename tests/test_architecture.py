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
    "path", sorted(p for p in (ROOT / "bot").glob("*.py") if p.name != "cli.py"), ids=str
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
