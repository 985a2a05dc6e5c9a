"""Who may do what: JWTs for subscribing and publishing, the publish token for publishing."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broadcaster.core.identity import Identity
from broadcaster.node.replies import Refused

COOKIE = "broadcaster_token"


class AuthError(Refused):
    """A request's token is missing, invalid, expired, or does not cover its channels."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: channel patterns with `*` wildcards, until `expires`
    (its `exp`, in seconds since the epoch). Counting a channel's subscribers (`GET
    /presence`) takes `subscribe` or `presence`. `claims` are the token's, for what
    only some endpoints read (a subscriber's `sub` and `info`: `identity`)."""

    subscribe: tuple[str, ...]
    publish: tuple[str, ...]
    expires: float
    presence: tuple[str, ...] = ()
    claims: Mapping[str, object] = field(default_factory=dict)

    def identity(self) -> Identity | None:
        """Who the subscriber is (None without `sub`); raises AuthError (401) for a `sub`
        or `info` presence cannot hold."""
        try:
            return Identity.from_claims(self.claims)
        except ValueError as exc:
            raise AuthError(401, f"invalid token: {exc}") from None


class Authenticator:
    """Verifies JWTs signed with the shared secret (HS256) or by the public key's owner,
    and the publish token."""

    def __init__(
        self,
        secret: str | None,
        public_key: str | None,
        publish_token: str | None = None,
        origins: tuple[str, ...] = (),
    ) -> None:
        self._origins = frozenset(origins)
        self._keys: list[tuple[str | rsa.RSAPublicKey | ec.EllipticCurvePublicKey, list[str]]]
        self._keys = []
        if secret:
            self._keys.append((secret, ["HS256"]))
        if public_key:
            # One algorithm per key, named by the key itself: a token labelled ES256 meets
            # an RSA key with a 401, never a crash inside the signature check.
            key = load_public_key(public_key)
            self._keys.append((key, ["RS256" if isinstance(key, rsa.RSAPublicKey) else "ES256"]))
        self._publish_bearer = f"Bearer {publish_token}".encode() if publish_token else None

    @property
    def enabled(self) -> bool:
        """Whether JWTs are required (to subscribe, and to publish without the publish token)."""
        return bool(self._keys)

    @property
    def publishing_protected(self) -> bool:
        """Whether publishing needs a credential: the publish token or a JWT."""
        return self._publish_bearer is not None or self.enabled

    def publish_patterns(self, request: web.Request) -> tuple[str, ...]:
        """The channels the request may publish on: all of them with the publish token,
        the `publish` claim with a JWT. Raises AuthError (401) when neither holds.

        Every endpoint that publishes or queues (POST /publish, POST /demo/ask) asks here.
        A JWT from the cookie, which a browser sends by itself, also needs the request to
        come from an allowed origin (CSRF); raises AuthError (403) when it does not. A 401
        says how to authenticate (`WWW-Authenticate: Bearer`).
        """
        try:
            if self._publish_bearer is not None:
                given = request.headers.get("Authorization", "").encode("utf-8", "replace")
                if hmac.compare_digest(given, self._publish_bearer):
                    return ("*",)
                if not self.enabled:
                    raise AuthError(401, "missing or wrong bearer token")
            grant = self.grant(request)
        except AuthError as refused:
            refused.headers["WWW-Authenticate"] = "Bearer"
            raise
        if _from_cookie(request):
            self._check_same_site(request)
        return grant.publish

    def _check_same_site(self, request: web.Request) -> None:
        """A cookie-authenticated change must come from this node's own origin or a
        configured one, as JSON (which a cross-site form or `no-cors` fetch cannot send
        without a preflight)."""
        origin = request.headers.get("Origin")
        if origin is None:
            raise AuthError(403, "a request authenticated by cookie must carry an Origin header")
        if origin not in self._origins and urlsplit(origin).netloc != request.host:
            raise AuthError(403, f"origin {origin!r} may not publish with the cookie")
        if request.content_type != "application/json":
            raise AuthError(
                403, "a request authenticated by cookie must send Content-Type: application/json"
            )

    def grant(self, request: web.Request) -> Grant:
        """Verify the request's token; raises AuthError (401) when it does not hold."""
        token = token_from(request)
        if token is None:
            raise AuthError(
                401, f"missing token: send Authorization: Bearer, the {COOKIE} cookie, or ?token="
            )
        claims = self._verify(token)
        expires = claims["exp"]  # required, and checked by PyJWT
        if not isinstance(expires, int | float):
            raise AuthError(401, "invalid token: exp must be a number")
        return Grant(
            _patterns(claims, "subscribe"),
            _patterns(claims, "publish"),
            expires,
            _patterns(claims, "presence"),
            claims,
        )

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
        if not any(matches(p, channel) for p in patterns):
            raise AuthError(403, f"token does not allow {action} on channel {channel!r}")


def matches(pattern: str, channel: str) -> bool:
    """Whether `channel` matches `pattern`, where `*` stands for any run of characters.

    Linear in the channel's length, however many `*` the pattern holds: the parts between
    them are found left to right, each at its first place after the previous one (for
    `*`-only patterns the first fit never needs undoing). A backtracking regex took
    seconds for `*.*.*.*.public` against a 200-character channel, with the loop blocked.
    """
    first, *middle = pattern.split("*")
    if not middle:
        return pattern == channel
    last = middle.pop()
    end = len(channel) - len(last)
    if end < len(first) or not channel.startswith(first) or not channel.endswith(last):
        return False
    position = len(first)
    for part in middle:
        found = channel.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def reaches(pattern: str, prefix: str) -> bool:
    """Whether some channel starting with `prefix` matches `pattern`: its text before the
    first `*` agrees with `prefix` as far as both go (the `*` takes the rest)."""
    first, star, _ = pattern.partition("*")
    if not star:
        return pattern.startswith(prefix)
    return first.startswith(prefix) or prefix.startswith(first)


def load_public_key(pem: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The RSA or EC public key in `pem`; raises ValueError saying what is wrong."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"is not a PEM public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("must be an RSA (RS256) or EC (ES256) public key")
    return key


def token_from(request: web.Request) -> str | None:
    """The token from the Authorization header, the cookie, or the query (least safe)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip() or None
    return request.cookies.get(COOKIE) or request.query.get("token") or None


def _from_cookie(request: web.Request) -> bool:
    """Whether `token_from` takes the cookie (no bearer header, a cookie)."""
    by_header = request.headers.get("Authorization", "").startswith("Bearer ")
    return not by_header and bool(request.cookies.get(COOKIE))


def _patterns(claims: dict[str, object], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise AuthError(401, f"invalid token: claim {name!r} must be a list of channel patterns")
    return tuple(value)
