"""Log lines that carry the node id, as plain text or JSON; an access log without streams."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.web_log import AccessLogger

from .settings import Settings


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


class AccessLogWithoutStreams(AccessLogger):
    """aiohttp's access log, minus `/events` (a line per stream, at its end, is noise)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log the request unless it is a stream."""
        if request.path != "/events":
            super().log(request, response, time)


def configure(settings: Settings) -> None:
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


def access_log_options(settings: Settings) -> dict[str, object]:
    """AppRunner arguments for the configured access log."""
    if settings.access_log == "off":
        return {"access_log": None}
    logger = logging.getLogger("broadcaster.access")
    if settings.access_log == "all":
        return {"access_log": logger}
    return {"access_log": logger, "access_log_class": AccessLogWithoutStreams}
