"""The packed source of a commit (issue #16, finding 9): links that are absolute or lead out of
the tree are left out when the source is packed, the rest unpacks through the init container's
own script (`tarfile` with `filter='data'`, which refuses a whole archive for one bad link), and
the check runs name what was left out. Against the GitHub emulator and the real S3 server."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import timedelta
from pathlib import Path

from bot.core.jobs import FETCH_SOURCE, WORKSPACE
from bot.platform import checks
from bot.platform.sources import ensure_source
from tests.conftest import INSTALLATION, Bed, wait_for
from tests.emulators.github import Symlink
from tests.test_regression import GOOD, REPO, approve, completed, finish, job_for, open_pr, setup_repo

TREE = {
    "train.py": "print('train')\n",
    "data/README": "data\n",
    "ok": Symlink(b"train.py"),
    "data/ok": Symlink(b"../train.py"),
    "chain": Symlink(b"data/ok"),  # through another link, still inside
    "data/root": Symlink(b".."),  # the tree's root itself
    "abs": Symlink(b"/etc/passwd"),
    "up": Symlink(b"../../etc"),
    "data/escape": Symlink(b"../.."),
    "via": Symlink(b"data/root/.."),  # reads as `data`, leads above the root once data/root is followed
    "to-abs": Symlink(b"abs"),
    "loop-a": Symlink(b"loop-b"),
    "loop-b": Symlink(b"loop-a"),
}
DROPPED = ["abs", "data/escape", "loop-a", "loop-b", "to-abs", "up", "via"]


def unpack(url: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    """The init container's script, as it runs in the Job, into `workspace` instead of /workspace."""
    script = FETCH_SOURCE.replace(repr(WORKSPACE), repr(str(workspace)))
    assert script != FETCH_SOURCE
    return subprocess.run([sys.executable, "-c", script], env={**os.environ, "FLOPS_SOURCE_URL": url},
                          capture_output=True, text=True, timeout=60, check=False)


def old_pack(files: dict[str, bytes], links: dict[str, str]) -> bytes:
    """A source object as bot versions before issue #16 packed it: every link kept."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


async def test_links_out_of_the_tree_are_left_out_and_the_rest_unpacks(bed: Bed, tmp_path: Path) -> None:
    bed.github.add_repo(REPO)
    sha = bed.github.commit(REPO, "master", TREE)
    packed = await ensure_source(bed.deps.github, bed.deps.artifacts, INSTALLATION, REPO, sha)
    assert sorted(packed.dropped) == DROPPED
    downloads = len(bed.github.calls_to("GET", rf"/repos/{REPO}/tarball/"))
    assert await ensure_source(bed.deps.github, bed.deps.artifacts, INSTALLATION, REPO, sha) == packed  # from S3
    assert len(bed.github.calls_to("GET", rf"/repos/{REPO}/tarball/")) == downloads
    done = unpack(await bed.deps.artifacts.presigned_get(packed.key, timedelta(minutes=5)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "chain").read_text() == (tmp_path / "ok").read_text() == "print('train')\n"
    assert os.readlink(tmp_path / "data" / "root") == ".." and (tmp_path / "data" / "root" / "train.py").is_file()
    assert not any(os.path.lexists(tmp_path / name) for name in DROPPED)


async def test_a_clean_tree_keeps_every_file_and_lists_nothing(bed: Bed, tmp_path: Path) -> None:
    bed.github.add_repo(REPO)
    sha = bed.github.commit(REPO, "master", {"train.py": "x\n", "lib/a.py": "y\n", "link": Symlink(b"lib/a.py")})
    packed = await ensure_source(bed.deps.github, bed.deps.artifacts, INSTALLATION, REPO, sha)
    assert packed.dropped == ()
    assert await bed.deps.artifacts.get_json(packed.key + ".dropped.json") == []
    done = unpack(await bed.deps.artifacts.presigned_get(packed.key, timedelta(minutes=5)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "link").read_text() == "y\n"


async def test_a_source_packed_before_links_were_checked_is_packed_again(bed: Bed, tmp_path: Path) -> None:
    bed.github.add_repo(REPO)
    sha = bed.github.commit(REPO, "master", TREE)
    key = f"sources/{REPO}/{sha}.tar.gz"
    await bed.deps.artifacts.put_bytes(key, old_pack({"train.py": b"x\n"}, {"abs": "/etc/passwd"}))  # no list
    url = await bed.deps.artifacts.presigned_get(key, timedelta(minutes=5))
    refused = unpack(url, tmp_path / "before")
    assert refused.returncode != 0 and "AbsoluteLinkError" in refused.stderr  # what blocked the repository
    downloads = len(bed.github.calls_to("GET", rf"/repos/{REPO}/tarball/"))
    packed = await ensure_source(bed.deps.github, bed.deps.artifacts, INSTALLATION, REPO, sha)
    assert len(bed.github.calls_to("GET", rf"/repos/{REPO}/tarball/")) == downloads + 1
    assert packed.key == key and sorted(packed.dropped) == DROPPED
    done = unpack(url, tmp_path / "after")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "after" / "chain").read_text() == "print('train')\n"


async def test_the_regression_check_names_the_links_left_out(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {k: v for k, v in TREE.items() if k != "train.py"})
    await approve(bed)
    job = job_for(bed, head)
    assert json.loads(job["metadata"]["annotations"][checks.DROPPED_LINKS]) == {"count": 7, "names": DROPPED}
    [running] = bed.github.check_runs_for(REPO, head, "flops/regression")
    summary = running["output"]["summary"]
    assert "7 symlink(s) left out of the source" in summary
    assert all(f"`{name}`" in summary for name in DROPPED) and "`chain`" not in summary
    await finish(bed, job, GOOD)
    run = await wait_for(lambda: completed(bed, head), what="regression report")
    assert "7 symlink(s) left out of the source" in run["output"]["summary"] and "`via`" in run["output"]["summary"]


def test_the_note_is_capped_and_survives_a_garbled_annotation() -> None:
    names = tuple(f"l{i}" for i in range(30))
    note = checks.dropped_note(checks.dropped_annotation(names))
    assert "30 symlink(s)" in note and "`l19`" in note and "`l20`" not in note and "and 10 more" in note
    assert checks.dropped_annotation(()) == {}
    for garbled in ("", "[1]", "{\"count\": \"x\"}", "not json"):
        assert checks.dropped_note({checks.DROPPED_LINKS: garbled}) == ""
