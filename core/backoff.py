"""Exponential retry delays, shared by everything that reconnects (the fleet link, cameras)."""

from __future__ import annotations

import random


class Backoff:
    """Delays min_s, 2·min_s, … up to max_s (seconds), each shortened by up to `jitter` (a fraction) at
    random so a fleet does not reconnect in lockstep after a server restart; reset() after a success."""

    def __init__(self, min_s: float, max_s: float, jitter: float = 0.2) -> None:
        self.min_s, self.max_s = min_s, max(min_s, max_s)
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        delay = min(self.max_s, self.min_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return float(delay * random.uniform(1.0 - self.jitter, 1.0))  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self.failures = 0
