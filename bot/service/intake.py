"""Webhook intake, sans-I/O: the streaming signature check, the budget of unverified bytes and the
parsing of a verified delivery.

The signature is computed chunk by chunk while the body arrives and checked before anything is
parsed (constant time, several secrets for rotation). The bytes that requests not yet verified
hold are capped in total (`FLOPS_UNVERIFIED_BYTES`) and per client address
(`FLOPS_UNVERIFIED_PER_CLIENT`): a request that does not fit is refused before its body is read.
A body that streams in must keep up `FLOPS_UNVERIFIED_MIN_RATE` after `BODY_GRACE` seconds, so a
slow sender gives its reservation back within seconds instead of holding it for `BODY_SECONDS`.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import urllib.parse
from collections.abc import Mapping

import orjson
from gidgethub import sansio

SIGNATURE_PREFIX = "sha256="
BODY_SECONDS = 60.0  # an unverified body must arrive within this (it holds its reservation meanwhile)
BODY_GRACE = 5.0  # seconds before the minimum rate applies to a body that streams in


class Refusal(Exception):
    """A request answered without being processed: HTTP status, metrics outcome, what to do."""

    def __init__(self, status: int, outcome: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message
        self.retry_after = retry_after


class Signature:
    """GitHub's `X-Hub-Signature-256: sha256=<hex>`, computed as the body arrives (`update` per
    chunk) for every configured secret, and compared in constant time (`valid`)."""

    def __init__(self, header: str, secrets: tuple[str, ...]) -> None:
        self._given = header[len(SIGNATURE_PREFIX):].encode()
        self._macs = [mac.copy() for mac in _keyed(secrets)]

    @staticmethod
    def present(header: str | None) -> bool:
        return header is not None and header.startswith(SIGNATURE_PREFIX)

    def update(self, chunk: bytes) -> None:
        for mac in self._macs:
            mac.update(chunk)

    def valid(self) -> bool:
        matched = False
        for mac in self._macs:  # no early exit: every secret is always compared
            matched |= hmac.compare_digest(mac.hexdigest().encode(), self._given)
        return matched


@functools.lru_cache(maxsize=4)
def _keyed(secrets: tuple[str, ...]) -> tuple[hmac.HMAC, ...]:
    """One keyed HMAC per secret, made once: each request copies them instead of re-keying."""
    return tuple(hmac.new(secret.encode(), digestmod=hashlib.sha256) for secret in secrets)


class UnverifiedBytes:
    """The bytes that requests whose signature is not checked yet may hold, in total and per client
    address. A request reserves its whole `Content-Length` before its body is read and releases it
    once checked; its body must arrive within `seconds`, and by `grace + received / min_rate`
    seconds after it started (`deadline`): a slow sender cannot sit on the budget."""

    def __init__(self, limit: int, seconds: float = BODY_SECONDS, *, per_client: int | None = None,
                 min_rate: int = 64 * 1024, grace: float = BODY_GRACE) -> None:
        self.limit = limit
        self.seconds = seconds
        self.per_client = min(per_client or limit, limit)
        self.min_rate = min_rate
        self.grace = grace
        self.held = 0
        self.by_client: dict[str, int] = {}

    def reserve(self, size: int, client: str = "") -> None:
        """Hold `size` bytes for `client`, or a Refusal (503) naming the cap that is full."""
        if self.held + size > self.limit:
            raise Refusal(503, "over_capacity", "too many unverified bytes in flight (FLOPS_UNVERIFIED_BYTES); "
                                                "GitHub can redeliver this event", retry_after=5)
        mine = self.by_client.get(client, 0)
        if mine + size > self.per_client:
            raise Refusal(503, "client_over_capacity", "too many unverified bytes in flight from this address "
                                                       "(FLOPS_UNVERIFIED_PER_CLIENT); GitHub can redeliver this "
                                                       "event", retry_after=5)
        self.held += size
        self.by_client[client] = mine + size

    def release(self, size: int, client: str = "") -> None:
        self.held -= size
        left = self.by_client.pop(client) - size
        if left:
            self.by_client[client] = left

    def deadline(self, start: float, received: int) -> float:
        """When a body that started at `start` (loop time) and has `received` bytes must have more."""
        return start + min(self.seconds, self.grace + received / self.min_rate)


def client_of(address: str | None) -> str:
    """What the per-client cap counts: an IPv4 address as is, an IPv6 one by its /64 (a host
    commonly holds a whole /64, so a cap per address would be one per each of its 2^64)."""
    if not address or ":" not in address:
        return address or ""
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else ip.packed[:8].hex() + "::/64"


def admit(headers: Mapping[str, str], content_length: int | None, budget: UnverifiedBytes, max_body: int,
          client: str = "") -> int:
    """Decide from the headers alone whether the body may be read: the bytes to reserve (already
    reserved for `client` on return), or a Refusal to answer at once, the body unread."""
    if not Signature.present(headers.get("X-Hub-Signature-256")):
        raise Refusal(401, "unauthorized", "signature missing or invalid (check GITHUB_WEBHOOK_SECRET)")
    if content_length is None:
        raise Refusal(411, "length_required", "Content-Length required (GitHub always sends it)")
    if content_length > min(max_body, budget.per_client):
        raise Refusal(413, "too_large", f"body of {content_length} bytes is over the limit of "
                                        f"{min(max_body, budget.per_client)} bytes")
    budget.reserve(content_length, client)
    return content_length


def parse_event(headers: Mapping[str, str], body: bytes | bytearray) -> sansio.Event:
    """A verified delivery's body and headers as a gidgethub Event, parsed once (orjson; the Event
    is built from the parsed data); ValueError when malformed."""
    name = headers.get("X-GitHub-Event", "")
    if not name:
        raise ValueError("X-GitHub-Event header is missing")
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    if content_type == "application/x-www-form-urlencoded":
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        body = form.get("payload", [""])[0].encode()  # the form's one field: a new buffer is unavoidable
    elif content_type != "application/json":
        raise ValueError(f"content type {content_type!r}; set the webhook to application/json")
    try:
        data = orjson.loads(body)  # bytes or bytearray as read: no decode, no copy
    except orjson.JSONDecodeError as exc:  # invalid UTF-8 included; nesting over 1024 levels too
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return sansio.Event(data, event=name, delivery_id=headers.get("X-GitHub-Delivery", ""))

