"""The names `sse_publish` gives its keys and pub/sub channels, in one place for Python
(`library.lua` follows the same rules, and the tests hold the two together)."""

from __future__ import annotations

from dataclasses import dataclass

from broadcaster.core.channels import group_of
from broadcaster.core.message import DURABLE


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Where a channel's sequence keeps its keys.

    On a single Redis every channel shares one sequence, under `prefix`: `sse:meta`,
    `sse:gaps`, `sse:history:<channel>`. On a Redis Cluster (`clustered`) each group (a
    channel's `{tag}`, or the channel itself) has its own, under `<prefix>{<group>}:`, so
    all its keys and pub/sub channels lie in the group's slot.
    """

    prefix: str
    clustered: bool = False

    def of(self, channel: str) -> str:
        """What the names of `channel`'s sequence begin with."""
        if self.clustered:
            return f"{self.prefix}{{{group_of(channel)}}}:"
        return self.prefix

    def meta(self, channel: str) -> str:
        """The hash of the sequence's head (`ms`, `seq`, `epoch`, `replid`)."""
        return self.of(channel) + "meta"

    def gaps(self, channel: str) -> str:
        """The list of the sequence's failover gaps."""
        return self.of(channel) + "gaps"

    def history(self, channel: str) -> str:
        """The stream that holds `channel`'s history."""
        return f"{self.of(channel)}history:{channel}"

    def presence(self, channel: str) -> str:
        """The hash of `channel`'s subscriber counts: a field per node process. On a Redis
        Cluster it lies in the channel's group's slot, like the channel's other keys."""
        return f"{self.of(channel)}presence:{channel}"

    def who(self, channel: str) -> str:
        """The sorted set of `channel`'s identified subscribers (`presence.lua`), in the
        channel's group's slot on a Redis Cluster."""
        return f"{self.of(channel)}who:{channel}"

    def processes(self) -> str:
        """The set of node processes that tell presence (swept once dead), under the
        `{presence}` tag on a Redis Cluster, beside their liveness keys."""
        if self.clustered:
            return f"{self.prefix}{{presence}}:processes"
        return f"{self.prefix}processes"

    def owned(self, process: str) -> str:
        """The set of channels a process has subscribers on (what a sweep of it cleans).
        On a Redis Cluster it is tagged by the process, so processes spread over shards."""
        if self.clustered:
            return f"{self.prefix}{{{process}}}:owned"
        return f"{self.prefix}owned:{process}"

    def alive(self, process: str) -> str:
        """The key that says a node process is alive (it expires unless refreshed). On a
        Redis Cluster every process's lies under one tag, `{presence}`, so a read of many
        is one MGET on one shard."""
        if self.clustered:
            return f"{self.prefix}{{presence}}:alive:{process}"
        return f"{self.prefix}alive:{process}"

    def touched(self, channel: str, idempotency_key: str | None) -> list[str]:
        """Every key a publish on `channel` touches, in the order `sse_publish` takes them
        declared after the channel."""
        space = self.of(channel)
        names = [f"{space}meta", f"{space}history:{channel}", f"{space}gaps"]
        if idempotency_key is not None:
            names += [f"{space}idemcount:{channel}", f"{space}idem:{channel} {idempotency_key}"]
        return names

    def pubsub(self, channel: str) -> tuple[str, str]:
        """`channel`'s two pub/sub channels: raw publishes, and durable envelopes."""
        space = self.of(channel)
        return space + channel, space + DURABLE + channel
