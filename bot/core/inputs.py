"""Content-addressed images (`images[].inputs`): the hash of the files an image is made of.

An image with `inputs` is identified by the git blob ids of the files of a commit those globs
match (the same matcher and limits as `paths`), as GitHub's trees API lists them: nothing is
downloaded. The hash is the sha256 of the sorted `path NUL blob-id LF` lines; its first 12 hex
digits tag the image `in-<hash12>`. A commit whose hash has a successful build reuses its digest.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bot.core.config.paths import path_matches

TAG_PREFIX = "in-"
SHORT = 12
ENTRY_TYPES = ("blob", "commit")  # files and symbolic links; submodules (their pinned commit)


@dataclass(frozen=True)
class Inputs:
    """The matched files of one image at one commit, and their hash."""

    digest: str  # sha256 hex of the listing
    files: tuple[tuple[str, str], ...]  # (path, blob id), sorted

    @property
    def short(self) -> str:
        return self.digest[:SHORT]

    @property
    def tag(self) -> str:
        return TAG_PREFIX + self.short


@dataclass(frozen=True)
class Unhashed:
    """Why an image with `inputs` is built without looking for a reusable build."""

    reason: str


def hash_files(files: Iterable[tuple[str, str]]) -> Inputs:
    listing = tuple(sorted(files))
    body = "".join(f"{path}\0{blob}\n" for path, blob in listing)
    return Inputs(hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest(), listing)


def inputs_of(tree: dict[str, Any], patterns: tuple[str, ...]) -> Inputs | Unhashed:
    """The `inputs` of an image in a recursive trees API answer (`GET .../git/trees/<sha>?recursive=1`)."""
    if tree.get("truncated"):
        return Unhashed("GitHub truncated the commit's tree listing (the repository has too many files for "
                        "the trees API), so the `inputs` could not be hashed: the image is built.")
    matched = [(str(entry["path"]), str(entry["sha"])) for entry in tree.get("tree") or ()
               if entry.get("type") in ENTRY_TYPES and any(path_matches(p, str(entry["path"])) for p in patterns)]
    if not matched:
        listed = ", ".join(f"`{p}`" for p in patterns)
        return Unhashed(f"No file of this commit matches `inputs` ({listed}), so there is nothing to identify "
                        "the image by: it is built. Check the globs against the repository's paths.")
    return hash_files(matched)


def inputs_key(repo: str, registry: str, image: str, digest: str, *, ref: str = "", pr: int | None = None) -> str:
    """Where the successful build of `image` with these inputs is recorded: per registry, and per
    branch (or tag) or pull request, so a build reuses only builds its own ref made. A pull-request
    build (pushed to `pr_registry`) never stands in for a branch build, nor a `dev` build for a
    `main` one: whoever may push `dev` may not put an image on `main`'s deploys."""
    scope = f"pr/{pr}" if pr is not None else "ref/" + quote(ref, safe="")
    return f"builds/{repo}/inputs/{scope}/{quote(registry, safe='')}/{image}/{digest}.json"
