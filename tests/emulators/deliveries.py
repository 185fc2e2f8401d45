"""The emulated GitHub's webhook deliveries: what it sent to the App's webhook URL, in the shapes of
"REST API endpoints for GitHub App webhooks" (`GET /app/hook/deliveries`, `GET .../{id}`,
`POST .../{id}/attempts`).

Every delivery is one entry; a redelivery is a new entry with a new `id`, the same `guid` and
`redelivery: true`. No answer at all (connection refused, reset, timed out) is `status_code: 0`.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

DELIVERY_TIMEOUT = 10.0  # GitHub waits 10 s for the webhook's answer


@dataclass
class Delivery:
    id: int
    guid: str
    event: str
    body: bytes
    redelivery: bool
    delivered_at: float = field(default_factory=time.time)
    duration: float = 0.0
    status: str = "Pending"
    status_code: int = 0
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def summary(self) -> dict[str, Any]:
        """An entry of `GET /app/hook/deliveries`."""
        data = self.payload
        return {"id": self.id, "guid": self.guid, "delivered_at": _iso(self.delivered_at),
                "redelivery": self.redelivery, "duration": round(self.duration, 3), "status": self.status,
                "status_code": self.status_code, "event": self.event, "action": data.get("action"),
                "installation_id": (data.get("installation") or {}).get("id"),
                "repository_id": (data.get("repository") or {}).get("id"), "throttled_at": None}

    def detail(self, url: str) -> dict[str, Any]:
        """`GET /app/hook/deliveries/{id}`: the entry plus the request and the answer."""
        return {**self.summary(), "url": url,
                "request": {"headers": self.request_headers, "payload": self.payload},
                "response": {"headers": self.response_headers, "payload": self.response_body}}


class DeliveryLog:
    """Sends deliveries to `url` signed with `secret` and records each attempt."""

    def __init__(self) -> None:
        self.url = ""
        self.secret = ""
        self.deliveries: list[Delivery] = []  # oldest first
        self._ids = itertools.count(1_000_000_001)
        self._tasks: set[asyncio.Task[Delivery]] = set()

    async def send(self, event: str, data: dict[str, Any], *, guid: str | None = None) -> Delivery:
        """Deliver a new event (as GitHub does when it happens) and record the attempt."""
        body = json.dumps(data).encode()
        return await self._attempt(Delivery(next(self._ids), guid or str(uuid.uuid4()), event, body, False))

    def get(self, delivery_id: int) -> Delivery | None:
        return next((d for d in self.deliveries if d.id == delivery_id), None)

    def redeliver(self, original: Delivery) -> None:
        """`POST .../attempts`: answered 202 at once, delivered in the background."""
        again = Delivery(next(self._ids), original.guid, original.event, original.body, True)
        task = asyncio.ensure_future(self._attempt(again))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def of(self, guid: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.guid == guid]

    def page(self, per_page: int, cursor: str | None) -> tuple[list[Delivery], str | None]:
        """Newest first, `per_page` after the cursor; the next cursor (None on the last page)."""
        newest_first = sorted(self.deliveries, key=lambda d: d.id, reverse=True)
        if cursor:
            before = int(cursor.removeprefix("v1_"))
            newest_first = [d for d in newest_first if d.id < before]
        chunk = newest_first[:per_page]
        more = len(newest_first) > per_page
        return chunk, (f"v1_{chunk[-1].id}" if more and chunk else None)

    async def _attempt(self, delivery: Delivery) -> Delivery:
        """Listed once answered (or given up on), as GitHub lists no delivery still in flight."""
        signature = "sha256=" + hmac.new(self.secret.encode(), delivery.body, hashlib.sha256).hexdigest()
        delivery.request_headers = {
            "Accept": "*/*", "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/emulator",
            "X-GitHub-Delivery": delivery.guid, "X-GitHub-Event": delivery.event,
            "X-GitHub-Hook-Installation-Target-Type": "integration", "X-Hub-Signature-256": signature}
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)) as session, \
                    session.post(self.url, data=delivery.body, headers=delivery.request_headers) as response:
                delivery.response_body = await response.text()
                delivery.response_headers = dict(response.headers)
                delivery.status_code = response.status
                delivery.status = "OK" if 200 <= response.status < 300 else f"Invalid HTTP Response: {response.status}"
        except TimeoutError:
            delivery.status = "timed out"
        except aiohttp.ClientError as exc:
            delivery.status = f"failed to connect to host: {type(exc).__name__}"
        delivery.duration = time.monotonic() - started
        self.deliveries.append(delivery)
        return delivery


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
