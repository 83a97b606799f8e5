"""mem0's ``Memory``: :class:`AsyncMemory` run on a replica's private event loop."""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from ..engine.sync_api import SyncReplica
from ._async import AsyncMemory
from ._shapes import Extractor, settings

T = TypeVar("T")


class Memory:
    """mem0's ``Memory``, blocking: ``add``, ``search``, ``get``, ``get_all``, ``update``,
    ``delete``, ``delete_all``, ``history``, ``reset`` (see :class:`AsyncMemory` for each).

    Runs its replica on a private event loop in a background thread (:class:`SyncReplica`), which
    :attr:`replica` is: ``m.replica.export_since(...)`` and ``m.replica.apply(...)`` sync it by hand.
    """

    def __init__(self, config: Mapping[str, Any] | None = None):
        chosen = settings(config)
        self.extractor: Extractor | None = chosen.pop("extractor", None)
        self.replica = SyncReplica(**chosen)
        self._memory = AsyncMemory(replica=self.replica.replica)
        self._memory.extractor = self.extractor

    @classmethod
    def from_config(cls, config_dict: Mapping[str, Any]) -> Memory:
        return cls(config_dict)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.replica.run(coro)

    def add(self, messages: Any, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._memory.add(messages, **kwargs))

    def search(self, query: str, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._memory.search(query, **kwargs))

    def get(self, memory_id: str) -> dict[str, Any] | None:
        return self._run(self._memory.get(memory_id))

    def get_all(self, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._memory.get_all(**kwargs))

    def update(
        self, memory_id: str, text: Any = None, metadata: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, str]:
        return self._run(self._memory.update(memory_id, text, metadata, **kwargs))

    def delete(self, memory_id: str) -> dict[str, str]:
        return self._run(self._memory.delete(memory_id))

    def delete_all(
        self, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> dict[str, str]:
        return self._run(self._memory.delete_all(user_id, agent_id, run_id))

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        return self._run(self._memory.history(memory_id))

    def reset(self) -> None:
        self._run(self._memory.reset())

    def close(self) -> None:
        self.replica.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


for _name in ("add", "search", "get", "get_all", "update", "delete", "delete_all", "history", "reset"):
    getattr(Memory, _name).__doc__ = getattr(AsyncMemory, _name).__doc__
