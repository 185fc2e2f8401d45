"""The test bed: the bot served over real HTTP against a GitHub emulator, a Kubernetes emulator
and a real S3 server (SeaweedFS). Deliveries are real GitHub payloads signed as GitHub signs them.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.__main__ import build_app
from bot.flows.deps import Deps
from bot.platform import logs
from bot.platform.retry import RetryPolicy
from bot.platform.settings import Settings, from_env
from bot.service.app import DEPS, DISPATCHER, TRACKER
from tests.emulators.github import GitHubEmulator, make_app_key
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server

PAYLOADS = Path(__file__).parent / "payloads"
APP_ID = 4242
INSTALLATION = 77
SECRET = "webhook-secret-1"
NAMESPACE = "flops"


def payload(name: str) -> dict[str, Any]:
    """A copy of a recorded GitHub payload (tests/payloads/<name>.json)."""
    return copy.deepcopy(json.loads((PAYLOADS / f"{name}.json").read_text()))


def push_payload(github: GitHubEmulator, repo: str, files: dict[str, Any], *, branch: str = "master",
                 when: str = "2026-11-22T09:30:00Z") -> dict[str, Any]:
    """Commit `files` to `branch` of the emulated `repo` and return the recorded push payload
    re-pointed at that commit, as GitHub would send it (one commit listed, the files modified)."""
    before = github.branch_sha(repo, branch)
    sha = github.commit(repo, branch, files)
    data = payload("push")
    data.update(ref=f"refs/heads/{branch}", before=before, after=sha)
    data["installation"]["id"] = INSTALLATION
    data["repository"]["full_name"] = repo
    data["head_commit"].update(id=sha, timestamp=when)
    data["commits"] = [{**data["commits"][0], "id": sha, "added": [], "removed": [], "modified": list(files)}]
    return data


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a condition until it is truthy or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class RecordingSleep:
    """The bot's retry waits, recorded instead of slept (injected through RetryPolicy)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class JsonChecked(logging.Handler):
    """Formats every record through the bot's JsonFormatter, as `serve` does, and keeps each
    record that does not come out as exactly one JSON object on one line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter(logs.Redactor()))
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if "\n" in text or not isinstance(json.loads(text), dict):
                raise ValueError(f"not one JSON object on one line: {text[:200]!r}")
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            self.bad.append(f"{record.name} {record.pathname}:{record.lineno} {record.msg!r}: {exc!r}")


@pytest.fixture(autouse=True)
def json_logs() -> Iterator[JsonChecked]:
    """The whole suite logs at DEBUG (pytest's `log_level`) through the bot's formatter: a log
    call that cannot be formatted as one JSON object fails the test that made it."""
    handler = JsonChecked()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    assert not handler.bad, "log records the bot's JsonFormatter could not format:\n" + "\n".join(handler.bad)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def github() -> AsyncIterator[GitHubEmulator]:
    private, public = make_app_key()
    emulator = GitHubEmulator(app_id=APP_ID, public_key_pem=public)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    emulator = KubeEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def env(tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> dict[str, str]:
    """The bot's environment, exactly as an operator would set it."""
    kubeconfig = tmp_path / "kubeconfig"
    kube.write_kubeconfig(kubeconfig)
    key_path = tmp_path / "app.pem"
    key_path.write_bytes(make_app_key()[0])
    return {
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_PRIVATE_KEY_PATH": str(key_path),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": github.url,
        "KUBECONFIG": str(kubeconfig),
        "FLOPS_NAMESPACE": NAMESPACE,
        "MINIO_ENDPOINT": s3.endpoint,
        "MINIO_ACCESS_KEY": s3.access_key,
        "MINIO_SECRET_KEY": s3.secret_key,
        "MINIO_SECURE": "false",
        "FLOPS_BUCKET": "t-" + uuid.uuid4().hex[:12],
    }


class Bed:
    """A running bot plus handles on everything it talks to."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession, github: GitHubEmulator,
                 kube: KubeEmulator, s3: S3Server, settings: Settings, sleeps: RecordingSleep) -> None:
        self.server = server
        self.session = session
        self.github = github
        self.kube = kube
        self.s3 = s3
        self.settings = settings
        self.sleeps = sleeps

    @property
    def deps(self) -> Deps:
        return self.server.app[DEPS]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def deliver(self, event: str, data: dict[str, Any] | bytes, *, secret: str | None = SECRET,
                      delivery: str | None = None, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        sent = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/test"}
        if secret is not None:
            sent["X-Hub-Signature-256"] = sign(body, secret)
        sent.update(headers or {})
        async with self.session.post(self.url("/webhook"), data=body, headers=sent) as response:
            await response.read()
            return response

    async def settle(self) -> None:
        """Wait until every accepted delivery was processed and every report was posted."""
        await asyncio.wait_for(self.server.app[DISPATCHER].idle(), 20)
        await asyncio.wait_for(self.server.app[TRACKER].idle(), 20)

    async def tracked(self) -> None:
        await asyncio.wait_for(self.server.app[TRACKER].synced.wait(), 20)


BedFactory = Callable[..., Awaitable[Bed]]


@pytest.fixture
async def make_bed(env: dict[str, str], github: GitHubEmulator, kube: KubeEmulator,
                   s3: S3Server) -> AsyncIterator[BedFactory]:
    """Start a bot (more than once in a test = a restart: stop the old one first)."""
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**overrides: str) -> Bed:
        # the redelivery loop's pass on start would race the calls a test counts: tests run its passes
        # themselves (tests/test_redeliver.py); `python -m bot serve` in tests runs it as shipped
        settings = from_env({**env, "FLOPS_REDELIVER_INTERVAL": "0", **overrides})
        sleeps = RecordingSleep()
        app = build_app(settings, policy=RetryPolicy(sleep=sleeps), drain_seconds=5, watch_seconds=30, queue_poll=0.2)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        bed = Bed(server, session, github, kube, s3, settings, sleeps)
        await bed.tracked()
        return bed

    yield start
    for server, session in started:
        await session.close()
        await server.close()


@pytest.fixture
async def bed(make_bed: BedFactory, github: GitHubEmulator) -> Bed:
    github.add_installation(INSTALLATION, "Codertocat", ["Codertocat/Hello-World"])
    return await make_bed()
