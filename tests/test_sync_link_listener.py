"""The eager frame sent from the commit listener itself: written before the listener returns when the
sender is idle and the commit is exactly what the peer misses next; otherwise handed to the sender,
which sends it or reads the log. Frame numbers and ``sent`` stay consistent across both ways, and a
send that failed loses nothing."""

from __future__ import annotations

import asyncio
import logging
import time

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.metrics import Metrics
from crdtmem.server import Node, PeerConfig
from crdtmem.store.base import DeltaRecord
from crdtmem.sync.link import Link
from crdtmem.sync.protocol import decode_frame
from crdtmem.sync.settings import LinkSettings

U1 = "user:u1:memories"
T1 = "topic:t1:updates"


def _delta(seq: int, channels: dict[str, int] | None = None) -> DeltaRecord:
    seqs = channels or {U1: seq}
    hlc = f"{seq:015d}.000000"
    return DeltaRecord(f"a:{hlc}", "a", "m1", hlc, b"", b"", tuple(seqs), seqs)


class _Log:
    """A replica stand-in whose own writes are logged in U1 and told to the link as a commit is."""

    id = "a"

    def __init__(self, logged: int) -> None:
        self.store = self
        self.log = [_delta(i) for i in range(1, logged + 1)]
        self.link: Link | None = None

    def version_vector(self, channel: str) -> dict[str, int]:
        return {"a": len(self.log)} if channel == U1 else {}

    def behind(self, channels, vectors) -> bool:
        return False

    def deltas_since(self, channels, sent, limit):
        return [d for d in self.log if d.seqs[U1] > sent.get(U1, {}).get("a", 0)][:limit]

    def commit(self) -> DeltaRecord:
        delta = _delta(len(self.log) + 1)
        self.log.append(delta)
        assert self.link is not None
        self.link._on_commit([delta])
        return delta


