"""The demo / load-test agents, run as real `python -m router.agents` subprocesses."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from router.agents import AgentBehaviour

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 15.0


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Agent:
    """A running agents process and the lines it printed."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_line(self, needle: str, timeout: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self.lines.empty()):
                raise AssertionError(
                    f"no line containing {needle!r}; exit={self.proc.poll()}, "
                    f"stderr={self.stderr()!r}"
                )
            try:
                line = self.lines.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if needle in line:
                return line

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()


def _pump(agent: Agent) -> None:
    assert agent.proc.stdout is not None
    for line in agent.proc.stdout:
        agent.lines.put(line.rstrip("\n"))


def spawn(*args: str, env: dict[str, str] | None = None) -> Agent:
    """Start `python -m router.agents ARGS` without waiting for it to listen."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.agents", *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent = Agent(proc)
    threading.Thread(target=_pump, args=(agent,), daemon=True).start()
    return agent


@pytest.fixture
def start() -> Iterator[Callable[..., Agent]]:
    """Factory: start one agent on a free port and wait for its listening line."""
    started: list[Agent] = []

    def _start(*args: str, name: str = "agent") -> Agent:
        port = free_port()
        agent = spawn("--port", str(port), "--name", name, *args)
        started.append(agent)
        line = agent.wait_line("listening on")
        assert line == f"agent {name} listening on http://127.0.0.1:{port}/handle"
        agent.port = port
        return agent

    yield _start
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.kill()
        agent.proc.wait(timeout=10)
        for stream in (agent.proc.stdout, agent.proc.stderr):
            if stream is not None:
                stream.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One HTTP request; any status comes back as a Reply instead of an exception."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, head, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        status, head, payload = err.code, dict(err.headers), err.read()
    return Reply(status, head, json.loads(payload) if payload else None)


def deliver(agent: Agent, key: str, attempt: int = 1, **extra: Any) -> Reply:
    """Deliver a signal the way the router does."""
    body = {
        "log_id": key,
        "sender_id": "user_1",
        "kind": "general",
        "payload": {"message": "hello"},
        "metadata": {},
        "timestamp": "2024-01-01T00:00:00Z",
        **extra,
    }
    headers = {
        "Idempotency-Key": key,
        "X-Router-Attempt": str(attempt),
        "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
    }
    return call("POST", f"{agent.base}/handle", body, headers=headers)


def stats(agent: Agent) -> dict[str, Any]:
    reply = call("GET", f"{agent.base}/stats")
    assert reply.status == 200
    result: dict[str, Any] = reply.body
    return result


def test_success_answers_200_and_counts_per_key(start: Callable[..., Agent]) -> None:
    """A healthy agent answers 200 with its name and counts deliveries per Idempotency-Key."""
    agent = start(name="policy")
    first = deliver(agent, "k1")
    again = deliver(agent, "k1", attempt=2)
    other = deliver(agent, "k2")

    assert first.status == 200
    assert first.body == {"agent": "policy", "log_id": "k1", "received": 1}
    assert again.body["received"] == 2
    assert other.body["received"] == 1
    assert stats(agent) == {
        "agent": "policy",
        "received": 3,
        "succeeded": 3,
        "failed": 0,
        "max_in_flight": 1,
        "keys": {"k1": 2, "k2": 1},
    }
    records = call("GET", f"{agent.base}/requests").body
    assert [(r["idempotency_key"], r["attempt"], r["status"]) for r in records] == [
        ("k1", 1, 200),
        ("k1", 2, 200),
        ("k2", 1, 200),
    ]
    assert records[0]["traceparent"] == f"00-{'a' * 32}-{'b' * 16}-01"
    assert records[0]["body"]["payload"] == {"message": "hello"}
    only_k2 = call("GET", f"{agent.base}/requests?key=k2").body
    assert [r["idempotency_key"] for r in only_k2] == ["k2"]


def test_status_always_fails(start: Callable[..., Agent]) -> None:
    """With --status 500 every delivery, retries included, answers 500."""
    agent = start("--status", "500")
    replies = [deliver(agent, "k", attempt=n) for n in (1, 2, 3)]

    assert [r.status for r in replies] == [500, 500, 500]
    assert "Retry-After" not in replies[0].headers
    counts = stats(agent)
    assert (counts["received"], counts["succeeded"], counts["failed"]) == (3, 0, 3)


def test_status_can_be_a_client_error(start: Callable[..., Agent]) -> None:
    """--status 400 answers a non-retryable 4xx, so the router's no-retry path can be tested."""
    agent = start("--status", "400")
    assert deliver(agent, "k").status == 400


def test_fail_first_fails_each_key_n_times_then_succeeds(start: Callable[..., Agent]) -> None:
    """--fail-first 2 fails the first two attempts of every key and lets the third through."""
    agent = start("--fail-first", "2")
    first_key = [deliver(agent, "a", attempt=n).status for n in (1, 2, 3, 4)]
    second_key = [deliver(agent, "b", attempt=n).status for n in (1, 2, 3)]

    assert first_key == [503, 503, 200, 200]
    assert second_key == [503, 503, 200]
    assert stats(agent)["keys"] == {"a": 4, "b": 3}


