"""Every replica's record of the deliveries it took, so that the leader's redelivery pass covers any
replica's crash, not only its own.

A replica answers 202 before it processes; killed in between (SIGKILL, OOM, a lost node), it takes
those deliveries with it and GitHub counts them delivered. So every replica writes
`redeliver/replicas/<identity>.json` in the state bucket (within FLOPS_LEASE_RETRY of a change in what
it took, else every FLOPS_LEASE_RENEW, which is shorter than FLOPS_LEASE_DURATION): its pod, when it wrote
(`written_at`), the time before which everything it accepted was processed (`settled_at`), the
deliveries it accepted and has not processed (`unfinished`) and the last ones it processed
(`finished`). A clean stop that drained its queue marks its last record `clean`.

A record is *dead* when it has not been written for FLOPS_LEASE_DURATION by the wall clocks and then
does not change while the leader watches it for another FLOPS_LEASE_DURATION on its own clock (so a
live replica whose clock is behind, or whose write was slow, is never judged dead; skew only delays a
dead one's recovery), or at once when it names this pod (POD_NAME, when set) with another identity
(this pod's previous container). The leader's pass (bot/service/redeliver.py) then asks GitHub again for the
dead replica's `unfinished` deliveries and for every delivery answered 2xx between its `settled_at`
and its last record that no replica recorded (see `Census.retake`), then deletes the record, keeping
its `finished` in the loop's `taken` (so does it with a clean one, at once).
"""
from __future__ import annotations

import asyncio
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

from bot.flows.deps import Deps
from bot.platform import logs
from bot.service.dispatch import Dispatcher

log = logs.get_logger(__name__)

PREFIX = "redeliver/replicas/"
REMEMBERED = 2000  # processed GUIDs a record lists
RECORD_LIMIT = 1024 * 1024  # bytes of a record read (2,000 GUIDs are about 80 kB)
LOOKBACK = 30.0  # seconds before a dead replica's `settled_at` that are looked at too (GitHub's clock vs ours)
SETTLED_LIMIT = 3600.0  # a dead replica's deliveries are looked for at most this long before its last record
HORIZON = 5.0  # a delivery this recent, by a live replica's last record, may be that replica's, unrecorded yet


@dataclass(frozen=True)
class Record:
    identity: str
    pod: str
    written_at: float
    settled_at: float
    unfinished: frozenset[str]
    finished: tuple[str, ...]
    clean: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(str(data["identity"]), str(data.get("pod") or ""), float(data["written_at"]),
                   float(data["settled_at"]), frozenset(map(str, data.get("unfinished") or ())),
                   tuple(map(str, data.get("finished") or ())), data.get("clean") is True)


class Heartbeat:
    """This replica's record, kept fresh while it runs; marked `clean` at a clean stop."""

    def __init__(self, deps: Deps, dispatcher: Dispatcher) -> None:
        self.deps = deps
        self.dispatcher = dispatcher
        self.key = PREFIX + deps.identity + ".json"
        self._written: tuple[Any, ...] = ()
        self._written_at = 0.0

    async def run(self) -> None:
        """Write when what it took changed (looked at every FLOPS_LEASE_RETRY), else every FLOPS_LEASE_RENEW."""
        lease = self.deps.settings.lease
        while True:
            now = time.monotonic()
            if self._snapshot() != self._written or now - self._written_at >= lease.renew:
                try:
                    await self.write()
                except Exception:  # S3 unreachable: the next write tries again (the record may look dead meanwhile)
                    log.warning("replica record not written", exc_info=True)
            await asyncio.sleep(lease.retry)

    def _snapshot(self) -> tuple[Any, ...]:
        finished = self.dispatcher.finished(1)
        return tuple(self.dispatcher.unfinished()), tuple(finished)

    async def write(self, *, clean: bool = False) -> None:
        now, settled, snapshot = time.time(), self.dispatcher.settled_at(), self._snapshot()
        await self.deps.artifacts.put_json(self.key, {
            "identity": self.deps.identity, "pod": self.deps.settings.lease.pod_name, "written_at": now,
            "settled_at": min(settled, now), "unfinished": self.dispatcher.unfinished(),
            "finished": self.dispatcher.finished(REMEMBERED), "clean": clean})
        self._written, self._written_at = snapshot, time.monotonic()

    async def stopped(self) -> None:
        """A stop: `clean` when nothing accepted is left unprocessed (nothing to ask for again, and what it
        processed stays known); otherwise the leader retakes what is left once this record is dead."""
        try:
            await self.write(clean=not self.dispatcher.unfinished())
        except Exception:  # S3 unreachable: the record goes dead and its deliveries are looked at again
            log.warning("replica record not updated at stop", exc_info=True)


