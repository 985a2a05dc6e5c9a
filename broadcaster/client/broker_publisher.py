"""Publishing through a node's own broker (the embedded one included), for code that
runs inside the node, such as the chat demo."""

from __future__ import annotations

from collections.abc import Sequence

from broadcaster.brokers.protocol import Broker
from broadcaster.client.asynchronous import Publisher
from broadcaster.core.publication import Publication


class BrokerPublisher(Publisher):
    """The publisher surface over `Broker.publish`; no retries (the broker is local)."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(retries=0)
        self._broker = broker

    async def aclose(self) -> None:
        """Nothing to release: the broker belongs to the node."""

    async def _send(self, batch: Sequence[Publication]) -> list[str]:
        return await self._broker.publish(batch)
