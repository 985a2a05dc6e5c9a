"""`broadcaster publish`: one message, or, with `--lines`, standard input as a stream of
events (a build log, a model's output piped in), then `done`, which closes the channel."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import httpx
from redis.exceptions import RedisError

from broadcaster.brokers.redis.client import connect_publisher_sync
from broadcaster.cli.options import load_settings
from broadcaster.client import (
    ChannelClosed,
    PublishError,
    SyncHttpPublisher,
    SyncPublisher,
    SyncRedisPublisher,
)
from broadcaster.client.coalesce import check_window
from broadcaster.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8080"


def add(commands: Any) -> None:
    """The `publish` subcommand."""
    parser = commands.add_parser("publish", help="publish to every subscriber")
    parser.add_argument("channel")
    parser.add_argument("data", help="the event data; - reads it from standard input")
    parser.add_argument(
        "--event", help="event type (with --lines, the type of each line: default line)"
    )
    parser.add_argument(
        "--lines",
        action="store_true",
        help="publish each line of standard input as its own event as it arrives, then done,"
        " which closes the channel: its subscribers' streams end (see --keep-open)",
    )
    parser.add_argument(
        "--close",
        action="store_true",
        help="close the channel after this message: its subscribers' streams end after it,"
        " and it refuses publishes but those with --reopen",
    )
    parser.add_argument(
        "--keep-open",
        dest="keep_open",
        action="store_true",
        help="with --lines, leave the channel open after done",
    )
    parser.add_argument(
        "--reopen",
        action="store_true",
        help="publish even if the channel is closed, opening it again",
    )
    parser.add_argument(
        "--coalesce",
        metavar="SECONDS",
        help="with --lines, merge the lines that arrive within SECONDS of an event's first"
        " into that one event (each line keeps its line break; done then counts lines and"
        " events); default 0, one event per line",
    )
    parser.add_argument(
        "--url",
        help="publish through the node at this URL (POST /publish with BROADCASTER_PUBLISH_TOKEN);"
        f" the default is Redis at BROADCASTER_REDIS_URL, or {DEFAULT_URL} without it",
    )
    parser.add_argument("--redis-url", dest="redis_url", help="publish through this Redis")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    if args.lines and args.data != "-":
        sys.exit("broadcaster: --lines reads standard input: give - as the data")
    if args.coalesce is not None and not args.lines:
        sys.exit("broadcaster: --coalesce merges the lines of --lines: give --lines too")
    if args.keep_open and not args.lines:
        sys.exit("broadcaster: --keep-open is for --lines (a single message closes with --close)")
    if args.close and args.lines:
        sys.exit("broadcaster: --lines closes the channel at the end already (or --keep-open)")
    window = 0.0 if args.coalesce is None else _window(args.coalesce)
    settings = load_settings(redis_url=args.redis_url)
    try:
        with _publisher(settings, args.url) as publisher:
            if args.lines:
                lines = _lines(sys.stdin, keep_breaks=window > 0)
                ids = publisher.stream(
                    args.channel,
                    lines,
                    event=args.event or "line",
                    coalesce=window,
                    close=not args.keep_open,
                    reopen=args.reopen,
                )
                print(ids[-1])  # the `done` event's: resume after it, and nothing is missed
            else:
                # Like the shell's $(...), drop the newline that ends piped input.
                data = sys.stdin.read().removesuffix("\n") if args.data == "-" else args.data
                sent = publisher.publish(
                    args.channel, data, args.event, close=args.close, reopen=args.reopen
                )
                print(sent)
    except (ValueError, PublishError, ChannelClosed) as exc:
        sys.exit(f"broadcaster: publish refused: {exc}")
    except (OSError, RedisError, httpx.TransportError) as exc:
        sys.exit(f"broadcaster: cannot publish: {exc}")


def _publisher(settings: Settings, url: str | None) -> SyncPublisher:
    """Straight to Redis with a Redis URL (and no --url), else through a node."""
    if url is None and settings.redis_url is not None:
        return SyncRedisPublisher(
            connect_publisher_sync(settings.redis_url), config=settings.library_config()
        )
    token = settings.publish_token.get_secret_value() if settings.publish_token else ""
    return SyncHttpPublisher(url or DEFAULT_URL, token)


def _window(seconds: str) -> float:
    """--coalesce's seconds, or exit with a one-line reason."""
    try:
        return check_window(float(seconds))
    except ValueError:
        reason = f"a non-negative finite number of seconds, not {seconds!r}"
        sys.exit(f"broadcaster: --coalesce takes {reason}")


def _lines(stream: TextIO, *, keep_breaks: bool = False) -> Iterator[str]:
    """Each line as soon as it is complete, without its line break, or with it as `\n`
    (`keep_breaks`: merged lines stay lines)."""
    for line in stream:
        text = line.removesuffix("\n").removesuffix("\r")
        yield text + "\n" if keep_breaks and line.endswith("\n") else text
