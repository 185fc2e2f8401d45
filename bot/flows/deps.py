"""What handlers get instead of module-level clients: passed in by the dispatcher."""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gidgethub.abc import GitHubAPI

from bot.core.records import BuildRecord
from bot.platform.artifacts import Artifacts
from bot.platform.github import GitHubApp, Permissions
from bot.platform.kube import Kube
from bot.platform.metrics import Metrics
from bot.platform.retry import RetryPolicy
from bot.platform.settings import Settings

# Called with the build record after an image built successfully (the deploy flow listens here).
AfterBuild = Callable[[GitHubAPI, "Deps", BuildRecord], Awaitable[None]]


@dataclass
class Deps:
    settings: Settings
    github: GitHubApp
    kube: Kube
    artifacts: Artifacts
    metrics: Metrics
    after_build: list[AfterBuild] = field(default_factory=list)
    permissions: Permissions = field(default_factory=Permissions)
    policy: RetryPolicy = field(default_factory=RetryPolicy)  # waits before another try (GitHub, deploy conflicts)
    started: float = field(default_factory=time.time)  # this process's start: what is older, a dead one left
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)  # per key: work of one object in turn, here
    identity: str = field(default_factory=lambda: f"flops-bot-{secrets.token_hex(3)}")  # this process, among replicas
