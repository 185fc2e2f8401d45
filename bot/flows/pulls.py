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
    return f"trust/{pr.repo}/pr-{pr.number}/{pr.head_sha}.json"


async def grant(deps: Deps, pr: PullRef, by: str, how: str, review: int | None = None) -> None:
    """A maintainer vouched for this exact head sha (approval or /ok-to-test). Each voucher is kept,
    so dismissing one approval leaves the others standing."""
    record = await deps.artifacts.get_json(trust_key(pr))
    vouchers = _vouchers(record)
    voucher = {"by": by, "how": how, "review": review, "at": time.time()}
    if not any(v.get("by") == by and v.get("how") == how and v.get("review") == review for v in vouchers):
        vouchers.append(voucher)
    await deps.artifacts.put_json(trust_key(pr), {**vouchers[0], "sha": pr.head_sha, "vouchers": vouchers})


async def revoke(deps: Deps, pr: PullRef, by: str, review: int) -> bool | None:
    """Withdraw the grant of approval `review` by `by` for `pr.head_sha`. None: that approval granted
    nothing; True: another voucher still trusts the sha; False: nothing trusts it any more."""
    record = await deps.artifacts.get_json(trust_key(pr))
    vouchers = _vouchers(record)
    kept = [v for v in vouchers if not (v.get("how") == "approval" and v.get("by") == by
                                        and v.get("review") in (review, None))]
    if len(kept) == len(vouchers):
        return None
    if kept:
        await deps.artifacts.put_json(trust_key(pr), {**kept[0], "sha": pr.head_sha, "vouchers": kept})
        return True
    await deps.artifacts.delete(trust_key(pr))
    return False


def _vouchers(record: object) -> list[dict[str, Any]]:
    """The grant's vouchers; a grant written before vouchers were kept is its own single voucher."""
    if not isinstance(record, dict):
        return []
    listed = record.get("vouchers")
    if isinstance(listed, list):
        return [v for v in listed if isinstance(v, dict)]
    return [{k: record.get(k) for k in ("by", "how", "at")}]


async def may_run(deps: Deps, pr: PullRef) -> bool:
    """Same-repo PRs: yes. Fork PRs: only with a grant for the current head sha."""
    return not pr.fork or await deps.artifacts.exists(trust_key(pr))


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
