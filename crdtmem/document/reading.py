"""A memory document read as its record: the record and the conflicts of its merged state, computed
from one snapshot of its roots; the memory's id and channels from its header alone; the scope as
the header holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..crdt import MessageLog, MVRegister, ORSet, PNCounter, Sibling
from ..crdt.dots import decode_value, is_hlc_text
from ..errors import MalformedPayload
from .records import KINDS, REGISTER_KINDS, Conflict, ConflictValue, Memory, Scope, Source
from .yroots import YDoc, snapshot

ACTIVE, DELETED = "active", "deleted"
"""The values of a memory's lifecycle register."""


def header_channels(doc: YDoc) -> tuple[str, tuple[str, ...]]:
    """``(memory id, channels)`` from the header alone, checked as :func:`read` checks it (an
    id, a known kind, a creation stamp, a scope that names channels); raises MalformedPayload.
    For a batch of remote deltas, whose documents are read back later."""
    header = doc.map_values("header", _HEADER_KEYS)
    if not _texts(header):  # a value JSON would render otherwise (a number, a shared type)
        header = snapshot(doc, maps=("header",), arrays=())["header"] or {}
    if "id" not in header:
        raise MalformedPayload("memory document has no header (was it created?)")
    if header.get("kind") not in KINDS:
        raise MalformedPayload(f"memory document has no valid kind: {header.get('kind')!r}")
    memory_id = str(header["id"])
    if not is_hlc_text(header.get("created")):
        raise MalformedPayload(f"memory {memory_id!r} has no valid creation stamp")
    return memory_id, scope_of(header.get("scope") or {}).channels()


_HEADER_KEYS = ("id", "kind", "created", "scope")


def _texts(header: dict[str, Any]) -> bool:
    """Whether the header's values hold only strings, booleans and nulls (the scope's in one
    dict, its topics in one list): what reads the same from the binding as from the document's
    JSON, and what the header of every crdtmem memory holds."""
    for key in ("id", "kind", "created"):
        value = header.get(key)
        if not (value is None or value is True or value is False or type(value) is str):
            return False
    scope = header.get("scope")
    if scope is None:
        return True
    if type(scope) is not dict:
        return False
    for value in scope.values():
        if value is None or value is True or value is False or type(value) is str:
            continue
        if type(value) is not list or not all(type(item) is str for item in value):
            return False
    return True


def read(doc: YDoc, message_log: Callable[[], MessageLog], version: int = 0) -> tuple[Memory, list[Conflict]]:
    """The record and the conflicts of the current merged state, from one snapshot.

    Every root is converted to plain Python once, from one snapshot (:func:`~.yroots.snapshot`), and
    everything is computed from those values.
    """
    roots = snapshot(doc, arrays=())
    header = roots["header"] or {}
    content_raw = roots["content"] or {}
    lifecycle_raw = roots["lifecycle"] or {}
    metadata_raw = roots["metadata"] or {}
    tags_raw = roots["tags"] or {}
    embedding_raw = roots["embedding"] or {}
    if "id" not in header:
        raise MalformedPayload("memory document has no header (was it created?)")
    kind = header.get("kind")
    if kind not in KINDS:
        raise MalformedPayload(f"memory document has no valid kind: {kind!r}")
    memory_id = str(header["id"])
    created = header.get("created")
    if not is_hlc_text(created):
        raise MalformedPayload(f"memory {memory_id!r} has no valid creation stamp: {created!r:.40}")
    stamps = [created]
    registers: dict[str, list[Sibling]] = {"lifecycle": MVRegister(lifecycle_raw).siblings()}
    if kind in REGISTER_KINDS:
        siblings = MVRegister(content_raw).siblings()
        registers["content"] = siblings
        content: Any = siblings[0].value if siblings else ""
    elif kind == "list":
        content, latest = ORSet(content_raw).read()
        stamps.append(latest)
    elif kind == "counter":
        counter = PNCounter(content_raw)
        content = counter.value()
        stamps.append(counter.latest_hlc())
    else:
        log = message_log()
        content = log.content()
        stamps.append(log.latest_hlc())
    metadata: dict[str, Any] = {}
    for key, siblings in sorted(MVRegister.grouped(metadata_raw).items()):
        metadata[key] = siblings[0].value
        registers[f"metadata.{key}"] = siblings
    for siblings in registers.values():
        stamps.extend(s.dot.hlc for s in siblings)
    tags, latest = ORSet(tags_raw).read()
    stamps.append(latest)
    scope = scope_of(header.get("scope") or {})
    conflicts = [
        Conflict(
            memory_id,
            name,
            tuple(ConflictValue(s.value, s.dot.hlc, s.dot.replica) for s in siblings),
            scope.user_id,
            scope.tenant_id,
        )
        for name, siblings in sorted(registers.items())
        if MVRegister.in_conflict(siblings)
    ]
    embedding = MVRegister.read(MVRegister(embedding_raw).siblings())
    vector = decode_value(embedding.text) if embedding else None
    source = header.get("source") or {}
    lifecycle = registers["lifecycle"]
    memory = Memory(
        id=memory_id,
        kind=kind,
        content=content,
        metadata=metadata,
        tags=tuple(tags),
        source=Source(source.get("agent_id"), source.get("session_id"), source.get("user_id")),
        scope=scope,
        channels=scope.channels(),
        created_at=created,
        updated_at=max(stamps),
        deleted=bool(lifecycle) and lifecycle[0].value == DELETED,
        conflicted=bool(conflicts),
        version=version,
        embedding=tuple(vector["vector"]) if vector else None,
        embedding_model=vector["model"] if vector else None,
        conflicts=tuple(c.field for c in conflicts),
    )
    return memory, conflicts


def scope_of(raw: dict[str, Any]) -> Scope:
    """The scope a header holds (``header.scope``)."""
    return Scope(
        user_id=raw.get("user_id"),
        tenant_id=raw.get("tenant_id"),
        topics=tuple(raw.get("topics") or ()),
        shared=bool(raw.get("shared")),
    )
