"""Merge queue trust: a merge group's code runs only if every pull request in it could run on its own.

A merge group's `head_ref` is `refs/heads/gh-readonly-queue/<base>/pr-<n>-<sha>`: the queue built
it for PR #n at head `<sha>`, on top of every PR queued ahead of it. Those sit between the group's
`base_sha` and `head_sha`: the bot follows the head commit's first parents back to `base_sha`
(`GET /commits/{sha}`) and keeps the queue's refs (`GET /git/matching-refs/heads/gh-readonly-queue/
<base>/`) that point at a commit of that chain. Each PR must pass the `/regression` rule for the
head the queue took (`pulls.may_run`: a same-repository PR may run, a fork's head needs a
maintainer's approval or `/ok-to-test` of that exact sha). A group the bot cannot trace is not run.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.flows import pulls
from bot.flows.config_repo import quoted_path
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)

QUEUE = "gh-readonly-queue/"
ENTRY = re.compile(r"pr-(?P<number>[1-9][0-9]*)-(?P<sha>[0-9a-f]{40})")
WALK = 100  # commits followed back from a group's head: GitHub builds at most 100 pull requests at once


@dataclass(frozen=True)
class Entry:
    """One pull request in a merge group, at the head the queue took."""
    number: int
    sha: str


@dataclass(frozen=True)
class Refusal:
    title: str
    summary: str


def entry_of(ref: str, base: str) -> Entry | None:
    """`refs/heads/gh-readonly-queue/<base>/pr-<n>-<sha>` -> Entry(n, sha); anything else: None."""
    name = ref.removeprefix("refs/").removeprefix("heads/")
    prefix = f"{QUEUE}{base}/"
    found = ENTRY.fullmatch(name[len(prefix):]) if name.startswith(prefix) else None
    return Entry(int(found["number"]), found["sha"]) if found else None


async def entries(gh: GitHubAPI, repo: str, group: dict[str, Any]) -> list[Entry] | None:
    """The group's pull requests, oldest in the queue first; None when the group cannot be traced."""
    base = str(group.get("base_ref", "")).removeprefix("refs/heads/")
    own = entry_of(str(group.get("head_ref", "")), base)
    chain = None if own is None else await first_parents(gh, repo, group["head_sha"], group["base_sha"])
    if own is None or chain is None:
        return None
    found = {own.number: (-1, own)}  # the newest: its ref is the head itself
    async for ref in gh.getiter("/repos/" + repo + "/git/matching-refs/heads/" + quoted_path(f"{QUEUE}{base}/")):
        entry, sha = entry_of(str(ref.get("ref", "")), base), (ref.get("object") or {}).get("sha")
        if entry is not None and sha in chain and entry.number not in found:
            found[entry.number] = (chain.index(sha), entry)
    return [entry for _, entry in sorted(found.values(), key=lambda pair: -pair[0])]


async def first_parents(gh: GitHubAPI, repo: str, head: str, base: str) -> list[str] | None:
    """Commits from `head` back along first parents, `base` excluded; None when `base` is not reached."""
    chain: list[str] = []
    sha = head
    while sha != base:
        if len(chain) >= WALK:
            return None
        try:
            commit = await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha})
        except gidgethub.BadRequest:  # 404 / 422: a commit GitHub does not know (a force-pushed queue)
            return None
        chain.append(str(commit["sha"]))
        parents = commit.get("parents") or []
        if not parents:
            return None
        sha = str(parents[0]["sha"])
    return chain


async def untrusted(gh: GitHubAPI, deps: Deps, repo: str, installation_id: int,
                    group: list[Entry]) -> list[Entry]:
    """The entries that may not run under the `/regression` rule (a PR the bot cannot read included)."""
    refused = []
    for entry in group:
        try:
            pr = await pulls.fetch(gh, repo, entry.number, installation_id)
        except gidgethub.BadRequest:
            refused.append(entry)
            continue
        if not await pulls.may_run(deps, dataclasses.replace(pr, head_sha=entry.sha)):
            refused.append(entry)
    return refused


async def refusal(gh: GitHubAPI, deps: Deps, repo: str, installation_id: int,
                  group: dict[str, Any]) -> Refusal | None:
    """Why the merge group's code must not run; None when every pull request in it may."""
    queued = await entries(gh, repo, group)
    if queued is None:
        return Refusal("Not run: merge group not traced",
                       f"flops-bot could not tell which pull requests merge group `{group['head_sha'][:7]}` "
                       f"contains (its `head_ref` is not `gh-readonly-queue/<base>/pr-<n>-<sha>`, or its head "
                       f"is more than {WALK} first-parent commits from `{group['base_sha'][:7]}`), so it runs "
                       f"none of its code. Re-queue the pull requests in smaller groups.")
    refused = await untrusted(gh, deps, repo, installation_id, queued)
    if not refused:
        return None
    named = ", ".join(f"#{e.number} ({e.sha[:7]})" for e in refused)
    numbers = ", ".join(f"#{e.number}" for e in refused)
    return Refusal(f"Not run: {numbers} {'lacks' if len(refused) == 1 else 'lack'} approval",
                   f"Merge group `{group['head_sha'][:7]}` contains {named}: no maintainer approved that head "
                   f"or commented `/ok-to-test` for it, so none of the group's code runs. Approve the pull "
                   f"request's current head (or comment `/ok-to-test` on it), then queue it again.")


async def gate(gh: GitHubAPI, repo: str, group: dict[str, Any], why: Refusal | None) -> bool:
    """True when the group may run (`why`, its `refusal`, is None); otherwise `flops/regression` on its
    head fails saying why."""
    if why is None:
        return True
    log.info("merge group refused", extra={"repo": repo, "sha": group["head_sha"], "reason": why.title})
    await checks.post_completed(gh, repo, group["head_sha"], checks.REGRESSION, "failure",
                                title=why.title, summary=why.summary)
    return False
