"""Each token's share of the event loop (``crdtmem/server/loopshare.py``): the rule on its own with an
injected clock, then against real ``crdtmem serve`` processes: a token whose requests took more than
its share gets ``429`` with ``retry_after`` while another token is served, and not while it is alone;
``--loop-share 0`` turns it off."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdtmem.server.loopshare import CONTENDED_S, STEP_FREE_S, LoopShare
from tests.support.processes import ServerProcess

MALLORY = "mallory-device-token-001"
BOB = "bob-device-token-0000001"
U1, U2 = "user:u1:memories", "user:u2:memories"
TINY_SHARE = "0.0001"
"""A share so small that one create of 1,000 keys and 1,000 tags (one step of ~10 ms on the loop)
puts its token for seconds in debt."""


class _Clock:
    """Returns the times it is given, one per call (the two readings around each step)."""

    def __init__(self, times: Iterator[float]):
        self._times = times

    def __call__(self) -> float:
        return next(self._times)


def test_a_token_in_debt_waits_only_while_another_token_is_served() -> None:
    share = LoopShare(0.5, burst_s=0.1)  # a bank of 0.05 s of loop time
    share.charge("mallory", 0.25, now=0.0)  # alone on the node: it takes nothing from anyone
    assert share.wait("bob", now=0.0) == 0.0
    assert share.wait("mallory", now=0.0) == 0.0
    share.charge("mallory", 0.25, now=0.0)  # bob is being served: 0.2 s in debt, 0.4 s at 0.5 s/s
    assert share.wait("mallory", now=0.1) == pytest.approx(0.3)  # 0.15 s owed
    assert share.wait("bob", now=0.1) == 0.0  # never held back by mallory's debt
    assert share.wait("mallory", now=0.45) == 0.0  # paid off
    share.charge("mallory", 1.0, now=0.45)
    assert share.wait("mallory", now=0.5) > 0
    assert share.wait("mallory", now=0.1 + CONTENDED_S + 0.01) == 0.0  # bob has not come back


def test_short_steps_are_not_charged() -> None:
    share = LoopShare(0.001, burst_s=0.0)
    share.wait("bob", now=0.0)
    for _ in range(100):
        share.charge_step("mallory", STEP_FREE_S, now=0.0)
    assert share.wait("mallory", now=0.0) == 0.0
    share.charge_step("mallory", STEP_FREE_S + 0.001, now=0.0)
    assert share.wait("mallory", now=0.0) == pytest.approx(1.0)


def test_no_share_means_no_limit() -> None:
    share = LoopShare(0)
    share.charge("mallory", 100.0, now=0.0)
    assert share.wait("bob", now=0.0) == 0.0
    assert share.wait("mallory", now=0.0) == 0.0


def test_a_metered_coroutine_is_charged_its_steps_only() -> None:
    """Each step (from one await to the next) is charged as the clock reads around it, past its
    free first milliseconds; what the coroutine awaits (here a sleep, in a real node a commit on its
    thread) is not."""
    times = iter([10.0, 10.25, 10.25, 10.75])  # two steps: 0.25 s, then 0.5 s
    clocks: dict[str, Any] = {"step_clock": _Clock(times), "collections": lambda: 0.0}
    share = LoopShare(0.001, burst_s=0.0, clock=lambda: 10.0, **clocks)
    share.wait("bob", now=10.0)

    async def handler() -> str:
        await asyncio.sleep(0)
        return "done"

    async def main() -> Any:
        return await share.metered("mallory", handler())

    assert asyncio.run(main()) == "done"
    assert share.wait("mallory", now=10.0) == pytest.approx((0.75 - 2 * STEP_FREE_S) / 0.001)


def test_a_metered_coroutine_that_raises_is_charged_and_raises() -> None:
    times = iter([1.0, 1.5])
    clocks: dict[str, Any] = {"step_clock": _Clock(times), "collections": lambda: 0.0}
    share = LoopShare(0.001, burst_s=0.0, clock=lambda: 1.0, **clocks)
    share.wait("bob", now=1.0)

    async def handler() -> None:
        raise ValueError("refused")

    async def main() -> None:
        await share.metered("mallory", handler())

    try:
        asyncio.run(main())
    except ValueError as exc:
        assert str(exc) == "refused"
    else:
        raise AssertionError("the handler's error was lost")
    assert share.wait("mallory", now=1.0) == pytest.approx((0.5 - STEP_FREE_S) / 0.001)


def test_a_token_in_debt_is_served_while_a_token_deeper_in_debt_is_held_back() -> None:
    """The heaviest first: a bystander put in debt by one long step (a collection, a commit) is not
    refused while the token that holds the loop owes more; once it owes the most, it waits."""
    share = LoopShare(0.5, burst_s=0.1)
    share.wait("bob", now=0.0)
    share.wait("mallory", now=0.0)
    share.charge("mallory", 1.0, now=0.0)
    share.charge("bob", 0.1, now=0.0)
    assert share.wait("mallory", now=0.0) > 0
    assert share.wait("bob", now=0.0) == 0.0  # in debt, but mallory owes more
    share.charge("bob", 2.0, now=0.0)
    assert share.wait("bob", now=0.0) > 0  # now bob owes the most
    assert share.wait("mallory", now=0.0) == 0.0


def test_a_refused_token_does_not_count_as_served() -> None:
    """Only requests let in make a token one that others share the loop with: a token in debt that
    keeps asking does not hold another token in debt back."""
    share = LoopShare(0.5, burst_s=0.1)
    share.wait("bob", now=0.0)
    share.wait("mallory", now=0.0)
    share.charge("mallory", 10.0, now=0.0)
    share.charge("bob", 0.5, now=0.0)
    assert share.wait("mallory", now=0.0) > 0  # owes more than bob
    assert share.wait("bob", now=2.0) == 0.0  # bob served again at 2.0; mallory last let in at 0.0
    assert share.wait("mallory", now=2.5) > 0  # still owes, and bob was served 0.5 s ago
    share.charge("bob", 30.0, now=2.5)  # bob now owes more than mallory
    assert share.wait("bob", now=3.2) == 0.0  # mallory's refusals at 2.5 did not make her served


def test_a_garbage_collection_in_a_step_is_not_charged_to_it() -> None:
    """A collection walks what every request allocated and runs in whichever step crosses the
    collector's threshold: it is left out of that step's charge (the real thread clock here)."""
    heap = [[i] for i in range(1_000_000)]  # a full collection walks all of these: tens of ms
    share = LoopShare(0.001, burst_s=0.0)
    share.wait("mallory")  # another token is being served

    async def handler() -> float:
        start = time.thread_time()
        gc.collect()
        return time.thread_time() - start

    async def main() -> float:
        return await share.metered("bob", handler())

    took = asyncio.run(main())
    assert took > 2 * STEP_FREE_S, "the collection was too short to tell"
    assert share.wait("bob") == 0.0
    assert len(heap) == 1_000_000


def test_a_step_pays_for_the_collections_its_own_objects_bring() -> None:
    """A request that builds many objects is charged the collections they trigger (else a body of
    nested lists would cost its token a third of what it costs the loop)."""
    charged: list[float] = []

    class Probe(LoopShare):
        def charge_step(self, token: str, seconds: float, now: float | None = None) -> None:
            charged.append(seconds)

    blob = json.dumps([[i, [i]] for i in range(100_000)])

    async def handler() -> float:
        start, kept = time.thread_time(), [json.loads(blob) for _ in range(3)]
        assert len(kept) == 3
        return time.thread_time() - start

    async def main() -> float:
        return await Probe(0.25).metered("mallory", handler())

    took = asyncio.run(main())
    assert sum(charged) >= 0.9 * took, f"charged {sum(charged):.3f} s of a {took:.3f} s step"


def _tokens(tmp: Path) -> Path:
    path = tmp / "tokens.json"
    entries = [
        {"token": MALLORY, "principal": "user:mallory", "read": [U1], "write": [U1]},
        {"token": BOB, "principal": "user:bob", "read": [U2], "write": [U2]},
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


def _hub(tmp: Path, share: str) -> ServerProcess:
    return ServerProcess(tmp, "hub", tokens=_tokens(tmp), extra=["--loop-share", share])


async def _create(
    session: aiohttp.ClientSession, url: str, token: str, user: str
) -> tuple[int, dict[str, Any], str | None]:
    metadata, tags = {f"k{i}": i for i in range(1_000)}, [f"t{i}" for i in range(1_000)]
    body = json.dumps({"content": "x", "user_id": user, "metadata": metadata, "tags": tags})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with session.post(f"{url}/v1/memories", data=body.encode(), headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def _bob_writes(session: aiohttp.ClientSession, url: str) -> None:
    """One small write of bob's (a step of well under 2 ms), admitted."""
    small = json.dumps({"content": "bob's", "user_id": "u2"}).encode()
    headers = {"Authorization": f"Bearer {BOB}", "Content-Type": "application/json"}
    async with session.post(f"{url}/v1/memories", data=small, headers=headers) as response:
        assert response.status == 201


