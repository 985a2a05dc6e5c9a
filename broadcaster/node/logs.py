"""Log lines that carry the node id, as plain text or JSON; an access log without streams."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_log import AccessLogger

from broadcaster.node.settings import NodeSettings


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, node, logger, message (and the exception)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one JSON line."""
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "node": self._node_id,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class MalformedRequests(logging.Filter):
    """aiohttp logs a traceback for every malformed request (a scanner's garbage, a bad
    Content-Length): 700 bytes a request, as ERROR. Instead: one WARNING line at most
    every `interval` seconds, saying how many more there were."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass other records; turn a malformed request's into one line, or drop it."""
        failure = record.exc_info[1] if record.exc_info else None
        if not isinstance(failure, HttpProcessingError):
            return True
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self._interval
        reason = " ".join(str(failure.message).split())[:200]
        more = (
            f" (and {self._suppressed} more since the last such line)" if self._suppressed else ""
        )
        self._suppressed = 0
        record.args = (record.getMessage(), failure.code, reason, more)
        record.msg = "%s: %s %s%s"
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


class RedactTokens(logging.Filter):
    """`?token=` carries a JWT: an access log line keeps the name and hides the value."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact every `token=` value in the line."""
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_IN_URL.sub(r"\1***", record.msg)
        return True


class AccessLogWithoutStreams(AccessLogger):
    """aiohttp's access log, minus `/events` (a line per stream, at its end, is noise)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log the request unless it is a stream."""
        if request.path != "/events":
            super().log(request, response, time)


def configure(settings: NodeSettings) -> None:
    """Send every log line to stderr in the configured format."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(settings.node_id))
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s node={settings.node_id} %(name)s: %(message)s"
            )
        )
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    _filter_once(logging.getLogger("aiohttp.server"), MalformedRequests)
    _filter_once(logging.getLogger("broadcaster.access"), RedactTokens)


def _filter_once(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def access_log_options(settings: NodeSettings) -> dict[str, object]:
    """AppRunner arguments for the configured access log."""
    if settings.access_log == "off":
        return {"access_log": None}
    logger = logging.getLogger("broadcaster.access")
    if settings.access_log == "all":
        return {"access_log": logger}
    return {"access_log": logger, "access_log_class": AccessLogWithoutStreams}
