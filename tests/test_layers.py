"""The import layers, as a checked contract: handlers -> bot -> clients, one way.

- handlers/ never talk to Kubernetes or S3 themselves (no kubernetes / minio imports);
- only the entry point (bot/__main__.py) imports handlers, to compose their routers;
- the sans-I/O cores import nothing that does I/O.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = {"kubernetes", "minio", "aiohttp", "urllib3", "requests"}
SANS_IO = ["bot/core/config/__init__.py", "bot/core/commands.py", "bot/core/verdict.py", "bot/core/manifests.py"]


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted((ROOT / "handlers").glob("*.py")), ids=lambda p: p.name)
def test_handlers_do_not_import_clients(path: Path) -> None:
    assert not imported_roots(path) & {"kubernetes", "minio"}, f"{path.name} must go through bot/"


@pytest.mark.parametrize("path", sorted((ROOT / "bot").rglob("*.py")), ids=lambda p: p.name)
def test_only_the_entry_point_imports_handlers(path: Path) -> None:
    if path.name != "__main__.py":
        assert "handlers" not in imported_roots(path), f"bot/{path.name} imports handlers"


@pytest.mark.parametrize("name", SANS_IO)
def test_sans_io_cores_import_no_io(name: str) -> None:
    roots = imported_roots(ROOT / name)
    assert not roots & (CLIENTS | {"gidgethub", "asyncio", "socket"}), f"{name} imports {roots & CLIENTS}"
