"""The exact source of a commit, in MinIO, once: what Kaniko builds from and Jobs unpack.

Sources live in the bot's bucket, which no Job has a credential for: a Job gets a presigned GET
URL of its own commit's tarball (`presigned_source`), nothing that reads another one.

GitHub's tarball has one top-level folder (`owner-repo-sha7/`); it is stripped here so the
object unpacks straight into a build context or workspace. Links that are absolute or would lead
out of the tree are dropped (the init container's `tarfile` `filter='data'` refuses the whole
archive for one of them, so a single such symlink would block every run of the repository); the
dropped names are kept beside the object (`<key>.dropped.json`, `[]` for none) for the check runs
to list; an object without that list (packed before links were checked) is packed again.
"""
from __future__ import annotations

import asyncio
import tarfile
import tempfile
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from bot.core.jobs import source_key
from bot.platform.artifacts import Artifacts
from bot.platform.github import GitHubApp

SOURCE_URL_TTL = timedelta(days=7)  # a Job may wait that long for a node (or a bot that was down)
MAX_LINK_HOPS = 40  # as the kernel's symlink limit: a longer chain (or a loop) is dropped


@dataclass(frozen=True)
class PackedSource:
    key: str
    dropped: tuple[str, ...] = ()  # links left out, as paths in the tree


def dropped_key(key: str) -> str:
    return key + ".dropped.json"


async def ensure_source(github: GitHubApp, artifacts: Artifacts, installation_id: int, repo: str,
                        sha: str) -> PackedSource:
    """Upload `sources/<owner>/<repo>/<sha>.tar.gz` unless it is there already; say which links it left out."""
    key = source_key(repo, sha)
    if await artifacts.exists(key):
        listed = await artifacts.get_json(dropped_key(key))
        if isinstance(listed, list):  # else packed by a bot that kept every link: packed again
            return PackedSource(key, tuple(str(name) for name in listed))
    with tempfile.TemporaryFile() as raw, tempfile.TemporaryFile() as stripped:
        await github.download_tarball(installation_id, repo, sha, raw)
        size, dropped = await asyncio.to_thread(strip_top_folder, raw, stripped)
        stripped.seek(0)
        await artifacts.put_stream(key, stripped, size, "application/gzip")
        await artifacts.put_json(dropped_key(key), dropped)  # last: a list means the object is complete
    return PackedSource(key, tuple(dropped))


async def presigned_source(artifacts: Artifacts, repo: str, sha: str) -> str:
    """The presigned GET URL of the commit's tarball (uploaded by `ensure_source`), for one Job's init container."""
    return await artifacts.presigned_get(source_key(repo, sha), SOURCE_URL_TTL)


def strip_top_folder(src: BinaryIO, dest: BinaryIO) -> tuple[int, list[str]]:
    """Re-pack a GitHub tarball without its top-level folder and without links that leave it;
    returns the bytes written and the links dropped."""
    src.seek(0)
    with tarfile.open(fileobj=src, mode="r:gz") as tin, tarfile.open(fileobj=dest, mode="w:gz") as tout:
        members = [m for m in tin.getmembers() if m.type != tarfile.XGLTYPE
                   and not m.name.startswith("pax_global_header")]
        kept: list[tuple[tarfile.TarInfo, str]] = []
        for member in members:
            _, _, rest = member.name.partition("/")
            if rest and not rest.startswith("/") and ".." not in rest.split("/"):
                kept.append((member, rest.rstrip("/")))
        links = {rest: member.linkname for member, rest in kept if member.issym()}
        dropped = [rest for member, rest in kept if _leaves_tree(member, rest, links)]
        gone = set(dropped)
        for member, rest in kept:
            if rest in gone:
                continue
            if member.islnk():
                member.linkname = member.linkname.partition("/")[2]
            member.name = rest
            tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
    return dest.tell(), dropped


def _leaves_tree(member: tarfile.TarInfo, name: str, links: dict[str, str]) -> bool:
    if member.islnk():  # a hard link names another member: inside the same top folder, or nothing
        _, _, target = member.linkname.partition("/")
        return not target or target.startswith("/") or ".." in target.split("/")
    if not member.issym():
        return False
    return _resolve(name.rpartition("/")[0], member.linkname, links) is None


def _resolve(folder: str, target: str, links: dict[str, str]) -> str | None:
    """Where `target`, read from `folder`, leads once every link in the archive on the way is
    followed, as the kernel would after unpacking; None when it is absolute, climbs above the
    tree's root at any step, or takes more than MAX_LINK_HOPS links."""
    if target.startswith("/"):
        return None
    parts = deque(([*folder.split("/")] if folder else []) + target.split("/"))
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        link = links.get("/".join(resolved))
        if link is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or link.startswith("/"):
            return None
        resolved.pop()
        parts.extendleft(reversed(link.split("/")))
    return "/".join(resolved)
