"""Debian's nginx in front of several routers: a real load balancer for the chaos suite."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.support import wait_http

# Every answer is JSON, the balancer's own included: a request no router answered gets this.
CONFIG = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream routers {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://routers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A router that refuses the connection is skipped; a POST already sent is never
            # re-sent elsewhere (nginx's rule for non-idempotent methods), so it cannot be
            # dispatched twice by the balancer.
            proxy_next_upstream error timeout;
            proxy_read_timeout 60s;
        }}
        error_page 502 503 504 = @unavailable;
        location @unavailable {{
            default_type application/json;
            return 502 '{unavailable}';
        }}
    }}
}}
"""


UNAVAILABLE = json.dumps(
    {"error": {"code": "upstream_unavailable", "message": "no router answered", "field": None}}
)


def nginx_binary() -> str | None:
    """Debian's nginx, when installed."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


class Balancer:
    """nginx on `port`, round-robin over the routers' ports; stopped with `stop()`."""

    def __init__(self, port: int, router_ports: Sequence[int]) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (.ci/run installs Debian's nginx-light)")
        self._dir = tempfile.TemporaryDirectory(prefix="router-nginx-")
        prefix = self._dir.name
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;" for p in router_ports
        )
        config = Path(prefix) / "nginx.conf"
        config.write_text(
            CONFIG.format(prefix=prefix, servers=servers, port=port, unavailable=UNAVAILABLE)
        )
        self.proc = subprocess.Popen(
            [binary, "-p", prefix, "-c", str(config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{port}/health", self.proc)

    def stop(self) -> None:
        """Stop nginx and remove its files."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()
