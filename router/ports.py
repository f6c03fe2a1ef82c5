"""Who holds a TCP port: so "address already in use" can name the process to stop."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

_LISTEN = "0A"


def port_in_use(host: str, port: int) -> bool:
    """Whether binding host:port fails with EADDRINUSE now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a socket in TIME_WAIT is no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def holder(port: int) -> str:
    """'pid N (command line)' of the process listening on `port`, from /proc; or a hint."""
    inodes = _listening_inodes(port)
    for pid in filter(str.isdigit, os.listdir("/proc")) if inodes else ():
        with contextlib.suppress(OSError):
            for fd in (Path("/proc") / pid / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    raw = (Path("/proc") / pid / "cmdline").read_bytes()
                    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {pid} ({command[:200]})"
    return "a process this user cannot see (try: ss -ltnp)"


def in_use_message(host: str, port: int) -> str:
    """The line to print when host:port is taken."""
    return f"{host}:{port} is already in use by {holder(port)}; stop it, or choose another port"


def _listening_inodes(port: int) -> set[str]:
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    found.add(inode)
    return found
