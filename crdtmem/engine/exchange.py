"""Exchange: what a replica holds (version vectors), what a peer misses (payloads and states
pages), and merging what peers send (:mod:`.remote`, :mod:`.catchup`), with the acknowledgements
that drive log compaction (:mod:`.compaction`).

:class:`Exchange` is part of :class:`~crdtmem.engine.replica.Replica` (which inherits it) and reads
only the parts it declares, which the replica builds.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..access import OPEN, AccessDenied, Principal
from ..errors import InvalidInput, MalformedPayload
from ..ids import parse_channels
from ..store.base import DeltaRecord, Store, VersionVector
from . import payload as wire
from .catchup import STATES_VERSION, CatchUp, decode_states, export_states, is_behind, is_states
from .compaction import Compacted, Compaction
from .erasure import with_markers
from .inbound import ApplyResult
from .materialize import Materializer
from .opened import Opened
from .remote import RemoteApply
from .signing import Keyring, Signer
from .statepages import page_refusal
from .waiting import Resolver


class Exchange(Opened):
    """Version vectors, :meth:`export_since` / :meth:`export_states`, :meth:`apply` and its
    variants, :meth:`reexamine`, :meth:`compact` and peers' acknowledgements."""

    _id: str
    channels: tuple[str, ...] | None
    max_payload_bytes: int
    _store: Store
    _remote: RemoteApply
    _catchup: CatchUp
    _materializer: Materializer
    compaction: Compaction
    keyring: Keyring | None
    signer: Signer | None
    resolve_rights: Resolver | None
    _in_flight: int  # writes and applies between entry and acknowledgement
    _applying: int  # applies of remote payloads in progress

    @property
    def pending_count(self) -> int:
        """Remote deltas stored but waiting for causal dependencies that have not arrived yet."""
        return len(self._remote.waiting)

    def version_vector(self, channel: str) -> VersionVector:
        """``{origin: highest contiguous seq}`` this replica has stored for ``channel``."""
        self._check_open()
        return self._store.version_vector(parse_channels([channel])[0])

    def version_vectors(self, channels: Sequence[str] | None = None) -> dict[str, VersionVector]:
        self._check_open()
        names = parse_channels(channels) if channels is not None else self._known_channels()
        return {c: self._store.version_vector(c) for c in names}

    def _known_channels(self) -> tuple[str, ...]:
        return self.channels if self.channels is not None else tuple(self._store.channels())

    async def export_since(
        self,
        channels: str | Sequence[str],
        since: VersionVector | dict[str, VersionVector] | None = None,
        *,
        limit: int | None = None,
        version: int = wire.VERSION,
    ) -> bytes:
        """The deltas of ``channels`` that a peer at ``since`` is missing, as a payload.

        Args:
            channels: one channel name, or several.
            since: the peer's version vector (``{origin: seq}`` for one channel, or
                ``{channel: {origin: seq}}``); None or empty exports everything.
            limit: at most this many deltas (the peer asks again with its new vector for more).
            version: the payload version (1 for a reader that speaks only 1: no signatures).
        """
        self._check_open()
        names = parse_channels([channels] if isinstance(channels, str) else channels)
        try:
            vectors = wire.normalize_since(names, since)
        except MalformedPayload as exc:
            raise InvalidInput(str(exc)) from exc
        if is_behind(self._store, vectors, names):  # the log no longer holds what the peer misses
            return self.export_states(names, limit=limit, version=STATES_VERSION if version >= 2 else 1)
        deltas = with_markers(self._store, self._store.deltas_since(names, vectors, limit), names)
        mine = {c: self._store.version_vector(c) for c in names}
        return wire.encode(wire.Payload(self._id, deltas, mine, self.keys_for(deltas)), version)

    def export_states(
        self,
        channels: Sequence[str],
        *,
        after: str | None = None,
        limit: int | None = None,
        covers: dict[str, VersionVector] | None = None,
        cursor: bytes | None = None,
        version: int = STATES_VERSION,
    ) -> bytes:
        """A page of document states of ``channels``, for a peer behind the horizon of the log
        (:mod:`crdtmem.engine.catchup`): the first page with ``after=None``, then ``after`` = the
        page's ``next``, ``covers`` and ``cursor`` = the first page's, until ``next`` is None.
        Version 2 pages are signed with this replica's key; version 1 (unsigned) is for peers
        that read nothing newer."""
        self._check_open()
        names = parse_channels(channels)
        return export_states(
            self._store,
            self._id,
            names,
            after=after,
            limit=limit,
            covers=covers,
            cursor=cursor,
            max_bytes=self.max_payload_bytes,
            signer=self.signer,
            version=version,
            subscribed=self.channels,
        )

    def behind(self, channels: Sequence[str], vectors: dict[str, VersionVector]) -> bool:
        """Whether a peer at ``vectors`` misses entries this replica's log folded (it needs states)."""
        return is_behind(self._store, vectors, parse_channels(channels))

    async def compact(self) -> Compacted:
        """Fold the log entries every known peer holds (or older than ``retention_ms`` and not held
        by a lease) into the documents' snapshots (:mod:`crdtmem.engine.compaction`), then rebase
        the memories whose folded documents are mostly tombstones (:mod:`crdtmem.engine.rebase`)."""
        self._check_open()
        await self._materializer.settle()  # a document folds into its snapshot once it has a record
        return await self.compaction.compact()

    def acknowledged(self, peer: str, vectors: dict[str, VersionVector]) -> None:
        """Record that ``peer`` holds ``vectors`` (renews its lease); a node calls it as peers sync."""
        self._check_open()
        self.compaction.acknowledged(peer, vectors)

    def keys_for(self, deltas: Sequence[DeltaRecord]) -> dict[str, bytes]:
        """The public keys to send along with these deltas (receivers pin them on first use)."""
        return self.keyring.keys_for(deltas) if self.keyring is not None else {}

    async def apply(self, data: bytes) -> ApplyResult:
        """Merge a payload from :meth:`export_since` (any replica, any order, any number of times).

        The payload is validated as a whole first; a bad one raises a PayloadError subclass and
        changes nothing. Deltas whose causal dependencies have not arrived are stored and applied
        as soon as they do.
        """
        self._check_open()
        if is_states(data):
            return await self.apply_states(data)
        return await self.apply_payload(wire.decode(data, max_bytes=self.max_payload_bytes))

    async def apply_states(self, data: bytes, *, sender: Principal | None = None) -> ApplyResult:
        """Merge a states page (:meth:`export_states`): its erase markers, then its documents; on
        its last page, this replica's vectors rise to what the states hold."""
        self._check_open()
        page = decode_states(data, max_bytes=self.max_payload_bytes)
        untrusted = page_refusal(page, sender or OPEN, self.keyring)
        if untrusted is not None:
            self._catchup.refused_pages += 1
            raise AccessDenied(f"{untrusted}; nothing of this states page was applied")
        if page.markers:
            await self.apply_payload(wire.Payload(page.sender, page.markers), sender=sender, isolate=True)
        self._in_flight += 1
        try:
            changed, refused = await self._catchup.apply(page, sender)
            changed += await self._remote.retry({doc_id for doc_id, _ in page.states})
            if page.next is None:  # the covers landed: what waits behind them is a duplicate now
                await self._remote.drop_covered()
        finally:
            self._in_flight -= 1
        return ApplyResult(changed, 0, self.pending_count, 0, rejected=refused)

    async def apply_payload(
        self, received: wire.Payload, *, sender: Principal | None = None, isolate: bool = False
    ) -> ApplyResult:
        """:meth:`apply` for a payload already decoded (and validated) by :func:`payload.decode`.

        This is the entry point of every transport (HTTP push and pull, the replication WebSocket, a
        message bus): each delta is authenticated and authorized against ``sender``'s rights.

        Args:
            sender: who delivered the payload (a server passes its caller's principal; a node that
                pulled passes its peer's). Deltas of an origin the sender may not introduce are
                refused and counted (``ApplyResult.unauthenticated``); a payload that changes a
                memory the sender may not write is refused with
                :class:`~crdtmem.access.AccessDenied` and changes nothing. None: the caller vouches
                for the payload (every origin but this replica's own, every channel).
            isolate: for a stream of payloads (a link, a pull): instead of refusing the whole payload
                when a memory's deltas fail their checks, apply the others and reject those (counted
                in ``ApplyResult.rejected``, skipped when resent), so one bad memory cannot hold the
                stream back for good.
        """
        self._check_open()
        self._in_flight += 1
        self._applying += 1
        try:
            result = await self._remote.apply(received, sender, isolate=isolate)
            if received.vectors:  # what the sender holds: its acknowledgement, for compaction
                self.compaction.acknowledged(received.sender, received.vectors)
            return result
        finally:
            self._in_flight -= 1
            self._applying -= 1
            if self._materializer.waiting:
                self._materializer.kick()

    async def reexamine(self) -> int:
        """Apply again the deltas denied to senders whose rights have changed since (their current
        rights from :attr:`resolve_rights`), and the rebase entries refused by earlier builds
        (EpochMismatch), now carrying changes over them; returns how many applied. A node runs it
        on start."""
        self._check_open()
        self._in_flight += 1
        try:
            taken = await self._remote.retake_epochs(self.resolve_rights)
            if self.resolve_rights is None:
                return taken
            return taken + await self._remote.reexamine(self.resolve_rights)
        finally:
            self._in_flight -= 1

    def _subscribed(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels
