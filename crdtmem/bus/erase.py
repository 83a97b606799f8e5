"""A forgotten memory's content leaves the stream: its messages are replaced by stubs.

``forget`` erases a memory from every replica (:mod:`crdtmem.engine.erasure`), but the messages
that carried its deltas stay in the stream until its retention drops them. So every node that
commits an erase marker (its own ``forget``, a device's, or one from the bus) records the memory,
durably (store meta ``bus:forgotten``), and once the marker is in the stream (the outbox marks
passed it) scans the subject of each of the memory's channels::

    each message holding a delta of the memory with content ─▶ publish it again with stubs in
      their place (a delta with no content, the entry it was; the message's other deltas as they
      were, since a lazy batch holds other memories' entries; message id ``{id}:stub``) ─▶ delete
      the message (the server overwrites it: JetStream's erase)

The stub keeps every reader's version vectors whole: a node that reads the stream later (or had not
reached the message yet) gets the marker first, then the entry as a stub, as on a link; the stub's
message carries the marker too, since a receiver takes a stub only with its memory's marker. The marker
stays. Several nodes doing the same is harmless (a stub already published is deduplicated or
counted as a duplicate; a message already deleted is skipped).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api

from ..document.erasure import is_marker, is_stub
from ..engine import payload as wire
from ..engine.erasure import stub_of, with_markers
from ..engine.replica import Replica
from ..errors import CrdtmemError
from ..metrics import Metrics
from ..store.base import DeltaRecord
from .outbox import Outbox
from .subjects import Layout, message_id

log = logging.getLogger("crdtmem.bus")

META_KEY = "bus:forgotten"
MAX_PENDING = 10_000
"""Memories waiting for their messages to leave the stream (more: the oldest wait for retention)."""

PublishOne = Callable[[str, bytes, str, str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class _Marker:
    origin: str
    seqs: dict[str, int]


class StreamEraser:
    """Memories forgotten here whose content may still be in the streams (module docstring)."""

    def __init__(self, replica: Replica, layout: Layout, outbox: Outbox, metrics: Metrics):
        self.replica = replica
        self.layout = layout
        self.outbox = outbox
        self.metrics = metrics
        self.pending: dict[str, _Marker] = {}
        raw = replica.store.get_meta(META_KEY)
        for doc_id, (origin, seqs) in (json.loads(raw) if raw else {}).items():
            self.pending[doc_id] = _Marker(origin, dict(seqs))
        self.erased = 0
        """Messages replaced by stubs since start."""
        self._unsaved = False  # pending holds markers the store does not have yet (a save failed)

    def on_commit(self, deltas: list[DeltaRecord]) -> None:
        fresh = False
        for delta in deltas:
            if delta.seqs and is_marker(delta.deps, delta.update) and delta.doc_id not in self.pending:
                if len(self.pending) >= MAX_PENDING:
                    log.warning(
                        "too many forgotten memories waiting to leave the stream; %s waits", delta.doc_id
                    )
                    continue
                self.pending[delta.doc_id] = _Marker(delta.origin, dict(delta.seqs))
                fresh = True
        if fresh:
            self._save()

    def _save(self) -> None:
        """Store the pending markers; a failure is logged and the next pass of :meth:`run` saves
        them again (this runs in a commit listener: the write that committed a marker has landed, so
        its failure is not the writer's)."""
        body = {doc_id: [m.origin, m.seqs] for doc_id, m in self.pending.items()}
        try:
            self.replica.store.set_meta(META_KEY, json.dumps(body, sort_keys=True))
        except Exception:
            self._unsaved = True
            log.exception("could not store the forgotten memories waiting to leave the stream")
        else:
            self._unsaved = False

    async def run(self, js: Any, publish: PublishOne) -> int:
        """Take the content of every pending memory whose marker is in the stream out of it;
        returns how many messages were replaced."""
        done: list[str] = []
        replaced = 0
        if self._unsaved:
            self._save()
        for doc_id, marker in list(self.pending.items()):
            if not all(self._in_stream(channel, marker.origin, seq) for channel, seq in marker.seqs.items()):
                continue  # the stubs must come after the marker: wait until it is published
            for channel in marker.seqs:
                replaced += await self._erase(js, publish, doc_id, channel)
            done.append(doc_id)
        if done:
            for doc_id in done:
                self.pending.pop(doc_id, None)
            self._save()
        return replaced

    def _in_stream(self, channel: str, origin: str, seq: int) -> bool:
        return self.outbox.marks.get(channel, {}).get(origin, 0) >= seq

    async def _erase(self, js: Any, publish: PublishOne, doc_id: str, channel: str) -> int:
        subject = self.layout.subject(channel)
        stream = self.layout.stream_of(channel).name
        held = (await js.stream_info(stream, subjects_filter=subject)).state.subjects or {}
        if not held.get(subject):
            return 0
        replaced = 0
        for seq, msg_id, deltas in await _read_subject(js, stream, subject, self.replica.max_payload_bytes):
            content = [d for d in deltas if d.doc_id == doc_id and not is_stub(d.deps, d.update)]
            content = [d for d in content if not is_marker(d.deps, d.update)]
            if not content:
                continue
            stubs = {id(d): stub_of(d) for d in content}
            # the message's other deltas go again as they were (a lazy batch holds other memories')
            kept = [stubs.get(id(d), d) for d in deltas]
            sent = with_markers(self.replica.store, kept, [channel])  # what justifies a stub
            data = wire.encode(wire.Payload(self.replica.id, sent, {}, self.replica.keys_for(sent)))
            first = next(iter(stubs.values()))
            stub_id = (
                f"{message_id(first.origin, channel, first.seqs.get(channel, 0), data)}:stub"
                if first.seqs
                else msg_id
            )
            await publish(subject, data, stub_id, stream)
            with contextlib.suppress(nats.js.errors.NotFoundError):  # another node was first
                await js.delete_msg(stream, seq)
            replaced += 1
        if replaced:
            self.erased += replaced
            self.metrics.inc("crdtmem_bus_erased_messages_total", replaced)
            log.info(
                "replaced %d message(s) of forgotten memory %s on %s with stubs", replaced, doc_id, subject
            )
        return replaced


async def _read_subject(
    js: Any, stream: str, subject: str, max_bytes: int
) -> list[tuple[int, str, list[DeltaRecord]]]:
    """Every message on ``subject``: (stream sequence, message id, its deltas); unreadable ones
    are skipped."""
    name = f"crdtmem_erase_{uuid.uuid4().hex[:16]}"  # not a node's (crdtmem.bus.fold)
    config = api.ConsumerConfig(
        name=name,
        filter_subject=subject,
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.ALL,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    await js.add_consumer(stream, config)
    sub = await js.pull_subscribe_bind(stream=stream, name=name)
    out: list[tuple[int, str, list[DeltaRecord]]] = []
    try:
        while True:
            try:
                batch = await sub.fetch(256, timeout=1.0)
            except TimeoutError:
                break
            for msg in batch:
                try:
                    payload = wire.decode(msg.data, max_bytes=max_bytes)
                except CrdtmemError:
                    continue
                msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                out.append((int(msg.metadata.sequence.stream), str(msg_id), list(payload.deltas)))
            if batch and not batch[-1].metadata.num_pending:
                break
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(nats.errors.Error):
            await js.delete_consumer(stream, name)
    return out
