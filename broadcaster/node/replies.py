"""Refusals as users read them: a status and a one-line plain-text reason."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

# pydantic's words for "not an object", which name our model classes.
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


class Refused(Exception):
    """A request refused with a status and a one-line reason (raised where it is found,
    answered by the handler)."""

    def __init__(self, status: int, reason: str, **headers: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers

    def response(self) -> web.Response:
        """The answer to send."""
        return error(self.status, self.reason, **self.headers)


def error(status: int, reason: str, **headers: str) -> web.Response:
    """A plain-text error answer: the status and a one-line reason."""
    return web.Response(status=status, text=reason + "\n", headers=headers)


def invalid_reason(exc: ValidationError) -> str:
    """The first invalid part of a JSON body (`body`, `channel`, `body[1].data`) and what
    is wrong with it."""
    first = exc.errors()[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
    where = "body" + where if not where or where.startswith("[") else where[1:]
    if first["type"] in _NOT_AN_OBJECT:
        what = "must be a JSON object"
    else:
        what = first["msg"].removeprefix("Value error, ")
    return f"{where}: {what}"
