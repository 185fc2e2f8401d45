"""Background dispatch: a bounded queue, bounded workers, one delivery at a time per pull request
or branch (`event_key`), dedupe by delivery id, drain on shutdown."""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Any

from gidgethub import routing, sansio

from bot.flows.deps import Deps
from bot.platform import logs
from bot.platform.github import LOOK_FIRST
from bot.platform.logs import delivery_id
from bot.service.retakes import Notices

log = logs.get_logger(__name__)

SEEN_DELIVERIES = 10_000


def event_key(event: sansio.Event) -> str:
    """Deliveries with the same key are processed in order, never concurrently."""
    data = event.data
    repo = (data.get("repository") or {}).get("full_name", "")
    number = (data.get("pull_request") or data.get("issue") or {}).get("number")
    if number is None and event.event == "check_run":
        prs = data.get("check_run", {}).get("pull_requests") or []
        number = prs[0]["number"] if prs else None
    if number is not None:
        return f"{repo}#{number}"
    return f"{repo}@{data.get('ref') or (data.get('merge_group') or {}).get('head_ref') or _check_branch(data)}"


def _check_branch(data: dict[str, Any]) -> str:
    """A check run's branch as a push names it, so a Re-run waits for a push in flight there."""
    branch = ((data.get("check_run") or {}).get("check_suite") or {}).get("head_branch")
    return f"refs/heads/{branch}" if branch else ""


class Dispatcher:
    """Bounded queue, bounded concurrency, per-key ordering, dedupe by delivery id, drain.

    Deliveries with the same `event_key` run one after another, in arrival order, on the worker
    that took the first of them; a worker never waits on a busy key, so one busy pull request
    cannot starve the others. A delivery whose processing failed is forgotten, so GitHub's
    "Redeliver" button retries it.
    """

    def __init__(self, router: routing.Router, deps: Deps, *, workers: int, queue_size: int) -> None:
        self.router = router
        self.deps = deps
        self._queue: asyncio.Queue[sansio.Event] = asyncio.Queue()
        self._limit = queue_size
        self._pending = 0  # accepted and not yet processed: queued plus waiting behind a busy key
        self._workers_n = workers
        self._workers: list[asyncio.Task[None]] = []
        self._backlogs: dict[str, deque[sansio.Event]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._unfinished: dict[str, float] = {}  # accepted, not yet processed: delivery id -> when (redelivery state)
        self._retaken: set[str] = set()  # asked for again after a crash: may be half processed already
        self.notices: Notices | None = None  # the retaken deliveries the leader announced (redelivery on)
        self._accepted: dict[int, float] = {}  # id(event) -> when submit() took it (flops_delivery_latency_seconds)
        self._done = asyncio.Event()
        self._done.set()
        self.accepting = True
        deps.metrics.count_queue_depth(lambda: self._pending)

    def handles(self, event: sansio.Event) -> bool:
        """Whether a handler is registered for the event; raises on a payload routing cannot read
        (e.g. an `action` that is a list): the caller logs, counts and refuses it."""
        return bool(self.router.fetch(event))

    def seen(self, delivery: str) -> bool:
        return delivery in self._seen

    def submit(self, event: sansio.Event) -> bool:
        """Queue an event; False when full (GitHub shows the failure; redeliver later)."""
        if self._pending >= self._limit:
            return False
        self._queue.put_nowait(event)
        self._accepted[id(event)] = time.monotonic()
        self._pending += 1
        self._done.clear()
        if event.delivery_id:
            self._seen[event.delivery_id] = None
            self._unfinished[event.delivery_id] = time.time()
            while len(self._seen) > SEEN_DELIVERIES:
                self._seen.popitem(last=False)
        return True

    def unfinished(self) -> list[str]:
        """Delivery ids accepted (answered 202) whose processing has not ended: lost if the process dies now."""
        return list(self._unfinished)

    def settled_at(self) -> float:
        """The wall-clock time before which every delivery this process accepted was processed."""
        return min(self._unfinished.values(), default=time.time())

    def finished(self, limit: int) -> list[str]:
        """The newest `limit` delivery ids this process took and processed to the end (oldest first)."""
        return [d for d in list(self._seen)[-limit:] if d not in self._unfinished]

    def retake(self, delivery: str) -> None:
        """`delivery` is asked for again after a crash: when it comes, its creates look first."""
        self._retaken.add(delivery)

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"dispatch-{i}") for i in range(self._workers_n)]

    async def idle(self) -> None:
        """Return once every accepted delivery has been processed."""
        await self._done.wait()

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, finish what is queued and running (up to `timeout`), stop workers."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
            drained = True
        except TimeoutError:
            log.warning("drain timed out", extra={"left": self._pending})
            drained = False
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        return drained

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                key = event_key(event)
            except Exception:  # a signed payload of unexpected shape: run it alone, never kill the worker
                log.warning("delivery has no ordering key", exc_info=True,
                            extra={"event": event.event, "delivery_id": event.delivery_id})
                self.deps.metrics.delivery_error(event.event, "ordering")
                key = f"?{event.delivery_id or id(event)}"
            if key in self._backlogs:
                self._backlogs[key].append(event)  # the worker on this key takes it next, in order
                continue
            backlog = self._backlogs[key] = deque([event])
            try:
                while backlog:
                    try:
                        await self.process(backlog[0])
                    finally:
                        backlog.popleft()
                        self._finished()
            finally:
                del self._backlogs[key]

    def _finished(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._done.set()

    async def _retaken_here(self, event: sansio.Event) -> bool:
        """Asked for again after a crash (by this process's redelivery loop, or announced by the leader's
        to every replica): it may be half done, so its creates look first."""
        guid = event.delivery_id
        if not guid:
            return False
        if guid in self._retaken:
            return True
        return self.notices is not None and await self.notices.retaken(guid, self._unfinished.get(guid, time.time()))

    async def process(self, event: sansio.Event) -> None:
        look = LOOK_FIRST.set(await self._retaken_here(event))
        token = delivery_id.set(event.delivery_id)
        started = time.monotonic()
        accepted = self._accepted.pop(id(event), started)
        try:
            installation = (event.data.get("installation") or {}).get("id")
            gh = self.deps.github.for_installation(int(installation)) if installation else self.deps.github.as_app()
            await self.router.dispatch(event, gh, deps=self.deps)
            outcome = "processed"
        except Exception:
            log.exception("event processing failed", extra={"event": event.event, "action": _action(event)})
            self.deps.metrics.delivery_error(event.event, "processing")
            outcome = "failed"
            self._seen.pop(event.delivery_id, None)  # a redelivery of a failed event runs again
        finally:
            delivery_id.reset(token)
            LOOK_FIRST.reset(look)
            self._unfinished.pop(event.delivery_id or "", None)
            self._retaken.discard(event.delivery_id or "")
        self.deps.metrics.delivery(event.event, outcome)
        self.deps.metrics.processed(event.event, time.monotonic() - started)
        self.deps.metrics.delivered(event.event, time.monotonic() - accepted)


def _action(event: sansio.Event) -> str:
    """The payload's `action` for a log line: short, whatever its type."""
    return repr(event.data.get("action"))[:100]
