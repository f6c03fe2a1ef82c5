"""The operator console in a real browser: headless Chromium (Debian's) driven by Selenium,
against a router process, real agents and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support import (
    ROOT,
    free_port,
    readme_commands,
    router_env,
    run_make_dev,
    wait_http,
)

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
# Where the screenshots go besides the test's own folder (docs/console.png is one of them).
SHOTS_ENV = "CONSOLE_SCREENSHOTS"


@pytest.fixture
def router_process(database_url: str, routes_file: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--port", str(port)],
        cwd=ROOT,
        env=router_env(database_url, routes_file, STATS_FLUSH_S="0.3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health/ready", proc, timeout=60)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to fail on JS errors
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _readme_story() -> tuple[str, str, str]:
    """The README's console story, as commands: break the billing agent, send it a signal,
    fix it."""
    commands = readme_commands()
    fail = next(c for c in commands if "9103/behaviour" in c and '"status": 503' in c)
    send = next(c for c in commands if "/route" in c and "refund" in c)
    fix = next(c for c in commands if "9103/behaviour" in c and '"status": null' in c)
    return fail, send, fix


def _run(command: str) -> None:
    subprocess.run(["bash", "-c", command], check=True, capture_output=True, timeout=30)


@needs_chromium
def test_from_the_readme_to_a_replayed_dead_letter(
    database_url: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """What the README tells a new user, on `make dev`: a failing agent, a signal for it, the
    console with dev-key showing the dead letter and why, the agent fixed, a dry-run preview
    that sends nothing, the replay, the entry resolved; the other views show the agents and the
    traffic, and the browser logged no error."""
    driver = browser
    wait = WebDriverWait(driver, 15)
    fail, send, fix = _readme_story()
    shots = [tmp_path]
    if os.environ.get(SHOTS_ENV):
        shots.append(Path(os.environ[SHOTS_ENV]))

    def shoot(name: str) -> None:
        for folder in shots:
            folder.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(folder / f"console-{name}.png"))

    with run_make_dev(database_url, STATS_FLUSH_S="0.3"):
        base = "http://127.0.0.1:8000"
        _run(fail)
        _run(send)
        _console_story(driver, wait, base, fix, shoot)


def _console_story(
    driver: webdriver.Chrome,
    wait: WebDriverWait[webdriver.Chrome],
    base: str,
    fix: str,
    shoot: Callable[[str], None],
) -> None:
    """The console part of the story, on a router where the dead letter is waiting."""
    driver.get(f"{base}/console")
    assert "Enter the admin key" in driver.find_element(By.ID, "message").text
    driver.find_element(By.ID, "key").send_keys("dev-key")  # make dev's, as the README says
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#dlq-table tbody tr")))
    assert "billing" in row.text and "pending" in row.text
    assert "billing: HTTP 503" in row.find_element(By.CSS_SELECTOR, "td.error").text
    log_id = row.find_element(By.CSS_SELECTOR, "td a").text
    shoot("dlq")

    _run(fix)  # the agent is fixed
    row.find_element(By.CSS_SELECTOR, "input.pick").click()
    driver.find_element(By.ID, "preview-selected").click()
    preview = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#dlq-preview h3")))
    assert preview.text == "A replay would send 1 entry"
    assert _replays_seen() == []  # a preview sends nothing
    driver.find_element(By.ID, "replay-selected").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "dlq-progress"), "Done"))
    assert "resolved 1" in driver.find_element(By.ID, "dlq-progress").text
    assert _replays_seen() == [200]
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "0 entries shown"))

    Select(driver.find_element(By.ID, "dlq-status")).select_by_value("resolved")
    driver.find_element(By.CSS_SELECTOR, "#dlq-filter button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "dlq-table"), log_id))
    assert "resolved" in driver.find_element(By.CSS_SELECTOR, "#dlq-table tbody tr").text

    driver.find_element(By.LINK_TEXT, log_id).click()
    detail = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#signal-detail dl")))
    assert "trace id" in detail.text
    wait.until(ec.text_to_be_present_in_element((By.ID, "signal-detail"), "DLQ entry"))
    assert "resolved" in driver.find_element(By.ID, "signal-detail").text
    shoot("signal")

    driver.find_element(By.CSS_SELECTOR, 'nav button[data-view="agents"]').click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "agents-table"), "billing"))
    agents = driver.find_element(By.ID, "agents-table").text
    assert "support" in agents and "closed" in agents and "open" not in agents
    shoot("agents")

    driver.find_element(By.CSS_SELECTOR, 'nav button[data-view="stats"]').click()
    chart = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".chart h3")))
    assert chart.text.endswith("→ billing") or chart.text.endswith("→ support")
    shoot("traffic")
    logs = driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium leaves it untyped
    errors = [e for e in logs if e["level"] == "SEVERE"]
    assert not errors, errors


def test_the_console_fetches_nothing_from_elsewhere(router_process: str) -> None:
    """Its assets come from the router, and its policy forbids any other origin."""
    with urllib.request.urlopen(f"{router_process}/console", timeout=5) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http://" not in page and "https://" not in page
    for asset in ("console/console.js", "console/console.css"):
        with urllib.request.urlopen(f"{router_process}/{asset}", timeout=5) as response:
            assert response.status == 200 and b"https://" not in response.read()


def _replays_seen() -> list[int]:
    """Statuses of the replays make dev's billing agent received."""
    with urllib.request.urlopen("http://127.0.0.1:9103/requests", timeout=5) as response:
        records = json.loads(response.read())
    return [r["status"] for r in records if r["replay"]]
