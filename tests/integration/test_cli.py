"""The `router` command refuses a bad start with one clear line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def run_router(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "ROUTES_FILE")}
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_to_start_without_api_key() -> None:
    """No API_KEY: exit 2 and one line that names the variable."""
    result = run_router("serve", "--port", "1")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "API_KEY" in line


def test_malformed_setting_names_its_variable() -> None:
    """A malformed MAX_BODY_BYTES stops every command with a line naming it."""
    result = run_router("serve", API_KEY="k", MAX_BODY_BYTES="lots")
    assert result.returncode == 2
    assert "MAX_BODY_BYTES" in result.stderr and "lots" in result.stderr


def test_bad_routing_table_stops_the_start_naming_file_and_rule(tmp_path: Path) -> None:
    """A table with a bad regex stops `serve` and fails `check-routes`, naming file and rule."""
    routes = tmp_path / "bad.toml"
    routes.write_text(
        '[agents.a]\nurl = "http://127.0.0.1:9/h"\n'
        '[[rules]]\nkind = "x"\npatterns = ["(unclosed"]\nagents = ["a"]\n'
        '[[rules]]\nkind = "general"\ndefault = true\nagents = ["a"]\n'
    )
    served = run_router("serve", "--port", "1", API_KEY="k", ROUTES_FILE=str(routes))
    assert served.returncode == 2
    assert "bad.toml" in served.stderr and "rule 1" in served.stderr
    checked = run_router("check-routes", str(routes))
    assert checked.returncode != 0
    assert "bad.toml" in checked.stderr and "regex" in checked.stderr
