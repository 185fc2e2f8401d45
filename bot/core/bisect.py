"""The k-ary search for the first bad commit: which candidates to run next. No I/O.

Candidates are indexed oldest first, 0..n-1; the good commit sits at -1 and the bad one is n-1.
Known results map an index to True (worse than the good commit) or False. The range still open is
(low, high]: `high` the first index known bad, `low` the last known good before it. Each round runs
up to k evenly spaced unknown candidates inside it, so it shrinks to about 1/(k+1) of its size per
round: log_(k+1) n rounds instead of git bisect's log_2 n. A candidate whose run failed is skipped
(as `git bisect skip`): never probed again; when only skipped ones are left, the culprit is one of
them or `high`.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    probes: tuple[int, ...]  # to run this round; () when the search is over
    low: int  # last known good index (-1: the good commit itself)
    high: int  # first known bad index
    skipped: tuple[int, ...] = ()  # skipped candidates inside (low, high): the culprit may be one of them

    @property
    def done(self) -> bool:
        return not self.probes

    @property
    def culprit(self) -> int | None:
        """The first bad index, once the search is over and nothing skipped clouds it."""
        return self.high if self.done and not self.skipped else None


def bounds(n: int, known: Mapping[int, bool]) -> tuple[int, int]:
    """(low, high) of the open range; the bad commit (n-1) is bad whether measured or not."""
    high = min([i for i, bad in known.items() if bad and 0 <= i < n] + [n - 1])
    low = max([i for i, bad in known.items() if not bad and -1 <= i < high] + [-1])
    return low, high


def step(n: int, known: Mapping[int, bool], k: int, skipped: Collection[int] = ()) -> Step:
    """The next round: up to `k` candidates spaced evenly over the unknown ones inside the range."""
    if n < 1 or k < 1:
        raise ValueError("a search needs at least one candidate and one run per round")
    low, high = bounds(n, known)
    inside = [i for i in range(low + 1, high) if i not in known and i not in skipped]
    left = tuple(i for i in range(low + 1, high) if i in skipped)
    if len(inside) <= k:
        return Step(tuple(inside), low, high, left)
    m = len(inside)
    picks = sorted({inside[(j * (m + 1)) // (k + 1) - 1] for j in range(1, k + 1)})
    return Step(tuple(picks), low, high, left)



@dataclass(frozen=True)
class Bisection:
    """A bisection's state, kept in the bot's bucket (`bisect/<repo>/<id>.json`) so a restart resumes it.
    Results are not kept here: they are the baselines of the candidates, read again at every step."""

    id: str  # `<good sha7>-<bad sha7>`: the `flops.dev/bisect` label of its runs
    repo: str
    installation: int
    default_branch: str
    good: str
    bad: str
    metric: dict[str, Any]  # the gated metric, as `regression.metrics_annotation` writes one
    candidates: tuple[str, ...]  # first-parent commits in (good, bad], oldest first
    parallel: int
    check_run: int
    trigger: str  # "auto" or "/bisect by @<user>"
    reply_to: tuple[int, int] | None = None  # (issue or PR number, comment id) of a `/bisect`
    history: tuple[float, ...] = ()  # the metric's baselines before `good` (for `tolerance: auto`)
    rounds: tuple[tuple[str, ...], ...] = ()
    status: str = "running"  # running | done | cancelled
    failed: tuple[str, ...] = ()  # candidates whose run was reported failed (kept: its Job is marked only later)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reply_to"] = list(self.reply_to) if self.reply_to else None
        return data

    @classmethod
    def from_json(cls, data: object) -> Bisection:
        if not isinstance(data, dict):
            raise ValueError("a bisection record is a JSON object")
        reply = data.get("reply_to")
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}  # a later version's extra keys
        return cls(**{**data, "installation": int(data["installation"]), "check_run": int(data["check_run"]),
                      "candidates": tuple(str(c) for c in data["candidates"]), "parallel": int(data["parallel"]),
                      "reply_to": (int(reply[0]), int(reply[1])) if reply else None,
                      "history": tuple(float(v) for v in data.get("history") or ()),
                      "rounds": tuple(tuple(str(s) for s in r) for r in data.get("rounds") or ()),
                      "failed": tuple(str(s) for s in data.get("failed") or ())})

    @property
    def runs(self) -> int:
        return sum(len(r) for r in self.rounds)
