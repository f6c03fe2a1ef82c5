"""`router replay-dlq` as an operator runs it: a subprocess on the router's database."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.admin_support import dlq_rows, log_rows, seed_dead_letters
from tests.support import ROOT, AgentProcess, RouterServer, free_port, router_env

pytestmark = pytest.mark.asyncio


async def replay_dlq(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `python -m router replay-dlq ARGS`; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "replay-dlq",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


COUNTS = ("replayed", "resolved", "failed", "parked")


def counts(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in COUNTS}


def summary(stdout: str) -> dict[str, Any]:
    """The last stdout line, which must be the one-line JSON summary."""
    lines = stdout.strip().splitlines()
    assert lines, "no summary on stdout"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def test_replays_pending_entries_and_prints_a_summary(
    router: RouterServer, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Exit 0 with {replayed, resolved, failed, parked}, the table and URLs it used and why the
    failures failed; one summary (stdout), progress with its total (stderr); each entry once."""
    ok = seed_dead_letters(router.database_url, 3, prefix="ok")
    down = seed_dead_letters(router.database_url, 2, prefix="down", agents=("beta",), kind="pair")
    fresh_agents["beta"].behave(status=503)
    code, out, err = await replay_dlq(router_env(router.database_url, routes_file))
    assert code == 0, err
    result = summary(out)
    assert counts(result) == {"replayed": 5, "resolved": 3, "failed": 2, "parked": 0}
    assert result["routes"] == str(routes_file)
    assert result["agents"] == {name: [a.url] for name, a in fresh_agents.items()}
    assert result["failures"] == {"beta": {"HTTP 503": 2}}
    assert len(out.strip().splitlines()) == 1
    progress = [json.loads(line)["progress"] for line in err.splitlines() if '"progress"' in line]
    assert progress[-1] == {"replayed": 5, "resolved": 3, "failed": 2, "parked": 0, "total": 5}
    assert "dlq_replayed" not in err  # the summary is printed once, not logged again
    assert fresh_agents["alpha"].stats()["keys"] == {"ok-1": 1, "ok-2": 1, "ok-3": 1}
    assert set(fresh_agents["beta"].stats()["keys"]) == {"down-1", "down-2"}
    statuses = dict(router.query("SELECT id, status FROM dlq"))
    assert [statuses[i] for i in ok + down] == ["resolved"] * 3 + ["pending"] * 2


async def test_limit_kind_and_dry_run(
    router: RouterServer, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """--dry-run lists and changes nothing; --limit and --kind bound what is replayed."""
    solo = seed_dead_letters(router.database_url, 3, prefix="solo")
    seed_dead_letters(router.database_url, 2, prefix="pair", agents=("beta",), kind="pair")
    env = router_env(router.database_url, routes_file)
    before = dlq_rows(router), log_rows(router)

    code, out, err = await replay_dlq(env, "--dry-run", "--kind", "solo")
    assert code == 0, err
    result = summary(out)
    assert counts(result) == {"replayed": 0, "resolved": 0, "failed": 0, "parked": 0}
    assert (result["dry_run"], result["ids"], result["capped"]) == (True, solo, False)
    assert result["entries"][0] == {
        "id": solo[0],
        "kind": "solo",
        "agents": ["alpha"],
        "last_error": "seeded",
    }
    code, out, err = await replay_dlq(env, "--dry-run", "--limit", "2")
    assert (summary(out)["ids"], summary(out)["capped"]) == (solo[:2], True)
    assert (dlq_rows(router), log_rows(router)) == before
    assert fresh_agents["alpha"].stats()["received"] == 0

    code, out, err = await replay_dlq(env, "--limit", "2", "--kind", "solo")
    assert code == 0, err
    assert summary(out)["replayed"] == 2
    # The two oldest, not solo-3; a batch dispatches its entries at once, so the order they
    # reach the agent is the network's.
    assert sorted(fresh_agents["alpha"].stats()["keys"]) == ["solo-1", "solo-2"]
    code, out, err = await replay_dlq(env, "--agent", "beta")
    assert code == 0, err
    assert counts(summary(out)) == {"replayed": 2, "resolved": 2, "failed": 0, "parked": 0}


async def test_bad_arguments_exit_2(tmp_path: Path, routes_file: Path) -> None:
    """Arguments argparse refuses, or a routing table that does not load, exit 2."""
    env = router_env("postgresql://127.0.0.1:1/none", routes_file)
    for args in (["--limit", "0"], ["--limit", "x"], ["--bogus"], ["--agent", ""]):
        code, out, _ = await replay_dlq(env, *args)
        assert (code, out) == (2, ""), args
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rules]]\nkind = 'x'\n")
    code, _, err = await replay_dlq({**env, "ROUTES_FILE": str(broken)})
    assert code == 2 and "broken.toml" in err


async def test_unreachable_database_exits_1_with_one_line(routes_file: Path) -> None:
    """A DATABASE_URL nobody listens on: exit 1, one line on stderr, nothing on stdout."""
    env = router_env(f"postgresql://postgres@127.0.0.1:{free_port()}/router", routes_file)
    code, out, err = await replay_dlq(env)
    assert code == 1 and out == ""
    [line] = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("router replay-dlq: database unavailable"), line


async def test_four_copies_at_once_deliver_every_entry_once(
    router: RouterServer, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Four `router replay-dlq` processes over one backlog dispatch each entry exactly once."""
    ids = seed_dead_letters(router.database_url, 200)
    env = router_env(router.database_url, routes_file)
    runs = await asyncio.gather(*(replay_dlq(env) for _ in range(4)))
    assert all(code == 0 for code, _, _ in runs), runs
    assert sum(summary(out)["replayed"] for _, out, _ in runs) == len(ids)
    keys = fresh_agents["alpha"].stats()["keys"]
    assert len(keys) == len(ids) and set(keys.values()) == {1}
    assert router.query("SELECT DISTINCT status FROM dlq") == [("resolved",)]
