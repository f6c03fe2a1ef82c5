"""The route path's CPU per signal in process, layer by layer: no HTTP server, no load generator.

    python -m benches.layers [--signals 64000] [--rounds 2]

Each variant drives POST /route's handler (`RoutePath.answer`, what the HTTP protocol calls
once a body is in) with `--signals` signals, 32 at a time, in a process of its own on the
bench database and agent, with the layers it names answered at once (benches.ablated_router).
Adding one layer at a time, from the handler alone to the router as shipped, gives what each
costs the router's process, without the HTTP server's share and without a load generator on
the same two cores; benches.ablation measures the same layers over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benches.ablated_router import LAYERS, ablate
from benches.driver import command_cpu_s, used_between
from benches.stack import API_KEY, ROOT, ROUTE_BODY, Stack, e2e_stack
from tests.support import router_env

DATABASE_COMMAND = "postgres"
CONCURRENCY = 32
WARMUP_SIGNALS = 64 * CONCURRENCY
# Each variant: the layers answered at once, and the variant it adds one layer to. The
# layers interact: with the agent call a signal takes longer, so the lanes' batches are
# smaller and each row pays more of its statement's fixed cost; hence the agent call is
# added both with the database and without it.
VARIANTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "the handler alone": (("log", "metrics", "database", "agent"), None),
    "+ log line, metrics": (("database", "agent"), "the handler alone"),
    "+ database lanes": (("agent",), "+ log line, metrics"),
    "+ agent call, no database": (("database",), "+ log line, metrics"),
    "+ both: as shipped": ((), "+ database lanes"),
}


@dataclass(frozen=True, slots=True)
class Run:
    """One variant's window: the router process's CPU and PostgreSQL's, per signal."""

    signals: int
    cpu_us: float
    database_cpu_us: float
    rate: float
    statuses: dict[str, int]


async def _drive(layers: Sequence[str], signals: int, env: dict[str, str]) -> Run:
    """The app's lifespan in this loop, then `signals` signals through its route path."""
    # Imported here: ablate() must patch the classes before the app is built from them.
    from router.app import create_app
    from router.http_protocol import ROUTE_PATH_STATE
    from router.settings import Settings

    app = create_app(Settings.from_env(env))
    statuses: dict[str, int] = {}
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"x-api-key", API_KEY.encode()),
    ]

    async def reply(status: int, content: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    async with app.router.lifespan_context(app) as state:
        route_path = state[ROUTE_PATH_STATE]  # type: ignore[index]

        async def worker(count: int) -> None:
            for _ in range(count):
                await route_path.answer(headers, ROUTE_BODY, time.perf_counter(), reply)

        await asyncio.gather(*(worker(WARMUP_SIGNALS // CONCURRENCY) for _ in range(CONCURRENCY)))
        statuses.clear()
        per_worker = max(1, signals // CONCURRENCY)
        database_before = command_cpu_s(DATABASE_COMMAND)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(per_worker) for _ in range(CONCURRENCY)))
        cpu_s, wall_s = time.process_time() - cpu_before, time.perf_counter() - wall_before
        database_s = used_between(database_before, command_cpu_s(DATABASE_COMMAND))
    done = per_worker * CONCURRENCY
    return Run(
        signals=done,
        cpu_us=round(cpu_s / done * 1e6, 1),
        database_cpu_us=round(database_s / done * 1e6, 1),
        rate=round(done / wall_s),
        statuses=statuses,
    )


def run_variant(stack: Stack, layers: Sequence[str], signals: int) -> Run:
    """One variant in a process of its own (ablate() patches classes for good)."""
    env = router_env(stack.database_url, stack.routes_file, LOG_LEVEL="info", LOG_FORMAT="json")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "benches.layers", "--child", ",".join(layers)]
    command += ["--signals", str(signals)]
    # The log line goes where a served router's goes in the benches: a file. A new one per
    # run (~16 MB of lines each): only a failed run's output is ever read.
    with open(stack.workdir / "layers.log", "wb") as log:
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"variant {layers} failed; see {stack.workdir / 'layers.log'}")
    return Run(**json.loads(done.stdout.splitlines()[-1]))


def measure(stack: Stack, signals: int, rounds: int) -> dict[str, list[Run]]:
    """Every variant once a round, in order, `rounds` times."""
    runs: dict[str, list[Run]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, (layers, _) in VARIANTS.items():
            runs[name].append(run_variant(stack, layers, signals))
    return runs


def report(runs: dict[str, list[Run]]) -> str:
    """The table: medians per variant, and what its layer adds to the variant it builds on."""
    lines = [
        "| variant | router CPU per signal | the layer adds | PostgreSQL per signal | signals/s |",
        "|---|---|---|---|---|",
    ]
    cpu = {name: statistics.median(r.cpu_us for r in rs) for name, rs in runs.items()}
    for name, variant_runs in runs.items():
        base = VARIANTS[name][1]
        database = statistics.median(r.database_cpu_us for r in variant_runs)
        rate = statistics.median(r.rate for r in variant_runs)
        added = "" if base is None else f"{cpu[name] - cpu[base]:+.1f} µs"
        lines.append(f"| {name} | {cpu[name]:.1f} µs | {added} | {database:.1f} µs | {rate:,.0f} |")
    return "\n".join(lines)


def errors(runs: dict[str, list[Run]]) -> int:
    """Answers other than 200 over every run."""
    return sum(n for rs in runs.values() for r in rs for s, n in r.statuses.items() if s != "200")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.layers", description=__doc__)
    parser.add_argument("--signals", type=int, default=64_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        layers = [layer for layer in args.child.split(",") if layer]
        ablate(layers)
        import uvloop

        run = uvloop.run(_drive(layers, args.signals, dict(os.environ)))
        print(json.dumps(asdict(run)))
        return 0
    with e2e_stack() as stack:
        runs = measure(stack, args.signals, args.rounds)
    print(report(runs))
    if args.json is not None:
        args.json.write_text(
            json.dumps({name: [asdict(r) for r in rs] for name, rs in runs.items()}, indent=1)
        )
    failed = errors(runs)
    if failed:
        print(f"{failed} answers were not 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["LAYERS", "VARIANTS", "Run", "measure", "report", "run_variant"]
