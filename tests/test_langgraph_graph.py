"""A real LangGraph graph on crdtmem's store: two instances of one graph, each on its own replica, both
replicas syncing through a `crdtmem serve` hub in another process, see each other's memories."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from crdtmem import Replica
from crdtmem.integrations.langgraph import CrdtmemStore, namespace_scope
from crdtmem.server.node import Node, PeerConfig
from tests.support.processes import ServerProcess
from tests.support.rest import Api

U1 = "user:u1:memories"


class State(TypedDict):
    user: str
    learn: str | None
    recalled: list[str]


def remember(state: State, runtime: Runtime[None]) -> dict[str, Any]:
    """A blocking node (LangGraph runs it in a worker thread): the store's blocking put."""
    assert runtime.store is not None
    if state["learn"]:
        key = hashlib.sha256(state["learn"].encode()).hexdigest()[:12]
        runtime.store.put(("memories", state["user"]), key, {"text": state["learn"]})
    return {}


async def recall(state: State, runtime: Runtime[None]) -> dict[str, Any]:
    """An async node: the store's async search."""
    assert runtime.store is not None
    items = await runtime.store.asearch(("memories", state["user"]), limit=100)
    return {"recalled": sorted(item.value["text"] for item in items)}


def build(store: CrdtmemStore) -> Any:
    graph = StateGraph(State)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    return graph.compile(store=store)


async def _recalls(graph: Any, user: str, wanted: list[str], timeout: float = 20.0) -> list[str]:
    """Run the graph (learning nothing) until it recalls ``wanted``; the last recall."""
    recalled: list[str] = []
    async with asyncio.timeout(timeout):
        while recalled != wanted:
            recalled = (await graph.ainvoke({"user": user, "learn": None, "recalled": []}))["recalled"]
            if recalled != wanted:
                await asyncio.sleep(0.05)
    return recalled


async def test_two_graph_instances_on_two_syncing_replicas_see_each_others_memories(procs, session, tmp_path):
    hub = ServerProcess(tmp_path, "hub", channels=[U1])
    procs.append(hub.start())
    async with (
        Node(Replica(tmp_path / "a.db", replica_id="a", channels=[U1]), peers=[PeerConfig(hub.url)]) as a,
        Node(Replica(tmp_path / "b.db", replica_id="b", channels=[U1]), peers=[PeerConfig(hub.url)]) as b,
    ):
        scope = namespace_scope(user=1)
        graph_a = build(CrdtmemStore(a.replica, scope=scope))
        graph_b = build(CrdtmemStore(b.replica, scope=scope))

        first = await graph_a.ainvoke({"user": "u1", "learn": "likes green tea", "recalled": []})
        assert first["recalled"] == ["likes green tea"]
        assert await _recalls(graph_b, "u1", ["likes green tea"]) == ["likes green tea"]

        second = await graph_b.ainvoke({"user": "u1", "learn": "lives in Lisbon", "recalled": []})
        assert second["recalled"] == ["likes green tea", "lives in Lisbon"]
        assert await _recalls(graph_a, "u1", ["likes green tea", "lives in Lisbon"])

        # what the graphs wrote are memories of u1, on the hub too
        on_hub = await Api(session, hub.url).memories()
        assert sorted(m["content"]["text"] for m in on_hub) == ["likes green tea", "lives in Lisbon"]
        assert all(m["channels"] == [U1] for m in on_hub)
