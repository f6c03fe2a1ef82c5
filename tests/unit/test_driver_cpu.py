"""The load driver's CPU readings by command name: what compare_reference charges PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benches.driver import command_cpu_s, used_between

# Burns CPU until killed, under a command name no other process here has.
_SPIN = "import time\nend = time.process_time() + 30\nwhile time.process_time() < end: pass\n"


def test_every_process_of_a_command_is_read_and_a_new_one_counts_whole(tmp_path: Path) -> None:
    """Two busy processes named `spinner-cpu`: both are found, their CPU grows; one started
    between two readings is counted from zero; one gone by the second reading is left out."""
    exe = tmp_path / "spinner-cpu"
    exe.symlink_to(sys.executable)
    first = subprocess.Popen([str(exe), "-c", _SPIN])
    try:
        time.sleep(0.3)
        before = command_cpu_s("spinner-cpu")
        assert set(before) == {first.pid}
        second = subprocess.Popen([str(exe), "-c", _SPIN])
        try:
            time.sleep(0.5)
            after = command_cpu_s("spinner-cpu")
        finally:
            second.kill()
            second.wait()
        assert set(after) == {first.pid, second.pid}
        assert after[first.pid] > before[first.pid]
        used = used_between(before, after)
        assert used == (after[first.pid] - before[first.pid]) + after[second.pid]
        # Two spinning processes for 0.5 s on two cores: well over one process's tick.
        assert used >= 0.2
        assert command_cpu_s("no-such-command-here") == {}
        assert used_between(before, {}) == 0.0
    finally:
        first.kill()
        first.wait()
