"""What manifests are made of for the bot: errors, found values, changes, edits, image references."""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

CONFIG = ".github/flops.yml"
WORKLOADS = {  # kind -> path of its pod spec
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
CONTAINER_LISTS = ("initContainers", "containers")
KUSTOMIZE_KINDS = ("Kustomization", "Component")
BREAKS = "\r\n\x85\u2028\u2029"
_DOCUMENT_START = re.compile(f"---(?=[ \t{BREAKS}]|\\Z)")  # and at column 0: see _at_line_start
_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"
_NOT_PRINTABLE = re.compile("[^\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


class ManifestError(Exception):
    """The manifest cannot be edited as asked; the message says what to change."""


@dataclass(frozen=True)
class Change:
    document: int  # 0-based index in the stream
    path: str      # ".spec.template.spec.containers[0].image", or "images[0].newTag" in a kustomization
    line: int      # 1-based, in the edited text
    old: str       # "" when the key was inserted
    new: str


@dataclass(frozen=True)
class Edit:
    text: str
    changes: tuple[Change, ...]  # only the scalars whose value actually changed


@dataclass(frozen=True)
class Found:
    document: int  # 0-based index in the stream
    path: str
    line: int      # 1-based
    value: str     # the image reference; for a kustomization entry "<newName or name>:<newTag>@<digest>"


@dataclass(frozen=True)
class _Document:
    index: int
    offset: int  # of the composed chunk in the whole text
    root: yaml.Node | None


@dataclass(frozen=True)
class _Slot:
    """One scalar to set (or, when `node` is None, one key to insert into `entry`)."""
    document: _Document
    path: str
    want: str
    node: yaml.ScalarNode | None
    flow: bool = False  # inside a flow collection (`[...]`, `{...}`)
    entry: yaml.MappingNode | None = None
    key: str = ""


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    text: str
    slot: _Slot
    old: str


# --- image references -----------------------------------------------------------------------


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of `registry[:port]/path[:tag][@digest]`; absent parts are None."""
    name, at, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:] or None, digest if at and digest else None
    return name, None, digest if at and digest else None


def join_image(repository: str, tag: str | None, digest: str | None) -> str:
    return repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
