"""JWT authorization: which channels a token may subscribe to and publish on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import jwt
from aiohttp import web

COOKIE = "broadcaster_token"


class AuthError(Exception):
    """A request's token is missing, invalid, expired, or does not cover its channels."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: channel patterns with `*` wildcards."""

    subscribe: tuple[str, ...]
    publish: tuple[str, ...]


class Authenticator:
    """Verifies tokens signed with the shared secret (HS256) or by the public key's owner."""

    def __init__(self, secret: str | None, public_key: str | None) -> None:
        self._keys: list[tuple[str, list[str]]] = []
        if secret:
            self._keys.append((secret, ["HS256"]))
        if public_key:
            self._keys.append((public_key, ["RS256", "ES256"]))

    @property
    def enabled(self) -> bool:
        """Whether tokens are required at all."""
        return bool(self._keys)

    def grant(self, request: web.Request) -> Grant:
        """Verify the request's token; raises AuthError (401) when it does not hold."""
        token = token_from(request)
        if token is None:
            raise AuthError(
                401, f"missing token: send Authorization: Bearer, the {COOKIE} cookie, or ?token="
            )
        claims = self._verify(token)
        return Grant(_patterns(claims, "subscribe"), _patterns(claims, "publish"))

    def _verify(self, token: str) -> dict[str, object]:
        error: jwt.InvalidTokenError | None = None
        for key, algorithms in self._keys:
            try:
                claims: dict[str, object] = jwt.decode(
                    token, key, algorithms=algorithms, options={"require": ["exp"]}
                )
                return claims
            except jwt.ExpiredSignatureError:
                raise AuthError(401, "token expired") from None
            except jwt.InvalidTokenError as exc:
                error = exc
        raise AuthError(401, f"invalid token: {error}")


def require(patterns: tuple[str, ...], channels: list[str], action: str) -> None:
    """Raise AuthError (403) unless every channel matches one of `patterns`."""
    for channel in channels:
        if not any(_pattern(p).fullmatch(channel) for p in patterns):
            raise AuthError(403, f"token does not allow {action} on channel {channel!r}")


def token_from(request: web.Request) -> str | None:
    """The token from the Authorization header, the cookie, or the query (least safe)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip() or None
    return request.cookies.get(COOKIE) or request.query.get("token") or None


def _patterns(claims: dict[str, object], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise AuthError(401, f"invalid token: claim {name!r} must be a list of channel patterns")
    return tuple(value)


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))
