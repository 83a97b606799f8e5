"""What one change produces, local or remote: fresh dots, and the store row of the changed document.

Shared by the local write path (:mod:`crdtmem.engine.writes`) and the remote apply path
(:mod:`crdtmem.engine.remote`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from ..clock import HybridLogicalClock
from ..crdt import Dot
from ..document.memory import MemoryDoc
from ..document.records import Conflict, Memory
from ..errors import CrdtmemError, InvalidInput, MalformedPayload
from ..store.base import DocWrite


class Dots:
    """Fresh dots for one change. The last one names the change's delta, so the delta's hlc is the
    highest stamp inside it (the clock restores from it after a restart and never reissues a dot)."""

    def __init__(self, replica_id: str, clock: HybridLogicalClock):
        self._replica_id = replica_id
        self._clock = clock
        self.last: Dot | None = None

    def __call__(self) -> Dot:
        dot = Dot(self._clock.now().encode(), self._replica_id)
        self.last = dot
        return dot

    def run(self, count: int) -> list[Dot]:
        """``count`` fresh dots in increasing order, as ``count`` calls would give (one clock run)."""
        replica_id = self._replica_id
        dots = [Dot(text, replica_id) for text in self._clock.stamps(count)]
        if dots:
            self.last = dots[-1]
        return dots


def doc_write(
    doc: MemoryDoc,
    *,
    expected_id: str | None = None,
    before: Memory | None = None,
    created: Memory | None = None,
) -> tuple[DocWrite, Memory]:
    """The store row of a changed document and its materialized record (the document is read once).

    Args:
        expected_id: the memory id the delta claimed; a document of another memory is refused.
        before: the record before the change (None: the document is new here), so the store only
            writes channel rows for new documents and only clears conflicts that may exist.
        created: the record :meth:`MemoryDoc.create` returned, for a document it just created (no
            conflicts yet); the document is then not read back.
    """
    conflicts: list[Conflict] = []
    if created is not None:
        memory = created
        if memory.kind == "conversation":  # the document's own list, which later appends extend
            memory = dataclasses.replace(memory, content=doc.messages())
    else:
        try:
            memory, conflicts = doc.read()
        except CrdtmemError as exc:
            if not isinstance(exc, InvalidInput):  # an id in the document is not one: its delta's fault
                raise
            raise MalformedPayload(f"memory {doc.id!r} does not read as a crdtmem memory: {exc}") from exc
        except Exception as exc:
            raise MalformedPayload(f"memory {doc.id!r} does not read as a crdtmem memory: {exc}") from exc
    if expected_id is not None and memory.id != expected_id:
        raise MalformedPayload(f"a delta for memory {expected_id!r} carries the document of {memory.id!r}")
    record = memory.to_dict()
    del record["version"]
    write = DocWrite(
        doc_id=memory.id,
        kind=memory.kind,
        record=record,
        channels=memory.channels,
        user_id=memory.scope.user_id,
        tenant_id=memory.scope.tenant_id,
        deleted=memory.deleted,
        conflicted=memory.conflicted,
        updated_hlc=memory.updated_at,
        conflicts=tuple(conflicts),
        new=before is None,
        had_conflicts=before is not None and before.conflicted,
    )
    return write, memory


def header_channels(doc: MemoryDoc, expected_id: str) -> tuple[str, ...]:
    """The channels of a changed document, from its header (checked as :func:`doc_write` checks
    it): for a batch whose documents are read back later (:mod:`crdtmem.engine.materialize`)."""
    try:
        memory_id, channels = doc.header_channels()
    except CrdtmemError as exc:
        if not isinstance(exc, InvalidInput):
            raise
        raise MalformedPayload(f"memory {expected_id!r} does not read as a crdtmem memory: {exc}") from exc
    except Exception as exc:
        raise MalformedPayload(f"memory {expected_id!r} does not read as a crdtmem memory: {exc}") from exc
    if memory_id != expected_id:
        raise MalformedPayload(f"a delta for memory {expected_id!r} carries the document of {memory_id!r}")
    return channels


def as_list(values: Iterable[Any], what: str) -> list[Any]:
    if isinstance(values, (str, bytes)):
        raise InvalidInput(f"{what} must be a list, not a single string")
    return list(values)


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput(f"metadata must be a dict, got {type(metadata).__name__}")
    return metadata


MAX_EMBEDDING_DIM = 8192


def check_embedding(vector: Any, model: Any) -> list[float]:
    """A caller's vector as floats: finite numbers, 1 to 8192 of them, with the model's name."""
    if not isinstance(model, str) or not model or len(model) > 256:
        raise InvalidInput("an embedding needs the name of the model that made it (1-256 characters)")
    if isinstance(vector, (str, bytes)) or not isinstance(vector, Iterable):
        raise InvalidInput("an embedding is a list of numbers")
    values = list(vector)
    if not 1 <= len(values) <= MAX_EMBEDDING_DIM:
        raise InvalidInput(f"an embedding has 1 to {MAX_EMBEDDING_DIM} numbers, not {len(values)}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
        raise InvalidInput("an embedding is a list of numbers")
    floats = [float(x) for x in values]
    if not math.isfinite(math.fsum(floats)):
        raise InvalidInput("an embedding contains NaN or infinity")
    return floats
