"""Pull requests as the bot sees them, and the trust rules for running their code.

Fork code runs only after a maintainer's approval review or `/ok-to-test`, for that exact head
sha (a later push needs a new one). The grant is recorded in S3 next to the runs, so it survives
restarts; permissions are asked of GitHub (collaborator permission API), cached briefly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core.text import MAX_BODY, clip
from bot.flows.deps import Deps
from bot.platform import comments
from bot.platform.github import WRITE


@dataclass(frozen=True)
class PullRef:
    repo: str
    number: int
    head_sha: str
    head_ref: str
    base_ref: str
    base_sha: str
    fork: bool
    author: str
    installation_id: int
    state: str = "open"

    @classmethod
    def from_api(cls, pr: dict[str, Any], installation_id: int) -> PullRef:
        head_repo = (pr["head"].get("repo") or {}).get("full_name")
        base_repo = pr["base"]["repo"]["full_name"]
        return cls(repo=base_repo, number=int(pr["number"]), head_sha=pr["head"]["sha"], head_ref=pr["head"]["ref"],
                   base_ref=pr["base"]["ref"], base_sha=pr["base"]["sha"], fork=head_repo != base_repo,
                   author=(pr.get("user") or {}).get("login", ""), installation_id=installation_id,
                   state=pr.get("state", "open"))


async def fetch(gh: GitHubAPI, repo: str, number: int, installation_id: int) -> PullRef:
    data = await gh.getitem("/repos/" + repo + "/pulls/{number}", url_vars={"number": str(number)})
    return PullRef.from_api(data, installation_id)


async def with_head(gh: GitHubAPI, repo: str, sha: str, installation_id: int,
                    numbers: list[int] | tuple[int, ...] = ()) -> PullRef | None:
    """The open pull request whose head is `sha`: from the given numbers (a check run's
    `pull_requests`, same-repository PRs only), else from the open PRs (forks included)."""
    for number in numbers:
        pr = await fetch(gh, repo, number, installation_id)
        if pr.head_sha == sha and pr.state == "open":
            return pr
    async for data in gh.getiter("/repos/" + repo + "/pulls{?state,per_page}",
                                 url_vars={"state": "open", "per_page": "100"}):
        if data["head"]["sha"] == sha:
            return PullRef.from_api(data, installation_id)
    return None


def trust_key(pr: PullRef) -> str:
    """A grant as one object listing its vouchers, as the bot wrote it before each voucher had a key
    of its own (`voucher_key`): still honoured, split into voucher objects when one is revoked."""
    return f"trust/{pr.repo}/pr-{pr.number}/{pr.head_sha}.json"


def voucher_key(pr: PullRef, by: str, how: str, review: int | None) -> str:
    """One maintainer's vouching for `pr.head_sha`: each is its own object, so concurrent grants and
    revocations never rewrite each other's (no read-modify-write of a shared list)."""
    return f"trust/{pr.repo}/pr-{pr.number}/{pr.head_sha}/{how.lstrip('/')}-{by}-{review or 0}.json"


def _grant_prefix(pr: PullRef) -> str:
    """Both the legacy `<sha>.json` and the vouchers under `<sha>/` (a sha is 40 hex digits: no other
    sha shares the prefix)."""
    return f"trust/{pr.repo}/pr-{pr.number}/{pr.head_sha}"


async def grant(deps: Deps, pr: PullRef, by: str, how: str, review: int | None = None) -> None:
    """A maintainer vouched for this exact head sha (approval or /ok-to-test). Each voucher is kept
    apart, so dismissing one approval leaves the others standing; the same voucher twice is one."""
    await deps.artifacts.put_json(voucher_key(pr, by, how, review),
                                  {"by": by, "how": how, "review": review, "at": time.time(), "sha": pr.head_sha})


async def revoke(deps: Deps, pr: PullRef, by: str, review: int) -> bool | None:
    """Withdraw the grant of approval `review` by `by` for `pr.head_sha`. None: that approval granted
    nothing; True: another voucher still trusts the sha; False: nothing trusts it any more."""
    await _split_legacy(deps, pr)
    found = False
    for key in (voucher_key(pr, by, "approval", review), voucher_key(pr, by, "approval", None)):
        if await deps.artifacts.exists(key):
            await deps.artifacts.delete(key)
            found = True
    if not found:
        return None
    return bool(await deps.artifacts.list_keys(_grant_prefix(pr), 1))


async def _split_legacy(deps: Deps, pr: PullRef) -> None:
    """A grant written as one object becomes one object per voucher (once; grants made meanwhile are
    objects of their own, so nothing is lost)."""
    record = await deps.artifacts.get_json(trust_key(pr))
    if record is None:
        return
    for voucher in _vouchers(record):
        review = voucher.get("review")
        await deps.artifacts.put_json(voucher_key(pr, str(voucher.get("by")), str(voucher.get("how")),
                                                  review if isinstance(review, int) else None),
                                      {**voucher, "sha": pr.head_sha})
    await deps.artifacts.delete(trust_key(pr))


def _vouchers(record: object) -> list[dict[str, Any]]:
    """A legacy grant's vouchers; one written before vouchers were kept is its own single voucher."""
    if not isinstance(record, dict):
        return []
    listed = record.get("vouchers")
    if isinstance(listed, list):
        return [v for v in listed if isinstance(v, dict)]
    return [{k: record.get(k) for k in ("by", "how", "at")}]


async def may_run(deps: Deps, pr: PullRef) -> bool:
    """Same-repo PRs: yes. Fork PRs: only with a grant for the current head sha."""
    return not pr.fork or bool(await deps.artifacts.list_keys(_grant_prefix(pr), 1))


def fork_notice(pr: PullRef) -> str:
    return (f"this pull request comes from a fork, so flops-bot runs nothing for it until a maintainer "
            f"approves it or comments `/ok-to-test` for the current head ({pr.head_sha[:7]}); "
            f"a later push needs a new approval.")


def is_bot(user: dict[str, Any]) -> bool:
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


def may_command(permission: str) -> bool:
    """Commands are for people with write access (the API's permission, never author_association)."""
    return permission in WRITE


async def reply(gh: GitHubAPI, deps: Deps, repo: str, number: int, body: str, *, to: int) -> None:
    """The bot's answer to comment `to` on PR/issue `number`. It ends with `<!-- flops:reply:<to> -->`,
    so a post answered with a 5xx after GitHub applied it is found, not posted a second time."""
    marker = f"\n\n<!-- flops:reply:{to} -->"
    await comments.post_once(gh, repo, number, marker.strip(), clip(body, MAX_BODY - len(marker)) + marker,
                             author=await deps.github.bot_login())
