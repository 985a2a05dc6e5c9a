"""Test doubles for the transport layer."""

from __future__ import annotations

import asyncio


class FakeTransport(asyncio.Transport):
    """Records writes; can pretend to be closed or backed up."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.backlog = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.backlog
