"""`python -m chaos`: every fault, N passes, one table of counts and violations; exit 1 on any."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from chaos.cluster import Cluster
from chaos.history import INVARIANTS, Verdict
from chaos.scenarios import DATABASE_FAULTS, SCALES, SCENARIOS, Stage
from tests.support import ROOT

EXAMPLES = 10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--passes", type=int, default=1, help="passes over every scenario")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, of: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--out", type=Path, default=ROOT / ".router" / "chaos.json")
    return parser


def _row(name: str, verdict: Verdict, seconds: float) -> str:
    refused = sum(n for label, n in verdict.answers.items() if label.startswith("503"))
    return (
        f"{name:<22} {verdict.sent:>6} {verdict.acknowledged:>6} {refused:>6} {verdict.rows:>6}"
        f" {verdict.deliveries:>6} {verdict.replayed:>6} {verdict.violation_count:>5}"
        f" {seconds:>6.1f}s"
    )


async def _run(
    passes: int, names: list[str], scale_name: str, run_dir: Path
) -> list[dict[str, Any]]:
    scale = SCALES[scale_name]
    cluster = Cluster()
    results: list[dict[str, Any]] = []
    print(
        f"{'scenario':<22} {'sent':>6} {'2xx':>6} {'503':>6} {'rows':>6} {'deliv':>6}"
        f" {'replay':>6} {'viol':>5} {'time':>7}",
        flush=True,
    )
    try:
        cluster.start()
        for index in range(passes):
            for name in names:
                started = time.monotonic()
                stage = await asyncio.to_thread(Stage, cluster, run_dir, f"{name}_p{index + 1}")
                try:
                    signals = await SCENARIOS[name](stage, scale)
                    verdict = await stage.recover_and_check(
                        signals, database_faulted=name in DATABASE_FAULTS
                    )
                finally:
                    await asyncio.to_thread(stage.close)
                seconds = time.monotonic() - started
                print(_row(f"{name} #{index + 1}", verdict, seconds), flush=True)
                results.append(
                    {
                        "scenario": name,
                        "pass": index + 1,
                        "sent": verdict.sent,
                        "acknowledged": verdict.acknowledged,
                        "answers": dict(verdict.answers),
                        "rows": verdict.rows,
                        "deliveries": verdict.deliveries,
                        "replayed": verdict.replayed,
                        "violations": {k: v for k, v in verdict.violations.items() if v},
                        "seconds": round(seconds, 1),
                    }
                )
    finally:
        await asyncio.to_thread(cluster.stop)
    return results


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    names = [n.strip() for n in ns.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or ns.passes < 1:
        print(f"chaos: unknown scenario {unknown} or --passes < 1", file=sys.stderr)
        return 2
    run_dir = ROOT / ".router" / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(_run(ns.passes, names, ns.scale, run_dir))

    totals: Counter[str] = Counter()
    by_invariant: dict[str, list[str]] = {}
    for r in results:
        for key in ("sent", "acknowledged", "rows", "deliveries", "replayed"):
            totals[key] += r[key]
        for invariant, examples in r["violations"].items():
            by_invariant.setdefault(invariant, []).extend(f"{r['scenario']}: {e}" for e in examples)
    violations = sum(len(v) for v in by_invariant.values())
    print(
        f"total: {len(results)} runs, sent {totals['sent']}, acknowledged {totals['acknowledged']},"
        f" rows {totals['rows']}, deliveries {totals['deliveries']}, replayed {totals['replayed']},"
        f" violations {violations}"
    )
    for invariant, examples in sorted(by_invariant.items()):
        print(f"{invariant} ({INVARIANTS[invariant]}): {len(examples)}")
        for example in examples[:EXAMPLES]:
            print(f"  {example}")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_bytes(
        orjson.dumps({"results": results, "violations": violations}, option=orjson.OPT_INDENT_2)
    )
    print(f"logs: {run_dir}; summary: {ns.out}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
