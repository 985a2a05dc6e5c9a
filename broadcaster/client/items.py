"""What `publish_many` accepts, and what a stream publishes around its chunks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from broadcaster.client.errors import one_line
from broadcaster.core.channels import check_channel
from broadcaster.core.publication import Data, Publication
from broadcaster.core.sse import check_field

Item = Publication | tuple[str, Data] | tuple[str, Data, str | None]
"""A message for `publish_many`: a Publication, or (channel, data[, event])."""


def publications(items: Iterable[Item]) -> list[Publication]:
    """Validated publications, in order; raises ValueError for any bad one (none is sent)."""
    return [item if isinstance(item, Publication) else Publication.of(*item) for item in items]


@dataclass(frozen=True, slots=True)
class StreamShape:
    """A token stream on one channel: the type of its chunks, and of its last event;
    whether that last event closes the channel, and whether its events may reopen it."""

    channel: str
    event: str
    done_event: str
    close: bool = True
    reopen: bool = False

    @classmethod
    def of(
        cls, channel: str, event: str, done_event: str, *, close: bool = True, reopen: bool = False
    ) -> StreamShape:
        """Validated; raises ValueError."""
        return cls(
            check_channel(channel),
            check_field("event", event),
            check_field("event", done_event),
            close,
            reopen,
        )

    def chunk(self, data: str) -> Publication:
        """An event of the stream, its data already serialised (a chunk, or merged ones)."""
        return Publication(self.channel, data, self.event, reopen=self.reopen)

    def done(self, counts: dict[str, int]) -> Publication:
        """The last event: how many chunks (and, coalesced, events) came before it."""
        data = orjson.dumps(counts).decode()
        return Publication(self.channel, data, self.done_event, None, self.close, self.reopen)

    def error(self, failure: BaseException) -> Publication:
        """The last event when the source failed: an `error` event with a one-line reason."""
        return Publication(self.channel, one_line(failure), "error", None, self.close, self.reopen)