def test_fail_rate_one_always_fails_with_fail_status(start: Callable[..., Agent]) -> None:
    """--fail-rate 1.0 fails every delivery with --fail-status."""
    agent = start("--fail-rate", "1.0", "--fail-status", "502")
    statuses = {deliver(agent, f"k{n}").status for n in range(20)}

    assert statuses == {502}
    assert stats(agent)["failed"] == 20


def test_fail_rate_with_seed_is_reproducible(start: Callable[..., Agent]) -> None:
    """Two agents with the same --seed and --fail-rate fail the same deliveries."""
    one = start("--fail-rate", "0.5", "--seed", "7")
    two = start("--fail-rate", "0.5", "--seed", "7")
    first = [deliver(one, f"k{n}").status for n in range(40)]
    second = [deliver(two, f"k{n}").status for n in range(40)]

    assert first == second
    assert set(first) == {200, 503}


def test_retry_after_header_on_failures_only(start: Callable[..., Agent]) -> None:
    """--retry-after adds a Retry-After header to failures, never to successes."""
    agent = start("--fail-first", "1", "--retry-after", "1.5", "--fail-status", "429")
    failed = deliver(agent, "k")
    succeeded = deliver(agent, "k", attempt=2)

    assert failed.status == 429
    assert failed.headers["Retry-After"] == "1.5"
    assert succeeded.status == 200
    assert "Retry-After" not in succeeded.headers

    call("POST", f"{agent.base}/behaviour", {"status": 503, "retry_after": 2})
    assert deliver(agent, "other").headers["Retry-After"] == "2"


def test_latency_delays_the_answer(start: Callable[..., Agent]) -> None:
    """--latency-ms delays every answer by at least that long."""
    agent = start("--latency-ms", "300")
    began = time.monotonic()
    reply = deliver(agent, "k")

    assert reply.status == 200
    assert time.monotonic() - began >= 0.28


def test_hang_never_answers_until_the_client_gives_up(start: Callable[..., Agent]) -> None:
    """--hang keeps the delivery open until the client times out, while other endpoints work."""
    agent = start("--hang")
    began = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        call("POST", f"{agent.base}/handle", {"log_id": "k"}, timeout=0.5)

    assert time.monotonic() - began >= 0.45
    assert call("GET", f"{agent.base}/health").status == 200
    counts = stats(agent)
    assert (counts["received"], counts["succeeded"], counts["failed"]) == (1, 0, 0)
    assert call("GET", f"{agent.base}/requests").body[0]["status"] is None


def test_behaviour_switches_at_run_time(start: Callable[..., Agent]) -> None:
    """POST /behaviour takes an agent down with 503 and brings it back without a restart."""
    agent = start()
    assert deliver(agent, "before").status == 200

    changed = call("POST", f"{agent.base}/behaviour", {"status": 503, "retry_after": 1})
    assert changed.status == 200
    assert changed.body["status"] == 503
    down = deliver(agent, "during")
    assert down.status == 503
    assert down.headers["Retry-After"] == "1"
    assert call("GET", f"{agent.base}/behaviour").body["status"] == 503

    assert call("POST", f"{agent.base}/behaviour", {"status": None}).status == 200
    assert deliver(agent, "after").status == 200


def test_behaviour_rejects_invalid_changes(start: Callable[..., Agent]) -> None:
    """POST /behaviour refuses unknown fields and bad values, and keeps the old behaviour."""
    agent = start()
    refused = [
        ({"fail_rate": 2}, "fail_rate: Input should be less than or equal to 1"),
        ({"nope": 1}, "nope: Extra inputs are not permitted"),
        ({"status": True}, "status: Input should be a valid integer"),
        ({"fail_first": True}, "fail_first: Input should be a valid integer"),
        ({"status": 200.0}, "status: Input should be a valid integer"),
        ({"hang": 1}, "hang: Input should be a valid boolean"),
        ({"latency_ms": "slow"}, "latency_ms: Input should be a valid number"),
    ]
    for bad, message in refused:
        reply = call("POST", f"{agent.base}/behaviour", bad)
        assert reply.status == 422, bad
        assert reply.body["error"] == {"code": "invalid_behaviour", "message": message}
    assert call("POST", f"{agent.base}/behaviour", raw=b"[1]").status == 400
    assert call("GET", f"{agent.base}/behaviour").body["fail_rate"] == 0.0
    assert deliver(agent, "k").status == 200


def test_reset_clears_records_and_counts(start: Callable[..., Agent]) -> None:
    """POST /reset empties stats and records, and per-key counts start again at 1."""
    agent = start()
    deliver(agent, "k")
    deliver(agent, "k", attempt=2)

    assert call("POST", f"{agent.base}/reset").status == 200
    assert stats(agent) == {
        "agent": "agent",
        "received": 0,
        "succeeded": 0,
        "failed": 0,
        "max_in_flight": 0,
        "keys": {},
    }
    assert call("GET", f"{agent.base}/requests").body == []
    assert deliver(agent, "k").body["received"] == 1


