"""Closed-loop load from wrk with one thread: the generator issue 13's figures were measured with.

benches.driver (Python, uvloop) and wrk (Debian's package, C) cost about the same here (16
and 12 µs of CPU a request at 32 connections), yet the servers compared answer them at
different rates, so a figure set against the issue's is measured with its generator.
`drive_wrk` runs wrk like `benches.measure.drive` runs the driver and returns the same
figures (requests, rps, p50/p99, answers by status, transport errors, the CPU of the given
pids and command names over the measured window), so a bench can take either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from benches.driver import command_cpu_s, process_cpu_s, used_between

WRK = "wrk"
# Long brackets quote the body and headers in Lua without escapes; this closes them.
_CLOSE = "]==]"
# Every answer counted by status in the thread, printed by done() where the parent reads it.
_REPORT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\\n", code, n))
    end
  end
  io.write(string.format("latency_us %d %d\\n", latency:percentile(50), latency:percentile(99)))
  local e = summary.errors
  io.write(string.format("summary %d %d %d %d %d %d\\n", summary.requests, summary.duration,
                         e.connect, e.read, e.write, e.timeout))
end
"""
_ERRORS = ("connect", "read", "write", "timeout")


def available() -> bool:
    """Whether wrk is on PATH."""
    return shutil.which(WRK) is not None


def lua_script(body: bytes, headers: Sequence[str]) -> str:
    """wrk's script: POST `body` with `headers` ('Name: value') and count answers by status."""
    text = body.decode()
    if _CLOSE in text or any(_CLOSE in h for h in headers):
        raise ValueError(f"a body or header holding {_CLOSE!r} cannot be quoted for wrk")
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [==[{text}]==]",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    for header in headers:
        name, _, value = header.partition(":")
        lines.append(f"wrk.headers[ [==[{name.strip()}]==] ] = [==[{value.strip()}]==]")
    return "\n".join(lines) + _REPORT


def drive_wrk(
    url: str,
    body: bytes,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    cpu_pids: Sequence[int] = (),
    cpu_comms: Sequence[str] = (),
    headers: Sequence[str] = (),
) -> dict[str, Any]:
    """wrk -t1 against `url` for `duration_s` (whole seconds, at least one) after an unmeasured
    run of `warmup_s`; the figures of the measured run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="router-wrk-") as script:
        script.write(lua_script(body, headers))
        script.flush()
        if warmup_s > 0:
            _run(script.name, url, connections, warmup_s)
        cpu_before = [process_cpu_s(pid) for pid in cpu_pids]
        comms_before = [command_cpu_s(comm) for comm in cpu_comms]
        output = _run(script.name, url, connections, duration_s)
        cpu_after = [process_cpu_s(pid) for pid in cpu_pids]
        comms_after = [command_cpu_s(comm) for comm in cpu_comms]
    return {
        "url": url,
        "connections": connections,
        **parse_report(output),
        "cpu_s": [round(a - b, 3) for b, a in zip(cpu_before, cpu_after, strict=True)],
        # None: no process of that name was seen (the database runs elsewhere).
        "cpu_comm_s": {
            comm: round(used_between(before, after), 3) if before or after else None
            for comm, before, after in zip(cpu_comms, comms_before, comms_after, strict=True)
        },
    }


def parse_report(output: str) -> dict[str, Any]:
    """The figures in what the script's done() printed."""
    statuses = {m[1]: int(m[2]) for m in re.finditer(r"^status (\d+) (\d+)$", output, re.M)}
    latency = re.search(r"^latency_us (\d+) (\d+)$", output, re.M)
    summary = re.search(r"^summary (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", output, re.M)
    if latency is None or summary is None:
        raise RuntimeError(f"wrk printed no report:\n{output}")
    requests, duration_us, *errors = (int(v) for v in summary.groups())
    elapsed = duration_us / 1e6
    return {
        "requests": requests,
        "elapsed_s": round(elapsed, 3),
        "rps": round(requests / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": int(latency[1]) / 1000,
        "p99_ms": int(latency[2]) / 1000,
        "statuses": dict(sorted(statuses.items())),
        "errors": {name: n for name, n in zip(_ERRORS, errors, strict=True) if n},
    }


def _run(script: str, url: str, connections: int, seconds: float) -> str:
    command = [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", script, url]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    return done.stdout
