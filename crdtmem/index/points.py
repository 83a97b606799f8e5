"""What a memory's point holds: the text it is embedded by (bounded), and the payload stored beside
its vector, which search filters and ranks by and :meth:`~crdtmem.index.indexer.Indexer.verify`
holds to the store's record."""

from __future__ import annotations

import hashlib
from typing import Any

from ..document.records import Memory

__all__ = [
    "EMBEDDED_CONTENT_CHARS",
    "EMBEDDED_EXTRA_CHARS",
    "ERASED_VERSION",
    "disagrees",
    "erased_payload",
    "indexable",
    "memory_text",
    "payload",
    "text_hash",
]

EMBEDDED_CONTENT_CHARS = 8192
"""A memory is embedded by at most this much of its content, and :data:`EMBEDDED_EXTRA_CHARS` of its
tags and metadata. Embedding models read a few hundred tokens and drop the rest; the hashing
embedder reads everything, in Python, on a worker thread that shares the interpreter lock with the
event loop: a 1 MiB value held it for seconds (its one 1 MiB "word" has three million character
n-grams), and every request waited its turn at the lock meanwhile. Bounded, a memory costs the
indexer at most tens of milliseconds, whatever it holds."""
EMBEDDED_EXTRA_CHARS = 2048


def memory_text(memory: Memory) -> str:
    """The text a memory is embedded by: its content in words, plus its tags and metadata values,
    each bounded (:data:`EMBEDDED_CONTENT_CHARS`)."""
    content = memory.content
    if memory.kind == "list":
        body = "; ".join(str(item) for item in content)
    elif memory.kind == "conversation":
        body = "\n".join(f"{m['role']}: {m['text']}" for m in content)
    elif memory.kind == "counter":
        name = memory.metadata.get("name", "counter")
        body = f"{name}: {content}"
    else:
        body = str(content)
    extra = [str(t) for t in memory.tags] + [
        str(v) for v in memory.metadata.values() if isinstance(v, (str, int, float))
    ]
    body = body[:EMBEDDED_CONTENT_CHARS]
    return body if not extra else body + "\n" + " ".join(extra)[:EMBEDDED_EXTRA_CHARS]


def text_hash(text: str) -> str:
    """The digest a point records of the text it was embedded from."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def indexable(memory: Memory) -> bool:
    """Deleted memories leave the index, unless their deletion is in conflict (still visible)."""
    return not memory.deleted or memory.conflicted


ERASED_VERSION = 2**53 - 1
"""The version of a forgotten memory's point in a shared collection: above every revision (which
stay below 2**53), so nothing replaces it."""


def payload(memory: Memory, model: str, text: str) -> dict[str, Any]:
    return {
        "memory_id": memory.id,
        "version": memory.version,
        "kind": memory.kind,
        "user_id": memory.scope.user_id,
        "tenant_id": memory.scope.tenant_id,
        "topics": list(memory.scope.topics),
        "channels": list(memory.channels),
        "tags": [str(t) for t in memory.tags],
        "deleted": memory.deleted,
        "conflicted": memory.conflicted,
        "model": model,
        "content": text[:2000],
        "text_hash": text_hash(text),
    }


def erased_payload(memory_id: str, model: str) -> dict[str, Any]:
    return {
        "memory_id": memory_id,
        "version": ERASED_VERSION,
        "kind": None,
        "user_id": None,
        "tenant_id": None,
        "topics": [],
        "channels": [],
        "tags": [],
        "deleted": True,
        "conflicted": False,
        "erased": True,
        "model": model,
        "content": "",
        "text_hash": "",
    }


_CHECKED = ("version", "deleted", "conflicted", "model", "text_hash")
"""The payload fields verify() holds to the store's: what search filters and ranks by."""


def disagrees(stored: dict[str, Any], expected: dict[str, Any]) -> bool:
    if "text_hash" not in stored:  # a point written before points recorded it: compare the text
        stored = {
            **stored,
            "text_hash": expected["text_hash"] if stored.get("content") == expected["content"] else "",
        }
    return any(stored.get(field) != expected[field] for field in _CHECKED)
