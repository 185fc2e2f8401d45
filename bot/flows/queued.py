"""The Kueue side of the job tracker: a queued Job's check follows Kueue (queued, admitted,
preempted), a Job still waiting is looked at again every `poll_seconds` (Kueue's reason may change),
and a run not fully admitted by its admission timeout is cancelled as a whole. Jobs and RayJobs alike:
each is read again from its own API (a RayJob's submitter is a batch Job of the same name)."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from bot.core import jobs
from bot.core.jobs import kueue
from bot.core.text import duration, timestamp
from bot.flows import kueue as queueing
from bot.flows.lifecycle import cancel
from bot.platform import logs

if TYPE_CHECKING:
    from bot.flows.tracker import Tracker

log = logs.get_logger(__name__)

QUEUE_POLL = 30.0  # seconds between looks at a queued Job's Workload while it waits (Kueue's reason may change)


class QueueFollower:
    def __init__(self, tracker: Tracker, poll_seconds: float = QUEUE_POLL) -> None:
        self.tracker = tracker
        self.poll_seconds = poll_seconds
        self.following: set[str] = set()  # queued Jobs whose check is being moved right now
        self.again: dict[str, dict[str, Any]] = {}  # ... and how they changed meanwhile
        self.polls: dict[str, asyncio.Task[None]] = {}
        self.admission: dict[str, asyncio.Task[None]] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        return [*self.polls.values(), *self.admission.values()]

    def clear(self) -> None:
        self.polls.clear()
        self.admission.clear()

    def follow(self, job: dict[str, Any]) -> None:
        name = jobs.name_of(job)
        self.following.add(name)
        task = asyncio.create_task(self.tracker._in_turn(self._follow_queue(job)), name=f"queue-{name}")
        self.tracker._tasks.add(task)
        task.add_done_callback(self.tracker._tasks.discard)

    async def _follow_queue(self, job: dict[str, Any]) -> None:
        """The queued Job's check moved to what Kueue says; its kind's `admitted` once it runs. A change
        that came meanwhile is looked at next; a Job still waiting is looked at again in `queue_poll`."""
        name, kind = jobs.name_of(job), self.tracker.kinds[jobs.kind_of(job)]
        failed = False
        try:
            if await queueing.follow(self.tracker.deps, job) and kind.admitted is not None:
                await kind.admitted(job, self.tracker.deps)
        except Exception:
            failed = True
            log.exception("following a queued job failed; tried again shortly", extra={"job": name})
        finally:
            self.following.discard(name)
        again = self.again.pop(name, None)
        if again is not None:
            self.tracker.consider(again)
        elif (failed or kueue.suspended(job)) and name not in self.polls and not self.tracker._stop.is_set():
            self.polls[name] = asyncio.create_task(self._poll(name, jobs.api_kind(job)), name=f"poll-{name}")

    async def _poll(self, name: str, api: str) -> None:
        try:
            await asyncio.sleep(self.poll_seconds)
            self.polls.pop(name, None)
            job = await self.tracker.deps.kube.get_job(name, api)
            if job is not None:
                self.tracker.consider(job)
        except Exception:
            log.exception("looking at a queued job failed; it is looked at on its next change", extra={"job": name})
        finally:
            self.polls.pop(name, None)

    def arm_admission_timeout(self, job: dict[str, Any]) -> None:
        name, seconds = jobs.name_of(job), jobs.annotations_of(job).get(kueue.ADMISSION_TIMEOUT, "")
        if not seconds.isdigit() or name in self.admission:
            return
        delay = max(0.0, epoch(job["metadata"].get("creationTimestamp")) + int(seconds) - time.time())
        self.admission[name] = asyncio.create_task(self._cancel_unadmitted(name, jobs.api_kind(job), int(seconds),
                                                                           delay), name=f"admission-{name}")

    async def _cancel_unadmitted(self, name: str, api: str, seconds: int, delay: float) -> None:
        """Not fully admitted by Kueue at its admission timeout: cancelled as a whole, saying what waited,
        so that a half-admitted run does not hold its quota forever."""
        try:
            await asyncio.sleep(delay)
            job = await self.tracker.deps.kube.get_job(name, api)
            if job is None or jobs.REPORTED in jobs.annotations_of(job) or jobs.outcome(job).finished \
                    or name in self.tracker._inflight:
                return
            kind, ann = self.tracker.kinds[jobs.kind_of(job)], jobs.annotations_of(job)
            waited = await kind.waiting(job, self.tracker.deps) if kind.waiting is not None else \
                (f"{api} `{name}` waited" if kueue.suspended(job) else "")
            if not waited:
                return
            why = (f"Not fully admitted by Kueue within its admission timeout of {duration(seconds)}: {waited} in "
                   f"LocalQueue `{kueue.queue_of(job)}`. The run was cancelled as a whole, so that a part of it "
                   "does not hold quota while waiting for the rest. Start it again when the queue has room, or "
                   "raise the admission timeout in `.github/flops.yml`.")
            log.info("queued job not admitted in time; cancelled", extra={"job": name, "timeout": seconds})
            gh = self.tracker.deps.github.for_installation(int(ann[jobs.INSTALLATION]))
            if await cancel(gh, self.tracker.deps, job, why):  # not when another replica got to it first
                self.tracker.deps.metrics.job_finished(jobs.kind_of(job), "cancelled")
        except Exception:
            log.exception("cancelling a job not admitted in time failed", extra={"job": name})
        finally:
            self.admission.pop(name, None)


def epoch(stamp: object) -> float:
    """Seconds since the epoch of an RFC 3339 time the API server wrote (now when there is none)."""
    return timestamp(str(stamp)) if stamp else time.time()
