"""Every documented answer of every endpoint, produced for real and checked against /openapi.json.

The document is generated from router/model.py; this test drives a live router (real agents,
a real PostgreSQL behind a proxy it can cut) into each status code the document lists, and
validates each body against the schema given for that status. A code that is documented but
never produced, or produced but not documented, fails the test: the two cannot drift.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jsonschema
import pytest

from router.rate_limit import RateLimit
from tests.support import (
    ADMIN_KEY,
    API_KEY,
    AgentProcess,
    RouterServer,
    TcpProxy,
    socket_target,
    start_router,
)

pytestmark = pytest.mark.asyncio

SENDER_BURST = 30
# Produced by the framework for any path, not by one endpoint's handler.
GENERIC = {404, 405}


class Conformance:
    """Sends requests, checks each answer against the document, and records what it saw."""

    def __init__(self, router: RouterServer, doc: dict[str, Any]) -> None:
        self.router = router
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()
        self.route_statuses: set[str] = set()

    async def call(
        self,
        method: str,
        template: str,
        path: str | None = None,
        *,
        key: str | None = ADMIN_KEY,
        body: Any = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; asserts its answer is documented and of the documented shape."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["X-API-Key"] = key
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        url = f"{self.router.base}{path or template}"
        async with self.router.session.request(method, url, data=data, headers=sent) as resp:
            status, content_type, answer_headers = resp.status, resp.content_type, resp.headers
            text = await resp.read()
        operation = self.doc["paths"][template][method.lower()]
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template} answered {status}, not documented"
        assert content_type in documented["content"], (method, template, status, content_type)
        parsed: Any = text.decode()
        if content_type == "application/json":
            parsed = json.loads(text)
            pointer = "/".join(
                ("#/paths", template.replace("/", "~1"), method.lower(), "responses", str(status))
            )
            schema = {**self.doc, "$ref": f"{pointer}/content/application~1json/schema"}
            jsonschema.Draft202012Validator(schema).validate(parsed)
        for header in documented.get("headers", {}):
            assert header in answer_headers, (method, template, status, header)
        self.seen.add((template, method.lower(), status))
        if template == "/route" and status in (200, 202):
            self.route_statuses.add("duplicate" if parsed["duplicate"] else parsed["status"])
        return status, parsed

    def documented(self) -> set[tuple[str, str, int]]:
        return {
            (path, method, int(status))
            for path, operations in self.doc["paths"].items()
            for method, operation in operations.items()
            for status in operation["responses"]
            if int(status) not in GENERIC
        }


def signal(message: str, **extra: Any) -> dict[str, Any]:
    return {"sender_id": "conformance", "payload": {"message": message}, **extra}


async def test_every_documented_answer_is_produced_and_matches_its_schema(
    server_url: str, database_url: str, routes_file: Path, fresh_agents: dict[str, AgentProcess]
) -> None:
    """Success and error answers of every endpoint, validated; none documented and unseen."""
    proxy = TcpProxy(socket_target(server_url))
    await proxy.start()
    db_name = urlsplit(database_url).path.lstrip("/")
    alpha, beta = fresh_agents["alpha"], fresh_agents["beta"]
    limit = RateLimit.parse("1/min", str(SENDER_BURST))
    async with start_router(
        proxy.url(server_url, db_name),
        routes_file,
        max_body_bytes=4096,
        sender_rate_limit=limit,
        stats_flush_s=0.2,
    ) as router:
        status, doc = await router.get("/openapi.json", key=None)
        assert status == 200
        c = Conformance(router, doc)

        # POST /route: each outcome, each refusal.
        def route(body: Any = None, *, key: str = API_KEY, raw: bytes | None = None) -> Any:
            return c.call("POST", "/route", key=key, body=body, raw=raw)

        assert (await route(signal("solo", log_id="c-1")))[0] == 200
        assert (await route(signal("solo", log_id="c-1")))[0] == 200  # the duplicate
        beta.behave(status=400)
        assert (await route(signal("pair")))[0] == 200
        alpha.behave(status=400)
        status, dead = await route(signal("solo", log_id="c-2"))
        assert status == 202 and dead["status"] == "dead_lettered"
        alpha.behave(status=None, latency_ms=700)
        slow = asyncio.create_task(route(signal("solo", log_id="c-3")))
        await asyncio.sleep(0.3)
        assert (await route(signal("solo", log_id="c-3")))[0] == 409
        assert (await slow)[0] == 200
        alpha.behave(latency_ms=0)
        assert (await route(raw=b"{not json"))[0] == 400
        assert (await route(signal("solo"), key="wrong"))[0] == 401
        assert (await route(raw=b" " * 5000))[0] == 413
        assert (await route({"sender_id": "x"}))[0] == 422
        for n in range(SENDER_BURST):
            await route({"sender_id": "flood", "payload": {"n": n, "text": "solo"}})
        assert (await route({"sender_id": "flood", "payload": {"text": "solo"}}))[0] == 429
        assert c.route_statuses == {"delivered", "duplicate", "partial", "dead_lettered"}

        # Logs.
        status, page = await c.call("GET", "/logs", "/logs?limit=1")
        assert status == 200 and page["next_cursor"] is not None
        assert (await c.call("GET", "/logs", "/logs?cursor=bogus"))[0] == 400
        assert (await c.call("GET", "/logs", "/logs?limit=0"))[0] == 422
        assert (await c.call("GET", "/logs/{log_id}", "/logs/c-1"))[0] == 200
        assert (await c.call("GET", "/logs/{log_id}", "/logs/absent"))[0] == 404

        # DLQ: list, read, replay (dry and real), discard. Newest first: c-2's entry (alpha,
        # which delivers again now), then the pair's (beta, still refusing).
        status, page = await c.call("GET", "/dlq", "/dlq?limit=1")
        assert status == 200 and page["next_cursor"] is not None
        status, page = await c.call("GET", "/dlq", "/dlq?limit=2")
        entry_id, other_id = (item["id"] for item in page["items"])
        assert page["items"][0]["log_id"] == "c-2"
        assert (await c.call("GET", "/dlq", "/dlq?cursor=bogus"))[0] == 400
        assert (await c.call("GET", "/dlq", "/dlq?status=lost"))[0] == 422
        assert (await c.call("GET", "/dlq/{id}", f"/dlq/{entry_id}"))[0] == 200
        assert (await c.call("GET", "/dlq/{id}", "/dlq/999999"))[0] == 404
        assert (await c.call("GET", "/dlq/{id}", "/dlq/0"))[0] == 422
        replay = "/dlq/replay"
        status, dry = await c.call("POST", replay, body={"ids": [entry_id], "dry_run": True})
        assert status == 200 and dry["ids"] == [entry_id] and dry["entries"]
        assert (await c.call("POST", replay, raw=b"{oops"))[0] == 400
        assert (await c.call("POST", replay, raw=b" " * 5000))[0] == 413
        assert (await c.call("POST", replay, body={"ids": [1], "kind": "solo"}))[0] == 422
        status, done = await c.call("POST", replay, body={"ids": [entry_id]})
        assert status == 200 and done["resolved"] == 1, done
        assert (await c.call("DELETE", "/dlq/{id}", f"/dlq/{entry_id}"))[0] == 409
        status, discarded = await c.call("DELETE", "/dlq/{id}", f"/dlq/{other_id}")
        assert status == 200 and discarded["status"] == "discarded"
        assert (await c.call("DELETE", "/dlq/{id}", "/dlq/999999"))[0] == 404
        assert (await c.call("DELETE", "/dlq/{id}", "/dlq/0"))[0] == 422

        # Latency statistics, flushed by now.
        await asyncio.sleep(0.5)
        status, page = await c.call("GET", "/stats", "/stats?kind=solo")
        assert status == 200 and page["items"] and page["items"][0]["agent"] == "alpha"
        assert (await c.call("GET", "/stats", "/stats?since=yesterday"))[0] == 422

        # Every admin endpoint: no key, and a route-only key.
        admin = [
            (method.upper(), template)
            for template, operations in doc["paths"].items()
            for method, operation in operations.items()
            if "403" in operation["responses"]
        ]
        assert len(admin) == 7
        for method, template in admin:
            path = template.replace("{log_id}", "c-1").replace("{id}", str(entry_id))
            body = {"ids": [entry_id]} if method == "POST" else None
            assert (await c.call(method, template, path, key=None, body=body))[0] == 401
            assert (await c.call(method, template, path, key=API_KEY, body=body))[0] == 403

        # Health and metrics.
        assert (await c.call("GET", "/health", key=None))[0] == 200
        assert (await c.call("GET", "/health/ready", key=None))[0] == 200
        assert (await c.call("GET", "/metrics", key=None))[0] == 200

        # The database away: every endpoint that reads or writes it says so.
        await proxy.cut()
        assert (await route(signal("solo")))[0] == 503
        assert (await c.call("GET", "/health/ready", key=None))[0] == 503
        for method, template, path, body in (
            ("GET", "/logs", None, None),
            ("GET", "/logs/{log_id}", "/logs/c-1", None),
            ("GET", "/dlq", None, None),
            ("GET", "/stats", None, None),
            ("GET", "/dlq/{id}", "/dlq/1", None),
            ("DELETE", "/dlq/{id}", "/dlq/1", None),
            ("POST", replay, None, {"ids": [1]}),
        ):
            status, answer = await c.call(method, template, path, body=body)
            assert status == 503, (template, answer)

    missing = c.documented() - c.seen
    assert not missing, f"documented but never produced: {sorted(missing)}"


async def test_the_document_describes_the_hand_read_bodies(router: RouterServer) -> None:
    """POST /route and POST /dlq/replay name their request schemas, which the document holds."""
    status, doc = await router.get("/openapi.json", key=None)
    assert status == 200
    schemas = doc["components"]["schemas"]
    for path, name in (("/route", "SignalBody"), ("/dlq/replay", "ReplayRequest")):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert schemas[name]["additionalProperties"] is False
    validator = jsonschema.Draft202012Validator({**doc, "$ref": "#/components/schemas/SignalBody"})
    assert validator.is_valid(signal("hello", log_id="ok-1", metadata={"a": 1}))
    assert not validator.is_valid({"sender_id": "x", "payload": {}, "extra": 1})
    assert not validator.is_valid({"sender_id": "x", "payload": {}, "log_id": "bad id"})
    # Answers are closed too: a field the model does not define fails the conformance test.
    answer = {"$ref": "#/paths/~1route/post/responses/200/content/application~1json/schema"}
    good = {"log_id": "a", "kind": "k", "status": "delivered", "duplicate": False}
    good |= {"trace_id": "0" * 31 + "1", "agents": []}
    assert jsonschema.Draft202012Validator({**doc, **answer}).is_valid(good)
    assert not jsonschema.Draft202012Validator({**doc, **answer}).is_valid({**good, "new": 1})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{router.base}/docs") as resp:
            page = await resp.text()
        assert resp.status == 200 and "swagger" in page.lower()
        # Served offline: every script and stylesheet is the router's own, and it is there.
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+\.(?:js|css))['"]""", page)
        assert len(assets) == 2 and all(a.startswith("/") for a in assets), assets
        for asset in assets:
            async with session.get(f"{router.base}{asset}") as resp:
                assert resp.status == 200 and len(await resp.read()) > 10_000, asset
