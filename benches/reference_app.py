"""The bare reference endpoint of issue 13: what a router that does far less costs here.

FastAPI, orjson, one aiohttp call to the agent, one group-committed INSERT; no claim, no
validation, no metrics, no log line, no retries. Measured side by side with the router by
`python -m benches.compare_reference`.

#     DATABASE_URL=... AGENT_URL=http://127.0.0.1:P/handle python -m benches.reference_app --port Q
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool

TABLE = """
CREATE TABLE IF NOT EXISTS reference_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender_id text NOT NULL,
    payload jsonb NOT NULL,
    response jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = """
INSERT INTO reference_log (sender_id, payload, response)
SELECT r.sender_id, r.payload, r.response
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(sender_id text, payload jsonb, response jsonb)
"""


class GroupCommit:
    """Rows queued by requests, written by one task, one statement (and commit) per batch."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def write(self, row: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            async with self._pool.connection() as conn:
                await conn.execute(INSERT, {"rows": orjson.dumps([r for r, _ in batch]).decode()})
            for _, future in batch:
                future.set_result(None)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = AsyncConnectionPool(os.environ["DATABASE_URL"], min_size=2, max_size=4, open=False)
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute(TABLE)
    app.state.session = aiohttp.ClientSession()
    app.state.writer = GroupCommit(pool)
    yield
    await app.state.session.close()
    await pool.close()


app = FastAPI(lifespan=lifespan)
AGENT_URL = os.environ.get("AGENT_URL", "")


@app.post("/route")
async def route(request: Request) -> Response:
    """Forward the body, record the answer, answer it."""
    signal = orjson.loads(await request.body())
    async with request.app.state.session.post(AGENT_URL, data=orjson.dumps(signal)) as resp:
        answer = orjson.loads(await resp.read())
    await request.app.state.writer.write(
        {"sender_id": signal.get("sender_id", ""), "payload": signal, "response": answer}
    )
    return Response(
        orjson.dumps({"status": "delivered", "agent": answer}), media_type="application/json"
    )


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def main() -> None:
    """Serve with the router's uvicorn settings (uvloop, httptools, no access log)."""
    parser = argparse.ArgumentParser(prog="python -m benches.reference_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")  # fmt: skip


if __name__ == "__main__":
    main()
