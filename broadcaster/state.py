"""Typed keys for what a node keeps in its aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .auth import Authenticator
from .broker import Broker
from .hub import Hub
from .limits import ConnectionLimiter, IPNetwork
from .metrics import Metrics
from .settings import Settings


@dataclass(slots=True)
class NodeState:
    """What changes over a node's life."""

    draining: bool = False


SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", Broker)
HUB = web.AppKey("hub", Hub)
STATE = web.AppKey("state", NodeState)
METRICS = web.AppKey("metrics", Metrics)
LIMITER = web.AppKey("limiter", ConnectionLimiter)
AUTH = web.AppKey("auth", Authenticator)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[IPNetwork, ...])
