"""A pull consumer that keeps a pull request standing on the server, instead of one per fetch.

nats-py's ``PullSubscription.fetch`` asks for each batch anew (a ``no_wait`` request, a round trip,
then a waiting one) and waits for every message in a task of its own. :class:`StandingPull`
asks for ``batch`` messages ahead and asks again for what was used once half of them arrived, so
the server always holds a request: a message published while the node is idle is delivered at
once, with no request in its way, and messages are taken off the subscription's queue directly.

::

    ask(batch - credit, expires) ─▶ the server delivers up to that many messages as they come
      ─▶ next_batch(): the first one (waiting at most ``idle`` s), then what else is queued, up to
         ``batch`` ─▶ the caller applies them, commits, acks ─▶ at half the credit used: ask again

``credit`` counts the messages the standing requests may still bring; it never exceeds ``batch``,
which bounds what is in flight (and JetStream's ``max_ack_pending`` bounds what is unacknowledged).
A request ends at its ``expires`` (the server says so with a 408 and the count it did not use) or
in a conflict (409: a leadership change, the consumer gone): its credit is dropped and the next
call asks again. A reconnect, or nothing at all for longer than a request lives (the server lost
it), drops the credit too. Nothing is acknowledged here: the caller acks after its durable commit.

It reads what nats-py's own ``fetch`` reads: the pull subscription's request subject, deliver
inbox and queue (nats-py 2.x).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats.js.errors

IDLE_S = 1.0
"""How long ``next_batch`` waits for a first message before it raises TimeoutError (idle)."""

EXPIRES_S = 5.0
"""How long each pull request lives on the server."""

_ENDED = ("404", "408", "409")
"""Statuses that end a pull request: no messages, expired, conflict."""


class StandingPull:
    """Batches from ``sub`` (a nats-py pull subscription) through standing pull requests."""

    def __init__(self, sub: Any, batch: int, *, expires: float = EXPIRES_S):
        self.batch = max(1, batch)
        self.expires = expires
        self._nc = sub._nc
        self._subject: str = sub._nms
        self._deliver: str = sub._deliver
        self._sub = sub._sub
        self._queue: asyncio.Queue[Any] = sub._sub._pending_queue
        self.credit = 0
        """Messages the requests on the server may still deliver."""
        self.requests = 0
        self._heard = 0.0
        """When the last request was made or the last message or status came (monotonic)."""
        self._reconnects = self._nc.stats.get("reconnects", 0)

    async def next_batch(self, idle: float = IDLE_S) -> list[Any]:
        """At least one message, at most ``batch``; TimeoutError after ``idle`` s without any."""
        deadline = time.monotonic() + idle
        msgs: list[Any] = []
        while True:
            await self._refill()
            if self._queue.empty():
                if msgs:
                    return msgs
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no message")
                try:
                    async with asyncio.timeout(min(remaining, self.expires)):
                        msg = await self._queue.get()
                except TimeoutError:
                    continue  # past the deadline now, or a request to check on
            else:
                msg = self._queue.get_nowait()
            self._took(msg, msgs)
            if len(msgs) >= self.batch:
                return msgs

    def _took(self, msg: Any, msgs: list[Any]) -> None:
        self._sub._pending_size -= len(msg.data)
        self._heard = time.monotonic()
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if not status:
            self.credit = max(0, self.credit - 1)
            msgs.append(msg)
        elif status in _ENDED:
            unused = headers.get("Nats-Pending-Messages")
            if status == "408" and unused is not None and unused.isdigit():
                self.credit = max(0, self.credit - int(unused))
            else:  # the count is not told: whatever is still standing is asked for again
                self.credit = 0
        elif status != "100":  # 100: a heartbeat; anything else (503) ends the session
            raise nats.js.errors.APIError.from_msg(msg)

    async def _refill(self) -> None:
        reconnects = self._nc.stats.get("reconnects", 0)
        if reconnects != self._reconnects:  # the requests stood on the connection before
            self._reconnects = reconnects
            self.credit = 0
        elif self.credit and time.monotonic() - self._heard > self.expires + 1.0:
            self.credit = 0  # nothing from requests that should have expired by now: lost
        if self.credit > self.batch // 2:
            return
        want = self.batch - self.credit
        request = {"batch": want, "expires": int(self.expires * 1e9)}
        await self._nc.publish(self._subject, json.dumps(request).encode(), self._deliver)
        self.credit += want
        self.requests += 1
        self._heard = time.monotonic()
