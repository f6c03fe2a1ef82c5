"""Property test over real HTTP: no input, however malformed, gets a 500 from POST /route."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import (
    API_KEY,
    ROOT,
    AgentProcess,
    free_port,
    router_env,
    wait_http,
    with_database,
    write_routes,
)

any_text = st.text(st.characters(codec=None, exclude_categories=["Cs"]), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(any_text, c, max_size=3),
    max_leaves=12,
)


def _dumps(value: Any) -> bytes:
    # The stdlib encoder, unlike orjson, writes integers past 64 bits: those must be tested too.
    return json.dumps(value).encode()


messages = st.sampled_from(["solo", "pair", "race", "", "help"]) | any_text
bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "sender_id": any_text,
            "payload": st.fixed_dictionaries({"message": messages}) | json_values,
        },
        optional={
            "log_id": any_text,
            "timestamp": any_text | st.just("2026-11-23T10:00:00Z"),
            "metadata": json_values,
        },
    ).map(_dumps),
    json_values.map(_dumps),
    st.binary(max_size=120),
)


@pytest.fixture(scope="module")
def live_router(
    server_url: str,
    template_db: str,
    agents: dict[str, AgentProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, str]]:
    """A router process on its own database, serving the session's agents."""
    name = f"router_prop_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = with_database(server_url, name)
    routes = write_routes(tmp_path_factory.mktemp("props") / "routes.toml", agents)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--port", str(port)],
        cwd=ROOT,
        env=router_env(url, routes),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
        yield port, url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=bodies)
def test_no_input_gets_a_500(live_router: tuple[int, str], raw: bytes) -> None:
    """Arbitrary bodies get 2xx, 4xx or a contract error; an acknowledged one has its final row."""
    port, url = live_router
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(
            "POST",
            "/route",
            body=raw,
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        status, payload = response.status, response.read()
    finally:
        conn.close()
    assert status < 500, payload
    answer: Any = json.loads(payload)
    if status in (200, 202):
        with psycopg.connect(url) as db:
            row = db.execute(
                "SELECT status FROM signal_log WHERE log_id = %s", (answer["log_id"],)
            ).fetchone()
        assert row is not None and row[0] in ("delivered", "partial", "dead_lettered")
    else:
        assert set(answer["error"]) >= {"code", "message"}
