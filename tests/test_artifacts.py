"""Artifacts in the real S3 server: what workloads write is read with care; sticky comments are ours."""
from __future__ import annotations

import json

import pytest

from bot.platform import comments
from bot.platform.artifacts import TooLarge
from tests.conftest import INSTALLATION, Bed

REPO = "Codertocat/Hello-World"
MARKER = "<!-- flops:test -->"


async def test_json_over_the_limit_is_refused_not_read_into_memory(bed: Bed) -> None:
    artifacts = bed.deps.artifacts
    await artifacts.put_bytes("runs/x/metrics.json", json.dumps({"metrics": {"a": [0.5] * 400}}).encode())
    with pytest.raises(TooLarge, match="larger than 1 KiB"):
        await artifacts.get_json("runs/x/metrics.json", max_bytes=1024)
    assert (await artifacts.get_json("runs/x/metrics.json"))["metrics"]["a"][0] == 0.5
    assert await artifacts.get_json("runs/x/absent.json") is None


async def test_not_json_raises_value_error(bed: Bed) -> None:
    await bed.deps.artifacts.put_bytes("runs/y/metrics.json", b"accuracy=0.9")
    with pytest.raises(ValueError):
        await bed.deps.artifacts.get_json("runs/y/metrics.json")


async def test_sticky_comment_edits_only_this_apps_own(bed: Bed) -> None:
    bed.github.add_repo(REPO, default_branch="master")
    bed.github.commit(REPO, "master", {"README.md": "x"})
    human = bed.github.add_comment(REPO, 3, f"{MARKER}\nquoted by a person")
    gh = bed.deps.github.for_installation(INSTALLATION)
    author = await bed.deps.github.bot_login()
    await comments.upsert(gh, REPO, 3, MARKER, f"{MARKER}\nfirst", author=author)
    await comments.upsert(gh, REPO, 3, MARKER, f"{MARKER}\nsecond", author=author)
    bodies = {c["user"]["login"]: c["body"] for c in bed.github.comments_on(REPO, 3)}
    assert bodies == {human["user"]["login"]: f"{MARKER}\nquoted by a person", author: f"{MARKER}\nsecond"}


async def test_a_listing_stops_at_its_cap_and_says_so_and_a_prefix_is_deleted_in_bounded_batches(bed: Bed) -> None:
    """A workload decides how many keys it writes under its output: the bot lists and deletes at
    most `limit` of them (key order), and knows when more were left."""
    runs = bed.deps.artifacts.runs
    keys = [f"runs/flood/results/{i:03}.txt" for i in range(7)]
    for key in keys:
        await runs.put_bytes(key, b"")
    assert await runs.list_page("runs/flood/", 5) == (keys[:5], True)
    assert await runs.list_page("runs/flood/", 7) == (keys, False)
    assert await runs.list_keys("runs/flood/", 3) == keys[:3]
    assert await runs.delete_prefix("runs/flood/", 4) is True  # 4 gone, 3 left
    assert await runs.list_page("runs/flood/", 10) == (keys[4:], False)
    assert await runs.delete_prefix("runs/flood/", 4) is False
    assert await runs.list_keys("runs/flood/") == []
