"""`.github/flops-deploy.yml`: what a config repository lets each source repository deploy."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.config import ConfigError
from bot.core.config.consent import entry_to_add, file_to_add, parse_consent

EXAMPLE = (Path(__file__).resolve().parent.parent / "examples" / "flops-deploy.yml").read_text()


@pytest.mark.parametrize(("repo", "ref", "file", "allowed"), [
    ("acme/fl-app", "main", "dev/cronjob.yaml", True),
    ("ACME/fl-app", "main", "staging/a.yaml", True),           # GitHub names are case-insensitive
    ("acme/fl-app", "main", "staging/sub/a.yaml", False),      # `*` stays in one directory
    ("acme/fl-app", "feature", "dev/cronjob.yaml", False),     # another branch of the same repository
    ("acme/fl-app", "main", "prod/cronjob.yaml", False),       # prod is for tags only
    ("acme/fl-app", "refs/tags/v1.2.0", "prod/cronjob.yaml", True),
    ("acme/fl-app", "refs/tags/nightly", "prod/cronjob.yaml", False),
    ("acme/fl-app", "refs/tags/v1.2.0", "dev/cronjob.yaml", False),  # the dev entry names no tags
    ("acme/other", "main", "dev/cronjob.yaml", False),
    ("acme/fl-app", "", "dev/cronjob.yaml", False),            # a build of no branch (a pull request's)
])
def test_the_example_allows_exactly_what_it_says(repo: str, ref: str, file: str, allowed: bool) -> None:
    assert parse_consent(EXAMPLE).permits(repo, ref, file, default_branch="main") is allowed


def test_without_branches_the_source_default_branch_is_allowed() -> None:
    consent = parse_consent("version: 1\nallow:\n  - {repo: acme/app, paths: ['**']}\n")
    assert consent.permits("acme/app", "trunk", "x.yaml", default_branch="trunk")
    assert not consent.permits("acme/app", "main", "x.yaml", default_branch="trunk")


@pytest.mark.parametrize(("text", "where"), [
    ("allow: []\n", "version"),
    ("version: 2\nallow: []\n", "version"),
    ("version: 1\n", "allow"),
    ("version: 1\nallow:\n  - repo: acme/app\n", "allow[0].paths"),
    ("version: 1\nallow:\n  - {repo: acme, paths: [a]}\n", "allow[0].repo"),
    ("version: 1\nallow:\n  - {repo: acme/app, paths: [../x]}\n", "allow[0].paths[0]"),
    ("version: 1\nallow:\n  - {repo: acme/app, paths: [a], file: b}\n", "allow[0].file"),
    ("version: 1\nallow: {repo: acme/app}\n", "allow"),
])
def test_a_wrong_file_names_the_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_consent(text)
    assert where in [p.path for p in exc.value.problems], exc.value.problems


@pytest.mark.parametrize("ref", ["main", "release/2.0", "refs/tags/v1.0"])
def test_the_entry_to_add_is_valid_and_allows_that_deploy(ref: str) -> None:
    consent = parse_consent(file_to_add("acme/app", ref, "dev/a b.yaml"))
    assert consent.permits("acme/app", ref, "dev/a b.yaml", default_branch="other")
    assert not consent.permits("acme/app", ref, "dev/other.yaml", default_branch="other")
    assert entry_to_add("acme/app", ref, "dev/a b.yaml") in file_to_add("acme/app", ref, "dev/a b.yaml")
