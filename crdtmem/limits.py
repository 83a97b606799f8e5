"""Every size a client or a peer decides, bounded, with its default: the one place they are set.

    Replica(path, limits=Limits(metadata_keys=200))   # the engine's bounds, local writes included
    Node(replica)                                      # serves within replica.limits

Every inbound byte is hostile, so every cost a request can cause is linear in what it sends and
bounded by one of these. Going past one refuses the request with :class:`LimitExceeded` (HTTP
``413``, ``{"error": "LimitExceeded", "limit": name, "max": bound, ...}``) before anything is
written. The bounds per memory hold for what a memory holds after the write (adding one tag to a
memory that has ``tags`` already is refused too). A delta another replica made may take a memory up
to twice these bounds (concurrent adds count once per replica, and a peer may run with somewhat
larger bounds); past that it is rejected, like any delta that is wrong for this node, before the
memory is read: reading costs per entry, and a push of 1.4 MB can hold 20,000 metadata keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidInput, LimitExceeded, PayloadTooLarge

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one replica and the node that serves it (docs/operating.md, "Security model")."""

    body_bytes: int = 8 * MiB
    """An HTTP request body (REST, ``/v1/sync/push``)."""
    payload_bytes: int = 32 * MiB
    """A replication payload: a WebSocket frame, a pulled page, :meth:`Replica.apply`."""
    metadata_keys: int = 1_000
    """Metadata keys of one memory."""
    tags: int = 1_000
    """Tags of one memory."""
    topics: int = 32
    """Topics of one memory (so it is on at most ``topics + 3`` channels)."""
    list_items: int = 10_000
    """Items of one list memory."""
    messages: int = 100_000
    """Messages of one conversation."""
    value_bytes: int = 1 * MiB
    """One value as canonical JSON (UTF-8): a fact's content, a metadata value, a tag, a list item,
    a message's text."""
    pull_page: int = 5_000
    """Deltas in one page of ``/v1/sync/pull`` (a puller asks for at most this many)."""
    pending_per_sender: int = 10_000
    """Deltas one principal may have waiting for their dependencies (the oldest are evicted)."""
    pending_per_origin: int = 10_000
    """Deltas of one origin that may be waiting, whoever delivered them."""
    pending_age_s: int = 3_600
    """Seconds a delta may wait for its dependencies before it is dropped."""
    pending_bytes_per_sender: int = 64 * MiB
    """Bytes of deltas one principal may have waiting (they are held in memory too; the oldest are
    evicted)."""
    pending_bytes_per_origin: int = 64 * MiB
    """Bytes of deltas of one origin that may be waiting, whoever delivered them."""
    feed_page: int = 50
    """Memories read (and sent) at a time when an event stream replays state (a resume)."""
    record_cache_bytes: int = 64 * MiB
    """Approximate bytes of the materialized memories the replica keeps in memory (its record cache,
    also bounded by ``Replica(cache_size=...)`` entries); the least recently used are dropped."""
    doc_cache_bytes: int = 64 * MiB
    """Approximate bytes of the loaded CRDT documents the replica keeps in memory (also bounded by
    ``Replica(doc_cache_size=...)`` entries); the least recently used are dropped."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{field.name} must be a positive int, got {value!r}")

    @classmethod
    def parse(cls, settings: Iterable[str]) -> Limits:
        """Defaults changed by ``NAME=N`` settings (``crdtmem serve --limit metadata_keys=200``)."""
        known = {field.name for field in fields(cls)}
        changed: dict[str, int] = {}
        for setting in settings:
            name, sep, value = setting.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in known or not value.strip().isdigit():
                raise InvalidInput(
                    f"a limit is NAME=N with NAME one of {', '.join(sorted(known))}; got {setting!r}"
                )
            changed[name] = int(value)
        try:
            return cls(**changed)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    def check_count(self, name: str, count: int, what: str) -> None:
        bound: int = getattr(self, name)
        if count > bound:
            raise LimitExceeded(name, bound, f"{what}: {count} is more than {bound} (limit {name})")

    def check_value(self, value: Any, what: str) -> None:
        """A value's canonical JSON size; a string is measured without encoding it as JSON."""
        size = _size(value, self.value_bytes)
        if size > self.value_bytes:
            raise LimitExceeded(
                "value_bytes",
                self.value_bytes,
                f"{what} is {size} bytes as JSON, more than {self.value_bytes} (limit value_bytes)",
            )

    def check_values(self, values: Iterable[Any], what: str) -> None:
        short = self.value_bytes // 4  # a string this long or shorter fits whatever its characters
        for value in values:
            kind = type(value)
            if kind is int or kind is float or kind is bool or value is None:
                continue
            if kind is str and len(value) <= short:
                continue
            self.check_value(value, what)

    def check_write(
        self,
        *,
        content: Any = None,
        metadata: Mapping[str, Any] | None = None,
        remove_metadata: Iterable[str] = (),
        tags: Iterable[Any] = (),
        items: Iterable[Any] = (),
        message: tuple[str, str] | None = None,
        messages: Iterable[Any] = (),
        topics: Iterable[str] = (),
    ) -> None:
        """What one write carries, before any of it is done (each bound, so the work is bounded)."""
        metadata = metadata or {}
        self.check_count("metadata_keys", len(metadata), "metadata keys in one write")
        self.check_count("metadata_keys", len(list(remove_metadata)), "metadata keys removed in one write")
        tags, items, messages = list(tags), list(items), list(messages)
        self.check_count("tags", len(tags), "tags in one write")
        self.check_count("list_items", len(items), "list items in one write")
        self.check_count("messages", len(messages), "messages in one write")
        self.check_count("topics", len(list(topics)), "topics of a memory")
        self.check_value(content, "the content")
        self.check_values(metadata.values(), "a metadata value")
        self.check_values(tags, "a tag")
        self.check_values(items, "a list item")
        if message is not None:
            self.check_value(message[1], "a message's text")
        for one in messages:
            text = one.get("text") if isinstance(one, dict) else None
            self.check_value(text, "a message's text")

    def check_remote(self, after: tuple[int, int, int], before: tuple[int, int, int], what: str) -> None:
        """A remote change may not take a memory past twice the bounds of what it holds (see
        :meth:`crdtmem.document.memory.MemoryDoc.sizes`: entries, so concurrent adds of one tag
        count twice), unless it was past them already. Raises :class:`~crdtmem.errors.PayloadTooLarge`
        (a check of the applied delta: the delta is rejected, not the payload's form)."""
        for name, now, earlier in zip(("metadata_keys", "tags", "list_items"), after, before, strict=True):
            bound = 2 * getattr(self, name)
            if now > bound and now > earlier:
                raise PayloadTooLarge(
                    f"{what} would hold {now} or more {name.replace('_', ' ')}, more than this node takes "
                    f"(twice limit {name}, {bound}): rejected"
                )

    def remote_metadata_exact_over(self) -> int:
        """Up to how many metadata entries :meth:`check_remote` needs no exact count of a memory's
        metadata keys (``MemoryDoc.sizes(exact_over=...)``). Entries bound keys from above: a
        memory with no more entries than twice the bound has no more keys than that, so such a
        count after a change passes whatever it is exactly, and such a count before a change is
        below any count after it that does not pass."""
        return 2 * self.metadata_keys

    def remote_metadata_most(self, before: tuple[int, int, int]) -> int:
        """How far :meth:`check_remote` needs a memory's metadata keys counted after a remote change
        (``MemoryDoc.sizes(most=...)``): past this, the change is rejected whatever the exact count."""
        return max(2 * self.metadata_keys, before[0])

    def check_memory(self, metadata: int, tags: int, items: int, messages: int) -> None:
        """What a memory holds after a local write."""
        self.check_count("metadata_keys", metadata, "metadata keys of the memory after this write")
        self.check_count("tags", tags, "tags of the memory after this write")
        self.check_count("list_items", items, "items of the list after this write")
        self.check_count("messages", messages, "messages of the conversation after this write")


DEFAULT_LIMITS = Limits()


def _size(value: Any, bound: int) -> int:
    if value is None or isinstance(value, (bool, int, float)):
        return 0
    if isinstance(value, str):
        # UTF-8 is at most 4 bytes a code point: only long strings need encoding to be measured
        return len(value) if len(value) * 4 <= bound else len(value.encode("utf-8", "surrogatepass"))
    try:
        return len(
            json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
        )
    except (TypeError, ValueError, RecursionError):
        return 0  # not JSON: refused, with its reason, where it is encoded
