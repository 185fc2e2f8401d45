"""The range of a bisection, read from GitHub: the shas made full, the bad one checked to be on the
default branch, and the first-parent commits in (good, bad] through the compare API."""
from __future__ import annotations

from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

PAGES = 11  # compare pages of 100 commits read for a range (max_commits is at most 1000)


class Refused(Exception):
    """A bisection that cannot start; the message says why and what to do."""


async def on_default_branch(gh: GitHubAPI, repo: str, bad: str, default_branch: str) -> None:
    """Only the default branch's own history is run: never a fork's or an unmerged branch's commit
    (GitHub serves those by sha from this repository too), whatever `/bisect` names."""
    data = await gh.getitem("/repos/" + repo + "/compare/{spec}{?per_page}",
                            url_vars={"spec": f"{bad}...{default_branch}", "per_page": "1"})
    if data.get("status") not in ("identical", "ahead"):
        raise Refused(f"{bad[:7]} is not on `{default_branch}`: a bisection runs only commits of the default branch.")


async def full_sha(gh: GitHubAPI, repo: str, sha: str) -> str:
    try:
        commit = await gh.getitem("/repos/" + repo + "/commits/{ref}", url_vars={"ref": sha})
    except gidgethub.BadRequest as exc:  # 404/422: no such commit
        raise Refused(f"{sha[:12]} is not a commit of {repo}.") from exc
    return str(commit["sha"])


async def first_parents(gh: GitHubAPI, repo: str, good: str, bad: str, limit: int) -> list[str]:
    """The default branch's own commits in (good, bad], oldest first: `bad` back along first parents
    to `good`, through the comparison's commits (paged: GitHub lists 100 a page)."""
    commits: dict[str, dict[str, Any]] = {}
    for page in range(1, PAGES + 1):
        data = await gh.getitem("/repos/" + repo + "/compare/{spec}{?per_page,page}",
                                url_vars={"spec": f"{good}...{bad}", "per_page": "100", "page": str(page)})
        if data.get("status") not in ("ahead",):
            raise Refused(f"{bad[:7]} does not descend from {good[:7]} (GitHub: `{data.get('status')}`): "
                          f"give the older, good commit first.")
        commits.update({str(c["sha"]): c for c in data.get("commits") or ()})
        if int(data.get("total_commits") or 0) > PAGES * 100:
            raise Refused(f"{good[:7]}..{bad[:7]} holds {data['total_commits']} commits, more than a bisection reads "
                          f"({PAGES * 100}): bisect a shorter range.")
        if len(commits) >= int(data.get("total_commits") or 0) or not data.get("commits"):
            break
    line: list[str] = []
    current = commits.get(bad)
    while current is not None and len(line) <= limit:
        line.append(str(current["sha"]))
        parent = str((current.get("parents") or [{}])[0].get("sha", ""))
        if parent == good:
            return list(reversed(line))
        current = commits.get(parent)
    if len(line) > limit:
        raise Refused(f"{good[:7]}..{bad[:7]} holds more than `regression.bisect.max_commits` ({limit}) first-parent "
                      f"commits: bisect a shorter range, or raise `max_commits`.")
    raise Refused(f"{good[:7]} is not on the first-parent line of {bad[:7]} (it was merged in from a branch): "
                  f"give a commit of the default branch itself.")
