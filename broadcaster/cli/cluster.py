"""`broadcaster cluster`: the docker-compose topology as local processes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import broadcaster.cluster.run as cluster
from broadcaster.cluster.children import ClusterError
from broadcaster.cluster.configs import ConfigError
from broadcaster.cluster.redis_shards import refusal


def add(commands: Any) -> None:
    """The `cluster` subcommand."""
    parser = commands.add_parser(
        "cluster", help="run Redis, N nodes and nginx (as in docker-compose.yml) locally"
    )
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument("--port", type=int, default=8080, help="load balancer port (8080)")
    parser.add_argument("--prometheus", action="store_true", help="also run Prometheus")
    parser.add_argument(
        "--demo", action="store_true", help="also run the demo producer (broadcaster demo)"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also serve HTTPS and HTTP/2 (self-signed certificate) for browsers",
    )
    parser.add_argument(
        "--tls-port", type=int, default=0, help="HTTPS port (implies --tls; default: a free one)"
    )
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="also run a replica and three Sentinels; nodes find the primary through them",
    )
    parser.add_argument(
        "--redis-shards",
        type=int,
        metavar="N",
        help="run a Redis Cluster of N primaries, each with a replica, instead of one Redis "
        "(failover needs 3 or more)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    refused = refusal(args.redis_shards, sentinel=args.sentinel)
    if refused is not None:
        sys.exit(f"broadcaster: {refused}")
    try:
        cluster.run(
            cluster.Cluster(
                args.nodes,
                args.port,
                args.prometheus,
                args.demo,
                tls=args.tls or args.tls_port != 0,
                tls_port=args.tls_port,
                sentinel=args.sentinel,
                redis_shards=args.redis_shards or 0,
            )
        )
    except (ClusterError, ConfigError) as exc:
        sys.exit(f"broadcaster: {exc}")
