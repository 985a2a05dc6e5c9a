"""Running a process's main coroutine on uvloop where it exists."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop does not build everywhere
    uvloop = None  # type: ignore[assignment]


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` on uvloop where it exists."""
    if uvloop is None:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
