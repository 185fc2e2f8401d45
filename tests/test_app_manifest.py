"""app.yml asks for what the bot uses: every subscribed event has a handler, every handled event is
subscribed, and the README's by-hand tables say exactly what app.yml says."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

import handlers
from bot.platform import metrics

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = yaml.safe_load((ROOT / "app.yml").read_text())


def handled_events() -> set[str]:
    router = handlers.router()
    return set(router._shallow_routes) | set(router._deep_routes)  # gidgethub keeps routes by event name


def readme_table(header: str) -> dict[str, str]:
    """The first column (backquoted) -> second column of the README table whose header starts so."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(header):].split("\n\n", 1)[0]
    rows = [line.split("|")[1:-1] for line in block.splitlines()[2:]]
    return {cells[0].strip().strip("`"): cells[1].strip() for cells in rows}


def test_every_subscribed_event_is_handled_and_every_handled_event_subscribed() -> None:
    assert set(MANIFEST["default_events"]) == handled_events()


def test_the_metrics_allow_list_is_the_subscribed_events() -> None:
    assert set(MANIFEST["default_events"]) <= metrics.EVENTS


def test_the_readme_lists_exactly_the_events_and_permissions_of_app_yml() -> None:
    assert set(readme_table("| event | what the bot does with it |")) == set(MANIFEST["default_events"])
    assert readme_table("| permission | access | used for |") == MANIFEST["default_permissions"]


def test_merge_group_deliveries_are_possible_and_no_unused_permission_is_asked() -> None:
    permissions = MANIFEST["default_permissions"]
    assert permissions.get("merge_queues") == "read"  # GitHub sends merge_group only with it
    assert "members" not in permissions  # no code path reads organisation members
    for name in permissions:
        assert re.fullmatch(r"[a-z_]+", name)
