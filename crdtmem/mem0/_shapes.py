"""mem0's shapes: config, arguments, messages and answers, translated to and from crdtmem's."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from ..clock import Hlc
from ..document.records import Memory as Record
from ..errors import InvalidInput
from ..index import Embedder, IndexSettings

log = logging.getLogger("crdtmem.mem0")

ENTITY_KEYS = ("user_id", "agent_id", "run_id")
_PROMOTED = ("actor_id", "role", "expiration_date")
"""Metadata keys mem0 answers at the top of an item, beside the entity ids."""
DEFAULT_PATH_ENV = "CRDTMEM_MEM0_PATH"
"""Where ``Memory()`` keeps its SQLite file (default ``~/.crdtmem/mem0.db``)."""


class Extractor(Protocol):
    """Turns messages into memory operations, as mem0's LLM pipeline does (``add(infer=True)``).

    Called with the messages (``[{"role", "content"}]``) and the memories most related to them in
    the same scope (mem0's items: ``{"id", "memory", ...}``); returns operations, each
    ``{"event": "ADD", "memory": text}``, ``{"event": "UPDATE", "id": id, "memory": text}``,
    ``{"event": "DELETE", "id": id}`` or ``{"event": "NONE"}``. It may be a coroutine function.
    """

    def __call__(
        self, messages: list[dict[str, Any]], existing: list[dict[str, Any]]
    ) -> Iterable[Mapping[str, Any]] | Awaitable[Iterable[Mapping[str, Any]]]: ...


_CONFIG_KEYS = {"path", "history_db_path", "replica_id", "embedder", "index", "channels", "extractor"}
_IGNORED_KEYS = {"vector_store", "llm", "version", "custom_fact_extraction_prompt", "graph_store"}


def item(memory: Record) -> dict[str, Any]:
    """A memory as mem0 answers it: ``{"id", "memory", "hash", "metadata", "created_at",
    "updated_at"}``, with ``user_id``, ``agent_id``, ``run_id``, ``actor_id`` and ``role`` when set."""
    metadata = dict(memory.metadata)
    text = memory.content if isinstance(memory.content, str) else str(memory.content)
    found: dict[str, Any] = {
        "id": memory.id,
        "memory": memory.content,
        "hash": hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(),
        "metadata": None,
        "created_at": Hlc.decode(memory.created_at).isoformat(),
        "updated_at": Hlc.decode(memory.updated_at).isoformat(),
    }
    for key, value in (
        ("user_id", memory.scope.user_id),
        ("agent_id", memory.source.agent_id),
        ("run_id", memory.source.session_id),
    ):
        if value is not None:
            found[key] = value
    for key in _PROMOTED:
        if key in metadata:
            found[key] = metadata.pop(key)
    found["metadata"] = metadata or None
    return found


def settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    unknown = set(config) - _CONFIG_KEYS - _IGNORED_KEYS
    if unknown:
        raise InvalidInput(
            f"unknown config keys {sorted(unknown)}; crdtmem.mem0 takes {sorted(_CONFIG_KEYS)}"
        )
    for key in _IGNORED_KEYS & set(config):
        log.info("crdtmem.mem0 ignores config key %r (crdtmem brings its own index and no LLM)", key)
    path = config.get("path") or config.get("history_db_path") or os.environ.get(DEFAULT_PATH_ENV)
    if path is None:
        path = Path.home() / ".crdtmem" / "mem0.db"
        path.parent.mkdir(parents=True, exist_ok=True)
    index = config.get("index")
    if index is None:
        index = IndexSettings(embedder=_embedder(config.get("embedder", "hashing")))
    elif not isinstance(index, IndexSettings):
        raise InvalidInput("config 'index' is an IndexSettings")
    settings: dict[str, Any] = {"path": None if path == ":memory:" else path, "index": index}
    if config.get("replica_id") is not None:
        settings["replica_id"] = config["replica_id"]
    if config.get("channels") is not None:
        settings["channels"] = config["channels"]
    extractor = config.get("extractor")
    if extractor is not None:
        if not callable(extractor):
            raise InvalidInput("config 'extractor' is a callable (see crdtmem.mem0.Extractor)")
        settings["extractor"] = extractor
    return settings


def _embedder(spec: Any) -> str | Embedder:
    if isinstance(spec, Mapping):  # mem0's {"provider": ..., "config": {"model": ...}}
        model = (spec.get("config") or {}).get("model") or spec.get("provider")
        spec = "minilm" if model and "minilm" in str(model).lower() else model
    if isinstance(spec, (str, Embedder)):
        return spec
    raise InvalidInput("config 'embedder' is 'hashing', 'minilm', 'fastembed:<model>' or an Embedder")


def entity_ids(user_id: Any, agent_id: Any, run_id: Any, method: str) -> dict[str, str]:
    ids = {}
    for name, value in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)):
        if value is None:
            continue
        text = str(value).strip()
        if not text:
            raise InvalidInput(
                f"Invalid {name}: cannot be empty or whitespace-only. Provide a valid identifier."
            )
        ids[name] = text
    if not ids and method == "add":
        raise InvalidInput("At least one of 'user_id', 'agent_id', or 'run_id' must be provided.")
    return ids


def scoped_filters(
    filters: Mapping[str, Any] | None, user_id: Any, agent_id: Any, run_id: Any, method: str
) -> dict[str, Any]:
    if filters is not None and not isinstance(filters, Mapping):
        raise InvalidInput("filters must be a dict")
    where = dict(filters or {})
    where.update(entity_ids(user_id, agent_id, run_id, method))
    for key in ENTITY_KEYS:  # mem0 takes ids as text or numbers, trimmed
        value = where.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            where[key] = entity_ids(value, None, None, method)["user_id"]
    if not any(key in where for key in ENTITY_KEYS) and not _names_entity(where):
        raise InvalidInput(
            "filters must contain at least one of: user_id, agent_id, run_id. "
            f"Example: filters={{'user_id': 'u1'}} (in {method})"
        )
    return where


def _names_entity(filters: Mapping[str, Any]) -> bool:
    """Whether an AND/OR branch names an entity (mem0 accepts scoping inside logical operators)."""
    for key in ("AND", "OR"):
        for branch in filters.get(key) or ():
            if isinstance(branch, Mapping) and (
                any(k in branch for k in ENTITY_KEYS) or _names_entity(branch)
            ):
                return True
    return False


def top_k_of(top_k: Any, limit: Any) -> int:
    count = top_k if top_k is not None else limit if limit is not None else 20
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidInput(f"Invalid top_k: {count!r}. Must be a non-negative integer.")
    return count


def messages_of(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping):
        return [dict(messages)]
    if isinstance(messages, list) and all(isinstance(m, Mapping) for m in messages):
        return [dict(m) for m in messages]
    raise InvalidInput("messages must be str, dict, or list[dict]")


def clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Caller metadata without the entity ids (a memory's scope comes from the arguments only)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be a dict")
    return {k: v for k, v in metadata.items() if k not in ENTITY_KEYS}


def op_text(op: Mapping[str, Any]) -> Any:
    text = op.get("memory", op.get("text"))
    if text is None:
        raise InvalidInput("an extractor's ADD or UPDATE needs 'memory' (the text)")
    return text


def expiration_of(value: Any) -> str:
    """mem0's ``expiration_date``: a date, a datetime or ``YYYY-MM-DD``, as ``YYYY-MM-DD``."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise InvalidInput("expiration_date must be a date string in YYYY-MM-DD format.")


def unexpired(filters: dict[str, Any], show_expired: bool) -> dict[str, Any]:
    """``filters``, and (unless ``show_expired``) not past its ``expiration_date``."""
    if show_expired:
        return filters
    today = datetime.now(UTC).date().isoformat()
    return {**filters, "AND": [*filters.get("AND", []), {"NOT": [{"expiration_date": {"lt": today}}]}]}
