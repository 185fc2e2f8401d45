"""Recovery of missed deliveries: GitHub never retries a failed webhook delivery by itself.

On start and every FLOPS_REDELIVER_INTERVAL, `one_pass` lists the App's deliveries
(`GET /app/hook/deliveries`, App JWT, newest first, cursor pagination) back to the newest one an
earlier pass examined (remembered in the state bucket; on first start at most `FIRST_LOOKBACK`
back, never past GitHub's `WINDOW`). GitHub lists every attempt as its own entry with the same
`guid`: a GUID none of whose attempts answered 2xx (0 is no answer at all), of an event the
router handles, is redelivered (`POST /app/hook/deliveries/{id}/attempts`), oldest first, at
most FLOPS_REDELIVER_MAX per pass and `ATTEMPTS` times in all. A GUID this process already
took (the dispatcher's dedupe) is never redelivered. A rate limit (403/429) ends the pass; the
cursor then stays before what was left, so the next pass takes it.

After a crash (this process's predecessor's, or a dead replica's record: bot/service/replicas.py)
deliveries answered 2xx that nobody recorded as processed are asked for again too.

`run()` is the loop the app lifecycle starts; `one_pass()` is one look (tests, a leader gate).
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gidgethub
from gidgethub import sansio

from bot.core.text import timestamp
from bot.flows.deps import Deps
from bot.platform import logs
from bot.platform.github import rate_limit_wait
from bot.platform.retry import Sleep
from bot.service import replicas, retakes
from bot.service.dispatch import Dispatcher

log = logs.get_logger(__name__)

STATE_KEY = "redeliver/cursor.json"
FIRST_LOOKBACK = 3600.0  # first start: deliveries of the last hour only
WINDOW = 3 * 24 * 3600.0  # GitHub keeps deliveries (and redelivers them) for 3 days
ATTEMPTS = 3  # redeliveries requested per GUID at most: a delivery the bot refuses for good stops here
REMEMBERED = 2000  # GUIDs whose redelivery count the state keeps


@dataclass
class Pass:
    """What one pass did: outcome -> count, and how long GitHub asked to wait (rate limit)."""

    outcomes: dict[str, int] = field(default_factory=dict)
    examined: int = 0
    retry_after: float = 0.0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@dataclass
class _Guid:
    """One delivery's attempts as the listing shows them (newest first)."""

    guid: str
    attempts: list[dict[str, Any]]

    @property
    def oldest(self) -> int:
        return min(int(a["id"]) for a in self.attempts)

    @property
    def newest(self) -> dict[str, Any]:
        return max(self.attempts, key=lambda a: int(a["id"]))

    @property
    def succeeded(self) -> bool:
        return any(200 <= int(a.get("status_code") or 0) < 300 for a in self.attempts)


