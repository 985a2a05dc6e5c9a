"""Refusals as users read them: a status and a one-line plain-text reason."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError


def error(status: int, reason: str, **headers: str) -> web.Response:
    """A plain-text error answer: the status and a one-line reason."""
    return web.Response(status=status, text=reason + "\n", headers=headers)


def invalid(exc: ValidationError) -> web.Response:
    """400 naming the first invalid field of a request body and what is wrong with it."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return error(400, f"{where}: {first['msg'].removeprefix('Value error, ')}")
