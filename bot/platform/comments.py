"""Sticky PR comments: found by a hidden marker and edited in place, never reposted."""
from __future__ import annotations

from gidgethub.abc import GitHubAPI

from bot.core.text import clip


async def upsert(gh: GitHubAPI, repo: str, number: int, marker: str, body: str, *, author: str) -> None:
    """Edit the comment carrying `marker` that `author` (this App's bot login) wrote, or post it once.
    Another App's or a person's copy of the marker is never edited."""
    async for comment in gh.getiter("/repos/" + repo + "/issues/{number}/comments{?per_page}",
                                    url_vars={"number": str(number), "per_page": "100"}):
        if marker in (comment.get("body") or "") and (comment.get("user") or {}).get("login") == author:
            await gh.patch("/repos/" + repo + "/issues/comments/{id}", url_vars={"id": str(comment["id"])},
                           data={"body": clip(body)})
            return
    await gh.post("/repos/" + repo + "/issues/{number}/comments", url_vars={"number": str(number)},
                  data={"body": clip(body)})
