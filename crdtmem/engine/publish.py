"""The commit step of every change, local or remote: a durable commit, then what follows it.

::

    Commit ─▶ GroupCommitter (durable) ─▶ commit listeners (they wake the sync links' senders) ─▶
      working set (documents, records) ─▶ one MemoryEvent per changed or forgotten memory on the feed

What follows a commit happens exactly once per commit that landed, also when the caller was
cancelled while it landed (``GroupCommitter.submit(on_landed=...)``), and also when a commit
listener raises (it is logged; the write landed); a commit that failed leaves the working set
without the documents it changed (the store has the truth).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..clock import Hlc
from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..events import MemoryEvent, classify
from ..store.base import Commit, CommitResult, DeltaRecord
from .commitorder import is_large
from .committer import GroupCommitter
from .feed import EventFeed
from .snapshots import Snapshots
from .workset import WorkingSet

CommitListener = Callable[[list[DeltaRecord]], None]

log = logging.getLogger("crdtmem.publish")


@dataclass(frozen=True, slots=True)
class Forgetting:
    """A memory a commit erases (``Commit.erase``), as its ``forgotten`` event names it: the
    memory's channels, and the origin and stamp of the erase marker."""

    channels: tuple[str, ...]
    origin: str
    hlc: str


class Publisher:
    """Commits changes and publishes them. Use it from the replica's event loop."""

    def __init__(
        self, committer: GroupCommitter, work: WorkingSet, feed: EventFeed, alone: Callable[[], bool]
    ):
        self._committer = committer
        self._work = work
        self._feed = feed
        self._alone = alone
        self.listeners: list[CommitListener] = []
        self.snapshots: Snapshots | None = None
        """Told about every document a commit changed (it snapshots long tails)."""
        self.replica_id = ""
        """Names the events (``{replica}:{version}``); set when the replica opens."""

    async def commit(
        self,
        work: Commit,
        docs: dict[str, tuple[MemoryDoc, Memory]],
        before: dict[str, Memory | None],
        origins: dict[str, str],
        *,
        after: Callable[[], object] | None = None,
        stale: dict[str, MemoryDoc] | None = None,
        forgetting: Mapping[str, Forgetting] | None = None,
    ) -> list[MemoryEvent]:
        """Commit ``work`` (``docs``: each changed document with its record; ``before``: the records
        before; ``origins``: whose change each memory's is) and return the events it published.
        ``after`` runs once the commit landed, after the events (also under a cancelled caller).
        ``stale``: documents the commit changes without their records (``work.stale``; their events
        come when they are materialized). ``forgetting``: each memory in ``work.erase``, for its
        ``forgotten`` event."""

        def landed(result: CommitResult) -> list[MemoryEvent]:
            events = self._committed(work, docs, before, origins, result, stale or {}, forgetting or {})
            if after is not None:
                after()
            return events

        try:
            # alone: no other write in flight and nothing else waiting to run on the loop. Then the
            # commit runs inline; otherwise on the commit thread, so that other writers can join its
            # group and other work (event delivery, sockets) runs during its fsync
            alone = not is_large(work) and self._alone() and not _others_ready()
            result: CommitResult = await self._committer.submit(work, alone=alone, on_landed=landed)
        except BaseException:  # failed, or cancelled (if it landed anyway, `landed` ran): the store
            self._work.forget([*docs, *(stale or {})])  # has the truth
            raise
        return landed(result)

    def _committed(
        self,
        work: Commit,
        docs: dict[str, tuple[MemoryDoc, Memory]],
        before: dict[str, Memory | None],
        origins: dict[str, str],
        result: CommitResult,
        stale: dict[str, MemoryDoc],
        forgetting: Mapping[str, Forgetting],
    ) -> list[MemoryEvent]:
        for delta in work.deltas:  # the store's copy of each document: its snapshot, and this tail
            entry = docs.get(delta.doc_id)
            doc = entry[0] if entry is not None else stale.get(delta.doc_id)
            row = result.rows.get(delta.uid, 0)
            if doc is not None and row > doc.stored_upto:
                doc.stored_upto = row
                doc.tail_deltas += 1
                doc.tail_bytes += len(delta.update)
        self._tell_listeners(work, result)
        events = [
            MemoryEvent.forgotten(
                f"{self.replica_id}:{result.versions[doc_id]}",
                Hlc.decode(forgetting[doc_id].hlc).isoformat(),
                doc_id,
                forgetting[doc_id].channels,
                forgetting[doc_id].origin,
            )
            for doc_id in work.erase
        ]
        for write in work.docs:
            version = result.versions[write.doc_id]
            doc, materialized = docs[write.doc_id]
            memory = dataclasses.replace(materialized, version=version)
            self._work.committed(write.doc_id, doc, memory)
            prior = before.get(write.doc_id)
            events.append(
                MemoryEvent(
                    event_id=f"{self.replica_id}:{version}",
                    event_type=classify(prior, memory),
                    timestamp=Hlc.decode(write.updated_hlc).isoformat(),
                    memory=memory,
                    source=memory.source,
                    channels=memory.channels,
                    origin=origins.get(write.doc_id, self.replica_id),
                    content_from=(
                        doc.messages_added_since(prior.content)
                        if prior is not None and memory.kind == "conversation"
                        else None
                    ),
                )
            )
            if self.snapshots is not None:
                self.snapshots.committed(write.doc_id, doc)
        for doc_id, doc in stale.items():
            self._work.docs.put(doc_id, doc)
        self._feed.publish(events)
        return events

    def _tell_listeners(self, work: Commit, result: CommitResult) -> None:
        if self.listeners:
            committed = [  # local deltas with the sequence numbers (and signatures) the store gave them
                d
                if d.seqs
                else dataclasses.replace(
                    d,
                    seqs=result.seqs[d.uid],
                    channels=tuple(result.seqs[d.uid]),
                    signature=result.signatures.get(d.uid),
                )
                for d in work.deltas
            ]
            for listener in self.listeners:
                try:
                    listener(committed)
                except Exception:  # the commit landed: what follows it must follow it all the same
                    log.exception("commit listener %r failed; the commit stands", listener)


def _others_ready() -> bool:
    """Whether other callbacks are queued to run on this event loop.

    Reads asyncio's ready queue (``loop._ready``, CPython's event loop); a loop without one is assumed
    busy, which only means commits go to the commit thread.
    """
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is None or len(ready) > 0
