"""What an idle vCPU costs a round trip: one byte to a forked echo process over loopback TCP.

#     python -m benches.idle_wakeup [--samples 150]

Back to back, both processes stay on their vCPUs; after a sleep, both have idled and the
hypervisor may have halted their vCPUs. A signal at one connection crosses the router four
times, PostgreSQL twice and the agent once, each after such an idle: the difference is what
the machine, not the router, adds to every hop (docs/PERFORMANCE.md, "The night of
2026-12-06").
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Sequence

IDLE_GAPS_S = (0.0, 0.001, 0.005, 0.02)


def _echo(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(1):
        conn.send(data)


def _round_trip_us(sock: socket.socket) -> float:
    started = time.perf_counter()
    sock.send(b"x")
    sock.recv(1)
    return (time.perf_counter() - started) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    """Print p50 and p90 of the round trip back to back and after each idle gap."""
    parser = argparse.ArgumentParser(prog="python -m benches.idle_wakeup", description=__doc__)
    parser.add_argument("--samples", type=int, default=150, help="round trips per idle gap")
    args = parser.parse_args(argv)
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    pid = os.fork()
    if pid == 0:
        try:
            _echo(listener)
        finally:
            os._exit(0)
    listener.close()
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):
            _round_trip_us(sock)
        for gap in IDLE_GAPS_S:
            samples = []
            # Back to back gets more samples: it is cheap and its spread is narrow.
            for _ in range(args.samples * (20 if gap == 0 else 1)):
                if gap:
                    time.sleep(gap)
                samples.append(_round_trip_us(sock))
            samples.sort()
            label = "back to back" if gap == 0 else f"after {gap * 1000:g} ms idle"
            print(
                f"{label:22} p50 {statistics.median(samples):6.0f} µs"
                f"  p90 {samples[int(len(samples) * 0.9)]:6.0f} µs"
            )
    os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
