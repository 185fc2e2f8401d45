"""Merge queue trust: a merge group's code runs only if every pull request in it could run on its own.

A merge group's `head_ref` is `refs/heads/gh-readonly-queue/<base>/pr-<n>-<sha>`: the queue built
it for PR #n at head `<sha>`, on top of every PR queued ahead of it. Those sit between the group's
`base_sha` and `head_sha`: the bot follows the head commit's first parents back to `base_sha`
(`GET /commits/{sha}`) and keeps the queue's refs (`GET /git/matching-refs/heads/gh-readonly-queue/
<base>/`) that point at a commit of that chain. Each PR must pass the `/regression` rule for the
head the queue took (`pulls.may_run`: a same-repository PR may run, a fork's head needs a
maintainer's approval or `/ok-to-test` of that exact sha). A group the bot cannot trace is not run.

Every commit of the chain is attributed to a queued PR (`attribute`): a queue ref's commit is that
PR's (its merge commit, its squashed commit, or the last of its rebased commits); the commits below
it, down to the next older queue ref's commit, must be the PR's own commits or, when the ref's
commit is a rebased copy, copies of its other commits, each matching a distinct commit of the PR
(`GET /pulls/{n}/commits`: same author, author date and message). A commit no current entry
accounts for (a PR taken out of the queue while a stale group built on it is checked, or a commit
pushed to the queue branch) refuses the group. Merge and squash queues read nothing more.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.core.text import escape
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
class Commit:
    """One commit of a group's first-parent chain: what attributing it needs."""
    sha: str
    identity: tuple[str, str, str, str]  # author name, email, date, message: what a rebase keeps
    summary: str


@dataclass(frozen=True)
class Trace:
    """A merge group's entries (oldest in the queue first) and the commits none of them accounts for."""
    entries: list[Entry]
    unaccounted: list[Commit]


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


async def trace(gh: GitHubAPI, repo: str, group: dict[str, Any]) -> Trace | None:
    """The group's pull requests and the commits they do not account for; None when it cannot be traced."""
    base = str(group.get("base_ref", "")).removeprefix("refs/heads/")
    own = entry_of(str(group.get("head_ref", "")), base)
    chain = None if own is None else await first_parents(gh, repo, group["head_sha"], group["base_sha"])
    if own is None or chain is None:
        return None
    shas = [c.sha for c in chain]
    found = {own.number: (0, own)}  # the newest: its ref is the head itself
    async for ref in gh.getiter("/repos/" + repo + "/git/matching-refs/heads/" + quoted_path(f"{QUEUE}{base}/")):
        entry, sha = entry_of(str(ref.get("ref", "")), base), (ref.get("object") or {}).get("sha")
        if entry is not None and sha in shas[1:] and entry.number not in found:
            found[entry.number] = (shas.index(sha), entry)
    by_position = sorted(found.values(), key=lambda pair: pair[0])
    unaccounted = [c for start, entry in by_position
                   for c in await attribute(gh, repo, entry, chain[start:_next(by_position, start, len(chain))])]
    return Trace([entry for _, entry in reversed(by_position)], unaccounted)


def _next(by_position: list[tuple[int, Entry]], start: int, end: int) -> int:
    """Where the segment beginning at `start` ends: the next older queue ref's commit, or the chain's end."""
    return min((position for position, _ in by_position if position > start), default=end)


async def attribute(gh: GitHubAPI, repo: str, entry: Entry, segment: list[Commit]) -> list[Commit]:
    """The commits of `segment` (the entry's queue commit first, then the ones below it, down to the next
    older entry's) that are not `entry`'s. Below its queue commit only the PR's own commits may be, or,
    when the queue commit is a rebased copy of the PR's last commit, rebased copies of its other
    commits: each matching a distinct commit of the PR (a merge or squash commit matches none)."""
    if len(segment) == 1:  # a merge or squash queue, or a one-commit rebase: the ref's commit is the PR's
        return []
    shas, left = set(), Counter[tuple[str, str, str, str]]()
    async for item in gh.getiter("/repos/" + repo + "/pulls/{number}/commits", {"number": str(entry.number)}):
        shas.add(str(item.get("sha", "")))
        left[_identity(item)] += 1
    rebased = _take(left, segment[0].identity)
    unaccounted = []
    for commit in segment[1:]:
        copied = _take(left, commit.identity)  # a PR commit itself uses up its own identity too
        if not (commit.sha in shas or rebased and copied):
            unaccounted.append(commit)
    return unaccounted


