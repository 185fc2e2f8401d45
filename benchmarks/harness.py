"""What the benchmarks share: the test bed's servers, the bot's environment, figures and the machine.

The servers are the test bed's own (tests/emulators): the GitHub REST emulator, the Kubernetes API
emulator and a real S3 server (SeaweedFS), all on 127.0.0.1. Nothing here talks to any other address.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import conftest  # noqa: E402  - the test bed's Bed (deliver, settle, tracked) and constants
from tests.emulators.github import GitHubEmulator, make_app_key  # noqa: E402
from tests.emulators.kube import KubeEmulator  # noqa: E402
from tests.emulators.s3 import S3Server  # noqa: E402

PAYLOADS = ROOT / "tests" / "payloads"
APP_ID = conftest.APP_ID
INSTALLATION = conftest.INSTALLATION
SECRET = conftest.SECRET
NAMESPACE = conftest.NAMESPACE
REPO = "Codertocat/Hello-World"


def payload(name: str) -> dict[str, Any]:
    """A recorded GitHub payload (tests/payloads/<name>.json)."""
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def sign(body: bytes, secret: str = SECRET) -> str:
    """`X-Hub-Signature-256` exactly as GitHub computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Bed:
    github: GitHubEmulator
    kube: KubeEmulator
    s3: S3Server
    env: dict[str, str]
    workdir: Path


@asynccontextmanager
async def test_bed(prefix: str) -> AsyncIterator[Bed]:
    """GitHub emulator (this loop), Kubernetes emulator (own thread), SeaweedFS (own process), and the
    bot's environment pointing at them, exactly as an operator would set it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"flops-{prefix}-"))
    private, public = make_app_key()
    github = GitHubEmulator(app_id=APP_ID, public_key_pem=public)
    kube = KubeEmulator()
    s3 = S3Server(workdir / "s3")
    await github.start()
    await kube.start()
    try:
        s3.start()
        kubeconfig = workdir / "kubeconfig"
        kube.write_kubeconfig(kubeconfig)
        key = workdir / "app.pem"
        key.write_bytes(private)
        env = {
            "GITHUB_APP_ID": str(APP_ID), "GITHUB_PRIVATE_KEY_PATH": str(key), "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_API_URL": github.url, "KUBECONFIG": str(kubeconfig), "FLOPS_NAMESPACE": NAMESPACE,
            "MINIO_ENDPOINT": s3.endpoint, "MINIO_ACCESS_KEY": s3.access_key, "MINIO_SECRET_KEY": s3.secret_key,
            "MINIO_SECURE": "false", "FLOPS_BUCKET": "bench",
        }
        yield Bed(github, kube, s3, env, workdir)
    finally:
        s3.stop()
        await kube.stop()
        await github.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@asynccontextmanager
async def running_bot(bed: Bed, **overrides: str) -> AsyncIterator[conftest.Bed]:
    """The whole bot (`build_app`, default retry policy, logging as `serve` configures it) served on
    127.0.0.1 in this loop; returned once the tracker has listed the cluster. Leaving stops it."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from bot.__main__ import build_app, configure_logging
    from bot.platform.settings import from_env

    settings = from_env({**bed.env, **overrides})
    log_file = open(bed.workdir / "bot.log", "a")  # noqa: SIM115 - closed below; keeps the figures readable
    configure_logging(settings, log_file)  # as `serve` does: JSON at LOG_LEVEL (default INFO), not pytest's WARNING
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    bot = conftest.Bed(server, session, bed.github, bed.kube, bed.s3, settings, conftest.RecordingSleep())
    try:
        await bot.tracked()
        yield bot
    finally:
        await session.close()
        await server.close()
        logging.getLogger().handlers.clear()
        log_file.close()


class Timed(list):  # type: ignore[type-arg]
    """A list that also keeps `(time.monotonic(), item)` for every append: put in place of an
    emulator's record (`GitHubEmulator.calls`, `KubeEmulator.requests`) to see when each call happened."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items)
        self.timed: list[tuple[float, Any]] = [(0.0, item) for item in items]

    def append(self, item: Any) -> None:
        self.timed.append((time.monotonic(), item))
        super().append(item)


# --- figures -----------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """nproc, CPU model, memory, Python: printed with every run (the machine is shared and noisy)."""
    cpu = "unknown"
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    load = os.getloadavg()
    return (f"nproc {os.cpu_count()}, CPU {cpu}, memory {mem}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}, "
            f"load average {load[0]:.2f} at start")


async def wait_port(host: str, port: int, timeout: float = 30.0,
                    process: "asyncio.subprocess.Process | None" = None) -> None:
    """Until something accepts connections on host:port (bounded by `timeout`; the loop keeps serving)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.returncode is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- profiles --------------------------------------------------------------------------------------

async def py_spy(pid: int, seconds: float, out: Path) -> Path | None:
    """Sample a running process with py-spy for `seconds` into collapsed stacks; None without py-spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250",
        "--format", "raw", "--nonblocking", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.wait_for(proc.wait(), seconds + 60)
    return out if out.exists() else None


def summarize_stacks(path: Path, top: int = 15, only_thread: str | None = None) -> str:
    """Collapsed stacks -> the functions with the most samples, inclusive and self."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if only_thread and only_thread not in stack.split(";", 1)[0]:
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")[1:] if f]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; inclusive (time in the function and what it calls):"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {count / total:6.1%}  {frame}")
    lines.append("self (time in the function's own code):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {count / total:6.1%}  {frame}")
    return "\n".join(lines)


def _frame(text: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)' relative to site-packages or the repo."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", text)
    if not match:
        return text
    name, where = match.groups()
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"
