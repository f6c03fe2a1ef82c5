"""Stdlib records (uvicorn's, the libraries') rendered like the router's own lines; the
per-signal line, buffered per turn of the loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog.testing

from router.logging import (
    BufferedSignalLines,
    signal_line,
    stdlib_formatter,
    uvicorn_log_config,
)


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


class _Stream(io.BytesIO):
    """A binary stream that counts its writes."""

    writes = 0

    def write(self, data: bytes, /) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_signal_lines_of_one_loop_turn_leave_in_one_write_as_structlog_writes_them() -> None:
    """Three lines queued in one turn: nothing written until the turn ends, then one write of
    three JSON lines, in order, each with structlog's event, level and ISO UTC timestamp."""
    stream = _Stream()

    async def turn() -> None:
        lines = BufferedSignalLines(stream, asyncio.get_running_loop())
        for n in range(3):
            lines({"log_id": f"l-{n}", "http_status": 200})
        assert stream.writes == 0
        await asyncio.sleep(0)
        assert stream.writes == 1
        lines({"log_id": "l-3", "http_status": 503})
        await asyncio.sleep(0)

    asyncio.run(turn())
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert stream.writes == 2
    assert [p["log_id"] for p in parsed] == ["l-0", "l-1", "l-2", "l-3"]
    for line in parsed:
        assert (line["event"], line["level"]) == ("signal", "info")
        # isoformat leaves out a zero fraction, as structlog's stamper does.
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", line["timestamp"])


def test_signal_line_follows_the_level_and_format() -> None:
    """Above info there is no line; console goes through structlog; json is buffered."""

    async def build() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(signal_line("info", "json", loop), BufferedSignalLines)
        signal_line("warning", "json", loop)({"log_id": "quiet"})
        with structlog.testing.capture_logs() as logs:
            signal_line("debug", "console", loop)({"log_id": "shown"})
        assert logs == [{"event": "signal", "log_level": "info", "log_id": "shown"}]

    asyncio.run(build())
