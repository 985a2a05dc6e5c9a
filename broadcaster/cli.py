"""The `broadcaster` command: serve a node, or publish a message."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import aiohttp
from pydantic import ValidationError
from redis.exceptions import RedisError

from . import cluster, logs
from .configs import ConfigError
from .demo.producer import run_producer
from .publisher import HttpPublisher, Publisher, PublishError, RedisPublisher
from .redis_client import connect
from .server import serve
from .settings import Settings, setting_name

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop does not build everywhere
    uvloop = None  # type: ignore[assignment]

# `serve` flags: each overrides the BROADCASTER_ variable of the same name.
SERVE_FLAGS: dict[str, tuple[type, str]] = {
    "redis_url": (str, "Redis URL; unset runs the embedded single-node broker"),
    "host": (str, "address to listen on (default 0.0.0.0)"),
    "port": (int, "port to listen on (default 8080)"),
    "heartbeat_interval": (float, "seconds of silence before a heartbeat comment (default 15)"),
    "retry_ms": (int, "reconnect delay hint sent to clients as retry: (default 3000)"),
    "channel_prefix": (str, "prefix of the Redis pub/sub channels (default sse:)"),
    "node_id": (str, "this node's name (default <hostname>:<port>)"),
    "max_channels_per_connection": (int, "channels one connection may follow (default 16)"),
    "max_message_bytes": (int, "largest accepted publish body (default 1048576)"),
    "max_pending_bytes": (int, "unsent bytes before a slow client is cut off (default 1048576)"),
    "history_maxlen": (int, "messages kept per channel for resume (default 1000)"),
    "history_ttl": (int, "seconds before an idle channel's history expires, 0 never (86400)"),
    "max_connections": (int, "open streams per node before 503 (default 10000)"),
    "max_connections_per_ip": (int, "open streams per client address before 429 (0: off)"),
    "trusted_proxies": (str, "comma-separated proxy addresses/CIDRs whose X-Forwarded-For counts"),
    "overload_response": (str, "error (503/429, default) or retry (200, jittered retry:, close)"),
    "jwt_public_key": (str, "PEM public key (or @path) for RS256/ES256 tokens"),
    "cors_origins": (str, "comma-separated origins allowed to subscribe and publish"),
    "demo": (str, "auto (on without Redis), on, or off: the demo answers on this node"),
    "demo_token_delay": (float, "seconds between demo tokens (default 0.05)"),
    "demo_prefix": (str, "the demo answers only on channels starting with this (default demo:)"),
    "demo_queue_max": (int, "demo questions waiting or being answered at once (default 100)"),
    "demo_job_ttl": (float, "seconds a queued demo question stays worth answering (default 60)"),
    "demo_asks_per_minute": (int, "demo questions per client address per minute (default 10)"),
    "max_connection_age": (float, "seconds (jittered) before a stream ends to rebalance; 0 off"),
    "header_timeout": (float, "seconds a connection may take to send its headers (default 10)"),
    "shutdown_timeout": (float, "seconds a stop may take (default 10)"),
    "log_level": (str, "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    "log_format": (str, "plain (default) or json, one object per line"),
    "access_log": (str, "on (all but /events, default), all, or off"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broadcaster", description="Horizontally scaled Server-Sent Events."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a node")
    for field, (kind, text) in SERVE_FLAGS.items():
        serve.add_argument("--" + field.replace("_", "-"), dest=field, type=kind, help=text)
    publish = commands.add_parser("publish", help="publish one message to every subscriber")
    publish.add_argument("channel")
    publish.add_argument("data", help="the event data; - reads it from standard input")
    publish.add_argument("--event", help="event type")
    publish.add_argument(
        "--url",
        help="publish through the node at this URL (POST /publish with BROADCASTER_PUBLISH_TOKEN);"
        " the default is Redis at BROADCASTER_REDIS_URL, or http://127.0.0.1:8080 without it",
    )
    publish.add_argument("--redis-url", dest="redis_url", help="publish through this Redis")
    cluster = commands.add_parser(
        "cluster", help="run Redis, N nodes and nginx (as in docker-compose.yml) locally"
    )
    cluster.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    cluster.add_argument("--port", type=int, default=8080, help="load balancer port (8080)")
    cluster.add_argument("--prometheus", action="store_true", help="also run Prometheus")
    cluster.add_argument(
        "--demo", action="store_true", help="also run the demo producer (broadcaster demo)"
    )
    cluster.add_argument(
        "--tls",
        action="store_true",
        help="also serve HTTPS and HTTP/2 (self-signed certificate) for browsers",
    )
    cluster.add_argument(
        "--tls-port", type=int, default=0, help="HTTPS port (implies --tls; default: a free one)"
    )
    demo_cmd = commands.add_parser(
        "demo", help="answer the chat demo's questions queued in Redis (a cluster's producer)"
    )
    demo_cmd.add_argument("--redis-url", dest="redis_url", help="default BROADCASTER_REDIS_URL")
    return parser


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and flags; an invalid value exits with one line."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        reason = first["msg"].removeprefix("Value error, ")
        flag = f" (--{field.replace('_', '-')})" if field in SERVE_FLAGS else ""
        sys.exit(f"broadcaster: invalid {setting_name(field)}{flag}: {reason}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `broadcaster` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        settings = load_settings(**{field: getattr(args, field) for field in SERVE_FLAGS})
        logs.configure(settings)
        _run(serve(settings))
    elif args.command == "cluster":
        try:
            cluster.run(
                args.nodes,
                args.port,
                args.prometheus,
                args.demo,
                tls=args.tls or args.tls_port != 0,
                tls_port=args.tls_port,
            )
        except (cluster.ClusterError, ConfigError) as exc:
            sys.exit(f"broadcaster: {exc}")
    elif args.command == "demo":
        settings = load_settings(redis_url=args.redis_url)
        logs.configure(settings)
        if settings.redis_url is None:
            sys.exit("broadcaster: the demo producer needs BROADCASTER_REDIS_URL or --redis-url")
        _run(run_producer(settings, settings.redis_url))
    else:
        settings = load_settings(redis_url=args.redis_url)
        # Like the shell's $(...), drop the newline that ends piped input.
        data = sys.stdin.read().removesuffix("\n") if args.data == "-" else args.data
        _run(_publish(settings, args.url, args.channel, data, args.event))


async def _publish(
    settings: Settings, url: str | None, channel: str, data: str, event: str | None
) -> None:
    publisher: Publisher
    if url is None and settings.redis_url is not None:
        publisher = RedisPublisher(
            connect(settings.redis_url),
            prefix=settings.channel_prefix,
            history_maxlen=settings.history_maxlen,
            history_ttl=settings.history_ttl,
        )
    else:
        token = settings.publish_token.get_secret_value() if settings.publish_token else ""
        publisher = HttpPublisher(url or "http://127.0.0.1:8080", token)
    try:
        message_id = await publisher.publish(channel, data, event)
    except (ValueError, PublishError) as exc:
        sys.exit(f"broadcaster: publish refused: {exc}")
    except (OSError, RedisError, aiohttp.ClientError) as exc:
        sys.exit(f"broadcaster: cannot publish: {exc}")
    finally:
        await publisher.aclose()
    print(message_id)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    if uvloop is None:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
