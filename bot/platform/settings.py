"""Runtime settings from the environment: read once, validated, every problem named.

The variable names are public contract (docs, deploy/ manifests, the setup page write them).
"""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.config.fields import _queue_name, parse_duration

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_KANIKO_IMAGE = "ghcr.io/osscontainertools/kaniko:v1.25.2"
DEFAULT_FETCH_IMAGE = "python:3.13.5-slim-bookworm"  # unpacks the source; tarfile with the 2025 fixes
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_UNVERIFIED_BYTES = 64 * 1024 * 1024
DEFAULT_UNVERIFIED_PER_CLIENT = 32 * 1024 * 1024  # one 25 MiB delivery fits; half the default total
DEFAULT_UNVERIFIED_MIN_RATE = 64 * 1024  # bytes/s
DEFAULT_REDELIVER_INTERVAL = 300  # FLOPS_REDELIVER_INTERVAL: seconds between passes of the redelivery loop
DEFAULT_REDELIVER_MAX = 100  # FLOPS_REDELIVER_MAX: redeliveries requested per pass at most
DEFAULT_SETUP_HOST = "127.0.0.1"  # the setup page: reached through `kubectl port-forward` or on the workstation
SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?")
SIZE_UNITS = {None: 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}

# The variables that make up "App credentials": with none of them set, `serve` starts the
# App-registration setup page instead of failing.
APP_CREDENTIALS = ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_PRIVATE_KEY_PATH", "GITHUB_WEBHOOK_SECRET")


class SettingsError(Exception):
    """Raised with one line per problem; `serve` prints them and exits non-zero."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class S3Settings:
    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    secure: bool
    bucket: str  # the bot's own state: only the bot's key may write (or read) it
    runs_bucket: str = ""  # workload outputs (FLOPS_OUTPUT): the only bucket the Jobs' key may write


@dataclass(frozen=True)
class Settings:
    app_id: int
    private_key: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    api_url: str
    namespace: str
    kubeconfig: str | None  # None: in-cluster config
    s3: S3Settings
    registry_secret: str
    s3_secret: str
    kaniko_image: str
    fetch_image: str
    job_service_account: str
    public_url: str | None
    port: int
    queue_size: int
    workers: int
    log_level: str = "INFO"
    pr_registry_secret: str = "registry-credentials-pr"  # pull-request builds push with it (to pr_registry)
    unverified_bytes: int = DEFAULT_UNVERIFIED_BYTES  # held in total by webhook requests not verified yet
    unverified_per_client: int = DEFAULT_UNVERIFIED_PER_CLIENT  # of those, by the requests of one client address
    unverified_min_rate: int = DEFAULT_UNVERIFIED_MIN_RATE  # bytes/s an unverified body must keep up after a grace
    webhook_proxy_url: str | None = field(default=None, repr=False)  # a smee.io channel: who knows it reads deliveries
    default_queue: str | None = None  # FLOPS_DEFAULT_QUEUE: the Kueue LocalQueue of Jobs whose flops.yml names none
    redeliver_interval: int = DEFAULT_REDELIVER_INTERVAL  # seconds; 0: failed deliveries are not redelivered
    redeliver_max: int = DEFAULT_REDELIVER_MAX
    lease: LeaseSettings = field(default_factory=lambda: LeaseSettings())
    signin: SignIn = field(default_factory=lambda: SignIn())


@dataclass(frozen=True)
class SignIn:
    """Run pages (`/runs`): "Sign in with GitHub" through the App's OAuth user flow, and who may read them."""

    client_id: str = ""  # GITHUB_CLIENT_ID (the App's, from the manifest conversion); "" : sign-in is off
    client_secret: str = field(default="", repr=False)  # GITHUB_CLIENT_SECRET; also keys the session cookies
    runs_public: bool = True  # FLOPS_RUNS_PUBLIC: a public repository's run pages need no sign-in

    @property
    def enabled(self) -> bool:
        return bool(self.client_id and self.client_secret)


@dataclass(frozen=True)
class LeaseSettings:
    """The Lease `flops-bot-leader` that elects the one replica reporting Jobs (bot/platform/leader.py)."""

    namespace: str = "flops-system"  # the bot's own namespace (POD_NAMESPACE), not the Jobs'
    pod_name: str = ""  # POD_NAME (downward API); the holder identity is this plus a random suffix
    pod_unique: bool = False  # POD_NAME was set: no other live process has this name (not so for a host name)
    duration: int = 15  # seconds a holder that stopped renewing keeps the lease
    renew: int = 10  # seconds between a holder's renewals
    retry: int = 2  # seconds between a follower's looks at the lease


