"""One start at a time across replicas: the claim on (repo, PR, kind, sha) taken before a start.

Two replicas processing two triggers of one commit's run at the same moment (two `/regression`
comments, a `synchronize` on each, `/build` twice) would both find nothing running and both start
it. So a run is started under a claim: the `coordination.k8s.io/v1` Lease `flops-start-<hash>`
in the Jobs' namespace, one per (repo, PR or branch, kind, sha), created before the check run and
the Job and deleted once the Job exists. Creating it is the lock (the API server answers 409 to the
second); the loser waits until it is gone, then finds the winner's Job running and starts nothing.

The Lease is held the way `flops-bot-leader` is (bot/platform/leader.py): renewed every
FLOPS_LEASE_RENEW by an update carrying its resourceVersion, taken over (an update at the
resourceVersion read, so two waiters cannot both win) once its record has not changed for its
`leaseDurationSeconds` on the waiter's own clock. At once when its renewTime is an hour old (a
leftover of a holder long dead), or when its holder was this pod's previous container (same
`flops.dev/pod` as POD_NAME, another identity: that process is dead; not with a host name for
POD_NAME, which two live processes may share).

An API-server error (a 5xx, a timeout) while taking or renewing the claim is tried again every
FLOPS_LEASE_RETRY (`ERRORS` in a row at most while taking): a blip must neither fail the start nor
leave the claim unrenewed for another replica to take over. A create, takeover or renewal that landed
though its answer was lost is recognised as this start's by its holder and `acquireTime`.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bot.core import jobs
from bot.core.text import timestamp
from bot.flows.deps import Deps
from bot.platform import logs
from bot.platform.leader import Observed, micro_time

log = logs.get_logger(__name__)

PREFIX = "flops-start-"
POD = jobs.A + "pod"  # the holder's pod: a restarted container knows its predecessor's claims are dead
WAIT_LIMIT = 600.0  # seconds a start waits for a live holder before it fails (processing failed)
ERRORS = 5  # API errors in a row before a start gives up (processing failed)
ANCIENT = 3600.0  # seconds unrenewed after which a claim is a leftover, whatever the clocks: taken over at once


class ClaimTimeout(Exception):
    """A live replica held the claim for longer than WAIT_LIMIT: the processing fails (logged; GitHub's
    *Redeliver* runs it again)."""


@dataclass(frozen=True)
class Start:
    """What may start once at a time: a kind of run (`regression`, `test:<name>`, `build:<image>`) of
    one commit of one pull request (`scope`: `pr-<n>`)."""

    repo: str
    scope: str
    kind: str
    sha: str

    @property
    def name(self) -> str:
        key = "\0".join((self.repo, self.scope, self.kind, self.sha))
        return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def of_source(deps: Deps, src: jobs.Source, kind: str) -> contextlib.AbstractAsyncContextManager[None]:
    """The claim on `kind` of a PR head (`src.pr`) or a branch's commit (`src.ref`); nothing to claim for a
    merge group's (its Job names are deterministic and one event starts them)."""
    scope = f"pr-{src.pr}" if src.pr is not None else src.ref
    if not scope:
        return contextlib.nullcontext()
    return claimed(deps, Start(src.repo, scope, kind, src.sha))


@contextlib.asynccontextmanager
async def claimed(deps: Deps, start: Start) -> AsyncIterator[None]:
    """Hold the claim on `start` for the block (waiting while another replica holds it)."""
    holder = _Holder(deps, start)
    await holder.take()
    renewing = asyncio.create_task(holder.keep(), name=f"claim-{start.name}")
    try:
        yield
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await asyncio.shield(holder.release())


