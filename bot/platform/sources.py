"""The exact source of a commit, in MinIO, once: what Kaniko builds from and Jobs unpack.

Sources live in the bot's bucket, which no Job has a credential for: a Job gets a presigned GET
URL of its own commit's tarball (`presigned_source`), nothing that reads another one.

GitHub's tarball has one top-level folder (`owner-repo-sha7/`); it is stripped here so the
object unpacks straight into a build context or workspace.
"""
from __future__ import annotations

import asyncio
import tarfile
import tempfile
from datetime import timedelta
from typing import BinaryIO

from bot.core.jobs import source_key
from bot.platform.artifacts import Artifacts
from bot.platform.github import GitHubApp

SOURCE_URL_TTL = timedelta(days=7)  # a Job may wait that long for a node (or a bot that was down)


async def ensure_source(github: GitHubApp, artifacts: Artifacts, installation_id: int, repo: str, sha: str) -> str:
    """Upload `sources/<owner>/<repo>/<sha>.tar.gz` unless it is there already; return its key."""
    key = source_key(repo, sha)
    if await artifacts.exists(key):
        return key
    with tempfile.TemporaryFile() as raw, tempfile.TemporaryFile() as stripped:
        await github.download_tarball(installation_id, repo, sha, raw)
        size = await asyncio.to_thread(strip_top_folder, raw, stripped)
        stripped.seek(0)
        await artifacts.put_stream(key, stripped, size, "application/gzip")
    return key


async def presigned_source(artifacts: Artifacts, repo: str, sha: str) -> str:
    """The presigned GET URL of the commit's tarball (uploaded by `ensure_source`), for one Job's init container."""
    return await artifacts.presigned_get(source_key(repo, sha), SOURCE_URL_TTL)


def strip_top_folder(src: BinaryIO, dest: BinaryIO) -> int:
    """Re-pack a GitHub tarball without its top-level folder; returns the bytes written."""
    src.seek(0)
    with tarfile.open(fileobj=src, mode="r:gz") as tin, tarfile.open(fileobj=dest, mode="w:gz") as tout:
        for member in tin:
            if member.type == tarfile.XGLTYPE or member.name.startswith("pax_global_header"):
                continue
            _, _, rest = member.name.partition("/")
            if not rest or rest.startswith("/") or ".." in rest.split("/"):
                continue
            member.name = rest
            tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
    return dest.tell()
