"""The log filters: malformed requests as one rate-limited line, tokens redacted."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage

from broadcaster.node.logs import MalformedRequests, RedactTokens


def record(message: str, failure: BaseException | None = None) -> logging.LogRecord:
    info = (type(failure), failure, None) if failure is not None else None
    return logging.LogRecord("aiohttp.server", logging.ERROR, "x", 1, message, (), info)


def test_malformed_requests_are_one_line_per_interval_counting_the_rest() -> None:
    now = [0.0]
    only = MalformedRequests(interval=10, clock=lambda: now[0])
    bad = BadHttpMessage("Invalid character\n  in\n  Content-Length")
    first = record("Error handling request from %s", bad)
    first.args = ("203.0.113.9",)
    assert only.filter(first)
    assert first.getMessage() == (
        "Error handling request from 203.0.113.9: 400 Invalid character in Content-Length"
    )
    assert (first.levelname, first.exc_info) == ("WARNING", None)
    assert not only.filter(record("Error handling request", bad))
    assert not only.filter(record("Error handling request", bad))
    now[0] = 10.0
    third = record("Error handling request", bad)
    assert only.filter(third)
    assert third.getMessage().endswith("(and 2 more since the last such line)")
    other = record("something else", RuntimeError("a bug"))
    assert only.filter(other) and other.exc_info is not None  # bugs keep their traceback


def test_token_values_are_redacted_in_access_lines() -> None:
    line = record('"GET /events?channel=a&token=eyJ.x.y HTTP/1.1" 200 "http://h/?token=abc"')
    assert RedactTokens().filter(line)
    assert line.getMessage() == (
        '"GET /events?channel=a&token=*** HTTP/1.1" 200 "http://h/?token=***"'
    )