class Redeliverer:
    def __init__(self, deps: Deps, dispatcher: Dispatcher, *, clock: Callable[[], float] = time.time,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.deps = deps
        self.dispatcher = dispatcher
        self.interval = deps.settings.redeliver_interval
        self.max_per_pass = deps.settings.redeliver_max
        self._clock = clock
        self._sleep = sleep  # injected: tests record the waits instead of waiting
        self._first = True  # the first pass of this process looks for what a crashed one took with it
        self._unfinished_before: set[str] = set()
        self._retaking: dict[str, int] = {}  # GUID -> oldest attempt id, asked for again after a crash

    async def run(self) -> None:
        """One pass now, then one every interval (longer when GitHub asked to wait); never raises."""
        while True:
            wait = float(self.interval)
            try:
                done = await self.one_pass()
                wait = max(wait, done.retry_after)
            except Exception:  # GitHub or S3 unreachable: the next pass tries again
                log.warning("redelivery pass failed", exc_info=True)
            await self._sleep(wait)

    async def one_pass(self) -> Pass:
        state = await self.deps.artifacts.get_json(STATE_KEY) or {}
        now = self._clock()
        last_id = state.get("last_id")
        crashed = self._first and "settled_id" in state and not state.get("clean")
        self._first = False
        floor = max(float(state.get("since") or now - FIRST_LOOKBACK), now - WINDOW)
        others = await replicas.census(self.deps)
        since = state["settled_id"] if crashed else last_id
        back_to = None if others.back_to is None else max(others.back_to, now - WINDOW)
        try:
            listed = await self._list(since, floor, back_to)
        except gidgethub.HTTPException as exc:
            wait = rate_limit_wait(int(exc.status_code), exc.headers, now)
            if wait is None:
                raise
            log.warning("redelivery listing rate limited", extra={"wait": wait})
            return Pass(retry_after=wait)
        entries = [e for e in listed if _newer(e, since, floor)]
        done = Pass(examined=len(entries))
        requested: dict[str, int] = dict(state.get("requested") or {})
        taken = list(dict.fromkeys([*(state.get("taken") or []), *others.processed(),
                                    *self.dispatcher.finished(REMEMBERED)]))
        failed = self._failed(entries, taken_too=set(state.get("taken") or []) | others.recorded if crashed else None,
                              horizon=others.horizon)
        lost, deferred = self._lost(listed, others, set(taken))
        todo = _merged(failed, lost)
        if again := [item.guid for item in todo if item.succeeded and not self.dispatcher.seen(item.guid)]:
            await retakes.announce(self.deps.artifacts, again)  # before asking: wherever it lands, it looks first
        stopped_at = await self._redeliver(todo, requested, done)
        newest = max((int(e["id"]) for e in entries), default=last_id)
        cursor = newest if stopped_at is None else stopped_at - 1
        if last_id is not None and cursor is not None:
            cursor = max(cursor, int(last_id))
        await self.deps.artifacts.put_json(STATE_KEY, {
            "last_id": cursor, "since": floor if cursor is None else now - WINDOW,
            "settled_id": self._settled(entries, cursor, None if crashed else state.get("settled_id")),
            "clean": False, "requested": dict(list(requested.items())[-REMEMBERED:]), "taken": taken[-REMEMBERED:]})
        await replicas.forget(self.deps, others.clean + (others.dead if not deferred and stopped_at is None else []))
        if done.outcomes:
            log.info("redelivery pass", extra={"examined": done.examined, "after_crash": crashed or bool(lost),
                                               **done.outcomes})
        return done

    def _lost(self, listed: list[dict[str, Any]], others: replicas.Census, known: set[str]) -> tuple[list[_Guid], bool]:
        """Deliveries answered 2xx that a dead replica may have taken with it (`Census.retake`), oldest
        first; and whether some were too recent to tell (then the dead replicas' records stay)."""
        for guid in [g for g in self._retaking if g in others.recorded]:
            del self._retaking[guid]  # asked for again, and taken by another replica since: its record has it
        lost, deferred = [], False
        for item in _by_guid(listed).values():
            if not item.succeeded or item.guid in known or item.guid in self._retaking \
                    or self.dispatcher.seen(item.guid) or not self._subscribed(item.newest):
                continue
            times = [_timestamp(a.get("delivered_at")) for a in item.attempts]
            verdict = others.retake(item.guid, min(times), max(times))
            deferred = deferred or verdict is None
            if verdict:
                lost.append(item)
        return lost, deferred

    def _settled(self, entries: list[dict[str, Any]], cursor: int | None, previous: Any) -> int | None:
        """The delivery id up to which everything this process accepted was processed: a process
        that dies takes the deliveries it answered 202 after it with it, and the next process's
        first pass asks for them again (its flows are idempotent: at least once, in effect once)."""
        unfinished = set(self.dispatcher.unfinished())
        oldest: dict[str, int] = {}
        for entry in entries:
            guid = str(entry.get("guid"))
            if guid in unfinished:
                oldest[guid] = min(oldest.get(guid, int(entry["id"])), int(entry["id"]))
        carried = (unfinished & self._unfinished_before) - set(oldest)  # accepted before the last listing
        self._unfinished_before = unfinished
        for guid in [g for g in self._retaking if self.dispatcher.seen(g) and g not in unfinished]:
            del self._retaking[guid]  # asked for again after a crash, and processed here since
        held = [*oldest.values(), *self._retaking.values()]  # a retaken one may meet this process dead too
        if carried and previous is not None:
            held.append(int(previous) + 1)
        return min(held) - 1 if held else cursor

    async def stopped(self) -> None:
        """A clean stop (everything accepted was processed): the next start redelivers nothing taken."""
        if self.dispatcher.unfinished():
            return
        try:
            state = await self.deps.artifacts.get_json(STATE_KEY) or {}
            await self.deps.artifacts.put_json(STATE_KEY, {**state, "clean": True})
        except Exception:  # S3 unreachable: the next start redelivers what was taken since the last pass
            log.warning("redelivery state not saved at stop", exc_info=True)

    async def _list(self, last_id: int | None, floor: float, back_to: float | None = None) -> list[dict[str, Any]]:
        """The deliveries newer than `last_id` and than `floor` (and, if given, all since `back_to`), newest first."""
        found: list[dict[str, Any]] = []
        async for entry in self.deps.github.as_app().getiter("/app/hook/deliveries?per_page=100"):
            if not _newer(entry, last_id, floor) and (back_to is None or _timestamp(entry.get("delivered_at")) < back_to):
                break
            found.append(entry)
        return found

    def _failed(self, entries: Iterable[dict[str, Any]], *, taken_too: set[str] | None = None,
                horizon: float = math.inf) -> list[_Guid]:
        """GUIDs of subscribed events none of whose attempts succeeded, oldest first. After a crash
        (`taken_too`: what earlier processes processed to the end) also those answered 2xx but maybe
        never processed, unless attempted after `horizon` (a live replica may have taken it and not
        recorded it yet: if the dead process took it, its own replica record has it retaken)."""
        def retaken(g: _Guid) -> bool:
            return taken_too is not None and g.guid not in taken_too and _last_at(g) < horizon

        failed = [g for g in _by_guid(entries).values() if (not g.succeeded or retaken(g)) and self._subscribed(g.newest)]
        return sorted(failed, key=lambda g: g.oldest)

    def _subscribed(self, entry: dict[str, Any]) -> bool:
        action = entry.get("action")
        event = sansio.Event({"action": action} if action else {}, event=str(entry.get("event")),
                             delivery_id=str(entry.get("guid")))
        try:
            return self.dispatcher.handles(event)
        except Exception:  # an action routing cannot compare: not one of ours
            return False

    async def _redeliver(self, failed: list[_Guid], requested: dict[str, int], done: Pass) -> int | None:
        """Ask for each redelivery in turn. Returns the oldest attempt id the cursor must stay
        before: of the first GUID left for the next pass (cap or rate limit) or of a GUID whose
        request GitHub refused (asked again next pass, `ATTEMPTS` times in all); None: all done."""
        gh = self.deps.github.as_app()
        asked = 0
        held: list[int] = []
        for index, item in enumerate(failed):
            if self.dispatcher.seen(item.guid) or (requested.get(item.guid, 0) >= ATTEMPTS and not item.succeeded):
                self._count(done, "skipped")
                continue
            if asked >= self.max_per_pass:
                return min(held + [self._defer(failed[index:], done)])
            entry = item.newest
            if item.succeeded:  # taken (202) by a process that died: it may have done part of it (marked before
                self.dispatcher.retake(item.guid)  # asking: the redelivery may land before GitHub answers)
            requested[item.guid] = requested.pop(item.guid, 0) + 1
            try:
                await gh.post("/app/hook/deliveries/{id}/attempts", url_vars={"id": str(entry["id"])}, data={})
            except gidgethub.HTTPException as exc:
                wait = rate_limit_wait(int(exc.status_code), exc.headers, self._clock())
                if wait is not None:
                    requested[item.guid] -= 1  # not GitHub's verdict on this delivery: it does not count
                    log.warning("redelivery rate limited; the next pass goes on", extra={"wait": wait})
                    done.retry_after = wait
                    return min(held + [self._defer(failed[index:], done)])
                log.warning("redelivery request failed", extra=_fields(entry, status=int(exc.status_code)))
                self._count(done, "failed")
                held.append(item.oldest)
                continue
            asked += 1
            if item.succeeded:  # on its way: not asked for again meanwhile (a refused request is, next pass)
                self._retaking[item.guid] = item.oldest
            log.info("redelivery requested", extra=_fields(entry, attempt=requested[item.guid]))
            self._count(done, "requested")
        return min(held, default=None)

    def _count(self, done: Pass, outcome: str) -> None:
        done.count(outcome)
        self.deps.metrics.redelivery(outcome)

    def _defer(self, left: list[_Guid], done: Pass) -> int:
        for _ in left:
            self._count(done, "deferred")
        return min(item.oldest for item in left)


def _newer(entry: dict[str, Any], last_id: Any, floor: float) -> bool:
    """Newer than the cursor (`last_id`, when there is one) and than `floor`."""
    return (last_id is None or int(entry["id"]) > int(last_id)) and _timestamp(entry.get("delivered_at")) >= floor


def _last_at(item: _Guid) -> float:
    """When the delivery was last attempted (GitHub's clock)."""
    return max(_timestamp(a.get("delivered_at")) for a in item.attempts)


def _by_guid(entries: Iterable[dict[str, Any]]) -> dict[str, _Guid]:
    by_guid: dict[str, _Guid] = {}
    for entry in entries:
        guid = str(entry.get("guid") or entry["id"])
        by_guid.setdefault(guid, _Guid(guid, [])).attempts.append(entry)
    return by_guid


def _merged(failed: list[_Guid], lost: list[_Guid]) -> list[_Guid]:
    """Both lists as one, each GUID once, oldest first."""
    return sorted({item.guid: item for item in [*lost, *failed]}.values(), key=lambda g: g.oldest)


def _fields(entry: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A redelivery's log fields: the delivery, never a credential."""
    return {"delivery": entry.get("id"), "guid": entry.get("guid"), "event": entry.get("event"),
            "action": entry.get("action"), "status_code": entry.get("status_code"), **more}


def _timestamp(text: Any) -> float:
    if not isinstance(text, str) or not text:
        return 0.0
    return timestamp(text)
