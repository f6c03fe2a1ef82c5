"""Stdlib records (uvicorn's, the libraries') rendered like the router's own lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from router.logging import stdlib_formatter, uvicorn_log_config


@pytest.fixture
def library_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A stdlib logger of its own (nothing global touched) writing through the formatter."""
    out = io.StringIO()
    logger = logging.getLogger("tests.some_library")
    logger.propagate = False
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    yield logger, out
    logger.removeHandler(handler)
    logger.propagate = True


def test_json_format_renders_each_record_as_one_json_object(
    library_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """A message with arguments and one with a traceback: one JSON line each."""
    logger, out = library_logger
    logger.handlers[0].setFormatter(stdlib_formatter("json"))
    logger.warning("pool %s is %d%% full", "main", 90)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "pool main is 90% full"
    assert (first["level"], first["logger"]) == ("warning", "tests.some_library")
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "failed" and second["level"] == "error"
    assert "RuntimeError: boom" in second["exception"]


def test_console_format_stays_readable(
    library_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """LOG_FORMAT=console: structlog's console rendering, not JSON."""
    logger, out = library_logger
    logger.handlers[0].setFormatter(stdlib_formatter("console"))
    logger.warning("pool %s is full", "main")
    text = out.getvalue()
    assert "pool main is full" in text and "warning" in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_uvicorn_log_config_sends_uvicorn_loggers_to_the_router_format() -> None:
    """uvicorn's loggers propagate to the root handler, whose formatter is ours."""
    config = uvicorn_log_config("warning", "json")
    assert config["formatters"]["router"] == {
        "()": "router.logging.stdlib_formatter",
        "fmt": "json",
    }
    assert config["root"]["handlers"] == ["stderr"]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {
            "level": "WARNING",
            "handlers": [],
            "propagate": True,
        }
