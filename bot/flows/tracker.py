"""The job tracker: one watch per API over the bot's Jobs and RayJobs; every finished one reported exactly once.

Kubernetes is the source of truth. At start (and after every watch window or `410 Gone`) the
tracker lists the bot's Jobs, so a Job that finished while the bot was down is reported when it
comes back. A Job is marked `flops.dev/reported` only after GitHub accepted its report; a Job
carrying that annotation is never reported again. RayJobs (KubeRay, `regression.ray`) are listed and
watched the same way, in a second watch; where KubeRay is not installed there is nothing to watch.

A Job annotated `flops.dev/timeout` (seconds) is stopped once it has run that long: reported as
`DeadlineExceeded` while its Pod and log exist, then deleted; a restarted bot re-arms the timer.

A Job queued in Kueue (`kueue.x-k8s.io/queue-name`) is followed while it is not finished: its check
moves between `queued` and `in_progress` as Kueue admits, preempts and readmits it (`bot.flows.queued`,
looked at again every `queue_poll` seconds while it waits, so Kueue's reason shows). Its timeout
counts from its admission (Kubernetes resets the start time on resumption, KubeRay a RayJob's when it
starts its new Ray cluster); a suspended Job is never timed out. A Job annotated
`flops.dev/admission-timeout` that is not fully admitted by then (its kind's `waiting` says what waits)
is cancelled as a whole.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any

import kubernetes.watch
from kubernetes.client import ApiException

from bot.core import jobs
from bot.core.jobs import kueue
from bot.flows import logbook
from bot.flows.deps import Deps
from bot.flows.lifecycle import CLAIM_ATTEMPTS, Kind
from bot.flows.queued import QUEUE_POLL, QueueFollower, epoch
from bot.platform import checks, logs
from bot.platform.retry import RECONNECT, RetryPolicy

log = logs.get_logger(__name__)

WATCH_SECONDS = 300
LIST_PAGE = 500  # Jobs per page when listing
STATES = ("queued", "running")
APIS = (jobs.JOB, jobs.RAYJOB)  # each listed and watched
REPORTS_AT_ONCE = 16  # a burst of finished Jobs waits its turn here instead of holding thousands of reports open

class Tracker:
    def __init__(self, deps: Deps, kinds: Iterable[Kind], *, watch_seconds: int = WATCH_SECONDS,
                 reconnect: RetryPolicy = RECONNECT, queue_poll: float = QUEUE_POLL,
                 identity: str = "flops-bot") -> None:
        self.deps = deps
        self.identity = identity  # who claims a report (flops.dev/reporting): the Lease holder's identity
        self.reconnect = reconnect
        self.kinds = {kind.name: kind for kind in kinds}
        self.reporters = {kind.name: kind.report for kind in self.kinds.values()}
        self.queued = QueueFollower(self, queue_poll)
        self.watch_seconds = watch_seconds
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._rechecks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(REPORTS_AT_ONCE)
        self._listed = asyncio.Event()  # the first listing is over (done or failed): reports may start
        self._stop = threading.Event()
        self.synced = asyncio.Event()  # set after the first full list: restart recovery is done
        self._active: dict[str, tuple[str, str]] = {}  # unfinished Job -> (kind, queued|running)
        self._counts: Counter[tuple[str, str]] = Counter()
        # Counted in flops_jobs_active: what is reported, and the federated clients (reported with their server).
        self.counted = {*self.reporters, jobs.FEDERATED_CLIENT}
        for kind in self.counted:  # every series exists from the start, at 0
            for state in STATES:
                deps.metrics.set_active_jobs(kind, state, 0)

    async def run(self) -> None:
        """List, report what is finished, watch from there; forever (until cancelled). A failed
        cycle is tried again after the reconnect policy's backoff (growing while failures last)."""
        failures = 0
        self._stop.clear()  # run again after a stop: this replica holds the Lease again
        while not self._stop.is_set():
            try:
                version = await self.resync()
                failures = 0
                await self.watch(version)
            except asyncio.CancelledError:
                await self._stand_down()
                raise
            except Exception:
                failures += 1
                log.exception("tracker cycle failed; retrying", extra={"failures": failures})
                await self.reconnect.pause(failures)

    async def _stand_down(self) -> None:
        """Cancelled (shutdown, or the Lease lost): timers stop, reports in flight finish under their claim;
        the new holder's tracker re-lists and takes over the rest."""
        self._stop.set()
        pending = [*self._timers.values(), *self.queued.tasks(), *self._rechecks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._timers.clear()
        self.queued.clear()
        for name in list(self._active):  # flops_jobs_active counts the holder's view only
            self._track(name, None)

    async def resync(self) -> dict[str, str]:
        """List every bot Job and RayJob, a page at a time (thousands of whole Jobs at once cost a lot of
        memory); the resourceVersion to watch each API from ("" for RayJobs where KubeRay is not installed)."""
        versions: dict[str, str] = {}
        seen: set[str] = set()
        try:
            for kind in APIS:
                versions[kind] = await self._list_all(kind, seen)
            for gone in set(self._active) - seen:  # deleted while no watch was open
                self._track(gone, None)
        finally:
            self._listed.set()
        self.synced.set()
        for name, then in ((k.name, k.resynced) for k in self.kinds.values() if k.resynced is not None):
            self._spawn(f"resynced-{name}", self._resynced(name, then(self.deps)))
        return versions

    async def _resynced(self, kind: str, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            log.exception("a kind's look after the listing failed; the next listing tries again", extra={"kind": kind})
        self._inflight.discard(f"resynced-{kind}")

    async def _list_all(self, kind: str, seen: set[str]) -> str:
        version, page = "", None
        while True:
            listing = await self.deps.kube.list_jobs_page(jobs.SELECTOR, LIST_PAGE, page, kind=kind)  # plain JSON
            for job in listing.get("items") or []:
                seen.add(jobs.name_of(job))
                self.consider(job)
            version = version or str(listing["metadata"]["resourceVersion"])  # every page is of this version
            page = listing["metadata"].get("continue")
            if not page:
                return version

    async def watch(self, versions: dict[str, str]) -> None:
        """Watch each API listed (a version) until one watch ends: its window is over, a 410, a dropped
        connection; the caller lists everything again."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        stoppers = {kind: kubernetes.watch.Watch() for kind, version in versions.items() if version}
        for kind, stopper in stoppers.items():
            threading.Thread(target=self._stream, args=(stopper, kind, versions[kind], loop, events), daemon=True,
                             name=f"flops-watch-{kind.lower()}").start()
        try:
            while (event := await events.get()) is not None:
                if event.get("type") == "ERROR":
                    log.info("watch expired; re-listing", extra={"status": event.get("object")})
                    return
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self.consider(event["object"])
                elif event.get("type") == "DELETED":
                    self.deleted(event["object"])
        finally:
            for stopper in stoppers.values():
                stopper.stop()

    def _stream(self, stopper: kubernetes.watch.Watch, kind: str, version: str, loop: asyncio.AbstractEventLoop,
                events: asyncio.Queue[dict[str, Any] | None]) -> None:
        method, args = self.deps.kube.watch_method(kind)
        try:
            for event in stopper.stream(method, *args, label_selector=jobs.SELECTOR, resource_version=version,
                                        timeout_seconds=self.watch_seconds, allow_watch_bookmarks=True,
                                        deserialize=False):
                if isinstance(event.get("object"), dict):
                    event["object"].setdefault("kind", kind)
                loop.call_soon_threadsafe(events.put_nowait, event)
        except ApiException as exc:
            if exc.status != 410:
                log.warning("watch failed", extra={"status": exc.status, "reason": exc.reason})
            loop.call_soon_threadsafe(events.put_nowait, {"type": "ERROR", "object": {"code": exc.status}})
        except Exception as exc:  # connection dropped: re-list and watch again
            log.warning("watch interrupted", extra={"error": repr(exc)})
        finally:
            try:
                loop.call_soon_threadsafe(events.put_nowait, None)
            except RuntimeError:
                pass  # loop closed: the bot is shutting down

    def consider(self, job: dict[str, Any]) -> None:
        """Report `job` if it is finished, not yet reported, and not being reported right now."""
        name = jobs.name_of(job)
        kind = jobs.kind_of(job)
        if kind not in self.counted:
            return
        if name in self.queued.following:  # its queued check is being moved: looked at again right after
            self.queued.again[name] = job
            return
        result = jobs.outcome(job)
        reported = jobs.REPORTED in jobs.annotations_of(job)
        self._track(name, None if result.finished or reported else (kind, jobs.run_state(job)))
        if kind not in self.reporters or name in self._inflight or reported:
            return
        if not result.finished:
            if kueue.queue_of(job) is not None:
                self.queued.follow(job)
                self.queued.arm_admission_timeout(job)
            if kueue.suspended(job) and name in self._timers:
                self._timers.pop(name).cancel()  # preempted: the timeout counts from the next admission
            elif not kueue.suspended(job):
                self._arm_timeout(job)
            return
        if name in self._timers:
            self._timers.pop(name).cancel()
        self._start_report(job, result)

    def deleted(self, job: dict[str, Any]) -> None:
        """A Job deleted before it was reported (`kubectl delete`, a TTL): its check must not hang."""
        name = jobs.name_of(job)
        self._track(name, None)
        self.queued.again.pop(name, None)  # a queued Job's change seen while following it: moot now
        if name in self._timers:
            self._timers.pop(name).cancel()
        if jobs.kind_of(job) in self.reporters and name not in self._inflight \
                and jobs.REPORTED not in jobs.annotations_of(job):
            self._spawn(name, self._report_deleted(job))

    def _track(self, name: str, entry: tuple[str, str] | None) -> None:
        """Keep flops_jobs_active{kind,state} in step: `entry` is the Job's (kind, state), None once it
        is finished, reported or deleted."""
        old = self._active.get(name)
        if old == entry:
            return
        if entry is None:
            del self._active[name]
        else:
            self._active[name] = entry
        for key, change in ((old, -1), (entry, 1)):
            if key is not None:
                self._counts[key] += change
                self.deps.metrics.set_active_jobs(*key, self._counts[key])

    def _start_report(self, job: dict[str, Any], result: jobs.Outcome, *, stop: bool = False) -> None:
        self._spawn(jobs.name_of(job), self._report(jobs.report_identity(job), result, stop=stop))

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._inflight.add(name)
        task = asyncio.create_task(self._in_turn(work), name=f"report-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_turn(self, work: Coroutine[Any, Any, None]) -> None:
        await self._listed.wait()  # at start the listing's pages go first: restart recovery waits on them
        async with self._slots:
            await work

    def _arm_timeout(self, job: dict[str, Any]) -> None:
        name, seconds, api = jobs.name_of(job), jobs.annotations_of(job).get(jobs.TIMEOUT, ""), jobs.api_kind(job)
        if not seconds.isdigit() or name in self._timers:
            return
        started = kueue.started_at(job)
        if started is None and kueue.queue_of(job) is not None:
            return  # just admitted: armed when the Job controller (KubeRay) sets the start time, counted from admission
        delay = max(0.0, epoch(started or job["metadata"].get("creationTimestamp")) + int(seconds) - time.time())
        self._timers[name] = asyncio.create_task(self._stop_when_due(name, api, int(seconds), delay),
                                                 name=f"timeout-{name}")

    async def _stop_when_due(self, name: str, api: str, seconds: int, delay: float) -> None:
        """The Job outlived its timeout: report it timed out (its log is still there), then delete it."""
        try:
            await asyncio.sleep(delay)
            job = await self.deps.kube.get_job(name, api)
            if job is None or jobs.REPORTED in jobs.annotations_of(job) or jobs.outcome(job).finished \
                    or name in self._inflight or kueue.suspended(job):
                return
            log.info("job timed out; stopping it", extra={"job": name, "timeout": seconds})
            self._start_report(job, jobs.Outcome(True, False, "DeadlineExceeded",
                                                 f"stopped by flops-bot after its timeout of {seconds}s"), stop=True)
        except Exception:
            log.exception("stopping a timed-out job failed; retried on the next re-list", extra={"job": name})
        finally:
            self._timers.pop(name, None)

    async def _report(self, job: dict[str, Any], result: jobs.Outcome, *, stop: bool = False) -> None:
        name, kind, api = jobs.name_of(job), jobs.kind_of(job), jobs.api_kind(job)
        try:
            current = await self.deps.kube.get_job(name, api)  # an earlier run may have reported it
            if current is None:
                await self._close_check_of_deleted(job)
                return
            current = await self._claim(current)
            if current is None:
                return
            conclusion = await self.reporters[kind](current, result, self.deps)
            await self._keep(current, conclusion)
            await self.deps.kube.annotate_job(name, {jobs.REPORTED: conclusion, jobs.REPORTING: None},
                                              labels=jobs.REPORTED_LABEL, kind=api)
            if stop:
                await self.deps.kube.delete_job(name, api)
            self.deps.metrics.job_finished(kind, conclusion)
            if (seconds := jobs.run_seconds(current)) is not None:
                self.deps.metrics.run_finished(kind, seconds)
            log.info("job reported", extra={"job": name, "kind": kind, "conclusion": conclusion,
                                            "repo": jobs.annotations_of(current).get(jobs.REPO)})
        except Exception:
            log.exception("reporting a job failed; it will be retried on the next re-list", extra={"job": name})
        finally:
            self._inflight.discard(name)

    async def _keep(self, job: dict[str, Any], conclusion: str) -> None:
        """The run's record and logs into the bucket (its page outlives its Pods); never holds the report."""
        run_id = ((job.get("metadata") or {}).get("labels") or {}).get(jobs.RUN) or jobs.name_of(job)
        try:
            await logbook.keep(self.deps, run_id, conclusion)
        except Exception as exc:
            log.warning("keeping the run's logs failed; its page shows less once its Pods are gone",
                        extra={"run": run_id, "error": repr(exc)})

    async def _claim(self, job: dict[str, Any] | None) -> dict[str, Any] | None:
        """Claim the report of `job` by an update carrying the resourceVersion it was read at: of two
        replicas only one gets through (the other gets a 409). The Job as claimed, or None when it is
        reported, gone, or claimed by another replica within the lease duration."""
        for _ in range(CLAIM_ATTEMPTS):
            if job is None or jobs.REPORTED in jobs.annotations_of(job):
                return None
            name, duration, api = jobs.name_of(job), self.deps.settings.lease.duration, jobs.api_kind(job)
            holder = jobs.reporting_holder(job, time.time(), duration)
            if holder is not None and holder != self.identity:
                log.info("job claimed by another replica", extra={"job": name, "holder": holder})
                since = int(jobs.annotations_of(job)[jobs.REPORTING].partition(" ")[2])
                self._recheck(name, api, since + duration - time.time())
                return None
            stamp = f"{self.identity} {int(time.time())}"
            claimed = await self.deps.kube.claim_job(name, str(job["metadata"]["resourceVersion"]),
                                                     {jobs.REPORTING: stamp}, kind=api)
            if claimed is not None:
                return claimed
            job = await self.deps.kube.get_job(name, api)  # changed since read (a status update, a claim): look again
        return None

    def _recheck(self, name: str, api: str, delay: float) -> None:
        """Look at the Job again once another replica's claim is stale (that replica may have died)."""
        async def later() -> None:
            await asyncio.sleep(max(0.0, delay) + 1)
            try:
                if (job := await self.deps.kube.get_job(name, api)) is not None:
                    self.consider(job)
            except Exception as exc:
                log.warning("looking at a claimed job again failed; the next re-list does",
                            extra={"job": name, "error": repr(exc)})

        task = asyncio.create_task(later(), name=f"recheck-{name}")
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)

    async def _report_deleted(self, job: dict[str, Any]) -> None:
        try:
            await self._close_check_of_deleted(job)
        except Exception:
            log.exception("closing the check of a deleted job failed", extra={"job": jobs.name_of(job)})
        finally:
            self._inflight.discard(jobs.name_of(job))

    async def _close_check_of_deleted(self, job: dict[str, Any]) -> None:
        """Nothing is left to read: the check becomes `cancelled`, saying what happened."""
        name, kind, ann = jobs.name_of(job), jobs.kind_of(job), jobs.annotations_of(job)
        if not ann.get(jobs.CHECK_RUN):
            return
        gh = self.deps.github.for_installation(int(ann[jobs.INSTALLATION]))
        await checks.complete(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], "cancelled", title="Job deleted",
                              summary=f"The {kind} Job `{name}` was deleted from namespace "
                                      f"`{self.deps.kube.namespace}` before flops-bot could report it, so there "
                                      "is no result. Run it again: the Re-run button, `/retest`, or a new push.")
        self.deps.metrics.job_finished(kind, "deleted")
        log.info("job deleted before it was reported", extra={"job": name, "kind": kind, "repo": ann.get(jobs.REPO)})
        if (gone := self.kinds[kind].gone if kind in self.kinds else None) is not None:
            await gone(job, self.deps)

    async def idle(self) -> None:
        """Wait until no report is in flight (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()
