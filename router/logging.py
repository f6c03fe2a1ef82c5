"""structlog set-up: one JSON object per line (or console output for people).

The stdlib loggers (uvicorn's, the libraries') are rendered by the same processors through
structlog's ProcessorFormatter, so with LOG_FORMAT=json every line on stderr is JSON.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _shared() -> list[structlog.typing.Processor]:
    """What every line carries, from structlog or from a stdlib logger."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _json_text(obj: Any, **kwargs: Any) -> str:
    # ProcessorFormatter needs text; structlog's own loggers take orjson's bytes as they are.
    return orjson.dumps(obj, **kwargs).decode()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog (and the stdlib loggers of our dependencies) once per process."""
    numeric = _LEVELS[level]
    if fmt == "console":
        structlog.configure(
            processors=[*_shared(), structlog.dev.ConsoleRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=True,
        )
    else:
        # The production recipe: filtering bound logger, orjson renderer, bytes straight out.
        structlog.configure(
            processors=[
                *_shared(),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            cache_logger_on_first_use=True,
        )
    # Other libraries' records (and warnings): WARNING and up, in the same format.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(stdlib_formatter(fmt))
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)


class StderrHandler(logging.StreamHandler[TextIO]):
    """The root logger's handler that configure_logging (or uvicorn's log_config) installs;
    configuring again replaces it rather than adding a second."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)


def stdlib_formatter(fmt: str = "json") -> logging.Formatter:
    """Render stdlib log records with structlog's processors: JSON, or console for people."""
    renderer: list[structlog.typing.Processor]
    if fmt == "console":
        renderer = [structlog.dev.ConsoleRenderer()]
    else:
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_text),
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )


def uvicorn_log_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """uvicorn's `log_config`: its loggers (uvicorn, uvicorn.error, uvicorn.access) go to the
    root logger's StderrHandler, rendered like every other line. uvicorn applies it in each
    process it starts (workers, the reloaded child), so it names everything by import path."""
    uvicorn_level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"router": {"()": "router.logging.stdlib_formatter", "fmt": fmt}},
        "handlers": {"stderr": {"class": "router.logging.StderrHandler", "formatter": "router"}},
        "loggers": {
            "uvicorn": {"level": uvicorn_level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": uvicorn_level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": uvicorn_level, "handlers": [], "propagate": True},
        },
        "root": {
            "level": logging.getLevelName(max(_LEVELS[level], logging.WARNING)),
            "handlers": ["stderr"],
        },
    }


# One line per signal: its fields (the dict is consumed).
SignalLine = Callable[[dict[str, Any]], None]


class BufferedSignalLines:
    """The per-signal line in configure_logging's JSON format, without structlog's chain.

    structlog's processors and a write() per line cost ~8 µs per signal; this is one orjson
    call, and the lines of one turn of the event loop leave in one write when it ends. The
    line carries its own fields only (no contextvars: the route path binds none).
    """

    __slots__ = ("_loop", "_pending", "_stream")

    def __init__(self, stream: BinaryIO, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._pending: list[bytes] = []

    def __call__(self, fields: dict[str, Any]) -> None:
        fields["event"] = "signal"
        fields["level"] = "info"
        # As structlog's TimeStamper(fmt="iso", utc=True) writes it.
        fields["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        """Write what is pending: scheduled by the turn's first line, so it runs as that turn
        of the loop ends (a draining router's loop keeps turning until the last answer)."""
        if self._pending:
            lines, self._pending = self._pending, []
            self._stream.write(b"".join(lines))
            self._stream.flush()


def signal_line(level: str, fmt: str, loop: asyncio.AbstractEventLoop) -> SignalLine:
    """How the route path writes its line under these settings (configure_logging's)."""
    if _LEVELS[level] > logging.INFO:
        return _skip
    if fmt == "json":
        return BufferedSignalLines(sys.stderr.buffer, loop)
    log = structlog.get_logger("router.route")
    return lambda fields: log.info("signal", **fields)


def _skip(fields: dict[str, Any]) -> None:
    """LOG_LEVEL above info: no per-signal line."""
