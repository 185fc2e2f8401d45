"""`WEBHOOK_PROXY_URL`: deliveries relayed through a smee.io-style channel, for developing without a
public URL (as Probot does). Nothing here decides anything: each relayed delivery goes through the
same intake as `POST /webhook` (signature, dedupe, routing, queue), so a forged one is dropped there.

The channel is a Server-Sent Events stream (`Accept: text/event-stream`). smee.io sends `event: ready`
once connected, `event: ping` every 30 s, and one unnamed (`message`) event per delivery whose data is
a JSON object: the delivery's request headers under their lowercase names, `body` (the payload as
parsed JSON), `query` and `timestamp`. smee-client forwards `JSON.stringify(body)`, so GitHub's
signature can only be checked against that re-serialisation: `js_stringify` produces the same bytes
(compact, non-ASCII kept, integral floats without `.0`). GitHub's own bytes are compact JSON, so the
signature matches in practice; a delivery whose bytes differ is rejected as unsigned (and counted),
never accepted unchecked.

The stream is read with no total timeout; a stream silent for longer than `READ_TIMEOUT` (three
missed pings) is dropped. Any end of the stream reconnects: after the server's `retry:` time (else
`policy.base_delay`) when the stream had worked, else with exponential backoff from that time,
capped at `policy.max_delay`. `Last-Event-ID` is sent back on reconnect. `/readyz` ignores the
channel (the Service's traffic never goes through it); the gauge `flops_webhook_proxy_connected`
and the log say whether it is up.
"""
from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from bot.platform import logs
from bot.platform.metrics import Metrics
from bot.platform.retry import RetryPolicy

log = logs.get_logger(__name__)

READ_TIMEOUT = 95.0  # seconds without a byte (smee pings every 30 s) before the stream counts as dead
MAX_EVENT = 26 * 1024 * 1024  # one event's data: a 25 MB delivery plus its headers
SKIPPED = ("query", "timestamp", "body", "host", "content-length")  # not request headers to pass on

_SURROGATE = re.compile("[\ud800-\udfff]")
_INDEX = re.compile("0|[1-9][0-9]*")

Deliver = Callable[[Mapping[str, str], bytes], int]  # (headers, raw body) -> the intake's HTTP status


@dataclass
class Event:
    name: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class Parser:
    """Server-Sent Events, line by line, as the HTML standard's parser reads them."""

    retry: float | None = None  # seconds, from the last `retry:` field
    last_id: str | None = None
    _name: str = ""
    _data: list[str] = field(default_factory=list)
    _size: int = 0

    def feed(self, line: str) -> Event | None:
        """One line without its end of line; a complete event at each blank line."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment (keep-alive)
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._size += len(value) + 1
            if self._size > MAX_EVENT:
                raise ValueError(f"an event larger than {MAX_EVENT} bytes")
            self._data.append(value)
        elif name == "event":
            self._name = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> Event | None:
        data, name = "\n".join(self._data), self._name or "message"
        had_data = bool(self._data)
        self._data, self._name, self._size = [], "", 0
        return Event(name, data, self.last_id) if had_data else None


def js_stringify(value: Any) -> bytes:
    """`JSON.stringify(value)` as UTF-8: the bytes smee-client forwards (and GitHub signed, when its
    payload was compact JSON). Strings are escaped as both languages do (non-ASCII kept); numbers
    are spelled as JavaScript's Number::toString spells the double JSON.parse made of them."""
    return "".join(_js_parts(value)).encode("utf-8")


def _js_parts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield _js_string(value)
    elif value is None or value is True or value is False:
        yield "null" if value is None else "true" if value else "false"
    elif isinstance(value, (int, float)):
        yield js_number(value)
    elif isinstance(value, dict):
        yield "{"
        for index, key in enumerate(_js_key_order(value)):
            yield ("," if index else "") + _js_string(key) + ":"
            yield from _js_parts(value[key])
        yield "}"
    elif isinstance(value, list):
        yield "["
        for index, item in enumerate(value):
            if index:
                yield ","
            yield from _js_parts(item)
        yield "]"
    else:
        raise TypeError(f"not JSON: {type(value).__name__}")


def _js_string(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)  # the same escapes as JavaScript's, non-ASCII kept
    return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", quoted)  # lone surrogates: as JS escapes them


def _js_key_order(data: dict[str, Any]) -> list[str]:
    """JavaScript objects list integer-like keys ("0", "17") first, ascending, then the rest in order."""
    indices = sorted((key for key in data if _INDEX.fullmatch(key) and int(key) < 2 ** 32 - 1), key=int)
    if not indices:
        return list(data)
    chosen = set(indices)
    return indices + [key for key in data if key not in chosen]