def needs_setup(env: Mapping[str, str]) -> bool:
    """True when no App credential is configured at all: first run, show the setup page."""
    return not any(env.get(name) for name in APP_CREDENTIALS)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings, or raise SettingsError naming every missing or malformed variable."""
    env = os.environ if env is None else env
    problems: list[str] = []

    def need(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            problems.append(f"{name} is not set")
        return value

    app_id = _int_setting(env, "GITHUB_APP_ID", None, problems)
    private_key = _private_key(env, problems)
    secrets = tuple(s.strip() for s in need("GITHUB_WEBHOOK_SECRET").split(",") if s.strip())
    s3 = _s3_settings(env, need, problems)
    kubeconfig = _kubeconfig(env, problems)
    port = _int_setting(env, "PORT", 8080, problems)
    settings = Settings(
        app_id=app_id or 0,
        private_key=private_key,
        webhook_secrets=secrets,
        api_url=(env.get("GITHUB_API_URL", "").strip() or DEFAULT_API_URL).rstrip("/"),
        namespace=env.get("FLOPS_NAMESPACE", "").strip() or "flops",
        kubeconfig=kubeconfig,
        s3=s3,
        registry_secret=env.get("FLOPS_REGISTRY_SECRET", "").strip() or "registry-credentials",
        pr_registry_secret=env.get("FLOPS_PR_REGISTRY_SECRET", "").strip() or "registry-credentials-pr",
        s3_secret=env.get("FLOPS_S3_SECRET", "").strip() or "flops-s3",
        kaniko_image=env.get("FLOPS_KANIKO_IMAGE", "").strip() or DEFAULT_KANIKO_IMAGE,
        fetch_image=env.get("FLOPS_FETCH_IMAGE", "").strip() or DEFAULT_FETCH_IMAGE,
        job_service_account=env.get("FLOPS_JOB_SERVICE_ACCOUNT", "").strip() or "flops-jobs",
        public_url=(env.get("FLOPS_PUBLIC_URL", "").strip().rstrip("/") or None),
        port=port or 8080,
        queue_size=_int_setting(env, "FLOPS_QUEUE_SIZE", 1000, problems) or 1000,
        workers=_int_setting(env, "FLOPS_WORKERS", 8, problems) or 8,
        log_level=_log_level(env, problems),
        unverified_bytes=_size_setting(env, "FLOPS_UNVERIFIED_BYTES", DEFAULT_UNVERIFIED_BYTES, problems),
        unverified_per_client=_size_setting(env, "FLOPS_UNVERIFIED_PER_CLIENT", DEFAULT_UNVERIFIED_PER_CLIENT,
                                            problems),
        unverified_min_rate=_size_setting(env, "FLOPS_UNVERIFIED_MIN_RATE", DEFAULT_UNVERIFIED_MIN_RATE, problems),
        webhook_proxy_url=_proxy_url(env, problems),
        default_queue=_queue_setting(env, problems),
        redeliver_interval=_interval_setting(env, "FLOPS_REDELIVER_INTERVAL", DEFAULT_REDELIVER_INTERVAL, problems),
        redeliver_max=_int_setting(env, "FLOPS_REDELIVER_MAX", DEFAULT_REDELIVER_MAX, problems) or DEFAULT_REDELIVER_MAX,
        lease=_lease_settings(env, problems),
        signin=_signin_settings(env, problems),
    )
    if problems:
        raise SettingsError(problems)
    return settings


def _s3_settings(env: Mapping[str, str], need: Callable[[str], str], problems: list[str]) -> S3Settings:
    """The bot's S3 user and its two buckets: its own state (FLOPS_BUCKET) and the Jobs' outputs."""
    bucket = env.get("FLOPS_BUCKET", "").strip() or "flops"
    s3 = S3Settings(
        endpoint=need("MINIO_ENDPOINT"),
        access_key=need("MINIO_ACCESS_KEY"),
        secret_key=need("MINIO_SECRET_KEY"),
        secure=_bool_setting(env, "MINIO_SECURE", True, problems),
        bucket=bucket,
        runs_bucket=env.get("FLOPS_RUNS_BUCKET", "").strip() or f"{bucket}-runs",
    )
    if s3.runs_bucket == s3.bucket:
        problems.append(f"FLOPS_RUNS_BUCKET must differ from FLOPS_BUCKET ({bucket!r}): Jobs may write the runs "
                        "bucket, never the bot's state")
    return s3


def _lease_settings(env: Mapping[str, str], problems: list[str]) -> LeaseSettings:
    lease = LeaseSettings(namespace=env.get("POD_NAMESPACE", "").strip() or "flops-system",
                          pod_name=env.get("POD_NAME", "").strip() or socket.gethostname(),
                          pod_unique=bool(env.get("POD_NAME", "").strip()),
                          duration=_interval_setting(env, "FLOPS_LEASE_DURATION", 15, problems) or 15,
                          renew=_interval_setting(env, "FLOPS_LEASE_RENEW", 10, problems) or 10,
                          retry=_interval_setting(env, "FLOPS_LEASE_RETRY", 2, problems) or 2)
    if not lease.retry <= lease.renew < lease.duration:
        problems.append("the lease needs FLOPS_LEASE_RETRY <= FLOPS_LEASE_RENEW < FLOPS_LEASE_DURATION, got "
                        f"{lease.retry}, {lease.renew}, {lease.duration}")
    return lease


def _signin_settings(env: Mapping[str, str], problems: list[str]) -> SignIn:
    signin = SignIn(client_id=env.get("GITHUB_CLIENT_ID", "").strip(),
                    client_secret=env.get("GITHUB_CLIENT_SECRET", "").strip(),
                    runs_public=_bool_setting(env, "FLOPS_RUNS_PUBLIC", True, problems))
    if bool(signin.client_id) != bool(signin.client_secret):
        problems.append("GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET go together (the App's OAuth client, written by "
                        "the setup page): set both for sign-in on the run pages, or neither")
    return signin


def _proxy_url(env: Mapping[str, str], problems: list[str]) -> str | None:
    """`WEBHOOK_PROXY_URL`: a smee.io-style channel (`https://smee.io/<channel>`) to read deliveries from."""
    raw = env.get("WEBHOOK_PROXY_URL", "").strip()
    if not raw:
        return None
    if not raw.startswith(("https://", "http://")) or any(c.isspace() for c in raw):
        problems.append("WEBHOOK_PROXY_URL must be an http(s) URL such as https://smee.io/<channel>")
        return None
    return raw


def setup_mode_from(env: Mapping[str, str]) -> tuple[str, int, str]:
    """`FLOPS_SETUP_HOST` (default 127.0.0.1), `PORT` and `LOG_LEVEL` alone (the setup page needs
    nothing else), or SettingsError naming what is wrong."""
    problems: list[str] = []
    host = env.get("FLOPS_SETUP_HOST", "").strip() or DEFAULT_SETUP_HOST
    port = _int_setting(env, "PORT", 8080, problems)
    level = _log_level(env, problems)
    if problems:
        raise SettingsError(problems)
    return host, port or 8080, level


def _log_level(env: Mapping[str, str], problems: list[str]) -> str:
    raw = env.get("LOG_LEVEL", "").strip().upper()
    if not raw:
        return "INFO"
    if raw not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {env['LOG_LEVEL'].strip()!r}")
        return "INFO"
    return raw


def _queue_setting(env: Mapping[str, str], problems: list[str]) -> str | None:
    raw = env.get("FLOPS_DEFAULT_QUEUE", "").strip()
    if not raw:
        return None
    try:
        return _queue_name(raw)
    except ValueError as exc:
        problems.append(f"FLOPS_DEFAULT_QUEUE: {exc}")
        return None


def _int_setting(env: Mapping[str, str], name: str, default: int | None, problems: list[str]) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            problems.append(f"{name} is not set")
        return default
    if not raw.isdigit() or int(raw) <= 0:
        problems.append(f"{name} must be a positive integer, got {raw!r}")
        return default
    return int(raw)


def _interval_setting(env: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    """Seconds as `90s`, `5m`, `1h` or a bare number; `0` turns the loop off."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw == "0":
        return 0
    try:
        return parse_duration(raw)
    except ValueError as exc:
        problems.append(f"{name} must be a duration like 30s, 5m or 1h (0 turns it off): {exc}")
        return default


