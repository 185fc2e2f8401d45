"""Sticky PR comments: found by a hidden marker and edited in place, never reposted."""
from __future__ import annotations

from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core.text import clip
from bot.platform.github import create_once


async def upsert(gh: GitHubAPI, repo: str, number: int, marker: str, body: str, *, author: str) -> None:
    """Edit the comment carrying `marker` that `author` (this App's bot login) wrote, or post it once.
    Another App's or a person's copy of the marker is never edited. A post answered with a 5xx (or
    not at all) looks for the marker again before it is retried, so it never leaves two comments."""
    existing = await find(gh, repo, number, marker, author=author)
    if existing is not None:
        await gh.patch("/repos/" + repo + "/issues/comments/{id}", url_vars={"id": str(existing["id"])},
                       data={"body": clip(body)})
        return
    await post_once(gh, repo, number, marker, clip(body), author=author)


async def post_once(gh: GitHubAPI, repo: str, number: int, marker: str, body: str, *, author: str) -> dict[str, Any]:
    """Post `body` (which carries `marker`) on issue/PR `number`: after a 5xx or no answer the comment
    is looked for by its marker before the post is tried again, so at most one results."""
    async def posted() -> dict[str, Any] | None:
        return await find(gh, repo, number, marker, author=author)

    return await create_once(gh, "/repos/" + repo + "/issues/{number}/comments", {"body": body}, find=posted,
                             url_vars={"number": str(number)})


async def find(gh: GitHubAPI, repo: str, number: int, marker: str, *, author: str) -> dict[str, Any] | None:
    """The comment on issue/PR `number` carrying `marker` that `author` wrote, if any."""
    async for comment in gh.getiter("/repos/" + repo + "/issues/{number}/comments{?per_page}",
                                    url_vars={"number": str(number), "per_page": "100"}):
        if marker in (comment.get("body") or "") and (comment.get("user") or {}).get("login") == author:
            return dict(comment)
    return None
