"""Leader election on a `coordination.k8s.io/v1` Lease, so that what must run once runs in one replica.

Every replica serves webhooks and processes events; the work that must be single (the tracker's
reports and the timeouts it enforces, the redelivery loop) runs only in the holder of the Lease
`flops-bot-leader` in the bot's own namespace. The rules are client-go's (leaderelection):

- the holder renews `spec.renewTime` every `renew` seconds, each write carrying the resourceVersion it
  read (a 409 means someone else wrote the Lease: it reads again);
- a follower looks every `retry` seconds and takes the Lease once its record has not changed for
  `leaseDurationSeconds` *as measured on the follower's own clock* (no clock skew between nodes
  matters), or at once when the holder released it (a clean shutdown empties `holderIdentity`);
- a holder that could not renew for `duration - retry` seconds stops its single work before anyone
  may take over.

Gate a background task with `while_leader(name, start)`: `start()` is called each time this replica
becomes the holder and the task it returns is cancelled when the lease is lost (or at shutdown).
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from bot.platform import logs
from bot.platform.kube import Kube
from bot.platform.metrics import Metrics
from bot.platform.settings import LeaseSettings

log = logs.get_logger(__name__)

LEASE_NAME = "flops-bot-leader"

Work = Callable[[], Coroutine[Any, Any, None]]


class Observed:
    """A Lease's record (holder, renewTime, resourceVersion) as this process last saw it change, timed by its
    own monotonic clock: how long a holder has been silent, whatever the clocks of other nodes say (client-go)."""

    def __init__(self) -> None:
        self._seen: tuple[Any, ...] = ()
        self._seen_at = 0.0

    def silent_for(self, lease: dict[str, Any]) -> float:
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        return time.monotonic() - self._seen_at


def identity_for(pod_name: str) -> str:
    """The pod's name plus a random suffix: a restarted container is a new holder."""
    return f"{pod_name}-{secrets.token_hex(3)}"


def micro_time() -> str:
    """Now as a Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    """Hold (or wait for) the Lease; run the gated work only while holding it."""

    def __init__(self, kube: Kube, settings: LeaseSettings, *, name: str = LEASE_NAME,
                 identity: str | None = None, metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.metrics = metrics
        self.settings = settings
        self.name = name
        self.identity = identity or identity_for(settings.pod_name)
        self.elected = asyncio.Event()  # set while this replica holds the Lease
        self._work: dict[str, Work] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._observed = Observed()
        self._renewed = 0.0

    @property
    def is_leader(self) -> bool:
        return self.elected.is_set()

    def while_leader(self, name: str, start: Work) -> None:
        """Run `start()` whenever this replica holds the Lease; it is cancelled when the Lease is lost."""
        self._work[name] = start
        if self.is_leader:
            self._running[name] = asyncio.create_task(start(), name=name)

    async def run(self) -> None:
        """Acquire, renew, step down: forever (until cancelled, then the Lease is released)."""
        try:
            while True:
                held: bool | None
                try:
                    held = await self._attempt()
                except Exception as exc:  # the API unreachable: keep the work while the lease cannot have expired
                    log.warning("lease attempt failed", extra={"lease": self.name, "error": repr(exc)})
                    held = None
                await self._settle(held)
                await asyncio.sleep(self.settings.renew if self.is_leader and held else self.settings.retry)
        finally:
            await self._step_down("shutdown")
            await asyncio.shield(self._release())

    async def _settle(self, held: bool | None) -> None:
        now = time.monotonic()
        if held:
            self._renewed = now
            if not self.is_leader:
                self._elect()
        elif self.is_leader and (held is False or now - self._renewed >= self.settings.duration - self.settings.retry):
            await self._step_down("another holder" if held is False else "not renewed in time")

    def _elect(self) -> None:
        self.elected.set()
        if self.metrics is not None:
            self.metrics.set_leader(True)
        log.info("lease acquired: this replica reports jobs", extra={"lease": self.name, "holder": self.identity})
        for name, start in self._work.items():
            self._running[name] = asyncio.create_task(start(), name=name)

    async def _step_down(self, why: str) -> None:
        if not self.is_leader:
            return
        self.elected.clear()
        if self.metrics is not None:
            self.metrics.set_leader(False)
        log.info("lease lost: this replica stops reporting", extra={"lease": self.name, "holder": self.identity,
                                                                    "reason": why})
        tasks = list(self._running.values())
        self._running.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _attempt(self) -> bool:
        """One look at the Lease: True when this replica holds it afterwards, False when another does."""
        namespace = self.settings.namespace
        lease = await self.kube.get_lease(namespace, self.name)
        if lease is None:
            return await self.kube.create_lease(namespace, self._body(None)) is not None
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        silent = self._observed.silent_for(lease)
        if holder and holder != self.identity and silent <= float(spec.get("leaseDurationSeconds")
                                                                     or self.settings.duration):
            return False
        return await self.kube.replace_lease(namespace, self._body(lease)) is not None

    def _body(self, lease: dict[str, Any] | None) -> dict[str, Any]:
        """The Lease held by this replica, renewed now; a new holder counts one more transition."""
        now = micro_time()
        old = (lease or {}).get("spec") or {}
        ours = old.get("holderIdentity") == self.identity
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.settings.duration,
                "acquireTime": old.get("acquireTime", now) if ours else now, "renewTime": now,
                "leaseTransitions": int(old.get("leaseTransitions") or 0) + (0 if ours or lease is None else 1)}
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.settings.namespace}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    async def _release(self) -> None:
        """A clean shutdown hands the Lease over at once: empty holder, as client-go's ReleaseOnCancel."""
        try:
            lease = await self.kube.get_lease(self.settings.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            body = self._body(lease)
            body["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
            body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
            if await self.kube.replace_lease(self.settings.namespace, body) is not None:
                log.info("lease released", extra={"lease": self.name, "holder": self.identity})
        except Exception as exc:
            log.warning("releasing the lease failed; it expires by itself",
                        extra={"lease": self.name, "error": repr(exc)})
