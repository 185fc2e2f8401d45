"""The records the bot keeps in its bucket, typed: raw JSON only at the S3 edge.

A `BuildRecord` is written when an image built (`builds/<owner>/<repo>/<sha>/<image>.json`, and the
branch's `latest` pointer), or when a content-addressed image reused an earlier build with the same
inputs (`reused_from`), and read by deploys, `/redeploy` and federated runs. Its JSON keys are a
stored format: records written by earlier versions read back unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.core.config import DeployTarget


class RecordError(ValueError):
    """A stored record without the documented shape (hand-edited, truncated, another version)."""


@dataclass(frozen=True)
class BuildRecord:
    repo: str
    sha: str
    image: str
    ref: str  # the pushed branch; "" for PR builds and re-runs of no branch
    tag: str
    destination: str  # registry/name:tag
    digest: str  # sha256:...
    job: str
    built_at: str
    deploy_targets: tuple[DeployTarget, ...] = ()  # of the config the build ran with
    push_images: tuple[str, ...] = ()  # every image the push built (a deploy waits for all of them)
    fast_forward_of: str = ""  # the branch head this push fast-forwarded from
    inputs: str = ""  # a content-addressed image's inputs hash (sha256 hex); "" without `inputs`
    reused_from: str = ""  # the commit whose build this one reuses (inputs unchanged); "" when built

    @property
    def reference(self) -> str:
        """What deploys write: pinned by digest."""
        return f"{self.destination}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "sha": self.sha, "image": self.image, "ref": self.ref, "tag": self.tag,
                "destination": self.destination, "digest": self.digest, "reference": self.reference,
                "job": self.job, "built_at": self.built_at, "deploy_targets": targets_json(self.deploy_targets),
                "push_images": ",".join(self.push_images), "fast_forward_of": self.fast_forward_of,
                "inputs": self.inputs, "reused_from": self.reused_from}

    @classmethod
    def from_json(cls, data: object) -> BuildRecord:
        if not isinstance(data, dict):
            raise RecordError("a build record is a JSON object")
        try:
            return cls(**{key: _text(data, key) for key in _REQUIRED},
                       ref=_text(data, "ref", ""), built_at=_text(data, "built_at", ""),
                       deploy_targets=targets_from_json(_text(data, "deploy_targets", "[]")),
                       push_images=tuple(n for n in _text(data, "push_images", "").split(",") if n),
                       fast_forward_of=_text(data, "fast_forward_of", ""), inputs=_text(data, "inputs", ""),
                       reused_from=_text(data, "reused_from", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"not a build record: {exc}") from None


_REQUIRED = ("repo", "sha", "image", "tag", "destination", "digest", "job")


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise RecordError(f"`{key}` is missing or not a string")
    return value


def targets_json(targets: tuple[DeployTarget, ...] | list[DeployTarget]) -> str:
    """Deploy targets as compact JSON (a Job annotation and the build record's `deploy_targets`)."""
    return json.dumps([t.to_json() for t in targets], separators=(",", ":"))


def targets_from_json(text: str) -> tuple[DeployTarget, ...]:
    data = json.loads(text or "[]")
    if not isinstance(data, list):
        raise RecordError("deploy targets are a JSON list")
    return tuple(DeployTarget.from_json(item) for item in data)
