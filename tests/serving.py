"""`python -m bot serve` as its own process for one test, with the README's environment (as
tests/test_as_shipped.py runs it) plus whatever the test adds; its log checked when it stops."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import SECRET, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server, free_port
from tests.test_as_shipped import readme_environment


@dataclass
class Served:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


@asynccontextmanager
async def serving(tmp: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server,
                  **extra: str) -> AsyncIterator[Served]:
    """Start serve, wait for /readyz, yield; on the way out stop it and check every log line is one
    JSON object and none is an error or carries the webhook secret. `PORT` and `FLOPS_BUCKET` may
    be given (a restart on the same address, with the same state)."""
    port = int(extra.get("PORT") or free_port())
    env = {**readme_environment(tmp, github, kube, s3, port), "FLOPS_BUCKET": "t-" + uuid.uuid4().hex[:12], **extra}
    log = tmp / "bot.log"
    with open(log, "ab") as sink:  # a restart appends: the log checked at the end is this run's part
        start = log.stat().st_size if log.exists() else 0
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp, stdin=subprocess.DEVNULL,
                                   stdout=sink, stderr=subprocess.STDOUT, env=env)
    served = Served(f"http://127.0.0.1:{port}", log, process)
    try:
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                assert process.poll() is None, f"the bot exited:\n{log.read_text()}"
                try:
                    async with session.get(served.url + "/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=30, what="python -m bot serve ready")
        yield served
    finally:
        process.terminate()
        # in a thread: the emulators share this loop and must answer what the bot finishes while it drains
        await asyncio.to_thread(process.wait, 40)
    lines = log.read_bytes()[start:].decode().splitlines()
    entries = [json.loads(line) for line in lines]  # a line that is not JSON fails here
    assert all(isinstance(entry, dict) for entry in entries)
    assert not [entry for entry in entries if entry["level"] in ("error", "critical")]
    assert not [line for line in lines if SECRET in line]
