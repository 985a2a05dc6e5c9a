"""What one worker knows of its siblings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Worker `index` of `len(sockets)`; each serves its own metrics on its socket there."""

    index: int
    sockets: tuple[str, ...]
