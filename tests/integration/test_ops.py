"""The ops files: promtool checks and rule tests, the compose file, the dashboard and rules run
by a real Prometheus against a router that served traffic, and metrics across two workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import MULTIPROC_ENV, prepare_multiprocess_dir, reap_dead_workers
from tests.support import (
    API_KEY,
    ROOT,
    AgentProcess,
    RouterServer,
    free_port,
    received_by_worker,
    serve_workers,
)

OPS = ROOT / "ops"
PROMETHEUS_DIR = OPS / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "router.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "router.rules.test.yml"
DASHBOARD = OPS / "grafana" / "dashboards" / "router.json"
COMPOSE = ROOT / "docker-compose.yml"
OUTCOMES = {"delivered", "partial", "dead_lettered", "duplicate", "rejected"}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH")
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not on PATH"
)


def _run(*cmd: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done.stdout + done.stderr


def _compose_command() -> list[str] | None:
    """docker-compose (v1) or docker compose (v2), whichever works here."""
    for cmd in (["docker-compose"], ["docker", "compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return cmd
    return None


# --- promtool -----------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_config() -> None:
    """promtool check config accepts prometheus.yml and finds its rule file."""
    out = _run("promtool", "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "1 rule files found" in out


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    """promtool check rules accepts every rule file."""
    _run("promtool", "check", "rules", *map(str, sorted(RULES.parent.glob("*.rules.yml"))))


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    """promtool test rules: every recording rule and alert behaves as its unit tests say."""
    _run("promtool", "test", "rules", str(RULE_TESTS))


# Each change breaks one rule in a way its unit tests must notice.
BROKEN_RULES = [
    ("ratio_rate1h > (14.4 * 0.001)", "ratio_rate1h > (1.44 * 0.001)"),  # fast burn too eager
    ('code=~"5.."}[5m]', 'code=~"[45].."}[5m]'),  # 4xx counted against availability
    ("max by (job) (dlq_backlog) > 100", "max by (job) (dlq_backlog) > 1000"),
    ("> (1.5 * 0.5)", "> (1.0 * 0.5)"),  # latency fast burn at 1x
    ("ratio_rate5m > 0.05", "ratio_rate5m > 0.5"),  # agent errors
    ("for: 1m", "for: 0s"),  # router down on one missed scrape
]


def _promtool_fails(directory: Path, original: str, broken: str) -> bool:
    rules = RULES.read_text()
    assert original in rules
    directory.mkdir()
    (directory / RULES.name).write_text(rules.replace(original, broken))
    shutil.copy(RULE_TESTS, directory / RULE_TESTS.name)
    done = subprocess.run(
        ["promtool", "test", "rules", str(directory / RULE_TESTS.name)],
        capture_output=True,
        timeout=60,
    )
    return done.returncode != 0


@needs_promtool
def test_rule_unit_tests_catch_broken_rules(tmp_path: Path) -> None:
    """The rule unit tests fail when a threshold, a window or the SLI's definition changes."""
    with ThreadPoolExecutor(max_workers=len(BROKEN_RULES)) as pool:
        caught = pool.map(
            lambda i: _promtool_fails(tmp_path / str(i), *BROKEN_RULES[i]),
            range(len(BROKEN_RULES)),
        )
        missed = [change for change, failed in zip(BROKEN_RULES, caught, strict=True) if not failed]
    assert not missed


