"""The contract floor: the least a router keeping POST /route's four waits can do here.

Raw ASGI under the router's uvicorn settings (uvloop, httptools). Per signal: the body read,
a claim group-committed before the agent hears of it (asynchronous commit, as the router's
claims), one POST with the router's own agent client, the outcome group-committed durably
(synchronous commit) before the answer, and the answer. Each lane keeps one asyncpg
connection and sends its batch as one JSON parameter, as the router's writer does. Nothing
else: no validation, classification, dedup lookup, metrics, log line, retries or breakers.
What the router spends above this floor, measured in the same run by
`python -m benches.compare_reference`, is its features; what this floor spends is the
contract's shape on these libraries and this machine.

#     DATABASE_URL=... AGENT_URL=http://127.0.0.1:P/handle \
#         python -m benches.contract_floor_app --port Q
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from typing import Any

import asyncpg
import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

from router.http11_client import Http11Client

TABLE = """
CREATE TABLE IF NOT EXISTS floor_log (
    log_id text PRIMARY KEY,
    sender_id text,
    payload jsonb,
    status text NOT NULL,
    response jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
CLAIM = """
INSERT INTO floor_log (log_id, sender_id, payload, status)
SELECT u.log_id, u.sender_id, u.payload, 'in_flight'
FROM jsonb_to_recordset($1::jsonb) AS u(log_id text, sender_id text, payload jsonb)
"""
# An upsert, as the router's: each row finds its claim through the primary key. (An UPDATE
# joined to the batch is planned as a hash join over the whole table: the function's rows are
# estimated at 100.) The claim always set sender_id and payload, hence no NOT NULL on them.
FINISH = """
INSERT INTO floor_log (log_id, status, response)
SELECT u.log_id, u.status, u.response
FROM jsonb_to_recordset($1::jsonb) AS u(log_id text, status text, response jsonb)
ON CONFLICT (log_id) DO UPDATE SET status = excluded.status, response = excluded.response
"""
AGENT_TIMEOUT_S = 10.0
_CONTENT_TYPE = (b"content-type", b"application/json")


class Lane:
    """Rows queued by requests; one task writes each batch in one statement on a kept
    connection and wakes every waiter of the batch once it committed."""

    def __init__(self, conn: asyncpg.Connection[Any], sql: str) -> None:
        self._conn = conn
        self._sql = sql
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run())

    def write(self, row: dict[str, Any]) -> asyncio.Future[None]:
        """Queue one row; the future completes when its batch has committed."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.append((row, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            try:
                await self._conn.execute(self._sql, orjson.dumps([r for r, _ in batch]).decode())
            except Exception as exc:  # every waiter of the batch hears of it
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for _, future in batch:
                future.set_result(None)

    async def close(self) -> None:
        """Stop the writing task (what it had not written is dropped: a bench, not a router)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Floor:
    """The app's state, opened at start-up."""

    def __init__(self, claims: Lane, outcomes: Lane, client: Http11Client) -> None:
        self.claims = claims
        self.outcomes = outcomes
        self.client = client


async def _open(database_url: str) -> tuple[Floor, list[asyncpg.Connection[Any]]]:
    claim_conn = await asyncpg.connect(database_url)
    outcome_conn = await asyncpg.connect(database_url)
    await claim_conn.execute(TABLE)
    # Claims are re-derivable (the router sweeps what a crash lost); outcomes are not.
    await claim_conn.execute("SET synchronous_commit = off")
    floor = Floor(Lane(claim_conn, CLAIM), Lane(outcome_conn, FINISH), Http11Client())
    return floor, [claim_conn, outcome_conn]


AGENT_URL = os.environ.get("AGENT_URL", "")
_state: dict[str, Floor] = {}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /route through the four waits; GET anything else answers 200 (readiness)."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] != "POST":
        await _answer(send, 200, b'{"status":"ok"}')
        return
    floor = _state["floor"]
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    signal = orjson.loads(b"".join(chunks))
    log_id = "sig-" + os.urandom(20).hex()
    await floor.claims.write(
        {"log_id": log_id, "sender_id": signal["sender_id"], "payload": signal["payload"]}
    )
    forwarded = orjson.dumps({"log_id": log_id, **signal})
    reply = await floor.client.post(
        AGENT_URL,
        forwarded,
        {"Content-Type": "application/json", "Idempotency-Key": log_id},
        AGENT_TIMEOUT_S,
    )
    response = orjson.loads(reply.body) if reply.body else None
    await floor.outcomes.write({"log_id": log_id, "status": "delivered", "response": response})
    await _answer(
        send, 200, orjson.dumps({"log_id": log_id, "status": "delivered", "agents": [response]})
    )


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [_CONTENT_TYPE, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    conns: list[asyncpg.Connection[Any]] = []
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _state["floor"], conns = await _open(os.environ["DATABASE_URL"])
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            floor = _state.pop("floor")
            await floor.claims.close()
            await floor.outcomes.close()
            await floor.client.close()
            for conn in conns:
                await conn.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def main() -> None:
    """Serve with the router's uvicorn settings (uvloop, httptools, no access log)."""
    parser = argparse.ArgumentParser(prog="python -m benches.contract_floor_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="on")  # fmt: skip


if __name__ == "__main__":
    main()
