"""Clients at a constant arrival rate (open loop) that record every answer they get."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from chaos.processes import API_KEY

# 503 codes that promise nothing was (or will be) dispatched.
NOTHING_DISPATCHED = frozenset({"database_unavailable", "overloaded", "starting", "shutting_down"})
KINDS = ("solo", "pair", "race", "general")
REPOST_EVERY_S = 0.25


@dataclass
class Answer:
    """One HTTP exchange: its status and error code, or how the connection failed."""

    status: int | None  # None: no HTTP answer
    code: str | None = None
    body: Any = None
    json: bool = True
    failure: str | None = None  # "refused" (never reached the router) or "dropped"
    retry_after: bool = False

    @property
    def nothing_dispatched(self) -> bool:
        """The answer promises this attempt dispatched nothing."""
        if self.status is None:
            return self.failure == "refused"
        return self.status == 503 and self.code in NOTHING_DISPATCHED


@dataclass
class Sent:
    """One signal and every answer its posts got (a retry posts the same body again)."""

    nonce: str
    body: dict[str, Any]
    answers: list[Answer] = field(default_factory=list)

    @property
    def log_id(self) -> str | None:
        given = self.body.get("log_id")
        return given if isinstance(given, str) else None


def make_signal(scenario: str, index: int) -> Sent:
    """Most signals carry a log_id; some only a timestamp (derived log_id); some neither."""
    nonce = uuid.uuid4().hex
    kind = KINDS[index % len(KINDS)]
    body: dict[str, Any] = {
        "sender_id": f"chaos-{scenario}",
        "payload": {"message": f"{kind} number {index}", "nonce": nonce},
    }
    variant = index % 10
    if variant < 7:
        body["log_id"] = f"chaos-{scenario}-{nonce[:12]}"
    elif variant < 9:
        body["timestamp"] = "2026-12-01T10:00:00Z"
    return Sent(nonce, body)


async def post(session: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> Answer:
    try:
        async with session.post(
            f"{base}/route", data=orjson.dumps(body), headers={"X-API-Key": API_KEY}
        ) as resp:
            raw = await resp.read()
            try:
                parsed = orjson.loads(raw)
                is_json = resp.content_type == "application/json"
            except orjson.JSONDecodeError:
                parsed, is_json = raw.decode("utf-8", "replace"), False
            code = None
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                code = parsed["error"].get("code")
            return Answer(
                resp.status, code, parsed, is_json, retry_after="Retry-After" in resp.headers
            )
    except aiohttp.ClientConnectorError:
        return Answer(None, failure="refused")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Answer(None, failure=f"dropped: {type(exc).__name__}")


async def send_one(
    session: aiohttp.ClientSession, base: str, sent: Sent, *, retries: int, concurrent_repost: bool
) -> None:
    """Post; retry after a 503, 409 or connection failure (Retry-After: 1 s) up to `retries`."""
    finished = asyncio.Event()
    if concurrent_repost:
        # The same body again and again while the first post is being dispatched: each must
        # be 409 or the stored outcome, never a second dispatch, however late in the dispatch.
        async def repost() -> None:
            while not finished.is_set():
                await asyncio.sleep(REPOST_EVERY_S)
                sent.answers.append(await post(session, base, sent.body))

        reposting = asyncio.create_task(repost())
    for attempt in range(retries + 1):
        answer = await post(session, base, sent.body)
        sent.answers.append(answer)
        if answer.status is not None and answer.status not in (409, 503):
            break
        if attempt < retries:
            await asyncio.sleep(1.0)
    finished.set()
    if concurrent_repost:
        await reposting


async def run_load(
    base: str,
    scenario: str,
    *,
    rate: float,
    seconds: float,
    retry_share: float = 0.5,
    concurrent_reposts: bool = False,
) -> list[Sent]:
    """Send `rate` signals a second for `seconds`, whatever the answers' latency."""
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    signals: list[Sent] = []
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.monotonic()
        count = int(rate * seconds)
        for index in range(count):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = make_signal(scenario, index)
            signals.append(sent)
            # Half the signals are retried by their client; the rest never are, so that a
            # 503 that promised nothing is checked against every delivery.
            retries = 3 if (index % 100) < retry_share * 100 else 0
            repost = concurrent_reposts and sent.log_id is not None
            tasks.append(
                asyncio.create_task(
                    send_one(session, base, sent, retries=retries, concurrent_repost=repost)
                )
            )
        await asyncio.gather(*tasks)
    return signals
