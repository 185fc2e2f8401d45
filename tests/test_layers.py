"""The import layers, as a checked contract: the drawing of bot/ is what the code does.

    handlers/      -> bot.flows, bot.core; of the platform only checks (names, calls) and logs
    bot/service/   the process: HTTP app, intake, dispatch, setup page (may import everything below)
    bot/flows/     the work: builds, deploys, runs, lifecycle, tracker (never the service, never aiohttp)
    bot/platform/  clients and process plumbing: GitHub, Kubernetes, S3, checks, settings, metrics, logs
    bot/core/      pure: config, commands, verdict, manifests, job specs, records (no I/O, nothing above)

Only the entry point (bot/__main__.py) imports handlers, to compose their routers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IO = {"kubernetes", "minio", "aiohttp", "urllib3", "requests", "gidgethub", "asyncio", "socket", "subprocess",
      "prometheus_client", "threading", "http"}
HANDLER_PLATFORM = {"bot.platform.checks", "bot.platform.logs"}


def imported(path: Path) -> set[str]:
    """Every module `path` imports (`from bot.platform import checks` counts as bot.platform.checks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module in
                         ("bot", "bot.core", "bot.flows", "bot.platform", "bot.service"))
    return found


def roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "bot" and len(parts) > 2 else None


def files(where: str) -> list[Path]:
    return sorted((ROOT / where).rglob("*.py"))


def test_every_module_of_bot_sits_in_a_layer() -> None:
    loose = [p.relative_to(ROOT).as_posix() for p in (ROOT / "bot").glob("*.py")
             if p.name not in ("__init__.py", "__main__.py")]
    assert loose == [], "bot/ groups modules as core, platform, flows, service"


@pytest.mark.parametrize("path", files("bot/core"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_core_is_pure(path: Path) -> None:
    modules = imported(path)
    assert not roots(modules) & IO, f"{path.name} imports {roots(modules) & IO}"
    above = {m for m in modules if layer_of(m) in ("platform", "flows", "service")}
    assert not above, f"{path.name} imports {above}"


@pytest.mark.parametrize("path", files("bot/platform"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_platform_knows_no_flow(path: Path) -> None:
    above = {m for m in imported(path) if layer_of(m) in ("flows", "service")}
    assert not above, f"{path.name} imports {above}"


@pytest.mark.parametrize("path", files("bot/flows"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_flows_never_serve_http(path: Path) -> None:
    modules = imported(path)
    assert "aiohttp" not in roots(modules), f"{path.name} imports aiohttp: flows talk through the platform clients"
    assert not {m for m in modules if layer_of(m) == "service"}, f"{path.name} imports bot.service"


@pytest.mark.parametrize("path", files("handlers"), ids=lambda p: p.name)
def test_handlers_reach_the_platform_only_through_flows(path: Path) -> None:
    modules = imported(path)
    assert not roots(modules) & {"kubernetes", "minio", "aiohttp"}, f"{path.name} must go through bot.flows"
    bot = {m for m in modules if m.startswith("bot.") and m not in ("bot.core", "bot.flows", "bot.platform")}
    wrong = {m for m in bot if layer_of(m) not in ("core", "flows") and m not in HANDLER_PLATFORM}
    assert not wrong, f"{path.name} imports {wrong}"


@pytest.mark.parametrize("path", files("bot"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_only_the_entry_point_imports_handlers(path: Path) -> None:
    if path.name != "__main__.py":
        assert "handlers" not in roots(imported(path)), f"{path} imports handlers"


@pytest.mark.parametrize("path", files("bot") + files("handlers"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_modules_and_functions_stay_readable(path: Path) -> None:
    """No module over 400 lines, no function over 50: split by concern before it grows."""
    text = path.read_text()
    assert text.count("\n") <= 400, f"{path.name} has {text.count(chr(10))} lines"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno
            and node.end_lineno - node.lineno + 1 > 50]
    assert not long, f"{path.name}: {long}"
