"""POST /publish: one message, or an array in order, each optionally idempotent."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from broadcaster.brokers.protocol import BrokerUnavailable, ChannelClosed, KeyLimit, NotConfirmed
from broadcaster.core.channels import check_channel
from broadcaster.core.metrics import PublishError
from broadcaster.core.publication import Publication, check_key, encode_data
from broadcaster.core.sse import check_field
from broadcaster.node.auth import require
from broadcaster.node.bodies import read_body
from broadcaster.node.replies import Refused, invalid_reason
from broadcaster.node.state import AUTH, BROKER, METRICS, SETTINGS

MAX_BATCH = 1000
routes = web.RouteTableDef()

# The `broadcaster_publish_errors_total` reason of a refusal, by its status.
_ERRORS: dict[int, PublishError] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    408: "timeout",
    409: "closed",
    413: "too_large",
    429: "too_many",
    503: "unavailable",
}


class _NotConfirmed(Refused):
    """A 503 because too few replicas confirmed the publish (counted apart)."""


class PublishRequest(BaseModel):
    """One message of a POST /publish body."""

    model_config = ConfigDict(extra="forbid")

    channel: str
    data: Any
    event: str | None = None
    idempotency_key: str | None = None
    close: StrictBool = False
    reopen: StrictBool = False

    @field_validator("data")
    @classmethod
    def _data(cls, value: Any) -> str:
        return encode_data(value)  # serialised once, here: a bad value is a 400

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return check_channel(value)

    @field_validator("event")
    @classmethod
    def _event(cls, value: str | None) -> str | None:
        return None if value is None else check_field("event", value)

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else check_key(value)

    def publication(self, key: str | None) -> Publication:
        """What to publish: non-string data as its JSON text; its own key, else `key`."""
        return Publication(
            self.channel,
            self.data,
            self.event or None,
            self.idempotency_key or key,
            self.close,
            self.reopen,
        )


_ONE = TypeAdapter(PublishRequest)
_MANY = TypeAdapter(list[PublishRequest])


@routes.post("/publish")
async def publish(request: web.Request) -> web.Response:
    """Publish to every subscriber on every node; an array is published in order.

    `"close": true` makes a message its channel's last; a closed channel takes a publish
    again only with `"reopen": true` (else 409).

    An `Idempotency-Key` header names a single message, or, for an array, message `i` as
    `<key>:<i>`; a message's own `idempotency_key` wins. A repeated key on the same channel
    within the window answers the first publish's id and publishes nothing.
    """
    try:
        batch, many = await _admit(request)
        ids = await _publish(request.app, batch)
    except Refused as refused:
        request.app[METRICS].counts.publish_errors[_error(refused)] += 1
        return refused.response()
    request.app[METRICS].counts.publishes += len(ids)
    answer: Any = ids if many else {"channel": batch[0].channel, "id": ids[0]}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def _admit(request: web.Request) -> tuple[list[Publication], bool]:
    """What the request may publish, and whether it came as an array; raises Refused if
    nothing. Authentication comes before the body is read."""
    auth = request.app[AUTH]
    if not auth.publishing_protected:
        raise Refused(403, "HTTP publish is disabled: set BROADCASTER_PUBLISH_TOKEN to enable it")
    allowed = auth.publish_patterns(request)
    limit = request.app[SETTINGS].max_message_bytes
    raw = await read_body(
        request, limit, f"body is over BROADCASTER_MAX_MESSAGE_BYTES ({limit} bytes)"
    )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict | list):
        raise Refused(400, 'body must be a JSON object {"channel": ..., "data": ...} or an array')
    many = isinstance(body, list)
    if many and not 0 < len(body) <= MAX_BATCH:
        raise Refused(400, f"an array body holds 1 to {MAX_BATCH} messages")
    key = request.headers.get("Idempotency-Key", "").strip().strip('"') or None
    try:
        requests = _MANY.validate_python(body) if many else [_ONE.validate_python(body)]
        keys = [None if key is None else check_key(f"{key}:{n}" if many else key)
                for n in range(len(requests))]  # fmt: skip
    except ValidationError as exc:
        raise Refused(400, invalid_reason(exc)) from None
    except ValueError as exc:
        raise Refused(400, f"Idempotency-Key: {exc}") from None
    batch = [r.publication(k) for r, k in zip(requests, keys, strict=True)]
    require(allowed, [publication.channel for publication in batch], "publish")
    return batch, many


async def _publish(app: web.Application, batch: list[Publication]) -> list[str]:
    """The ids of `batch`, published; raises Refused when the broker cannot."""
    try:
        return await app[BROKER].publish(batch)
    except KeyLimit as exc:
        raise Refused(429, str(exc), **{"Retry-After": "60"}) from None
    except ChannelClosed as exc:
        raise Refused(409, str(exc)) from None
    except NotConfirmed as exc:
        raise _NotConfirmed(503, str(exc), **{"Retry-After": "1"}) from None
    except BrokerUnavailable as exc:
        raise Refused(503, str(exc), **{"Retry-After": "1"}) from None


def _error(refused: Refused) -> PublishError:
    if isinstance(refused, _NotConfirmed):
        return "not_replicated"
    return _ERRORS.get(refused.status, "bad_request")
