"""structlog set-up: one JSON object per line (or console output for people).

The stdlib loggers (uvicorn's, the libraries') are rendered by the same processors through
structlog's ProcessorFormatter, so with LOG_FORMAT=json every line on stderr is JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

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