class _Socket:
    """Records each frame as its ``send_bytes`` is called; ``gate`` (when set) makes the send wait
    on it afterwards (a transport that must drain); ``fail`` makes it raise instead."""

    closed = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.gate: asyncio.Future[None] | None = None
        self.fail: BaseException | None = None

    async def send_bytes(self, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.frames.append(data)
        if self.gate is not None:
            await self.gate

    def sent(self) -> list[tuple[int, list[int]]]:
        """Each frame's number and the U1 seqs it carries."""
        out = []
        for data in self.frames:
            body = decode_frame(data).body
            out.append((body["n"], [d.seqs[U1] for d in wire.decode(body["payload"]).deltas]))
        return out


async def _caught_up(logged: int = 2, **settings) -> tuple[Link, _Log, _Socket, Metrics]:
    """A link whose sender has read the log to its end (frame 0 carries what was logged)."""
    replica, socket, metrics = _Log(logged), _Socket(), Metrics()
    link = Link(
        replica,  # type: ignore[arg-type]
        socket,  # type: ignore[arg-type]
        peer_id="b",
        push_channels=[U1],
        accept_channels=[U1],
        peer_vectors={},
        settings=LinkSettings(**settings),
        metrics=metrics,
    )
    replica.link = link
    await link._send_available()
    assert socket.sent() == [(0, list(range(1, logged + 1)))] and link._drained
    return link, replica, socket, metrics


def _frames(metrics: Metrics, source: str) -> float:
    return metrics.value("crdtmem_frames_sent_total", peer="b", source=source)


async def test_a_commits_frame_is_written_before_the_listener_returns():
    link, replica, socket, metrics = await _caught_up()
    replica.commit()
    # no await since the commit: the frame is on the socket, numbered, in flight and marked sent
    assert socket.sent()[1:] == [(1, [3])]
    assert link._sent[U1] == {"a": 3} and set(link._in_flight) == {0, 1}
    assert not link._wake.is_set(), "the sender was woken for a frame that went out already"
    replica.commit()
    assert socket.sent()[2:] == [(2, [4])] and link._sent[U1] == {"a": 4}
    assert _frames(metrics, "listener") == 2 and link.status.frames_sent == 3
    assert metrics.value("crdtmem_deltas_sent_total", peer="b") == 4


async def test_a_real_link_writes_the_frame_inside_the_commit_listeners(tmp_path):
    """Over aiohttp: by the time the commit's next listener runs, the link's frame went out (its
    send finished on the listener's stack), and the peer receives it."""
    async with (
        Node(Replica(tmp_path / "hub.db", replica_id="hub", channels=[U1])) as hub,
        Node(Replica(tmp_path / "a.db", replica_id="a", channels=[U1]), peers=[PeerConfig(hub.url)]) as a,
    ):
        await a.replica.add("first", user_id="u1")
        await _until(lambda: hub.replica.version_vector(U1) == {"a": 1} and a.peers[0].link is not None)
        link = a.peers[0].link
        assert link is not None
        await _until(lambda: link._drained and not link._in_flight)
        seen: list[tuple[float, dict[str, int], bool]] = []

        def after_the_link(deltas: list[DeltaRecord]) -> None:
            assert link._direct is not None
            listener = link.metrics.value("crdtmem_frames_sent_total", peer=link.peer_id, source="listener")
            seen.append((listener, dict(link._sent[U1]), link._direct.done()))

        a.replica.on_commit(after_the_link)  # runs after the link's listener, in the same commit
        before = link.metrics.value("crdtmem_frames_sent_total", peer=link.peer_id, source="listener")
        await a.replica.add("second", user_id="u1")
        assert seen == [(before + 1, {"a": 2}, True)]
        await _until(lambda: hub.replica.version_vector(U1) == {"a": 2})


async def test_a_busy_or_paused_sender_or_a_full_window_gets_the_commit():
    link, replica, socket, metrics = await _caught_up()
    link._busy = True  # the sender is in its round (e.g. awaiting inside _send_available)
    replica.commit()
    assert len(socket.frames) == 1 and link._wake.is_set() and link._sent[U1] == {"a": 2}
    link._busy = False
    link._wake.clear()
    await link._send_available()
    assert socket.sent()[1:] == [(1, [3])] and _frames(metrics, "commit") == 1

    link._paused_until = time.monotonic() + 60  # the peer asked for a pause
    replica.commit()
    assert len(socket.frames) == 2 and link._wake.is_set()
    link._paused_until = 0.0
    link._wake.clear()

    link._in_flight = {i: time.monotonic() for i in range(100, 100 + link.settings.window)}
    replica.commit()  # no room in the window
    assert len(socket.frames) == 2 and link._wake.is_set()
    link._in_flight.clear()
    await link._send_available()  # both waiting commits, as they were handed
    assert socket.sent()[2:] == [(2, [4, 5])] and _frames(metrics, "commit") == 2
    assert link._sent[U1] == {"a": 5} and _frames(metrics, "listener") == 0


async def test_a_gap_or_an_unread_log_goes_by_the_sender_and_the_log():
    link, replica, socket, metrics = await _caught_up()
    replica.log.append(_delta(3))  # logged without its commit reaching the link
    replica.commit()  # 4: past a gap
    assert len(socket.frames) == 1 and link._wake.is_set() and link._handed is None
    link._wake.clear()
    await link._send_available()
    assert socket.sent()[1:] == [(1, [3, 4])] and _frames(metrics, "log") == 2

    link._drained = False  # e.g. after a rewind: the log was not read to its end since
    link._handed = []
    replica.commit()
    assert len(socket.frames) == 2 and link._wake.is_set()
    await link._send_available()
    assert socket.sent()[2:] == [(2, [5])] and link._sent[U1] == {"a": 5}

    replica.commit()  # read to its end again: the listener sends
    assert socket.sent()[3:] == [(3, [6])] and _frames(metrics, "listener") == 1


async def test_a_commit_while_the_sender_awaits_its_send_is_left_to_the_sender():
    """Re-entrancy: a commit listener that runs while the sender awaits inside its round (here a
    send that must drain) only collects and wakes; the sender sends it after, in order."""
    link, replica, socket, metrics = await _caught_up()
    socket.gate = asyncio.get_running_loop().create_future()
    sender = asyncio.create_task(link._send_loop())
    try:
        replica.commit()  # 3: the sender is idle, the listener sends it and suspends in the drain
        assert socket.sent()[1:] == [(1, [3])] and link._direct is not None and not link._direct.done()
        assert link._sent[U1] == {"a": 2}, "marked sent before its send finished"
        replica.commit()  # 4: a frame is still on its way: collected, the sender woken
        assert len(socket.frames) == 2 and link._wake.is_set()
        await asyncio.sleep(0.01)
        assert link._busy and len(socket.frames) == 2, "the sender did not wait for the listener's frame"
        gate, socket.gate = socket.gate, asyncio.get_running_loop().create_future()
        gate.set_result(None)
        await _until(lambda: len(socket.frames) == 3)  # the sender's frame, now waiting to drain
        replica.commit()  # 5: the sender is inside its send: collected, woken
        assert len(socket.frames) == 3 and link._wake.is_set()
        socket.gate.set_result(None)
        socket.gate = None
        await _until(lambda: link._sent[U1] == {"a": 5})
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert socket.sent()[1:] == [(1, [3]), (2, [4]), (3, [5])]
    assert _frames(metrics, "listener") == 1 and _frames(metrics, "commit") == 2


async def test_a_failed_send_from_the_listener_falls_back_to_the_log(caplog):
    """As a failed send of the sender: nothing is marked sent, the sender is woken and reads the log
    (a later commit in another channel must not slip past it); the committing write never sees it."""
    link, replica, socket, metrics = await _caught_up()
    socket.fail = ConnectionResetError("the peer went away")
    replica.commit()  # 3
    assert link._sent[U1] == {"a": 2} and link._wake.is_set() and not link._drained
    socket.fail = None
    link._wake.clear()
    await link._send_available()
    assert socket.sent()[1:] == [(2, [3])], "frame 1 never went out; 3 goes again from the log"
    assert _frames(metrics, "log") == 2 and link._sent[U1] == {"a": 3}

    socket.fail = RuntimeError("unexpected")  # any other failure: logged, the sender takes over
    with caplog.at_level(logging.ERROR, logger="crdtmem.sync.link"):
        replica.commit()  # 4
    assert "sending a commit's frame failed" in caplog.text
    assert link._sent[U1] == {"a": 3} and link._wake.is_set()
    socket.fail = None
    replica.commit()  # 5: the log must be read first: left to the sender
    assert len(socket.frames) == 2
    await link._send_available()
    assert socket.sent()[2:] == [(4, [4, 5])] and link._sent[U1] == {"a": 5}


async def test_a_closed_socket_sends_nothing_from_the_listener():
    link, replica, socket, _ = await _caught_up()
    socket.closed = True
    replica.commit()
    assert len(socket.frames) == 1 and link._wake.is_set() and link._sent[U1] == {"a": 2}


async def _until(check, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)
