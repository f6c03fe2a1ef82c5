"""One bounded pass of the fault suite (chaos/): every fault against real processes, on a
private PostgreSQL cluster, and the whole history checked; `make chaos N=5` is the long run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(420)
def test_every_fault_keeps_every_promise(tmp_path: Path) -> None:
    """Each scenario (PostgreSQL crash, stall, slow claims, replay starvation, SIGTERM past
    the drain, SIGKILL, three routers behind nginx with one killed) ends with zero violations
    of the invariants in chaos/history.py."""
    out = tmp_path / "chaos.json"
    result = subprocess.run(
        [sys.executable, "-m", "chaos", "--scale", "small", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["violations"] == 0
    scenarios = {r["scenario"] for r in summary["results"]}
    assert scenarios == {
        "pg_crash",
        "stall_lock",
        "slow_claim",
        "replay_starvation",
        "sigterm_drain",
        "sigkill",
        "many_routers",
    }
    for run in summary["results"]:
        # Each fault did bite: something was acknowledged and something was delivered.
        assert run["acknowledged"] > 0 and run["deliveries"] > 0, run
    by_name = {r["scenario"]: r for r in summary["results"]}
    assert by_name["sigterm_drain"]["answers"].get("503 interrupted", 0) > 0
    assert by_name["stall_lock"]["answers"].get("503 database_unavailable", 0) > 0
    assert by_name["replay_starvation"]["replayed"] > 0
    # Behind nginx the survivors kept answering and the replayers worked during the load.
    assert by_name["many_routers"]["replayed"] > 0