def test_check_script_skips_without_promtool(tmp_path: Path) -> None:
    """ops/check.sh says promtool is missing and still exits 0 when it is not on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    out = _run("bash", str(OPS / "check.sh"), env={"PATH": str(bin_dir)})
    assert "promtool not found" in out


@needs_promtool
def test_check_script_runs_every_check() -> None:
    """ops/check.sh runs the config, rules and rule-test checks and exits 0."""
    out = _run(str(OPS / "check.sh"))
    assert "valid prometheus config" in out
    assert "SUCCESS" in out


# --- compose, Grafana provisioning --------------------------------------------------------


def test_compose_file_validates() -> None:
    """docker-compose config accepts the compose file and it has the whole stack."""
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("neither docker-compose nor docker compose works here")
    _run(*cmd, "-f", str(COMPOSE), "config", "-q")
    config = yaml.safe_load(_run(*cmd, "-f", str(COMPOSE), "config"))
    services = config["services"]
    assert {"postgres", "router", "prometheus", "grafana"} <= set(services)
    assert {"agent-policy", "agent-support", "agent-billing"} <= set(services)
    assert services["router"]["environment"]["ROUTES_FILE"] == "/etc/router/routes.toml"


def test_compose_routes_table_targets_the_agent_services() -> None:
    """ops/compose/routes.toml loads and every agent URL names a compose service."""
    _run(sys.executable, "-m", "router", "check-routes", str(OPS / "compose" / "routes.toml"))
    compose = yaml.safe_load(COMPOSE.read_text())
    table = (OPS / "compose" / "routes.toml").read_text()
    hosts = re.findall(r'url = "http://([a-z0-9-]+):\d+/handle"', table)
    assert len(hosts) == 3
    assert set(hosts) <= set(compose["services"])


def test_grafana_provisioning_matches_the_dashboard() -> None:
    """Dashboard targets use the provisioned data sources; the provider reads its folder; the
    PostgreSQL one is the compose file's database."""
    sources = OPS / "grafana" / "provisioning" / "datasources"
    datasource = yaml.safe_load((sources / "prometheus.yml").read_text())["datasources"][0]
    postgres = yaml.safe_load((sources / "postgres.yml").read_text())["datasources"][0]
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    assert postgres["url"] == "postgres:5432" and "postgres" in compose["grafana"]["depends_on"]
    database = compose["postgres"]["environment"]
    assert postgres["jsonData"]["database"] == database["POSTGRES_DB"]
    assert postgres["user"] == database["POSTGRES_USER"]
    provider = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "dashboards" / "router.yml").read_text()
    )["providers"][0]
    grafana_volumes = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]["volumes"]
    assert f"./ops/grafana/dashboards:{provider['options']['path']}:ro" in grafana_volumes
    targets = [t for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    assert targets
    assert {t["datasource"]["uid"] for t in targets} == {datasource["uid"], postgres["uid"]}
    for target in targets:
        assert ("rawSql" in target) == (target["datasource"]["uid"] == postgres["uid"]), target


# --- a real Prometheus against a router that served traffic -------------------------------


def _dashboard_exprs() -> list[str]:
    """Every panel's PromQL, with Grafana's variables replaced by what Grafana would send."""
    exprs = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue  # a PostgreSQL panel: tests/integration/test_stats.py runs its SQL
            expr = re.sub(r"\$__(rate_interval|interval|range)", "1m", target["expr"])
            expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # $kind, $agent: "All"
            exprs.append(expr)
    return exprs


def _recording_exprs() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {
        rule["record"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def _signal(message: str, **extra: Any) -> dict[str, Any]:
    return {"sender_id": "ops-test", "payload": {"message": f"{message} {uuid.uuid4()}"}, **extra}


async def _route_expecting(router: RouterServer, body: Any, status: str, **kw: Any) -> None:
    """Route one signal and check the outcome, so the traffic really covers each case."""
    code, answer, _ = await router.route(body, **kw)
    if status == "rejected":
        assert code >= 400, answer
    elif status == "duplicate":  # the stored outcome, flagged
        assert answer["duplicate"] is True, answer
    else:
        assert answer["status"] == status, answer


async def _send_every_outcome(router: RouterServer, agents: dict[str, AgentProcess]) -> None:
    """delivered, retried, partial, dead_lettered, duplicate and rejected signals."""
    for word in ("solo", "pair", "race", "hello"):
        await _route_expecting(router, _signal(word), "delivered")
    agents["alpha"].behave(fail_first=1)  # every signal's first attempt fails: one retry
    await _route_expecting(router, _signal("solo"), "delivered")
    agents["alpha"].behave(fail_first=0)
    agents["beta"].behave(status=503)
    await _route_expecting(router, _signal("pair"), "partial")
    agents["alpha"].behave(status=503)
    await _route_expecting(router, _signal("solo"), "dead_lettered")
    agents["alpha"].behave(status=None)
    agents["beta"].behave(status=None)
    repeated = _signal("solo", log_id=f"ops-{uuid.uuid4().hex}")
    await _route_expecting(router, repeated, "delivered")
    await _route_expecting(router, repeated, "duplicate")
    await _route_expecting(router, _signal("solo"), "rejected", key="wrong-key")
    await _route_expecting(router, b"{not json", "rejected")


async def _keep_sending(router: RouterServer) -> None:
    """Background traffic, so every rate over the last minute is non-zero."""
    while True:
        await router.route(_signal("solo"))
        await router.route(_signal("race"))
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _prometheus(
    tmp_path: Path, target: str
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The real prometheus binary scraping `target` every second, with our rules loaded."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "router", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/-/ready") as resp:
                        if resp.status == 200:
                            break
                assert time.monotonic() < deadline, "prometheus did not get ready"
                await asyncio.sleep(0.1)
            yield base, session
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _api(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]


async def _query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    data = await _api(session, f"{base}/api/v1/query", query=expr)
    result: list[dict[str, Any]] = data["result"]
    return result


async def _wait_for_scrapes(session: aiohttp.ClientSession, base: str) -> None:
    """Until the target is up, scraped four times, and every rule evaluated at least once."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        targets = (await _api(session, f"{base}/api/v1/targets"))["activeTargets"]
        scrapes = await _query(session, base, 'count_over_time(up{job="router"}[1m])')
        rules = [
            rule
            for group in (await _api(session, f"{base}/api/v1/rules"))["groups"]
            for rule in group["rules"]
        ]
        if (
            targets
            and targets[0]["health"] == "up"
            and scrapes
            and float(scrapes[0]["value"][1]) >= 4
            and rules
            and all(not r["lastEvaluation"].startswith("0001") for r in rules)
        ):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"prometheus did not scrape the router: {targets}")


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@needs_prometheus
@pytest.mark.asyncio
async def test_dashboard_and_rules_return_data_from_real_prometheus(
    router: RouterServer, fresh_agents: dict[str, AgentProcess], tmp_path: Path
) -> None:
    """Every dashboard query and recording rule parses and returns data in a real Prometheus."""
    await _send_every_outcome(router, fresh_agents)
    traffic = asyncio.create_task(_keep_sending(router))
    try:
        async with _prometheus(tmp_path, router.base.removeprefix("http://")) as (base, session):
            await _wait_for_scrapes(session, base)
            outcomes = await _query(session, base, "sum by (outcome) (signal_outcomes_total)")
            seen = {s["metric"]["outcome"] for s in outcomes if float(s["value"][1]) > 0}
            assert seen == OUTCOMES

            failures = []
            for name, expr in [
                *(("dashboard", e) for e in _dashboard_exprs()),
                *_recording_exprs().items(),
            ]:
                async with session.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
                    body = await resp.json()
                if body["status"] != "success":
                    failures.append(f"{name}: {expr}: {body.get('error')}")
                elif not _finite(body["data"]["result"]):
                    failures.append(f"{name}: {expr}: no finite sample {body['data']['result']}")
            assert not failures, "\n".join(failures)

            groups = (await _api(session, f"{base}/api/v1/rules"))["groups"]
            unhealthy = [r for g in groups for r in g["rules"] if r["health"] != "ok"]
            assert not unhealthy
            retries = await _query(session, base, 'sum(retry_attempts_total{agent="alpha"})')
            assert float(retries[0]["value"][1]) > 0
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic


# --- metrics across two workers -----------------------------------------------------------


def _post_signal(base: str, message: str) -> int:
    """POST one signal on a new connection (urllib does not keep connections alive)."""
    body = json.dumps(_signal(message)).encode()
    request = urllib.request.Request(f"{base}/route", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("X-API-Key", API_KEY)
    with urllib.request.urlopen(request, timeout=10) as response:
        status: int = response.status
        return status


def _scrape(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET /metrics on a new connection, as {sample name: [(labels, value)]}."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


@pytest.fixture
def two_workers(
    database_url: str, routes_file: Path, tmp_path: Path
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`router serve --workers 2` with its metrics in a multiprocess directory of ours."""
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (prom_dir / "counter_1.db").write_bytes(b"a dead run's file: summed in unless removed")
    (prom_dir / "keep.txt").write_text("not ours to delete")
    with serve_workers(database_url, routes_file, prom_dir) as (base, proc):
        yield base, prom_dir, proc


def test_two_workers_report_the_sum_of_their_metrics(
    two_workers: tuple[str, Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """With --workers 2, every scrape counts every signal once, whichever worker served it."""
    base, prom_dir, proc = two_workers
    assert not (prom_dir / "counter_1.db").exists()
    assert (prom_dir / "keep.txt").exists()
    sent = 0
    by_worker: dict[int, float] = {}
    with ThreadPoolExecutor(max_workers=16) as pool:
        # Until both workers have served some signals, so the sum really spans two processes.
        while sent < 100 or sum(1 for n in by_worker.values() if n > 0) < 2:
            assert sent < 1000, f"one worker served everything: {by_worker}"
            statuses = list(pool.map(lambda i: _post_signal(base, f"solo {i}"), range(50)))
            assert statuses == [200] * 50
            sent += 50
            by_worker = received_by_worker(prom_dir, tmp_path / "scratch")
    assert sum(by_worker.values()) == sent

    for _ in range(8):  # new connections: the scrapes land on either worker
        samples = _scrape(base)
        received = {labels["kind"]: value for labels, value in samples["signals_received_total"]}
        assert received == {"solo": sent, "pair": 0, "race": 0, "general": 0}
        outcomes = {labels["outcome"]: value for labels, value in samples["signal_outcomes_total"]}
        assert outcomes == dict.fromkeys(OUTCOMES, 0) | {"delivered": sent}
        assert sum(v for _, v in samples["router_latency_seconds_count"]) == sent
        for name in ("routing_errors_total", "retry_attempts_total", "agent_inflight_requests"):
            assert {labels["agent"]: v for labels, v in samples[name]} == {
                "alpha": 0,
                "beta": 0,
                "gamma": 0,
            }, name
        assert len(samples["dlq_backlog"]) == 1
    assert proc.poll() is None


def test_reaping_drops_only_dead_workers_live_gauges(tmp_path: Path) -> None:
    """A dead worker's in-flight and pool gauges go; its counters and live workers' files stay."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    files = [
        f"gauge_livesum_{dead}.db",
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"gauge_livesum_{alive}.db",
        f"gauge_mostrecent_{dead}.db",
    ]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert reap_dead_workers(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[1:])


def test_preparing_the_directory_removes_only_metric_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multiprocess directory loses a previous run's *.db files and nothing else."""
    monkeypatch.setenv(MULTIPROC_ENV, "restored-after-the-test")
    (tmp_path / "counter_42.db").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("the operator's")
    prepare_multiprocess_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert os.environ[MULTIPROC_ENV] == str(tmp_path)
    prepare_multiprocess_dir(tmp_path / "new")
    assert (tmp_path / "new").is_dir()