class _Holder:
    def __init__(self, deps: Deps, start: Start) -> None:
        self.deps, self.start = deps, start
        self.namespace = deps.settings.namespace  # next to the Jobs it guards
        self.lease: dict[str, Any] | None = None
        self._observed = Observed()
        self._tried: set[str] = set()  # the acquireTimes of this start's creates

    async def take(self) -> None:
        """Create the claim, or wait for it (taking it over from a dead holder). An API error (a 5xx, a
        timeout) is tried again, up to `ERRORS` in a row: a create whose answer was lost is recognised
        as this one's by its `acquireTime`, so it is neither waited for nor created twice."""
        deadline, errors = time.monotonic() + WAIT_LIMIT, 0
        while True:
            try:
                if await self._try_once(deadline):
                    return
                errors = 0
            except ClaimTimeout:
                raise
            except Exception as exc:
                errors += 1
                if errors >= ERRORS or time.monotonic() > deadline:
                    raise
                log.warning("start claim: API error; trying again", extra=self._fields(error=repr(exc)[:300]))
            await asyncio.sleep(self.deps.settings.lease.retry)

    async def _try_once(self, deadline: float) -> bool:
        """One create, or one look at the holder's claim: True once this start holds it."""
        kube, body = self.deps.kube, self._body(None)
        self._tried.add(body["spec"]["acquireTime"])  # before the call: its answer may be lost, not its effect
        self.lease = await kube.create_lease(self.namespace, body)
        if self.lease is not None:
            return True
        current = await kube.get_lease(self.namespace, self.start.name)
        if current is None:
            return False  # released since: created at the next try
        if _holder(current) == self.deps.identity and (current.get("spec") or {}).get("acquireTime") in self._tried:
            self.lease = current  # created by an earlier try whose answer was lost
            return True
        if self._dead(current):
            body = self._body(current)
            self._tried.add(body["spec"]["acquireTime"])  # a takeover whose answer is lost is recognised too
            self.lease = await kube.replace_lease(self.namespace, body)
            if self.lease is not None:
                log.info("start claim taken over", extra=self._fields(holder=_holder(current)))
            return self.lease is not None
        if time.monotonic() > deadline:
            raise ClaimTimeout(f"{self.start.kind} of {self.start.sha[:7]} in {self.start.repo} is being started "
                               f"by {_holder(current)} for more than {WAIT_LIMIT:g} s")
        return False

    async def keep(self) -> None:
        """Renew while the start runs (a slow source upload must not look like a dead holder); an API
        error is tried again every FLOPS_LEASE_RETRY (the claim lasts its duration meanwhile)."""
        lease = self.deps.settings.lease
        wait = lease.renew
        while self.lease is not None:
            await asyncio.sleep(wait)
            try:
                renewed = await self.deps.kube.replace_lease(self.namespace, self._body(self.lease))
            except Exception as exc:
                log.warning("start claim not renewed; trying again", extra=self._fields(error=repr(exc)[:300]))
                wait = lease.retry
                continue
            if renewed is None:  # changed since: by a renewal of ours whose answer was lost, or by a takeover
                renewed = await self._still_ours()
            if renewed is None:
                log.warning("start claim lost while starting", extra=self._fields())
            self.lease, wait = renewed, lease.renew

    async def _still_ours(self) -> dict[str, Any] | None:
        """The claim as it is now if this start still holds it (same holder, same acquireTime), else None."""
        current = await self.deps.kube.get_lease(self.namespace, self.start.name)
        acquired = ((self.lease or {}).get("spec") or {}).get("acquireTime")
        if current is None or _holder(current) != self.deps.identity or \
                (current.get("spec") or {}).get("acquireTime") != acquired:
            return None
        return current

    async def release(self) -> None:
        """Delete the claim at the version this start wrote last; if that changed (a renewal whose answer
        was lost), at the version read, as long as this start still holds it."""
        if self.lease is None:
            return
        kube = self.deps.kube
        try:
            if await kube.delete_lease(self.namespace, self.start.name, str(self.lease["metadata"]["resourceVersion"])):
                return
            current = await kube.get_lease(self.namespace, self.start.name)
            if current is not None and _holder(current) == self.deps.identity:
                await kube.delete_lease(self.namespace, self.start.name, str(current["metadata"]["resourceVersion"]))
        except Exception as exc:  # the API unreachable: the claim expires by itself
            log.warning("start claim not released; it expires", extra=self._fields(error=repr(exc)[:300]))

    def _dead(self, lease: dict[str, Any]) -> bool:
        """Its holder is this pod's previous container, or it has not renewed for its duration (our clock)."""
        meta, spec = lease["metadata"], lease.get("spec") or {}
        pod, lease_settings = (meta.get("annotations") or {}).get(POD), self.deps.settings.lease
        if lease_settings.pod_unique and pod == lease_settings.pod_name and _holder(lease) != self.deps.identity:
            return True
        if _renewed_ago(spec) > ANCIENT:  # a leftover of a holder long dead (even across clock skew): at once
            return True
        return self._observed.silent_for(lease) > float(spec.get("leaseDurationSeconds") or 0)

    def _body(self, lease: dict[str, Any] | None) -> dict[str, Any]:
        start, now = self.start, micro_time()
        metadata: dict[str, Any] = {
            "name": start.name, "namespace": self.namespace, "labels": {jobs.MANAGED_BY_LABEL: jobs.MANAGED_BY},
            "annotations": {jobs.REPO: start.repo, jobs.A + "scope": start.scope, jobs.KIND: start.kind,
                            jobs.SHA: start.sha, POD: self.deps.settings.lease.pod_name}}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        spec = {"holderIdentity": self.deps.identity, "leaseDurationSeconds": self.deps.settings.lease.duration,
                "acquireTime": now, "renewTime": now}
        if lease is not None and _holder(lease) == self.deps.identity:
            spec["acquireTime"] = (lease.get("spec") or {}).get("acquireTime") or now
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"repo": self.start.repo, "scope": self.start.scope, "kind": self.start.kind, "sha": self.start.sha,
                "claim": self.start.name, **more}


def _renewed_ago(spec: dict[str, Any]) -> float:
    """Seconds since the claim's renewTime by this machine's clock (0 when it cannot be read)."""
    try:
        return time.time() - timestamp(str(spec.get("renewTime")))
    except ValueError:
        return 0.0


def _holder(lease: dict[str, Any]) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")
