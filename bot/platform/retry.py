"""The one retry policy: how often to try again and how long to wait between tries.

Every wait the bot makes before trying again goes through a `RetryPolicy`: GitHub calls (5xx,
unreachable, rate limits), a deploy's commit that lost a race with another commit, the tracker's
reconnect to the Kubernetes API. The sleep is injected, so tests record waits instead of waiting.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_rate_limit_wait: float = 120.0  # longer waits fail fast: the event is retried by redelivery
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def backoff(self, attempt: int) -> float:
        """Exponential with jitter: about base_delay * 2^(attempt-1), at most max_delay."""
        delay = min(self.max_delay, self.base_delay * 2 ** (min(attempt, 64) - 1))
        return float(delay * (0.5 + random.random() / 2))

    async def pause(self, attempt: int) -> None:
        """Wait before try `attempt + 1`."""
        await self.sleep(self.backoff(attempt))


RECONNECT = RetryPolicy(attempts=0, base_delay=1.0, max_delay=30.0)  # the tracker: forever, at most 30 s apart
