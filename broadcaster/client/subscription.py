"""What a subscriber does between connections, without doing any I/O itself: the
request to send, whether a response is an event stream, the events its bytes complete,
and how long to wait before the next attempt. `subscriber.subscribe` (async) and
`subscriber.subscribe_sync` are thin shells around it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from broadcaster.client.events import Event, EventDecoder, LineSplitter

MAX_DELAY = 30.0
READ_TIMEOUT = 60.0
MAX_REASON_BYTES = 4096  # of a refusal's body: its first line is the reason

# Statuses below 500 worth another try; every 5xx is too (the node is busy, draining or
# gone: a load balancer may pick another). Any other refusal, or a 200 that is not an event
# stream, is final.
_RETRYABLE = frozenset({408, 425, 429})
NO_CONTENT = 204  # every channel is closed and the client has all: the subscription ends
_ERRNO = re.compile(r"^\[Errno -?\d+\] ")


class SubscribeError(Exception):
    """The subscription was refused for good (bad channel, token, URL...)."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"{status}: {reason}" if status is not None else reason)
        self.status = status
        self.reason = reason


class Retry(Exception):
    """This attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, at_least: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at_least = at_least


@dataclass(slots=True)
class _Attempt:
    """How one connection attempt went."""

    opened: bool = False
    reason: str = "the node ended the stream"
    at_least: float = 0.0


class Subscription:
    """One subscriber's state across its connections: where it resumes, how many attempts
    in a row failed, and what to tell (`notify` gets one short line per connection loss,
    failed attempt and recovery)."""

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        *,
        last_event_id: str | None,
        token: str | None,
        notify: Callable[[str], None] | None,
        read_timeout: float,
        max_delay: float,
    ) -> None:
        self.endpoint = _endpoint(url)
        self.url = url
        self.params: list[tuple[str, str | int | float | bool | None]] = [
            ("channel", channel) for channel in channels
        ]
        if last_event_id is not None:
            self.params.append(("lastEventId", last_event_id))
        self.timeout = httpx.Timeout(10.0, read=read_timeout)
        self._start = last_event_id
        self._token = token
        self._tell = notify or (lambda _: None)
        self._read_timeout = read_timeout
        self._max_delay = max_delay
        self._decoder = EventDecoder()
        self._lines = LineSplitter()
        self._failures = 0  # attempts in a row that did not open a stream
        self._opened_once = False
        self._attempt = _Attempt()

    def headers(self) -> dict[str, str]:
        """The headers of the next attempt, which it begins."""
        self._attempt = _Attempt()
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
            "Accept-Encoding": "identity",  # an event stream is never worth compressing
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._decoder.last_event_id:
            headers["Last-Event-ID"] = self._decoder.last_event_id
        return headers

    @staticmethod
    def wants_body(status: int, headers: Mapping[str, str]) -> bool:
        """Whether a response's body says why it is not a stream (read MAX_REASON_BYTES)."""
        return status != 200 and headers.get("content-type", "").startswith("text/plain")

    def accept(self, status: int, headers: Mapping[str, str], phrase: str, body: bytes) -> bool:
        """Take a response if it is an event stream (True), or the end of the subscription
        (False: 204, every channel is closed and nothing is left, as an EventSource stops);
        raise Retry or SubscribeError if neither."""
        if status == NO_CONTENT:
            self._tell("the channels are closed: nothing more will come")
            return False
        if status != 200:
            reason = _reason(status, phrase, body)
            if status in _RETRYABLE or status >= 500:
                after = headers.get("retry-after", "")
                raise Retry(f"{status} {reason}", float(after) if after.isdigit() else 0.0)
            raise SubscribeError(status, reason)
        kind = headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "text/event-stream":
            raise SubscribeError(200, f"not an event stream (Content-Type: {kind or 'none'})")
        self._attempt.opened = True
        if self._failures or self._opened_once:
            position = self._decoder.last_event_id or self._start
            self._tell(_resumed(position) if self._opened_once else "connected")
        self._failures, self._opened_once = 0, True
        self._decoder.restart()
        self._lines = LineSplitter()
        return True

    def feed(self, chunk: bytes) -> list[Event]:
        """The events `chunk` of the stream completes."""
        return self._events(self._lines.feed(chunk))

    def ended(self) -> list[Event]:
        """The stream ended cleanly: the events its last bytes complete."""
        return self._events(self._lines.end())

    def failed(self, failure: Retry | httpx.TransportError) -> None:
        """The attempt failed: a refusal worth retrying, or the connection."""
        if isinstance(failure, Retry):
            self._attempt.reason, self._attempt.at_least = failure.reason, failure.at_least
        elif isinstance(failure, httpx.UnsupportedProtocol | httpx.TooManyRedirects):
            raise SubscribeError(None, f"cannot subscribe at {self.url}: {failure}") from failure
        else:
            self._attempt.reason = _describe(failure, self._read_timeout)

    def delay(self) -> float:
        """The attempt is over: seconds to wait before the next (said to `notify`)."""
        attempt = self._attempt
        if not attempt.opened:
            self._failures += 1
        delay = _delay(self._decoder.retry_ms, self._failures, attempt.at_least, self._max_delay)
        what = "connection lost" if attempt.opened else "cannot connect"
        self._tell(f"{what} ({attempt.reason}), retrying in {delay:.1f} s")
        return delay

    def _events(self, lines: list[str]) -> list[Event]:
        decoder = self._decoder
        return [event for line in lines if (event := decoder.feed(line)) is not None]


def _endpoint(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise SubscribeError(None, f"invalid URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SubscribeError(None, f"invalid URL {url!r}: use http://host:port")
    return url.rstrip("/") + "/events"


def _reason(status: int, phrase: str, body: bytes) -> str:
    """The first line of a plain-text error body, else the status's reason phrase."""
    text = next((line.strip() for line in body.decode(errors="replace").splitlines()), "")
    text = text.removeprefix(f"{status}: ")[:300]
    return text or phrase or "refused"


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
