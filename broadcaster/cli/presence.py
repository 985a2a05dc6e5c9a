"""`broadcaster presence`: how many subscribers channels have (and, with `--clients`, who),
as a node's `GET /presence` answers, printed as one line of JSON."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx
import orjson

from broadcaster.client import PublishError, SyncHttpPublisher
from broadcaster.client.subscriber import DEFAULT_URL


def add(commands: Any) -> None:
    """The `presence` subcommand."""
    parser = commands.add_parser(
        "presence",
        help="print how many subscribers channels have, as a node's GET /presence answers",
        description="Print a node's GET /presence answer as one line of JSON:"
        ' {"channels": {<channel>: <subscribers>}, "scope": "cluster" | "node"}.'
        " It always asks a node over HTTP (never Redis directly).",
    )
    parser.add_argument("channels", nargs="+", metavar="channel", help="one or more channels")
    parser.add_argument(
        "--clients",
        action="store_true",
        help='also list the channel\'s identified subscribers ("clients", a page of them, and'
        ' "next", the cursor of the next page or null): one channel only',
    )
    parser.add_argument("--limit", type=int, metavar="N", help="with --clients, at most N a page")
    parser.add_argument(
        "--after", metavar="CURSOR", help="with --clients, the page after this cursor (a next)"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the node (default {DEFAULT_URL})")
    parser.add_argument(
        "--token",
        help="bearer token: a JWT whose subscribe or presence claim covers the channels,"
        " when the node checks JWTs (default BROADCASTER_TOKEN)",
    )
    parser.set_defaults(run=_run, usage_error=parser.error)


def _run(args: argparse.Namespace) -> None:
    if args.clients and len(args.channels) > 1:
        args.usage_error("--clients lists the subscribers of one channel: give only one")
    if not args.clients and (args.limit is not None or args.after is not None):
        args.usage_error("--limit and --after page the list of --clients: give --clients too")
    token = args.token or os.environ.get("BROADCASTER_TOKEN") or ""
    try:
        with SyncHttpPublisher(args.url, token) as node:
            presence = node.presence(
                args.channels, clients=args.clients, limit=args.limit, after=args.after
            )
    except PublishError as exc:
        sys.exit(f"broadcaster: presence refused: {exc}")
    except (OSError, ValueError, httpx.TransportError) as exc:
        sys.exit(f"broadcaster: cannot read presence: {exc}")
    print(orjson.dumps(presence.as_json()).decode())
