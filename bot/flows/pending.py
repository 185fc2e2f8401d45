"""Federated runs waiting for their images: the request kept in the bot's bucket (FLOPS_BUCKET, which
no Job can write) while the images build, and checked when read back (never trusted blindly)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from bot.core.config import FederatedConfig, Resources
from bot.flows.deps import Deps
from bot.platform import logs

log = logs.get_logger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """One asked-for run, before it has images; kept in S3 while its images build."""

    repo: str
    sha: str
    installation_id: int
    pr: int | None
    rounds: int
    clients: int
    trigger: str
    attempt: str
    server_image: str
    client_image: str
    port: int
    timeout: int
    resources: Resources
    branch: str = ""  # on_push: images this push did not rebuild come from this branch's newest build
    fresh: tuple[str, ...] = ()  # images that must be the builds of `sha` itself
    admission_timeout: int = 30 * 60  # under Kueue: the whole run admitted by then, else cancelled

    @classmethod
    def of(cls, fed: FederatedConfig, *, repo: str, sha: str, installation_id: int, pr: int | None,
           rounds: int, clients: int, trigger: str, attempt: str, branch: str = "",
           fresh: tuple[str, ...] | None = None) -> RunRequest:
        images = tuple(dict.fromkeys((fed.server_image, fed.client_image)))
        return cls(repo=repo, sha=sha, installation_id=installation_id, pr=pr, rounds=rounds, clients=clients,
                   trigger=trigger, attempt=attempt, server_image=fed.server_image, client_image=fed.client_image,
                   port=fed.server_port, timeout=fed.timeout, resources=fed.resources, branch=branch,
                   fresh=images if fresh is None else fresh, admission_timeout=fed.admission_timeout)

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.server_image, self.client_image)))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> RunRequest | None:
        """The stored request, or None unless it has exactly the shape `to_json` writes (read back from
        S3, it is checked, never trusted blindly)."""
        if not isinstance(data, dict) or not _REQUIRED <= data.keys() <= _FIELDS:
            return None
        fresh, res = data.get("fresh") or [], data["resources"]
        typed = (all(type(data[k]) is t for k, t in _TYPES.items() if k in data)
                 and (data["pr"] is None or type(data["pr"]) is int)
                 and isinstance(fresh, list) and all(isinstance(n, str) for n in fresh)
                 and isinstance(res, dict) and res.keys() <= {"cpu", "memory", "gpu"}
                 and all(res.get(k) is None or isinstance(res[k], str) for k in ("cpu", "memory"))
                 and type(res.get("gpu", 0)) is int)
        if not typed:
            return None
        return cls(**{**data, "resources": Resources(**res), "fresh": tuple(fresh)})


_TYPES = {"repo": str, "sha": str, "installation_id": int, "rounds": int, "clients": int, "trigger": str,
          "attempt": str, "server_image": str, "client_image": str, "port": int, "timeout": int, "branch": str,
          "admission_timeout": int}
_FIELDS = frozenset(f.name for f in fields(RunRequest))
_REQUIRED = _FIELDS - {"branch", "fresh", "admission_timeout"}  # requests stored before those keys


def pending_key(repo: str, sha: str) -> str:
    """A run waiting for its images to build (S3: survives restarts)."""
    return f"pending/{repo}/{sha}/train.json"


async def drop_pending(deps: Deps, repo: str, sha: str) -> bool:
    """Forget the run waiting for the images of `sha`; True if there was one."""
    key = pending_key(repo, sha)
    if not await deps.artifacts.exists(key):
        return False
    await deps.artifacts.delete(key)
    return True


async def read_pending(deps: Deps, repo: str, sha: str) -> RunRequest | None:
    """The run waiting for the images of `sha`, if one is kept and has the shape flops-bot writes."""
    key = pending_key(repo, sha)
    try:
        data = await deps.artifacts.get_json(key)
    except ValueError:  # not JSON: not a request the bot wrote
        data = False
    if data is None:
        return None
    request = RunRequest.from_json(data)
    if request is None or (request.repo, request.sha) != (repo, sha):
        log.warning("pending run request ignored: not the shape flops-bot writes", extra={"key": key})
        return None
    return request
