"""`make dev` as a new user meets it: the README's commands work, a signal to its process group
stops everything, a taken port is named, and editing the routing table reloads the server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.ports import port_in_use
from tests.support import (
    DEV_PORTS,
    ROOT,
    AgentProcess,
    free_port,
    group_members,
    readme_commands,
    router_env,
    run_make_dev,
    wait_http,
    write_routes,
)


@pytest.fixture
def make_dev(database_url: str) -> Iterator[subprocess.Popen[bytes]]:
    with run_make_dev(database_url) as proc:
        yield proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_to_the_group_stops_everything(
    make_dev: subprocess.Popen[bytes], sig: signal.Signals
) -> None:
    """The README's commands answer (the 3 a.m. one without ADMIN_API_KEY set, as make dev
    leaves it); then one signal to the group leaves no process and no port behind."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ADMIN_API_KEY")}
    commands = readme_commands()
    assert len(commands) >= 6, commands  # Try it, the console story, 3 a.m.
    for command in commands:
        out = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, check=True, timeout=30
        ).stdout
        answer = json.loads(out)
        assert "error" not in answer, (command, answer)
        if "/dlq?status=pending" in command:  # the README's story left its dead letter
            assert [i["kind"] for i in answer["items"]] == ["billing"], answer
    os.killpg(make_dev.pid, sig)
    make_dev.wait(timeout=30)
    deadline = time.monotonic() + 20
    while group_members(make_dev.pid) or any(port_in_use("127.0.0.1", p) for p in DEV_PORTS):
        assert time.monotonic() < deadline, (
            group_members(make_dev.pid),
            [p for p in DEV_PORTS if port_in_use("127.0.0.1", p)],
        )
        time.sleep(0.2)


def test_a_taken_port_names_its_holder(database_url: str, routes_file: Path) -> None:
    """`router serve` on a port someone holds says which process it is, and exits 1."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "router", "serve", "--port", str(port)],
            cwd=ROOT,
            env=router_env(database_url, routes_file),
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 1
    message = done.stderr.decode()
    assert f"127.0.0.1:{port} is already in use by pid {os.getpid()} (" in message, message


def test_editing_the_routing_table_reloads_make_devs_server(
    database_url: str, tmp_path: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Under --reload, a new rule in ROUTES_FILE is serving within seconds."""
    routes = write_routes(tmp_path / "routes.toml", fresh_agents)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--port", str(port), "--reload"],
        cwd=ROOT,
        env=router_env(database_url, routes),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health/ready", proc, timeout=60)
        assert 'kind="added"' not in _metrics(base)
        text = routes.read_text()
        rule = '[[rules]]\nkind = "added"\nkeywords = ["added"]\nagents = ["alpha"]\n\n'
        routes.write_text(text.replace("[[rules]]", rule + "[[rules]]", 1))
        deadline = time.monotonic() + 30
        while 'kind="added"' not in _metrics(base):
            assert time.monotonic() < deadline, "the server did not reload the table"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _metrics(base: str) -> str:
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
            text: str = response.read().decode()
            return text
    except OSError:
        return ""  # between the old server and the new one
