"""Deliveries asked for again after a crash, announced to every replica.

A delivery a dead process took may be half done (its check run created, its Job not). Asked for
again, it must look before it creates (`bot.platform.github.LOOK_FIRST`) wherever it lands: GitHub
sends it to the Service, so to any replica, a restarted container of the dead one included. So the
leader's pass writes the GUIDs it is about to ask for to `redeliver/retaking.json` in the state
bucket *before* asking, and every replica reads that object before it processes a delivery it
accepted after its last read (one read covers every delivery accepted before it started), so a
retaken delivery always finds itself listed. Entries are kept for `KEEP` seconds, `LIMIT` of them.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from bot.platform import logs
from bot.platform.artifacts import Artifacts

log = logs.get_logger(__name__)

KEY = "redeliver/retaking.json"
KEEP = 3600.0  # seconds a GUID stays announced (its redelivery arrives within seconds)
LIMIT = 2000
READ_LIMIT = 1024 * 1024
READ_TIMEOUT = 5.0  # seconds a delivery waits for the announced GUIDs at most (then it looks first)
BACKOFF = 10.0  # seconds after a failed read during which deliveries look first without reading


async def announce(artifacts: Artifacts, guids: Iterable[str]) -> None:
    """Add `guids` to the announced ones (before they are asked for)."""
    now = time.time()
    found = await artifacts.get_json(KEY, max_bytes=READ_LIMIT)
    kept = {str(g): float(t) for g, t in (found.items() if isinstance(found, dict) else ()) if now - float(t) < KEEP}
    kept.update((guid, now) for guid in guids)
    await artifacts.put_json(KEY, dict(sorted(kept.items(), key=lambda item: item[1])[-LIMIT:]))


class Notices:
    """This replica's view of the announced GUIDs, read again for any delivery accepted since the last read.

    The read is bounded (`READ_TIMEOUT`); one that failed is not tried again for `BACKOFF` seconds, the
    deliveries processed meanwhile looking first: a slow or unreachable S3 costs each worker at most one
    bounded wait, instead of queueing every delivery behind S3's own timeouts (minutes)."""

    def __init__(self, artifacts: Artifacts, *, backoff: float = BACKOFF) -> None:
        self.artifacts = artifacts
        self.backoff = backoff
        self._known: set[str] = set()
        self._read_at = 0.0
        self._failed_until = 0.0  # monotonic: no read before this after a failed one
        self._reading: asyncio.Task[Any] | None = None  # the last read, which may outlive its wait (a thread)
        self._lock = asyncio.Lock()

    async def retaken(self, guid: str, accepted_at: float) -> bool:
        """Was `guid` (accepted at `accepted_at`, wall clock) asked for again after a crash? True when
        the state bucket cannot be read: looking before creating is always safe."""
        if self._read_at <= accepted_at:
            if time.monotonic() < self._failed_until:
                return True
            async with self._lock:
                if self._read_at <= accepted_at and not await self._read():
                    return True
        return guid in self._known

    async def _read(self) -> bool:
        started = time.time()
        if time.monotonic() < self._failed_until:  # failed while this one waited for the lock
            return False
        if self._reading is not None and not self._reading.done():  # a read given up on still holds its thread:
            return self._failed()  # no second one (S3 stuck for minutes must not take every worker thread)
        self._reading = reading = asyncio.ensure_future(self.artifacts.get_json(KEY, max_bytes=READ_LIMIT))
        reading.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved, if given up on
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                found = await asyncio.shield(reading)
        except Exception as exc:  # S3 slow, unreachable or the object unreadable: the caller looks first
            return self._failed(exc)
        self._known = set(map(str, found)) if isinstance(found, dict) else set()
        self._read_at = started
        return True

    def _failed(self, exc: BaseException | None = None) -> bool:
        self._failed_until = time.monotonic() + self.backoff
        log.warning("retaken deliveries not read; looking before creating",
                    extra={"error": repr(exc)[:300] if exc else "the last read is still waiting", "retry_in": self.backoff})
        return False
