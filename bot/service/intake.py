"""Webhook intake, sans-I/O: the streaming signature check, the budget of unverified bytes and the
parsing of a verified delivery.

The signature is computed chunk by chunk while the body arrives and checked before anything is
parsed (constant time, several secrets for rotation). The bytes that requests not yet verified
hold are capped in total (`FLOPS_UNVERIFIED_BYTES`): a request that does not fit is refused
before its body is read.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping

import orjson
from gidgethub import sansio

SIGNATURE_PREFIX = "sha256="
BODY_SECONDS = 60.0  # an unverified body must arrive within this (it holds its reservation meanwhile)


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
    """The bytes that requests whose signature is not checked yet may hold, in total. A request
    reserves its whole `Content-Length` before its body is read and releases it once checked; its
    body must arrive within `seconds` (a slow sender cannot sit on the budget)."""

    def __init__(self, limit: int, seconds: float = BODY_SECONDS) -> None:
        self.limit = limit
        self.seconds = seconds
        self.held = 0

    def reserve(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


def admit(headers: Mapping[str, str], content_length: int | None, budget: UnverifiedBytes, max_body: int) -> int:
    """Decide from the headers alone whether the body may be read: the bytes to reserve (already
    reserved on return), or a Refusal to answer at once, the body unread."""
    if not Signature.present(headers.get("X-Hub-Signature-256")):
        raise Refusal(401, "unauthorized", "signature missing or invalid (check GITHUB_WEBHOOK_SECRET)")
    if content_length is None:
        raise Refusal(411, "length_required", "Content-Length required (GitHub always sends it)")
    if content_length > min(max_body, budget.limit):
        raise Refusal(413, "too_large", f"body of {content_length} bytes is over the limit of "
                                        f"{min(max_body, budget.limit)} bytes")
    if not budget.reserve(content_length):
        raise Refusal(503, "over_capacity", "too many unverified bytes in flight (FLOPS_UNVERIFIED_BYTES); "
                                            "GitHub can redeliver this event", retry_after=5)
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