async def test_a_token_over_its_share_is_429_while_another_token_is_served(procs, session, tmp_path):
    hub = _hub(tmp_path, TINY_SHARE)
    procs.append(hub.start())
    alone = [(await _create(session, hub.url, MALLORY, "u1"))[0] for _ in range(3)]
    assert alone == [201, 201, 201]  # alone on the node: no one to give way to, nothing owed later
    # bob is served right before each of mallory's requests below: whether another token was
    # served within CONTENDED_S then does not depend on how long her creates take on a loaded machine
    await _bob_writes(session, hub.url)  # bob owes nothing: mallory, once in debt, owes more than him
    assert (await _create(session, hub.url, MALLORY, "u1"))[0] == 201  # not in debt: admitted, charged
    await _bob_writes(session, hub.url)
    status, error, retry_after = await _create(session, hub.url, MALLORY, "u1")
    assert status == 429 and error["error"] == "RateLimited" and "event loop" in error["message"], error
    assert error["retry_after"] > 1 and retry_after is not None, (error, retry_after)
    await _bob_writes(session, hub.url)
    headers = {"Authorization": f"Bearer {MALLORY}"}
    async with session.get(f"{hub.url}/v1/memories", params={"user_id": "u1"}, headers=headers) as response:
        assert response.status == 429  # reads take loop time too
    await asyncio.sleep(CONTENDED_S + 0.2)  # bob gone quiet: mallory is alone again
    assert (await _create(session, hub.url, MALLORY, "u1"))[0] == 201


async def test_no_loop_share_refuses_nothing(procs, session, tmp_path):
    hub = _hub(tmp_path, "0")
    procs.append(hub.start())
    statuses = []
    for _ in range(3):
        statuses.append((await _create(session, hub.url, MALLORY, "u1"))[0])
        statuses.append((await _create(session, hub.url, BOB, "u2"))[0])
    assert statuses == [201] * 6
