"""Publishers over a fake transport: what they publish goes into a list."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from broadcaster import Publication, Publisher, SyncPublisher


class Flaky(ConnectionError):
    """A connection error on the way back: the batch was published, the reply lost."""


class FakeAsync(Publisher):
    """Publishes into a list; optionally loses the first `lose` replies, like a network."""

    retryable = (Flaky,)

    def __init__(self, lose: int = 0, retries: int = 3, latency: float = 0) -> None:
        super().__init__(retries=retries)
        self.published: dict[str, str] = {}  # key -> id, as the server remembers
        self.log: list[Publication] = []
        self.batches: list[int] = []
        self._lose = lose
        self._latency = latency

    async def aclose(self) -> None:
        pass

    async def _send(self, batch: Sequence[Publication]) -> list[str]:
        await asyncio.sleep(self._latency)
        self.batches.append(len(batch))
        ids = []
        for publication in batch:
            key = publication.idempotency_key
            if key is None or key not in self.published:
                self.log.append(publication)
                sent = f"1-{len(self.log)}"
                if key is not None:
                    self.published[key] = sent
            ids.append(self.published[key] if key is not None else sent)
        if self._lose:
            self._lose -= 1
            raise Flaky("connection reset")
        return ids


class FakeSync(SyncPublisher):
    """Publishes into a list (from a stream's sending thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Publication] = []
        self.batches: list[int] = []

    def close(self) -> None:
        pass

    def _send(self, batch: Sequence[Publication]) -> list[str]:
        self.batches.append(len(batch))
        self.log += batch
        return [f"1-{n}" for n in range(len(self.log) - len(batch) + 1, len(self.log) + 1)]
