"""Follow channels of a node as a client: the engine of `broadcaster subscribe`.

`follow()` opens `GET /events` and yields each event as it arrives. When the stream ends
or the connection fails, it waits the server's `retry:` hint and reconnects with
`Last-Event-ID`, so the events it yields have no gap and no duplicate across node
restarts, load-balancer failovers and dead connections. Refusals that retrying cannot fix
raise `SubscribeError`.

The event stream is parsed here, per the WHATWG HTML standard, rather than with
httpx-sse: its `iter_sse` also yields a `retry:`-only block, a bare `id:` block and every
heartbeat after the first id as if they were empty `message` events, which cannot be
told from a real event with empty data. Only events with a data line are events; every
block end, with or without one, moves the position (a bare `id:` after a `reset` must).
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_RETRY_MS = 3000
MAX_DELAY = 30.0
READ_TIMEOUT = 60.0

# Statuses below 500 worth another try; every 5xx is too (the node is busy, draining or
# gone: a load balancer may pick another). Any other refusal, or a 200 that is not an event
# stream, is final.
_RETRYABLE = frozenset({408, 425, 429})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ERRNO = re.compile(r"^\[Errno -?\d+\] ")


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the stream: its own `id:` (None when it has none), type and data."""

    id: str | None
    event: str
    data: str


class SubscribeError(Exception):
    """The subscription was refused for good (bad channel, token, URL...)."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"{status}: {reason}" if status is not None else reason)
        self.status = status
        self.reason = reason


class _Retry(Exception):
    """This attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, at_least: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at_least = at_least


