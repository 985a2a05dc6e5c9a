"""`broadcaster subscribe`: print the events of channels as they arrive, reconnecting
with Last-Event-ID by itself."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from types import FrameType
from typing import Any

from broadcaster.client import events as stream_events
from broadcaster.client import subscriber
from broadcaster.client.subscription import SubscribeError


def add(commands: Any) -> None:
    """The `subscribe` subcommand."""
    parser = commands.add_parser(
        "subscribe", help="print the events of channels as they arrive, reconnecting by itself"
    )
    parser.add_argument(
        "channels", nargs="+", metavar="channel", help="one or more channels to follow"
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--last-event-id", dest="last_event_id", metavar="ID", help="start after this id"
    )
    start.add_argument(
        "--earliest", action="store_true", help="start from the oldest retained event"
    )
    parser.add_argument(
        "--url",
        default=subscriber.DEFAULT_URL,
        help="the node or load balancer (default http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--json", action="store_true", help='one {"id", "event", "data"} object per line'
    )
    parser.add_argument("--token", help="bearer token (default BROADCASTER_TOKEN)")
    parser.set_defaults(run=_run)


def one_line(data: str) -> str:
    """`data` with its line breaks shown as \\n and \\r (--json has the exact text)."""
    return data.replace("\r", "\\r").replace("\n", "\\n")


def _run(args: argparse.Namespace) -> None:
    """Print events to stdout as they arrive, and what happens to the connection to stderr."""

    def notify(text: str) -> None:
        print(f"broadcaster: {text}", file=sys.stderr, flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    events = subscriber.subscribe_sync(
        args.url,
        args.channels,
        last_event_id="earliest" if args.earliest else args.last_event_id,
        token=args.token or os.environ.get("BROADCASTER_TOKEN") or None,
        notify=notify,
    )
    try:
        for event in events:
            if args.json:
                line = json.dumps({"id": event.id, "event": event.event, "data": event.data})
            else:
                line = f"[{event.id or ''}] {event.event}: {one_line(event.data)}"
            print(line, flush=True)
            notice = stream_events.reset_notice(event)
            if notice is not None:
                notify(notice)
    except SubscribeError as exc:
        print(f"broadcaster: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly, and keep the exit flush from failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        events.close()
