"""`python -m bot serve` as its own process for one test, with the README's environment (as
tests/test_as_shipped.py runs it) plus whatever the test adds; its log checked when it stops."""
from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import SECRET
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server, free_port
from tests.test_as_shipped import readme_environment, started


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
    start = log.stat().st_size if log.exists() else 0  # a restart appends: the log checked is this run's part
    async with started(tmp, env, port) as process:
        yield Served(f"http://127.0.0.1:{port}", log, process)
    lines = log.read_bytes()[start:].decode().splitlines()
    entries = [json.loads(line) for line in lines]  # a line that is not JSON fails here
    assert all(isinstance(entry, dict) for entry in entries)
    assert not [entry for entry in entries if entry["level"] in ("error", "critical")]
    assert not [line for line in lines if SECRET in line]
