"""Why a publish (or a read of presence) did not happen."""

from __future__ import annotations


class PublishError(Exception):
    """A node refused a publish or a read of presence; `status` is its HTTP status, the
    message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class Unavailable(PublishError):
    """The node could not publish (or read presence) right now (502, 503, 504): worth
    retrying."""


def one_line(error: BaseException) -> str:
    """A one-line reason for an `error` event: the exception's type and first line."""
    text = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return reason[:500]
