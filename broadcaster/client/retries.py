"""Retrying a publish without ever publishing it twice: keys of our own, and backoff.
One `Retries` serves a publisher's sync and async shells alike."""

from __future__ import annotations

import itertools
import random
import secrets
import threading
from collections.abc import Sequence

from broadcaster.core.publication import Publication

MAX_PENDING = 1000  # chunks a token stream buffers before it waits for its sender


class KeyMaker:
    """Idempotency keys unique to one publisher object: a random prefix and a counter.

    A retry reuses the keys of the attempt it repeats, so Redis publishes each message at
    most once however often it is sent.
    """

    def __init__(self) -> None:
        self._prefix = f"py-{secrets.token_urlsafe(9)}-"
        self._counter = itertools.count(1)
        self._lock = threading.Lock()  # a sync publisher may be shared between threads

    def __call__(self) -> str:
        """The next key."""
        with self._lock:
            return f"{self._prefix}{next(self._counter):x}"


class Retries:
    """How one publisher retries: with `retries` (0: never), every message carries an
    idempotency key (its own, or one made here), and a batch that failed with one of the
    publisher's retryable errors is sent again with the same keys, after a backoff."""

    def __init__(self, retries: int) -> None:
        self._retries = retries
        self._keys = KeyMaker()

    def keyed(self, batch: Sequence[Publication]) -> Sequence[Publication]:
        """`batch` as every attempt sends it: each message with its key, when retrying."""
        if not self._retries:
            return batch
        return [publication.keyed(self._keys()) for publication in batch]

    def delay(self, attempt: int, failure: BaseException) -> float:
        """Seconds before attempt `attempt + 1`, after a retryable `failure` of attempt
        `attempt` (0-based); raises `failure` once the retries are spent."""
        if attempt >= self._retries:
            raise failure
        return backoff(attempt)


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (0-based): 0.1, 0.2, 0.4 ... up to 2, jittered."""
    return min(0.1 * 2.0**attempt, 2.0) * random.uniform(0.5, 1.0)
