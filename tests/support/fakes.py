"""Test doubles for the transport layer."""

from __future__ import annotations

import asyncio


class FakeTransport(asyncio.Transport):
    """Records writes and how it was ended; can pretend to be closed or backed up."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.backlog = 0
        self.ended: str | None = None
        """`close` or `abort`, once called."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def close(self) -> None:
        self.ended = self.ended or "close"
        self.closing = True

    def abort(self) -> None:
        self.ended = self.ended or "abort"
        self.closing = True
