"""The announced retaken deliveries (bot/service/retakes.py) when the state bucket is slow: every delivery a
replica processes may read them, so the read is bounded and a failed one is not repeated for each delivery."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bot.platform.artifacts import Artifacts
from bot.platform.settings import S3Settings
from bot.service import retakes
from tests.conftest import wait_for


class SilentS3:
    """A TCP server that accepts S3 requests and never answers (an S3 endpoint stuck behind a dead node)."""

    def __init__(self) -> None:
        self.connections: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        await reader.read()  # until the client gives up

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.connections:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
async def silent() -> AsyncIterator[tuple[SilentS3, Artifacts]]:
    server = SilentS3()
    endpoint = await server.start()
    artifacts = Artifacts(S3Settings(endpoint, "key", "secret", False, "flops-state"))
    yield server, artifacts
    await server.stop()


async def test_a_silent_state_bucket_costs_one_bounded_wait_then_deliveries_look_first(
        silent: tuple[SilentS3, Artifacts]) -> None:
    server, artifacts = silent
    notices = retakes.Notices(artifacts, backoff=1.0)
    started = time.monotonic()
    async with asyncio.timeout(retakes.READ_TIMEOUT + 5):  # four workers at once: one wait, not four in a row
        answers = await asyncio.gather(*(notices.retaken(f"guid-{n}", time.time()) for n in range(4)))
    assert answers == [True] * 4  # unread: each looks before it creates
    assert time.monotonic() - started >= retakes.READ_TIMEOUT - 0.5
    connections = len(server.connections)
    assert connections >= 1
    async with asyncio.timeout(0.5):  # within the back-off: no read at all
        assert await notices.retaken("guid-5", time.time()) is True
    assert len(server.connections) == connections
    backed_off = time.monotonic() + 1.0
    await wait_for(lambda: time.monotonic() > backed_off, timeout=5, what="the back-off over")
    async with asyncio.timeout(0.5):  # the first read still holds its thread: no second one is started
        assert await notices.retaken("guid-6", time.time()) is True
    assert len(server.connections) == connections
