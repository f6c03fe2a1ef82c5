"""Locust load run of POST /route: the documented signal mix, stopped after N signals."""

#     make load N=1000 USERS=32 HOST=http://127.0.0.1:8000
#     locust -f loadtest/locustfile.py --headless -u 32 -r 32 -H http://127.0.0.1:8000 \
#         --signals 1000
#
# X-API-Key comes from $API_KEY (default dev-key). The summary at the end (loadtest/summary.py)
# gives signals/s, exact p50/p95/p99, errors by status and the SLO PASS/FAIL line; the exit code
# is 1 on FAIL. --scenario faults only relabels the run and records first-attempt latency: the
# faults come from the agents the router calls (see loadtest/faults.py, `make load-faults`).

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]  # no stubs; Locust runs on it
import orjson
from locust import FastHttpUser, constant, events, task
from locust.env import Environment

# Locust imports this file by path; make `loadtest.*` importable whatever the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.mix import Mix
from loadtest.summary import Recorder, Slo, render, summarize

API_KEY = os.environ.get("API_KEY", "dev-key").split(",")[0].strip()

# One process, shared by every user greenlet (gevent: no locking needed between yields).
_mix = Mix()
_recorder = Recorder()
_state: dict[str, Any] = {
    "issued": 0,
    "limit": 1000,
    "quitting": False,
    "summary": None,
    "scenario": "normal",
}


def _options(parser: Any) -> None:
    parser.add_argument(
        "--signals",
        type=int,
        default=1000,
        env_var="LOAD_SIGNALS",
        help="stop after this many signals have been answered",
    )
    parser.add_argument(
        "--scenario", default="normal", env_var="SCENARIO", help="a label for the summary"
    )
    parser.add_argument("--slo-p50-ms", type=float, default=5.0, env_var="SLO_P50_MS")
    parser.add_argument(
        "--summary-json", default="", env_var="LOAD_SUMMARY_JSON", help="also write figures here"
    )


def _start(environment: Environment, **_: Any) -> None:
    assert environment.parsed_options is not None
    _state["limit"] = max(1, int(environment.parsed_options.signals))
    _state["scenario"] = environment.parsed_options.scenario


def _on_request(response_time: float, response: Any = None, **_: Any) -> None:
    # A connection error or timeout has no status: recorded as 0, an error.
    status = 0 if response is None else int(getattr(response, "status_code", 0) or 0)
    first = _state["scenario"] == "faults" and status == 200 and _first_attempt(response)
    _recorder.record(status, float(response_time), time.monotonic(), first_attempt=first)


def _first_attempt(response: Any) -> bool:
    """True when every agent of a fresh (not duplicate) answer succeeded at its first attempt."""
    try:
        body = orjson.loads(response.content)
    except (orjson.JSONDecodeError, TypeError):
        return False
    agents = body.get("agents") if isinstance(body, dict) else None
    if body.get("duplicate") or not isinstance(agents, list):
        return False
    return all(
        a.get("attempts") == 1 and a.get("ok") for a in agents if a.get("error") != "cancelled"
    )


class SignalSender(FastHttpUser):
    """Sends the mix back to back (closed loop): USERS is the number of concurrent clients."""

    wait_time = constant(0)
    # Keep-alive connections, like a service calling the router; large enough for 5 KB bodies.
    connection_timeout = 5.0
    network_timeout = 30.0

    @task
    def route(self) -> None:
        """POST one signal of the mix; 200, 202 and 409 count as success (summary.py)."""
        if _state["issued"] >= _state["limit"]:
            # Idle rather than StopUser: Locust logs an error for every user that ended early.
            self._maybe_quit()
            gevent.sleep(0.05)
            return
        _state["issued"] += 1
        kind, body, repeat = _mix.next()
        name = f"/route {kind}{' (repeat)' if repeat else ''}"
        with self.client.post(
            "/route",
            data=body.decode(),
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code in (200, 202, 409):
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}")
        self._maybe_quit()

    def _maybe_quit(self) -> None:
        if _recorder.count >= _state["limit"] and not _state["quitting"]:
            _state["quitting"] = True
            runner = self.environment.runner
            assert runner is not None
            # From another greenlet: quit() kills the users, this one included.
            gevent.spawn(runner.quit)


def _verdict(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    assert options is not None
    summary = summarize(_recorder, Slo(p50_ms=float(options.slo_p50_ms)))
    _state["summary"] = summary
    environment.process_exit_code = 0 if summary.passed else 1
    if options.summary_json:
        import json

        Path(options.summary_json).write_text(json.dumps(summary.as_dict(), indent=1))


def _print_summary(**_: Any) -> None:
    # `quit` fires after Locust's own tables, which go to stderr: so does the verdict, last.
    summary = _state["summary"]
    if summary is not None:
        print(render(summary, f"load summary ({_state['scenario']})"), file=sys.stderr, flush=True)


# Registered here rather than by decorator: Locust's hooks are untyped, and mypy --strict would
# report every decorated function.
for _hook, _listener in (
    (events.init_command_line_parser, _options),
    (events.test_start, _start),
    (events.request, _on_request),
    (events.quitting, _verdict),
    (events.quit, _print_summary),
):
    _hook.add_listener(_listener)  # type: ignore[no-untyped-call]
