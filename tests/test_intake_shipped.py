"""The streaming intake as users run it (issue 16, finding 1): `python -m bot serve` with the README's
environment (FLOPS_UNVERIFIED_BYTES at its default) answers a request it will not read before the
client has sent it, and still takes a signed 25 MiB delivery.
"""
from __future__ import annotations

import asyncio
import json
import re
import uuid
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests import test_as_shipped as as_shipped
from tests.conftest import INSTALLATION, payload, sign, wait_for
from tests.test_as_shipped import Shipped

pytestmark = pytest.mark.asyncio(loop_scope="module")
shipped, logs_stay_clean = as_shipped.shipped, as_shipped.logs_stay_clean  # the serve process, its clean logs

MAX_BODY = 25 * 1024 * 1024
REPO = "acme/fl-intake"


async def metric(bot: Shipped, outcome: str, event: str = "unknown") -> float:
    async with aiohttp.ClientSession() as session, session.get(bot.url + "/metrics") as response:
        text = await response.text()
    found = re.search(rf'^flops_webhook_deliveries_total{{event="{event}",outcome="{outcome}"}} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


async def test_an_unsigned_request_over_the_cap_is_answered_before_it_is_sent(shipped: Shipped) -> None:
    url = urlsplit(shipped.url)
    before = await metric(shipped, "too_large")
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = (f"POST /webhook HTTP/1.1\r\nHost: bot\r\nX-GitHub-Event: push\r\nContent-Type: application/json\r\n"
            f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: {100 * 1024 * 1024}\r\n\r\n")
    writer.write(head.encode() + b"{" * 65536)  # 100 MiB announced, 64 KiB sent
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert status_line.split()[1] == b"413"
    writer.close()
    assert await metric(shipped, "too_large") == before + 1


async def test_a_signed_25_mib_delivery_is_accepted_and_processed(shipped: Shipped) -> None:
    shipped.github.add_repo(REPO, default_branch="master")
    sha = shipped.github.commit(REPO, "master", {"README.md": "hello"})
    repos = shipped.github.installations[INSTALLATION].repos if INSTALLATION in shipped.github.installations else []
    shipped.github.add_installation(INSTALLATION, "acme", [*repos, REPO])
    data = payload("push")
    data.update(after=sha)
    data["repository"]["full_name"] = REPO
    data["installation"]["id"] = INSTALLATION
    data["padding"] = ""
    data["padding"] = "x" * (MAX_BODY - len(json.dumps(data).encode()))
    body = json.dumps(data).encode()
    assert len(body) == MAX_BODY
    before = await metric(shipped, "processed", "push")
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body)}
    async with aiohttp.ClientSession() as session, session.post(shipped.url + "/webhook", data=body,
                                                                headers=headers) as response:
        assert response.status == 202, await response.text()
    await wait_for(lambda: _more(shipped, before), timeout=30, what="the push processed")
    assert shipped.github.calls_to("GET", rf"/repos/{REPO}/contents/\.github/flops\.yml")


async def _more(bot: Shipped, before: float) -> bool:
    return await metric(bot, "processed", "push") > before


async def unverified_bytes(bot: Shipped) -> float:
    async with aiohttp.ClientSession() as session, session.get(bot.url + "/metrics") as response:
        text = await response.text()
    found = re.search(r"^flops_webhook_unverified_bytes (\S+)$", text, re.M)
    assert found, "flops_webhook_unverified_bytes is exported"
    return float(found[1])


async def _slow_client(bot: Shipped, size: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A forged request from 127.0.0.2 announcing `size` bytes, sending 1 KiB of them, then nothing."""
    url = urlsplit(bot.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port, local_addr=("127.0.0.2", 0))
    head = (f"POST /webhook HTTP/1.1\r\nHost: bot\r\nX-GitHub-Event: push\r\nContent-Type: application/json\r\n"
            f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: sha256={'0' * 64}\r\n"
            f"Content-Length: {size}\r\n\r\n")
    writer.write(head.encode() + b"{" * 1024)
    await writer.drain()
    return reader, writer


async def test_slowloris_clients_are_capped_per_address_and_cut_and_a_signed_delivery_gets_in(shipped: Shipped) -> None:
    """Issue: a fake signature and a body that never comes held FLOPS_UNVERIFIED_BYTES (64 MiB) for
    60 s: four such requests starved GitHub's deliveries. Now one address holds at most 32 MiB
    (FLOPS_UNVERIFIED_PER_CLIENT) and a body slower than 64 KiB/s after 5 s is answered 408."""
    before = {o: await metric(shipped, o) for o in ("client_over_capacity", "too_slow")}
    size = 16 * 1024 * 1024
    held = [await _slow_client(shipped, size) for _ in range(2)]
    await wait_for(lambda: _unverified_at_least(shipped, 2 * size), timeout=10, what="two slow bodies held")
    for _ in range(2):  # the same address again: refused at once, its body unread
        reader, writer = await _slow_client(shipped, size)
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.split()[1] == b"503", status
        writer.close()
    assert await metric(shipped, "client_over_capacity") == before["client_over_capacity"] + 2

    body = json.dumps({**payload("push"), "zen": "Keep it logically awesome."}).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body)}
    async with aiohttp.ClientSession() as session, session.post(shipped.url + "/webhook", data=body,
                                                                headers=headers) as response:
        assert response.status == 202, await response.text()  # GitHub's delivery is taken meanwhile

    for reader, writer in held:  # cut after the grace, long before the 60 s body deadline
        status = await asyncio.wait_for(reader.readline(), 20)
        assert status.split()[1] == b"408", status
        assert await asyncio.wait_for(reader.read(), 10)  # the rest of the answer, then EOF: closed
        writer.close()
    assert await metric(shipped, "too_slow") == before["too_slow"] + 2
    assert await unverified_bytes(shipped) == 0


async def _unverified_at_least(bot: Shipped, size: int) -> bool:
    return await unverified_bytes(bot) >= size