def _take(left: Counter[tuple[str, str, str, str]], identity: tuple[str, str, str, str]) -> bool:
    """Use up one commit of the PR with this identity; False when none is left."""
    if left[identity] <= 0:
        return False
    left[identity] -= 1
    return True


def _identity(commit: dict[str, Any]) -> tuple[str, str, str, str]:
    data = commit.get("commit") or {}
    author = data.get("author") or {}
    return (str(author.get("name", "")), str(author.get("email", "")), str(author.get("date", "")),
            str(data.get("message", "")))


async def first_parents(gh: GitHubAPI, repo: str, head: str, base: str) -> list[Commit] | None:
    """Commits from `head` back along first parents, `base` excluded; None when `base` is not reached."""
    chain: list[Commit] = []
    sha = head
    while sha != base:
        if len(chain) >= WALK:
            return None
        try:
            commit = await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha})
        except gidgethub.BadRequest:  # 404 / 422: a commit GitHub does not know (a force-pushed queue)
            return None
        identity = _identity(commit)
        chain.append(Commit(str(commit["sha"]), identity, identity[3].split("\n", 1)[0]))
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
    queued = await trace(gh, repo, group)
    if queued is None:
        return Refusal("Not run: merge group not traced",
                       f"flops-bot could not tell which pull requests merge group `{group['head_sha'][:7]}` "
                       f"contains (its `head_ref` is not `gh-readonly-queue/<base>/pr-<n>-<sha>`, or its head "
                       f"is more than {WALK} first-parent commits from `{group['base_sha'][:7]}`), so it runs "
                       f"none of its code. Re-queue the pull requests in smaller groups.")
    if queued.unaccounted:
        return _stray(group, queued.unaccounted)
    refused = await untrusted(gh, deps, repo, installation_id, queued.entries)
    if not refused:
        return None
    named = ", ".join(f"#{e.number} ({e.sha[:7]})" for e in refused)
    numbers = ", ".join(f"#{e.number}" for e in refused)
    return Refusal(f"Not run: {numbers} {'lacks' if len(refused) == 1 else 'lack'} approval",
                   f"Merge group `{group['head_sha'][:7]}` contains {named}: no maintainer approved that head "
                   f"or commented `/ok-to-test` for it, so none of the group's code runs. Approve the pull "
                   f"request's current head (or comment `/ok-to-test` on it), then queue it again.")


def _stray(group: dict[str, Any], commits: list[Commit]) -> Refusal:
    named = ", ".join(f"`{c.sha[:7]}` ({escape(c.summary, 60)})" for c in commits[:5])
    more = f" and {len(commits) - 5} more" if len(commits) > 5 else ""
    return Refusal("Not run: commits of no queued pull request",
                   f"Merge group `{group['head_sha'][:7]}` contains {named}{more}, which no pull request now in "
                   f"the merge queue accounts for (a pull request removed from the queue after this group was "
                   f"built on it, or a commit pushed to the queue branch), so none of the group's code runs. "
                   f"GitHub rebuilds the group without it; if this check stays, remove the pull request from "
                   f"the queue and queue it again.")


async def gate(gh: GitHubAPI, repo: str, group: dict[str, Any], why: Refusal | None) -> bool:
    """True when the group may run (`why`, its `refusal`, is None); otherwise `flops/regression` on its
    head fails saying why."""
    if why is None:
        return True
    log.info("merge group refused", extra={"repo": repo, "sha": group["head_sha"], "reason": why.title})
    await checks.post_completed(gh, repo, group["head_sha"], checks.REGRESSION, "failure",
                                title=why.title, summary=why.summary)
    return False
