"""Retrying a publish without ever publishing it twice: keys of our own, and backoff."""

from __future__ import annotations

import itertools
import random
import secrets


class KeyMaker:
    """Idempotency keys unique to one publisher object: a random prefix and a counter.

    A retry reuses the keys of the attempt it repeats, so Redis publishes each message at
    most once however often it is sent.
    """

    def __init__(self) -> None:
        self._prefix = f"py-{secrets.token_urlsafe(9)}-"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        """The next key."""
        return f"{self._prefix}{next(self._counter):x}"


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (0-based): 0.1, 0.2, 0.4 ... up to 2, jittered."""
    return min(0.1 * 2.0**attempt, 2.0) * random.uniform(0.5, 1.0)
