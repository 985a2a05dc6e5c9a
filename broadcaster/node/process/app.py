"""The application factory: settings in, a wired aiohttp application out."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from redis.asyncio import RedisCluster

from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.protocol import Broker, PresenceStore
from broadcaster.brokers.redis import RedisBroker
from broadcaster.brokers.redis.client import connect_publisher, detect_cluster, is_cluster
from broadcaster.brokers.redis.cluster_broker import ClusterBroker
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.link_metrics import link_families
from broadcaster.brokers.redis.presence import RedisPresence
from broadcaster.core.metrics import Counts, Metrics
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.presence import PresenceTracker
from broadcaster.node import presence, probes, publish
from broadcaster.node.auth import Authenticator, matches
from broadcaster.node.bodies import UPLOADS, Uploads
from broadcaster.node.cors import add_cors_headers, preflight
from broadcaster.node.events import endpoint
from broadcaster.node.limits import ConnectionLimiter, parse_networks
from broadcaster.node.settings import NodeSettings
from broadcaster.node.state import (
    AUTH,
    BROKER,
    EXPOSITION,
    HUB,
    LIMITER,
    METRICS,
    PRESENCE,
    SETTINGS,
    STATE,
    TRUSTED_PROXIES,
    NodeState,
)


def make_broker(settings: NodeSettings, counts: Counts | None = None) -> Broker:
    """The embedded broker without REDIS_URL, the Redis Cluster broker for a cluster
    (`redis+cluster://`, or a cluster node's address), else the Redis broker."""
    config, max_replay_bytes = settings.library_config(), settings.max_replay_bytes
    if settings.redis_url is None:
        return MemoryBroker(config=config, max_replay_bytes=max_replay_bytes)
    url = detect_cluster(settings.redis_url)
    broker = ClusterBroker if is_cluster(url) else RedisBroker
    return broker.from_url(url, counts=counts, config=config, max_replay_bytes=max_replay_bytes)


def make_presence(
    settings: NodeSettings, announces: Callable[[str], bool] | None
) -> PresenceStore | None:
    """Where this process tells its subscriber counts: nowhere on the embedded broker (its
    counts are the node's), else Redis, under a name new at each start (node id, pid, and
    a random part the store adds): a restarted process never takes over a dead one's."""
    if settings.redis_url is None:
        return None
    client = connect_publisher(settings.redis_url)
    clustered = isinstance(client, RedisCluster)
    keys = KeySpace(settings.library_config().prefix, clustered=clustered)
    name = f"{settings.node_id}:{os.getpid()}"
    return RedisPresence(client, keys, name, announces=announces)


def announcing(patterns: tuple[str, ...]) -> Callable[[str], bool] | None:
    """Whether a channel's joins and leaves are announced (`PRESENCE_EVENTS`); None when
    no channel's are."""
    if not patterns:
        return None
    return lambda channel: any(matches(pattern, channel) for pattern in patterns)


Part = Callable[[web.Application], None]
"""An optional part of a node, which adds its routes and lifecycle to the application
(the demo is one: `broadcaster.create_app` gives a node every part)."""


def create_app(
    settings: NodeSettings, broker: Broker | None = None, *, parts: Sequence[Part] = ()
) -> web.Application:
    """Build a node's application with `parts`; `broker` overrides the one the settings
    choose."""
    app = web.Application(client_max_size=settings.max_message_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics = Metrics()

    async def exposition() -> bytes:
        return metrics.exposition()

    app[EXPOSITION] = exposition
    app[BROKER] = broker if broker is not None else make_broker(settings, metrics.counts)
    app[HUB] = hub = Hub(
        app[BROKER],
        heartbeat_interval=settings.heartbeat_interval,
        metrics=metrics,
        retry_ms=settings.retry_ms,
        max_age=settings.max_connection_age,
    )
    metrics.gauge("broadcaster_connections", "Open SSE connections.", lambda: hub.stream_count)
    metrics.gauge(
        "broadcaster_max_connections",
        "Open SSE connections this node takes (BROADCASTER_MAX_CONNECTIONS).",
        lambda: settings.max_connections,
    )
    metrics.gauge(
        "broadcaster_channels", "Channels with local subscribers.", lambda: hub.channel_count
    )
    announces = announcing(settings.presence_events)
    app[PRESENCE] = PresenceTracker(hub, make_presence(settings, announces), announces=announces)
    metrics.gauge(
        "broadcaster_redis_connected",
        "Whether the broker is connected.",
        lambda: float(app[BROKER].connected),
    )
    broker = app[BROKER]
    if isinstance(broker, ClusterBroker):
        metrics.collect_also(lambda: link_families(broker.links()))
    app[STATE] = NodeState()
    app[LIMITER] = ConnectionLimiter(settings.max_connections, settings.max_connections_per_ip)
    app[AUTH] = Authenticator(
        settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
        settings.jwt_public_key,
        settings.publish_token.get_secret_value() if settings.publish_token else None,
        settings.cors_origins,
    )
    app[TRUSTED_PROXIES] = parse_networks(settings.trusted_proxies)
    app[UPLOADS] = uploads = Uploads()
    metrics.gauge("broadcaster_uploads", "Request bodies being read.", lambda: uploads.count)
    app.add_routes(endpoint.routes)
    app.add_routes(probes.routes)
    app.add_routes(publish.routes)
    app.add_routes(presence.routes)
    for part in parts:
        part(app)
    for path in ("/events", "/publish", "/presence"):
        app.router.add_route("OPTIONS", path, preflight)
    app.on_response_prepare.append(add_cors_headers)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_drain)
    return app


async def _drain(app: web.Application) -> None:
    # Runs before the server waits for handlers, so open streams end at once.
    app[STATE].draining = True
    app[HUB].close_all("shutdown")


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub, broker = app[HUB], app[BROKER]
    await broker.start(hub.deliver)
    hub.start()
    await app[PRESENCE].start()
    yield
    await app[PRESENCE].stop()
    await hub.stop()
    await broker.close()
