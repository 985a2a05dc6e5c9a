"""How a broker keeps messages and acknowledges publishes: one frozen object, built from
`Settings` in one place (`Settings.library_config`), given to either broker and to the
Redis publishers. On Redis these are the options of the `sse_publish` function library."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = re.compile(r"[A-Za-z0-9\-_.:@/=]{0,64}")
"""What a channel prefix may be: it is written into Redis keys and the library's code."""


@dataclass(frozen=True, slots=True)
class LibraryConfig:
    """The retention and acknowledgement options; each default is the node's default."""

    prefix: str = "sse:"
    """Prefix of every Redis key and pub/sub channel (unused by the embedded broker)."""
    history_maxlen: int = 1000
    """Messages kept per channel for resumes."""
    history_ttl: int = 86400
    """Seconds before an idle channel's history expires; 0 keeps it for good."""
    idempotency_window: float = 300
    """Seconds a publish's idempotency key is remembered."""
    replicas: int = 0
    """Replicas that must hold a publish before it is acknowledged (Redis `WAIT`)."""
    replica_timeout: float = 1.0
    """Seconds to wait for those replicas."""

    def __post_init__(self) -> None:
        if not PREFIX.fullmatch(self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: up to 64 of A-Z a-z 0-9 - _ . : @ / =")
        if self.history_maxlen < 1 or self.history_ttl < 0 or self.replicas < 0:
            raise ValueError(
                "history_maxlen must be positive, history_ttl and replicas not negative"
            )
        if self.idempotency_window <= 0 or self.replica_timeout <= 0:
            raise ValueError("idempotency_window and replica_timeout must be positive")


DEFAULT_CONFIG = LibraryConfig()
"""The node's defaults."""
