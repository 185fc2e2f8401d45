"""`.github/flops-deploy.yml`: a config repository's consent to the deploys flops-bot commits to it.

```yaml
version: 1
allow:
  - repo: acme/fl-app          # source repository (owner/name)
    branches: [main]           # its branches whose builds may deploy here; default: its default branch
    tags: ["v*"]               # its tags whose builds may deploy here; default: none
    paths: ["dev/**", "staging/*.yaml"]   # files it may edit (the rules of images[].paths)
```

The file is read from the deploy target's branch, so changing it goes through that branch's
protection like any other change of the config repository. Sans-I/O, validated like flops.yml.
"""
from __future__ import annotations

from dataclasses import dataclass

from bot.core.config.fields import _branch, _github_repo, _path_pattern, _tag_pattern, _version
from bot.core.config.loading import load_yaml
from bot.core.config.model import ConfigError
from bot.core.config.paths import path_matches, tag_matches
from bot.core.config.schema import _Node, _string_list

CONSENT_PATH = ".github/flops-deploy.yml"
TAG_REF = "refs/tags/"
_ENTRY = ("repo", "branches", "tags", "paths")


@dataclass(frozen=True, slots=True)
class Allow:
    repo: str
    paths: tuple[str, ...]
    branches: tuple[str, ...] | None = None  # None: the source repository's default branch
    tags: tuple[str, ...] = ()

    def permits(self, repo: str, ref: str, file: str, default_branch: str) -> bool:
        """May a build of `ref` (a branch name, or `refs/tags/<tag>`) of `repo` edit `file`?"""
        if repo.lower() != self.repo.lower() or not any(path_matches(p, file) for p in self.paths):
            return False
        if ref.startswith(TAG_REF):
            return tag_matches(ref[len(TAG_REF):], self.tags)
        return ref in (self.branches if self.branches is not None else (default_branch,))


@dataclass(frozen=True, slots=True)
class Consent:
    allow: tuple[Allow, ...]

    def permits(self, repo: str, ref: str, file: str, default_branch: str) -> bool:
        return any(entry.permits(repo, ref, file, default_branch) for entry in self.allow)


def parse_consent(text: str) -> Consent:
    """Validate a whole flops-deploy.yml; raises `ConfigError` naming every problem."""
    top = _Node(load_yaml(text), "", [])
    top.mapping(("version", "allow"), required=("version", "allow"))
    top.get("version", _version, 1)
    entries = [_allow(node) for node in top.child("allow").items()] if "allow" in top.value else []
    if top.problems:
        raise ConfigError(top.problems)
    return Consent(tuple(entry for entry in entries if entry is not None))


def _allow(node: _Node) -> Allow | None:
    if not node.mapping(_ENTRY, required=("repo", "paths"), hint=" like `{repo: acme/fl-app, paths: [dev/**]}`"):
        return None
    branches = _string_list(node, "branches", _branch) if "branches" in node.value else None  # []: tags only
    return Allow(repo=node.get("repo", _github_repo, ""), paths=_string_list(node, "paths", _path_pattern, non_empty=True),
                 branches=branches, tags=_string_list(node, "tags", _tag_pattern))


def entry_to_add(repo: str, ref: str, file: str) -> str:
    """The `allow` entry that lets a build of `ref` of `repo` edit `file`, as YAML to paste."""
    refs = f"    tags: [\"{ref[len(TAG_REF):]}\"]" if ref.startswith(TAG_REF) else f"    branches: [\"{ref}\"]"
    return f"  - repo: {repo}\n{refs}\n    paths: [\"{file}\"]\n"


def file_to_add(repo: str, ref: str, file: str) -> str:
    """A whole flops-deploy.yml holding just that entry."""
    return f"version: 1\nallow:\n{entry_to_add(repo, ref, file)}"


__all__ = ["CONSENT_PATH", "Allow", "Consent", "entry_to_add", "file_to_add", "parse_consent"]
