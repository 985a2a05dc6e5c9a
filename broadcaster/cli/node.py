"""`broadcaster serve` (a node) and `broadcaster demo` (the chat demo's producer)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from broadcaster import parts
from broadcaster.cli.options import SERVE_FLAGS, load_settings, warn_unknown_variables
from broadcaster.demo.producer import run_producer
from broadcaster.node import logs
from broadcaster.node.ports import ListenError
from broadcaster.node.process.server import serve
from broadcaster.node.process.supervisor import supervise
from broadcaster.node.runloop import run

Commands = Any  # argparse's subparsers action


def add_serve(commands: Commands) -> None:
    """The `serve` subcommand: every flag overrides its BROADCASTER_ variable."""
    parser = commands.add_parser("serve", help="run a node")
    for field, (kind, text) in SERVE_FLAGS.items():
        parser.add_argument("--" + field.replace("_", "-"), dest=field, type=kind, help=text)
    parser.set_defaults(run=_serve)


def add_demo(commands: Commands) -> None:
    """The `demo` subcommand."""
    parser = commands.add_parser(
        "demo", help="answer the chat demo's questions queued in Redis (a cluster's producer)"
    )
    parser.add_argument("--redis-url", dest="redis_url", help="default BROADCASTER_REDIS_URL")
    parser.set_defaults(run=_demo)


def _serve(args: argparse.Namespace) -> None:
    settings = load_settings(**{field: getattr(args, field) for field in SERVE_FLAGS})
    logs.configure(settings)
    warn_unknown_variables()
    try:
        if settings.workers > 1:
            supervise(settings, parts(settings))
        else:
            run(serve(settings, parts=parts(settings)))
    except ListenError as exc:
        sys.exit(f"broadcaster: {exc}")


def _demo(args: argparse.Namespace) -> None:
    settings = load_settings(redis_url=args.redis_url)
    logs.configure(settings)
    warn_unknown_variables()
    if settings.redis_url is None:
        sys.exit("broadcaster: the demo producer needs BROADCASTER_REDIS_URL or --redis-url")
    run(run_producer(settings, settings, settings.redis_url))
