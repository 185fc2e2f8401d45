"""Intake under hostile load (issue 16, finding 1): the signature is computed while the body streams
in, and a request that will not be read is answered at once, before its body was sent.

The hostile clients here are raw sockets: they send a request head (and maybe a little of the body),
then wait for the answer, which must come while most of the body is still unsent.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

import pytest

from bot.platform.settings import SettingsError, from_env
from bot.service.app import MAX_BODY, METRICS, UNVERIFIED
from bot.service.intake import Refusal, UnverifiedBytes, client_of
from tests.conftest import INSTALLATION, Bed, BedFactory, sign
from tests.test_intake import REPO, config_reads, push_to


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class RawClient:
    """One HTTP/1.1 connection written by hand: a head, some body bytes, then the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, bed: Bed) -> RawClient:
        url = bed.server.make_url("/")
        reader, writer = await asyncio.open_connection(url.host, url.port)
        return cls(reader, writer)

    async def head(self, headers: dict[str, str], first: bytes = b"") -> None:
        lines = ["POST /webhook HTTP/1.1", "Host: flops-bot", *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
        await self.writer.drain()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 10.0) -> Answer:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = {}
        for line in filter(None, header_lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(self.reader.readexactly(int(headers.get("content-length", "0"))), timeout)
        return Answer(int(status_line.split()[1]), headers, body)

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.writer.close()


def webhook_headers(length: int | None, signature: str | None, **extra: str) -> dict[str, str]:
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json"}
    if length is not None:
        headers["Content-Length"] = str(length)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return {**headers, **extra}


def refused(bed: Bed, outcome: str) -> float:
    return bed.deps.metrics.value("flops_webhook_deliveries_total", event="unknown", outcome=outcome)


FORGED = "sha256=" + "0" * 64


async def test_a_signed_delivery_of_25_mb_is_accepted_and_processed(bed: Bed) -> None:
    data = push_to(bed)
    small = len(json.dumps(data).encode())
    data["padding"] = "x" * (MAX_BODY - small - 20)  # GitHub's cap: 25 MB
    body = json.dumps(data).encode()
    assert MAX_BODY - 100 < len(body) <= MAX_BODY
    response = await bed.deliver("push", body)
    assert response.status == 202
    await bed.settle()
    assert len(config_reads(bed)) == 1
    assert bed.server.app[UNVERIFIED].held == 0


async def test_no_signature_is_answered_401_before_the_body_is_sent(bed: Bed) -> None:
    client = await RawClient.open(bed)
    await client.head(webhook_headers(20_000_000, None), b"{")  # 20 MB announced, one byte sent
    answer = await client.answer()
    assert answer.status == 401 and b"signature" in answer.body
    assert answer.headers["connection"] == "close" and await client.closed_by_server()
    client.close()
    assert refused(bed, "unauthorized") == 1


async def test_over_the_per_request_maximum_is_answered_413_before_the_body_is_sent(bed: Bed) -> None:
    client = await RawClient.open(bed)
    await client.head(webhook_headers(MAX_BODY + 1, FORGED))
    answer = await client.answer()
    assert answer.status == 413 and str(MAX_BODY) in json.loads(answer.body)["message"]
    client.close()
    assert refused(bed, "too_large") == 1


async def test_a_chunked_body_without_length_is_answered_411(bed: Bed) -> None:
    client = await RawClient.open(bed)
    await client.head(webhook_headers(None, FORGED, **{"Transfer-Encoding": "chunked"}), b"10\r\n{")
    answer = await client.answer()
    assert answer.status == 411
    client.close()
    assert refused(bed, "length_required") == 1


async def test_beyond_the_cap_of_unverified_bytes_a_request_is_answered_503_at_once(make_bed: BedFactory,
                                                                                    github) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed(FLOPS_UNVERIFIED_BYTES="1MiB")
    holder = await RawClient.open(bed)
    await holder.head(webhook_headers(700 * 1024, FORGED), b"{" * 1024)  # holds 700 KiB of the 1 MiB
    await asyncio.wait_for(_held(bed, 700 * 1024), 10)
    second = await RawClient.open(bed)
    await second.head(webhook_headers(700 * 1024, FORGED))
    answer = await second.answer()
    assert answer.status == 503 and answer.headers["retry-after"] == "5"
    assert "FLOPS_UNVERIFIED_BYTES" in json.loads(answer.body)["message"]
    second.close()
    small = await bed.deliver("push", push_to(bed))  # a delivery that fits is still taken meanwhile
    assert small.status == 202
    await holder.send(b" " * (700 * 1024 - 1024))  # the held request completes: forged, refused
    assert (await holder.answer()).status == 401
    holder.close()
    assert bed.server.app[UNVERIFIED].held == 0
    assert (refused(bed, "over_capacity"), refused(bed, "unauthorized")) == (1, 1)
    await bed.settle()
    assert len(config_reads(bed)) == 1


async def _held(bed: Bed, size: int) -> None:
    while bed.server.app[UNVERIFIED].held != size:
        await asyncio.sleep(0.01)


async def test_a_body_signed_with_the_secret_but_sent_in_small_pieces_verifies(bed: Bed) -> None:
    body = json.dumps(push_to(bed)).encode()
    client = await RawClient.open(bed)
    await client.head(webhook_headers(len(body), sign(body)))
    for start in range(0, len(body), 100):  # many chunks: the HMAC is updated piece by piece
        await client.send(body[start:start + 100])
    assert (await client.answer()).status == 202
    client.close()
    await bed.settle()
    assert len(config_reads(bed)) == 1


@pytest.mark.parametrize("raw, expected", [("", 64 * 1024 * 1024), ("1048576", 1048576), ("512KiB", 512 * 1024),
                                           ("64MiB", 64 * 1024 * 1024), ("1 GiB", 1024 ** 3)])
def test_unverified_bytes_accept_plain_bytes_and_binary_suffixes(env: dict[str, str], raw: str,
                                                                 expected: int) -> None:
    assert from_env({**env, "FLOPS_UNVERIFIED_BYTES": raw}).unverified_bytes == expected


@pytest.mark.parametrize("raw", ["64MB", "-1", "0", "lots"])
def test_a_malformed_unverified_bytes_is_named(env: dict[str, str], raw: str) -> None:
    with pytest.raises(SettingsError) as error:
        from_env({**env, "FLOPS_UNVERIFIED_BYTES": raw})
    assert error.value.problems == [f"FLOPS_UNVERIFIED_BYTES must be a positive size in bytes, optionally with KiB, "
                                    f"MiB or GiB, got {raw!r}"]


async def test_a_body_that_does_not_arrive_in_time_gives_its_bytes_back(env: dict[str, str], github) -> None:
    """A slow sender cannot sit on the budget: after `body_seconds` it is answered 408 and closed."""
    from aiohttp.test_utils import TestServer

    from bot.__main__ import build_app
    from bot.platform.retry import RetryPolicy
    from tests.conftest import RecordingSleep

    app = build_app(from_env(env), policy=RetryPolicy(sleep=RecordingSleep()), body_seconds=0.5)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        client = RawClient(reader, writer)
        await client.head(webhook_headers(10_000, FORGED), b"{")  # then nothing more
        answer = await client.answer()
        assert answer.status == 408 and server.app[UNVERIFIED].held == 0
        assert await client.closed_by_server()
        client.close()
    finally:
        await server.close()


def test_the_unverified_budget_counts_per_address_and_a_streamed_body_must_keep_up_its_rate() -> None:
    budget = UnverifiedBytes(100, 60.0, per_client=60, min_rate=10, grace=5.0)
    budget.reserve(50, "192.0.2.1")
    with pytest.raises(Refusal) as refusal:
        budget.reserve(20, "192.0.2.1")  # this address would hold 70 of its 60
    assert (refusal.value.status, refusal.value.outcome) == (503, "client_over_capacity")
    budget.reserve(40, "192.0.2.2")
    with pytest.raises(Refusal) as refusal:
        budget.reserve(20, "192.0.2.3")  # 110 of the 100 in all
    assert refusal.value.outcome == "over_capacity"
    budget.release(50, "192.0.2.1")
    budget.release(40, "192.0.2.2")
    assert (budget.held, budget.by_client) == (0, {})  # nothing kept for addresses gone
    assert budget.deadline(100.0, 0) == 105.0  # the grace
    assert budget.deadline(100.0, 30) == 108.0  # then 10 bytes/s: 30 bytes bought 3 s more
    assert budget.deadline(100.0, 10_000) == 160.0  # never past BODY_SECONDS


@pytest.mark.parametrize("name, value, field", [("FLOPS_UNVERIFIED_PER_CLIENT", "8MiB", "unverified_per_client"),
                                                ("FLOPS_UNVERIFIED_MIN_RATE", "16KiB", "unverified_min_rate")])
def test_the_per_client_cap_and_the_minimum_rate_are_sizes(env: dict[str, str], name: str, value: str,
                                                           field: str) -> None:
    assert getattr(from_env({**env, name: value}), field) == int(value[:-3]) * 1024 ** (2 if "M" in value else 1)
    assert (from_env(env).unverified_per_client, from_env(env).unverified_min_rate) == (32 * 1024 ** 2, 64 * 1024)
    with pytest.raises(SettingsError) as error:
        from_env({**env, name: "fast"})
    assert error.value.problems == [f"{name} must be a positive size in bytes, optionally with KiB, MiB or GiB, "
                                    f"got 'fast'"]


async def test_a_body_stalled_after_its_first_bytes_is_cut_at_the_grace_as_too_slow(env: dict[str, str],
                                                                                     github) -> None:
    from aiohttp.test_utils import TestServer

    from bot.__main__ import build_app
    from bot.platform.retry import RetryPolicy
    from tests.conftest import RecordingSleep

    app = build_app(from_env(env), policy=RetryPolicy(sleep=RecordingSleep()), body_grace=0.3)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        client = RawClient(reader, writer)
        await client.head(webhook_headers(10_000, FORGED), b"{" * 100)  # then nothing more
        answer = await client.answer()  # within the grace plus 100 bytes' worth, not the 60 s deadline
        assert answer.status == 408 and "FLOPS_UNVERIFIED_MIN_RATE" in json.loads(answer.body)["message"]
        assert server.app[UNVERIFIED].held == 0 and await client.closed_by_server()
        assert server.app[METRICS].value("flops_webhook_deliveries_total", event="unknown", outcome="too_slow") == 1
        client.close()
    finally:
        await server.close()


@pytest.mark.parametrize("address, counted", [
    ("192.0.2.7", "192.0.2.7"), (None, ""),
    ("2001:db8:1:2::1", "20010db800010002::/64"), ("2001:db8:1:2:ffff:ffff:ffff:ffff", "20010db800010002::/64"),
    ("2001:db8:1:3::1", "20010db800010003::/64"), ("::ffff:192.0.2.7", "192.0.2.7"), ("fe80::1%eth0", "fe80000000000000::/64")])
def test_the_per_client_cap_counts_an_ipv4_address_or_an_ipv6_slash_64(address: str | None, counted: str) -> None:
    """A host holding a whole IPv6 /64 is one client, not 2^64 of them; IPv4 seen through a dual-stack socket is IPv4."""
    assert client_of(address) == counted