def _size_setting(env: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    """A size in bytes: plain (`67108864`) or with a binary suffix (`512KiB`, `64MiB`, `1GiB`)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    match = SIZE.fullmatch(raw)
    if match is None or int(match[1]) <= 0:
        problems.append(f"{name} must be a positive size in bytes, optionally with KiB, MiB or GiB, got {raw!r}")
        return default
    return int(match[1]) * SIZE_UNITS[match[2]]


def _bool_setting(env: Mapping[str, str], name: str, default: bool, problems: list[str]) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    problems.append(f"{name} must be true or false, got {raw!r}")
    return default


def _private_key(env: Mapping[str, str], problems: list[str]) -> str:
    inline = env.get("GITHUB_PRIVATE_KEY", "").strip()
    path = env.get("GITHUB_PRIVATE_KEY_PATH", "").strip()
    if inline:
        # Env files and Helm values often carry the PEM with literal "\n"; `kubectl create secret
        # --from-env-file` and `docker --env-file` keep the env file's quotes (a PEM has none).
        if len(inline) > 1 and inline[0] == inline[-1] and inline[0] in "\"'":
            inline = inline[1:-1].strip()
        return inline.replace("\\n", "\n")
    if not path:
        problems.append("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH is not set")
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        problems.append(f"GITHUB_PRIVATE_KEY_PATH names {path!r}, which cannot be read: {exc.strerror}")
        return ""


def _kubeconfig(env: Mapping[str, str], problems: list[str]) -> str | None:
    if env.get("KUBERNETES_SERVICE_HOST"):
        return None
    path = env.get("KUBECONFIG", "").strip()
    if not path:
        default = Path.home() / ".kube" / "config"
        if default.is_file():
            return str(default)
        problems.append("not running in a cluster and KUBECONFIG is not set")
        return None
    first = path.split(os.pathsep)[0]
    if not Path(first).is_file():
        problems.append(f"KUBECONFIG names {first!r}, which does not exist")
    return first