def js_number(number: float) -> str:
    """A JSON number as JavaScript prints it: integers up to 2**53 as they are, everything else
    through the double (shortest round-trip digits, exponent outside 1e-7 .. 1e21)."""
    if isinstance(number, int) and abs(number) <= 2 ** 53:
        return str(number)
    value = float(number)
    if value != value or value in (float("inf"), float("-inf")):
        return "null"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text, point = "".join(map(str, digits)), len(digits) + int(exponent)
    if len(text) <= point <= 21:
        body = text + "0" * (point - len(text))
    elif 0 < point <= 21:
        body = text[:point] + "." + text[point:]
    elif -6 < point <= 0:
        body = "0." + "0" * -point + text
    else:
        body = text[0] + ("." + text[1:] if len(text) > 1 else "") + f"e{'+' if point > 0 else '-'}{abs(point - 1)}"
    return ("-" if value < 0 else "") + body


def relayed(data: str) -> tuple[CIMultiDict[str], bytes]:
    """A smee message's data as the request smee-client would make: headers and the raw body.
    ValueError when it is no relayed delivery."""
    message = json.loads(data)
    if not isinstance(message, dict) or "body" not in message:
        raise ValueError("not a relayed delivery (no `body`)")
    headers: CIMultiDict[str] = CIMultiDict(
        (key, str(value)) for key, value in message.items()
        if key.lower() not in SKIPPED and isinstance(value, (str, int)) and not isinstance(value, bool))
    headers["Content-Type"] = "application/json"  # what smee-client sends with the re-serialised body
    return headers, js_stringify(message["body"])


def outcome(status: int) -> str:
    """The `outcome` label of a relayed delivery, from the answer the intake gave it."""
    return {200: "duplicate", 202: "accepted", 400: "malformed", 401: "unauthorized"}.get(status, "unavailable")


class WebhookProxy:
    """Reads the channel for as long as the service runs and hands each delivery to `deliver`."""

    def __init__(self, url: str, session: aiohttp.ClientSession, deliver: Deliver, metrics: Metrics,
                 policy: RetryPolicy) -> None:
        self._url = url
        self._session = session
        self._deliver = deliver
        self._metrics = metrics
        self._policy = policy
        self._parser = Parser()
        self.where = urlsplit(url).netloc  # logged instead of the URL: the channel name is the secret

    async def run(self) -> None:
        failures = 0
        while True:
            worked = False
            try:
                worked = await self._stream()
                log.info("webhook proxy stream ended; reconnecting", extra={"proxy": self.where})
            except Exception as exc:  # noqa: BLE001 - refused, cut, HTTP error, a bug: the loop lives on
                log.warning("webhook proxy unreachable; reconnecting",
                            extra={"proxy": self.where, "error": type(exc).__name__, "attempt": failures + 1})
            self._metrics.proxy_connected(False)
            failures = 0 if worked else failures + 1
            await self._policy.sleep(self._delay(failures))

    def _delay(self, failures: int) -> float:
        base = self._parser.retry if self._parser.retry is not None else self._policy.base_delay
        if failures == 0:  # the stream had worked: come back after the server's `retry:`
            return float(base)
        return float(min(self._policy.max_delay, base * 2 ** min(failures - 1, 16)))

    async def _stream(self) -> bool:
        """Read one connection to its end; True when it delivered anything (ready, ping or a delivery)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._parser.last_id is not None:
            headers["Last-Event-ID"] = self._parser.last_id
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=READ_TIMEOUT)
        worked = False
        async with self._session.get(self._url, headers=headers, timeout=timeout) as response:
            if response.status != 200 or not response.content_type.startswith("text/event-stream"):
                raise ValueError(f"the channel answered HTTP {response.status} ({response.content_type})")
            self._parser = Parser(retry=self._parser.retry, last_id=self._parser.last_id)
            async for line in _lines(response):
                event = self._parser.feed(line)
                if event is None:
                    continue
                if not worked:
                    log.info("webhook proxy connected", extra={"proxy": self.where})
                    self._metrics.proxy_connected(True)
                worked = True
                self._handle(event)
        return worked

    def _handle(self, event: Event) -> None:
        if event.name in ("ready", "ping"):
            return
        if event.name != "message":
            log.debug("webhook proxy event ignored", extra={"proxy": self.where, "event": event.name})
            return
        try:
            headers, body = relayed(event.data)
        except (ValueError, TypeError, UnicodeEncodeError) as exc:  # json.JSONDecodeError is a ValueError
            self._metrics.proxy_event("malformed")
            log.warning("webhook proxy event dropped: not a relayed delivery",
                        extra={"proxy": self.where, "error": str(exc)[:200]})
            return
        result = outcome(self._deliver(headers, body))
        self._metrics.proxy_event(result)
        if result != "accepted":
            log.warning("relayed delivery not accepted", extra={"proxy": self.where, "outcome": result,
                                                                "delivery": headers.get("X-GitHub-Delivery")})


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The stream's lines (LF or CRLF ends), read as they arrive; one line may be a whole 25 MB delivery."""
    buffer = bytearray()
    async for chunk in response.content.iter_any():
        start = len(buffer)
        buffer += chunk
        while (end := buffer.find(b"\n", start)) >= 0:
            yield bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
            del buffer[:end + 1]
            start = 0
        if len(buffer) > MAX_EVENT:
            raise ValueError(f"a line longer than {MAX_EVENT} bytes")