class EventDecoder:
    """The event-stream interpretation of the HTML standard, one line at a time.

    `last_event_id` is the position to resume from: it changes when a block ends (a
    blank line), whether or not the block is an event, so a bare `id:` block moves it and
    an empty `id:` clears it. `retry_ms` holds the latest `retry:` hint.
    """

    def __init__(self, last_event_id: str = "", retry_ms: int = DEFAULT_RETRY_MS) -> None:
        self.last_event_id = last_event_id
        self.retry_ms = retry_ms
        self._id_buffer = last_event_id
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def restart(self) -> None:
        """Forget a block cut off with its connection; keep the position and the hint.

        Browsers start a new connection's id buffer at the current position, so an event
        without an id does not clear it.
        """
        self._id_buffer, self._id, self._event, self._data = self.last_event_id, None, "", []

    def feed(self, line: str) -> Event | None:
        """Take one line (without its line break); return the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id_buffer
        event = None
        if self._data:
            event = Event(self._id, self._event or "message", "\n".join(self._data))
        self._id, self._event, self._data = None, "", []
        return event


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode UTF-8 `chunks` into lines split on CRLF, CR or LF, and only those.

    A CR at the end of a chunk waits for the next one, in case an LF follows. An
    unterminated last line is dropped, as the standard says.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    started = False
    for chunk in chunks:
        text = decoder.decode(chunk)
        if not started and text:
            text, started = text.removeprefix("\ufeff"), True
        buffer += text
        start = 0
        for match in _LINE_BREAK.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer):
                break
            yield buffer[start : match.start()]
            start = match.end()
        buffer = buffer[start:]
    buffer += decoder.decode(b"", final=True)
    if buffer.endswith("\r"):
        yield buffer[:-1]  # a line ended by a last CR (the one that could not be CRLF)


def reset_notice(event: Event) -> str | None:
    """The line telling a person what a `reset` event means, or None for other events."""
    if event.event != "reset":
        return None
    try:
        body = json.loads(event.data)
        channels = ", ".join(str(c) for c in body["channels"])
        reason = str(body["reason"])
    except (ValueError, TypeError, KeyError):
        return f"reset ({event.data}): history was lost; reload your state"
    meaning = {
        "malformed": "the id to resume from is not valid",
        "unavailable": "history could not be read",
    }.get(reason, "history was lost")
    return f"reset on {channels} ({reason}): {meaning}; reload your state"


def follow(
    url: str,
    channels: Sequence[str],
    *,
    last_event_id: str | None = None,
    token: str | None = None,
    notify: Callable[[str], None] | None = None,
    read_timeout: float = READ_TIMEOUT,
    max_delay: float = MAX_DELAY,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[Event, None, None]:
    """Yield the events of `channels` from the node (or load balancer) at `url`, forever.

    `last_event_id` starts after that id (`"earliest"`: from the oldest retained event);
    it stays in the URL of every attempt, and from the first id received on, each
    reconnect also sends `Last-Event-ID`, which the node prefers. `token` goes out as
    `Authorization: Bearer`. `notify` gets one short line per connection loss, failed
    attempt and recovery. A connection that sends no byte for `read_timeout` seconds
    (heartbeats included) counts as lost. Raises `SubscribeError` when the node refuses
    for good.
    """
    endpoint = _endpoint(url)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("channel", channel) for channel in channels
    ]
    if last_event_id is not None:
        params.append(("lastEventId", last_event_id))
    tell = notify or (lambda _: None)
    decoder = EventDecoder()
    failures = 0  # attempts in a row that did not open a stream
    opened_once = False
    http = client or httpx.Client(
        timeout=httpx.Timeout(10.0, read=read_timeout), follow_redirects=True
    )
    try:
        while True:
            headers = _headers(token, decoder.last_event_id)
            attempt = _Attempt()
            try:
                with http.stream("GET", endpoint, params=params, headers=headers) as response:
                    _check(response)
                    attempt.opened = True
                    if failures or opened_once:
                        position = decoder.last_event_id or last_event_id
                        tell(_resumed(position) if opened_once else "connected")
                    failures, opened_once = 0, True
                    decoder.restart()
                    for line in iter_lines(response.iter_bytes()):
                        event = decoder.feed(line)
                        if event is not None:
                            yield event
            except _Retry as exc:
                attempt.reason, attempt.at_least = exc.reason, exc.at_least
            except (httpx.UnsupportedProtocol, httpx.TooManyRedirects) as exc:
                raise SubscribeError(None, f"cannot subscribe at {url}: {exc}") from exc
            except httpx.TransportError as exc:
                attempt.reason = _describe(exc, read_timeout)
            if not attempt.opened:
                failures += 1
            delay = _delay(decoder.retry_ms, failures, attempt.at_least, max_delay)
            what = "connection lost" if attempt.opened else "cannot connect"
            tell(f"{what} ({attempt.reason}), retrying in {delay:.1f} s")
            sleep(delay)
    finally:
        if client is None:
            http.close()


@dataclass(slots=True)
class _Attempt:
    """How one connection attempt went."""

    opened: bool = False
    reason: str = "the node ended the stream"
    at_least: float = 0.0


def _headers(token: str | None, position: str) -> dict[str, str]:
    headers = {
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
        "Accept-Encoding": "identity",  # an event stream is never worth compressing
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if position:
        headers["Last-Event-ID"] = position
    return headers


def _endpoint(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise SubscribeError(None, f"invalid URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SubscribeError(None, f"invalid URL {url!r}: use http://host:port")
    return url.rstrip("/") + "/events"


def _check(response: httpx.Response) -> None:
    """Return if `response` is an event stream; raise _Retry or SubscribeError if not."""
    status = response.status_code
    if status == 200:
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "text/event-stream":
            raise SubscribeError(200, f"not an event stream (Content-Type: {kind or 'none'})")
        return
    reason = _reason(response)
    if status in _RETRYABLE or status >= 500:
        after = response.headers.get("retry-after", "")
        raise _Retry(f"{status} {reason}", float(after) if after.isdigit() else 0.0)
    raise SubscribeError(status, reason)


def _reason(response: httpx.Response) -> str:
    """The first line of a plain-text error body, else the status's reason phrase."""
    text = ""
    if response.headers.get("content-type", "").startswith("text/plain"):
        body = b""
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > 4096:
                    break
        except httpx.TransportError:
            pass  # The phrase will do.
        text = next((line.strip() for line in body.decode(errors="replace").splitlines()), "")
        text = text.removeprefix(f"{response.status_code}: ")[:300]
    return text or response.reason_phrase or "refused"


def _describe(exc: httpx.TransportError, read_timeout: float) -> str:
    """A few words on why a connection failed."""
    if isinstance(exc, httpx.ReadTimeout):
        return f"nothing received for {read_timeout:g} s"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the stream was cut off"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = _ERRNO.sub("", str(exc)).strip()
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def _delay(retry_ms: int, failures: int, at_least: float, max_delay: float) -> float:
    """Seconds before the next attempt: the `retry:` hint, doubled for each failed attempt
    after the first (from at least 0.25 s), never under the server's Retry-After, never
    over `max_delay`."""
    delay = retry_ms / 1000
    if failures > 1:
        delay = max(delay, 0.25) * 2 ** min(failures - 1, 16)
    return min(max(delay, at_least), max_delay)


def _resumed(position: str | None) -> str:
    if position == "earliest":
        return "reconnected (from the earliest retained event)"
    if position:
        return f"reconnected (resuming after {position})"
    return "reconnected (no event id received yet)"