@dataclass
class Census:
    """The other replicas' records as the leader's pass reads them."""

    dead: list[Record]
    live: list[Record]
    clean: list[Record] = field(default_factory=list)

    @property
    def back_to(self) -> float | None:
        """How far back the listing must reach for the dead replicas (None: no dead replica): to the
        oldest settled point, at most SETTLED_LIMIT before its record."""
        if not self.dead:
            return None
        return min(max(r.settled_at, r.written_at - SETTLED_LIMIT) for r in self.dead) - LOOKBACK

    @property
    def horizon(self) -> float:
        """Deliveries before this are in every live replica's record if it took them."""
        return min((r.written_at for r in self.live), default=math.inf) - HORIZON

    def processed(self) -> list[str]:
        """GUIDs the dead and cleanly stopped replicas processed: the loop's `taken` keeps them."""
        return [guid for r in (*self.dead, *self.clean) for guid in r.finished]

    @functools.cached_property
    def recorded(self) -> frozenset[str]:
        """GUIDs some replica accepted (and is processing) or processed."""
        return frozenset((*self.processed(), *(guid for r in self.live for guid in (*r.finished, *r.unfinished))))

    def retake(self, guid: str, first_at: float, last_at: float) -> bool | None:
        """Should a 2xx delivery (first attempted at `first_at`, last at `last_at`) be asked for again?
        True: a dead replica may have lost it (accepted between its settled point and its last record,
        give or take the clocks); None: too recent to tell (a live replica may hold it unrecorded: the
        next pass decides); False: no."""
        if not self.dead or guid in self.recorded:
            return False
        lost = any(guid in r.unfinished or max(r.settled_at, r.written_at - SETTLED_LIMIT) - LOOKBACK <= first_at
                   <= r.written_at + LOOKBACK for r in self.dead)
        if lost and last_at >= self.horizon:
            return None
        return lost


async def census(deps: Deps) -> Census:
    """Read every other replica's record; which are dead. One that looks dead by the wall clocks is read
    again FLOPS_LEASE_DURATION later and is dead only if it did not change meanwhile: a live replica whose
    clock is behind (or whose last write was slow) is not misjudged dead, whatever the skew."""
    lease = deps.settings.lease
    found = await _records(deps, await deps.artifacts.list_keys(PREFIX))
    same_pod = {key for key, r in found.items() if lease.pod_unique and r.pod == lease.pod_name}
    now = time.time()
    suspects = {key: r for key, r in found.items()
                if not r.clean and key not in same_pod and now - r.written_at > lease.duration}
    if suspects:
        await asyncio.sleep(lease.duration)
        again = await _records(deps, list(suspects))
        for key, old in list(suspects.items()):
            if again.get(key) != old:  # written since (alive), or deleted meanwhile (nothing to retake)
                del suspects[key]
                if key in again:
                    found[key] = again[key]
                else:
                    del found[key]
    census = Census([], [], [])
    for key, record in found.items():
        bucket = census.clean if record.clean else census.dead if key in same_pod or key in suspects else census.live
        bucket.append(record)
    return census


async def _records(deps: Deps, keys: list[str]) -> dict[str, Record]:
    """The records under `keys` but this replica's own (an unreadable one is logged and left out)."""
    found: dict[str, Record] = {}
    for key in keys:
        try:
            data = await deps.artifacts.get_json(key, max_bytes=RECORD_LIMIT)
            if data is None:
                continue
            record = Record.from_json(data if isinstance(data, dict) else {})
        except (KeyError, TypeError, ValueError):
            log.warning("replica record unreadable; ignored", extra={"key": key})
            continue
        if record.identity != deps.identity:
            found[key] = record
    return found


async def forget(deps: Deps, records: list[Record]) -> None:
    """The dead replicas' deliveries were asked for again (or a clean stop left none): their records go."""
    for record in records:
        await deps.artifacts.delete(PREFIX + record.identity + ".json")
        if not record.clean:
            log.info("dead replica's deliveries asked for again", extra={"holder": record.identity,
                                                                         "unfinished": len(record.unfinished)})
