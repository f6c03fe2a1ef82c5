"""Every module of the package imports on its own, in a fresh interpreter: no import cycles,
nothing that only works when another module happened to be imported first."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import router
from tests.support import ROOT


def _modules() -> list[str]:
    # __main__ runs the command line; it is imported by `python -m router` alone.
    found = pkgutil.walk_packages(router.__path__, "router.")
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


def _import_alone(name: str) -> tuple[str, int, str]:
    result = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return name, result.returncode, result.stderr[-500:]


def test_each_module_imports_alone() -> None:
    """`import router.<module>` succeeds in a new process for every module."""
    names = _modules()
    assert "router.api.route" in names and "router.store.writer" in names
    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [r for r in pool.map(_import_alone, names) if r[1] != 0]
    assert failed == []


def test_the_store_depends_on_protocols_not_on_the_layers_above() -> None:
    """router.store imports neither metrics, dispatch, the API nor the app: it gets Protocols."""
    code = (
        "import sys, pkgutil, importlib, router.store as s\n"
        "for m in pkgutil.walk_packages(s.__path__, 'router.store.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[:2] in"
        " (['router','metrics'], ['router','dispatch'], ['router','api'], ['router','app']))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