def test_bad_json_is_400(start: Callable[..., Agent]) -> None:
    """A body that is not a JSON object gets 400 and is counted as a failure."""
    agent = start()
    headers = {"Idempotency-Key": "k"}
    not_json = call("POST", f"{agent.base}/handle", raw=b"{not json", headers=headers)
    not_object = call("POST", f"{agent.base}/handle", raw=b"[1, 2]", headers=headers)

    assert not_json.status == 400
    assert not_json.body["error"]["code"] == "invalid_json"
    assert not_object.status == 400
    counts = stats(agent)
    assert (counts["received"], counts["succeeded"], counts["failed"]) == (2, 0, 2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero_promptly(start: Callable[..., Agent], signum: int) -> None:
    """SIGTERM or SIGINT stops the agent with exit status 0 within a few seconds."""
    agent = start()
    deliver(agent, "k")
    began = time.monotonic()
    agent.proc.send_signal(signum)

    assert agent.proc.wait(timeout=10) == 0
    assert time.monotonic() - began < 3.0


def test_sigterm_does_not_wait_for_hung_requests(start: Callable[..., Agent]) -> None:
    """A hung delivery does not hold up shutdown: SIGTERM still exits 0 promptly."""
    agent = start("--hang")
    outcome: list[object] = []

    def hang() -> None:
        try:
            outcome.append(call("POST", f"{agent.base}/handle", {"log_id": "k"}, timeout=30))
        except (OSError, urllib.error.URLError) as err:
            outcome.append(err)

    client = threading.Thread(target=hang)
    client.start()
    deadline = time.monotonic() + 5
    while stats(agent)["received"] == 0:
        assert time.monotonic() < deadline, "the hung request never arrived"
        time.sleep(0.02)
    began = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)

    assert agent.proc.wait(timeout=10) == 0
    assert time.monotonic() - began < 3.0
    client.join(timeout=10)
    assert outcome, "the hung client never returned"
    assert not (isinstance(outcome[0], Reply) and outcome[0].status == 200)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--fail-rate", "2"], "fail_rate: Input should be less than or equal to 1"),
        (["--fail-status", "200"], "fail_status: Input should be greater than or equal to 400"),
        (["--latency-ms", "nan"], "latency_ms: Input should be a finite number"),
        (["--retry-after", "inf"], "retry_after: Input should be a finite number"),
    ],
)
def test_invalid_option_exits_2(option: list[str], message: str) -> None:
    """An out-of-range or non-finite option is refused with exit status 2 and a message."""
    proc = subprocess.run(
        [sys.executable, "-m", "router.agents", "--port", "0", *option],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_behaviour_model_coerces_ints_to_floats_only() -> None:
    """An int is a float field's value (as a float); a bool is no int field's value."""
    changed = AgentBehaviour().updated({"latency_ms": 2, "retry_after": 1})
    assert changed.to_json()["latency_ms"] == 2.0
    assert isinstance(changed.retry_after, float)
    with pytest.raises(ValueError, match="fail_status"):
        AgentBehaviour(fail_status=True)
    with pytest.raises(ValueError, match="latency_ms"):
        AgentBehaviour().updated({"latency_ms": float("inf")})


def test_port_in_use_exits_1() -> None:
    """An agent whose port is taken reports it and exits 1 instead of hanging."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "router.agents", "--port", str(port)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert "router agents:" in proc.stderr


def test_routes_file_serves_every_local_agent(tmp_path: Path) -> None:
    """Without --port, every local agent of ROUTES_FILE is served on its port and path."""
    one, two = free_port(), free_port()
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f"""
[agents.alpha]
url = "http://127.0.0.1:{one}/handle"

[agents.beta]
url = "http://localhost:{two}/in"

[agents.remote]
url = "http://agents.example.com:9000/handle"

[[rules]]
kind = "general"
default = true
agents = ["alpha", "beta", "remote"]
""",
        encoding="utf-8",
    )
    agent = spawn(env={"ROUTES_FILE": str(routes)})
    try:
        agent.wait_line(f"agent alpha listening on http://127.0.0.1:{one}/handle")
        agent.wait_line(f"agent beta listening on http://127.0.0.1:{two}/in")
        agent.port = one
        assert deliver(agent, "k").body["agent"] == "alpha"
        beta = call("POST", f"http://127.0.0.1:{two}/in", {"log_id": "k"})
        assert beta.body == {"agent": "beta", "log_id": "k", "received": 1}
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=10) == 0
        assert "agent remote skipped" in agent.stderr()
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(timeout=10)


def test_bad_routes_file_exits_2_naming_it(tmp_path: Path) -> None:
    """A routing table that fails to load stops the agents with exit 2 and the file's name."""
    routes = tmp_path / "broken.toml"
    routes.write_text("[agents.a]\nurl = 3\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "router.agents", "--routes", str(routes)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "broken.toml" in proc.stderr
