"""Typed keys for what a node keeps in its aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from broadcaster.brokers.protocol import Broker
from broadcaster.core.metrics import Metrics
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.presence import PresenceTracker
from broadcaster.node.auth import Authenticator
from broadcaster.node.limits import ConnectionLimiter, IPNetwork
from broadcaster.node.settings import NodeSettings


class Exposition(Protocol):
    """What `/metrics` answers: this node's metrics, or every worker's."""

    async def __call__(self) -> bytes: ...


@dataclass(slots=True)
class NodeState:
    """What changes over a node's life."""

    draining: bool = False


SETTINGS = web.AppKey("settings", NodeSettings)
BROKER = web.AppKey("broker", Broker)
HUB = web.AppKey("hub", Hub)
PRESENCE = web.AppKey("presence", PresenceTracker)
STATE = web.AppKey("state", NodeState)
METRICS = web.AppKey("metrics", Metrics)
EXPOSITION: web.AppKey[Exposition] = web.AppKey("exposition")
LIMITER = web.AppKey("limiter", ConnectionLimiter)
AUTH = web.AppKey("auth", Authenticator)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[IPNetwork, ...])
