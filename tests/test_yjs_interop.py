"""docs/protocol.md is enough for a foreign Yjs client to read and write crdtmem memories.

``tests/interop/yjs_client.mjs`` is such a client: Node.js, the real ``yjs`` package, and only what
protocol.md says. These tests hand it document states and ``crdtmem.deltas`` payloads made by a
:class:`~crdtmem.Replica`, compare what it reads with what crdtmem materializes, and apply its writes
(raw Yrs updates and payloads it builds itself) back into crdtmem.

The tests need Node.js; the npm packages are installed on first use (``npm install --prefix
tests/interop``), so they run, not skip, on a fresh CI machine.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crdtmem import Memory, MemoryDeleted, Replica
from crdtmem.document.memory import FORMAT, FORMAT_WIDE_IDS, MemoryDoc, document_format

INTEROP = Path(__file__).parent / "interop"
CLIENT = INTEROP / "yjs_client.mjs"
JS = "yjs-web"
T0 = 1_700_000_000_000
USER_CHANNEL = "user:u1:memories"
BLUE = "Favourite colour is blue"


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with tests/interop/node_modules installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "the Yjs interop tests need Node.js >= 18 and npm on PATH (they run a real Yjs client); "
            "install Node.js, e.g. 'apt-get install nodejs npm', and run pytest again"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    if int(version.strip().lstrip("v").split(".")[0] or 0) < 18:
        pytest.fail(f"the Yjs interop tests need Node.js >= 18; {node} is {version.strip()}")
    modules = INTEROP / "node_modules"
    if not ((modules / "yjs").is_dir() and (modules / "@msgpack" / "msgpack").is_dir()):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("node is installed but npm is not; install npm to fetch tests/interop's packages")
        done = subprocess.run(
            [npm, "install", "--prefix", str(INTEROP), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode:
            pytest.fail(f"'npm install --prefix {INTEROP}' failed:\n{done.stdout}\n{done.stderr}")
    return node


class Wall:
    """An injected wall clock the test moves by hand."""

    def __init__(self, ms: int):
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def call_js(node: str, request: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(CLIENT)],
        input=json.dumps({"replica": JS, **request}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=INTEROP,
        check=False,
    )


def run_js(node: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run one request through the Yjs client (see the head of yjs_client.mjs for its shape)."""
    done = call_js(node, request)
    if done.returncode:
        pytest.fail(f"the Yjs client failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def doc(memory_id: str, state: str, *ops: dict[str, Any], updates: tuple[str, ...] = ()) -> dict[str, Any]:
    """One document of a request: start from ``state``, merge ``updates``, then make one change."""
    return {"id": memory_id, "state": state, "updates": list(updates), "ops": list(ops)}


def view(memory: Memory) -> dict[str, Any]:
    """What the Yjs client's read returns, computed by crdtmem (counters as decimal strings)."""
    data = memory.to_dict()
    return {
        "format": document_format(memory.scope),
        "id": memory.id,
        "kind": memory.kind,
        "content": str(memory.content) if memory.kind == "counter" else memory.content,
        "metadata": memory.metadata,
        "tags": list(memory.tags),
        "source": data["source"],
        "scope": data["scope"],
        "created_at": memory.created_at,
        "updated_at": memory.updated_at,
        "deleted": memory.deleted,
        "conflicts": list(memory.conflicts),
    }


def js_view(result: dict[str, Any], index: int = 0) -> dict[str, Any]:
    found = dict(result["docs"][index]["view"])
    found.pop("conflict_values")
    return found


def state(replica: Replica, memory_id: str) -> str:
    data = replica.store.load_state(memory_id)
    assert data is not None
    return b64(data)


async def test_yjs_reads_every_kind_from_states_and_from_a_payload(node: str) -> None:
    wall = Wall(T0)
    async with Replica(None, replica_id="py", wall_clock=wall) as py:
        memories = [
            await py.add(
                "User prefers dark mode",
                kind="preference",
                user_id="u1",
                tenant_id="acme",
                shared=True,
                topics=["ui"],
                agent_id="phone-agent",
                session_id="s1",
                metadata={"confidence": 0.9, "source": {"app": "settings", "ids": [3, 1]}, "note": "naïve ✓"},
                tags=["ui", {"nested": True}, 7],
            ),
            await py.add(["milk", "eggs", {"qty": 2}], kind="list", user_id="u1"),
            await py.add(2**60, kind="counter", user_id="u1"),
            await py.add(
                [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}],
                kind="conversation",
                user_id="u1",
            ),
        ]
        counter = memories[2]
        await py.decrement(counter.id, 3)
        memories[2] = await py.get(counter.id)

        from_states = run_js(node, {"docs": [{"id": m.id, "state": state(py, m.id)} for m in memories]})
        payload = await py.export_since(USER_CHANNEL)
        from_payload = run_js(node, {"payloads": [b64(payload)], "docs": [{"id": m.id} for m in memories]})

    for index, memory in enumerate(memories):
        assert js_view(from_states, index) == view(memory)
        assert js_view(from_payload, index) == view(memory)
    assert from_states["docs"][2]["view"]["content"] == str(2**60 - 3)


async def test_yjs_writes_apply_on_a_replica_and_a_memory_doc(node: str) -> None:
    wall = Wall(T0)
    async with Replica(None, replica_id="py", wall_clock=wall) as py:
        fact = await py.add(
            "User lives in Lyon",
            user_id="u1",
            topics=["travel"],
            metadata={"confidence": 0.5, "obsolete": True},
            tags=["home", "geo"],
        )
        counter = await py.add(2**60, kind="counter", user_id="u1")
        shopping = await py.add(["milk", "eggs"], kind="list", user_id="u1")
        chat = await py.add([{"role": "user", "text": "hi"}], kind="conversation", user_id="u1")
        base = {m.id: state(py, m.id) for m in (fact, counter, shopping, chat)}

        ops: dict[str, list[dict[str, Any]]] = {
            fact.id: [
                {"op": "set_content", "value": "User lives in Paris"},
                {"op": "set_metadata", "key": "confidence", "value": 0.95},
                {"op": "set_metadata", "key": "by_web", "value": {"b": [1, 2], "a": None}},
                {"op": "remove_metadata", "key": "obsolete"},
                {"op": "add_tag", "tag": "moved"},
                {"op": "remove_tag", "tag": "geo"},
            ],
            counter.id: [{"op": "increment", "amount": "5"}, {"op": "increment", "amount": "-2"}],
            shopping.id: [{"op": "add_item", "item": "bread"}, {"op": "remove_item", "item": "milk"}],
            chat.id: [{"op": "append_message", "role": "assistant", "text": "bonjour"}],
        }
        wrote = run_js(node, {"wall_ms": T0 + 1_000, "docs": [doc(i, base[i], *o) for i, o in ops.items()]})

        # The raw Yrs update, merged into a MemoryDoc made from the same starting state.
        memory_doc = MemoryDoc.from_state(fact.id, unb64(base[fact.id]), client_id=1)
        memory_doc.apply(unb64(wrote["docs"][0]["update"]))
        from_update = memory_doc.materialize()
        assert from_update.content == "User lives in Paris"

        # The crdtmem.deltas payload the Yjs client built itself, through the replica's front door.
        result = await py.apply(unb64(wrote["payload"]))
        assert (result.applied, result.pending, result.duplicates) == (4, 0, 0)
        assert py.version_vector(USER_CHANNEL)[JS] == 4
        assert py.version_vector("topic:travel:updates")[JS] == 1

        got = await py.get(fact.id)
        assert got.content == "User lives in Paris"
        assert got.metadata == {"confidence": 0.95, "by_web": {"a": None, "b": [1, 2]}}
        assert got.tags == ("home", "moved")
        assert not got.conflicted and not got.deleted
        assert from_update.metadata == got.metadata and from_update.tags == got.tags
        assert (await py.get(counter.id)).content == 2**60 + 3
        assert (await py.get(shopping.id)).content == ["eggs", "bread"]
        chat_messages = (await py.get(chat.id)).content
        assert [(m["role"], m["text"], m["by"]) for m in chat_messages] == [
            ("user", "hi", "py"),
            ("assistant", "bonjour", JS),
        ]

        for index, memory_id in enumerate(ops):  # both sides read the merged state alike
            assert js_view(wrote, index) == view(await py.get(memory_id))

        # crdtmem's later writes build on the Yjs client's: the counter keeps both entries.
        wall.ms = T0 + 2_000
        assert (await py.increment(counter.id, 10)).content == 2**60 + 13


async def test_concurrent_yjs_and_python_writes_are_a_detected_conflict(node: str) -> None:
    wall = Wall(T0)
    async with Replica(None, replica_id="py", wall_clock=wall) as py:
        fact = await py.add("Favourite colour is green", user_id="u1")
        base = state(py, fact.id)
        seen = py.version_vector(USER_CHANNEL)

        # The Yjs client writes from the base state while crdtmem writes too: neither sees the other.
        js_write = run_js(
            node,
            {"wall_ms": T0 + 500, "docs": [doc(fact.id, base, {"op": "set_content", "value": BLUE})]},
        )
        wall.ms = T0 + 900
        await py.update(fact.id, content="Favourite colour is red")
        py_delta = await py.export_since(USER_CHANNEL, seen)

        await py.apply(unb64(js_write["payload"]))
        merged = await py.get(fact.id)
        assert merged.conflicted and merged.conflicts == ("content",)
        assert merged.content == "Favourite colour is red"  # highest (hlc, replica) reads
        (conflict,) = await py.conflicts(user_id="u1")
        python_values = [[v.value, v.hlc, v.replica] for v in conflict.values]
        assert [v[2] for v in python_values] == ["py", JS]

        # The Yjs client merges crdtmem's concurrent write and sees the same conflict, same winner.
        own = (js_write["docs"][0]["update"],)
        js_merged = run_js(node, {"payloads": [b64(py_delta)], "docs": [doc(fact.id, base, updates=own)]})
        assert js_view(js_merged) == view(merged)
        assert js_merged["docs"][0]["view"]["conflict_values"] == {"content": python_values}

        # A replica that gets the Yjs delta before its dependencies holds it back until they arrive.
        async with Replica(None, replica_id="laptop", wall_clock=wall) as laptop:
            early = await laptop.apply(unb64(js_write["payload"]))
            assert (early.applied, early.pending) == (0, 1)
            assert laptop.version_vector(USER_CHANNEL) == {}
            late = await laptop.apply(await py.export_since(USER_CHANNEL))
            assert late.pending == 0
            assert laptop.version_vector(USER_CHANNEL) == py.version_vector(USER_CHANNEL)
            assert view(await laptop.get(fact.id)) == view(merged)

        # The Yjs client resolves it (its write observed both siblings); crdtmem sees it cleared.
        resolve = {"op": "resolve", "field": "content", "value": BLUE}
        js_resolve = run_js(
            node,
            {
                "wall_ms": T0 + 600,
                "seqs": js_write["seqs"],
                "payloads": [b64(py_delta)],
                "docs": [doc(fact.id, base, resolve, updates=own)],
            },
        )
        assert js_resolve["seqs"] == {USER_CHANNEL: 2}
        assert js_resolve["docs"][0]["hlc"] > python_values[0][1]  # its HLC observed crdtmem's write
        await py.apply(unb64(js_resolve["payload"]))
        resolved = await py.get(fact.id)
        assert resolved.content == BLUE
        assert not resolved.conflicted
        assert await py.conflicts() == []
        assert py.version_vector(USER_CHANNEL)[JS] == 2


async def test_yjs_update_racing_a_python_delete_is_a_lifecycle_conflict(node: str) -> None:
    wall = Wall(T0)
    async with Replica(None, replica_id="py", wall_clock=wall) as py:
        fact = await py.add("Has a cat", user_id="u1", tags=["pets"])
        base = state(py, fact.id)
        wall.ms = T0 + 100
        await py.delete(fact.id)

        js_write = run_js(
            node,
            {"wall_ms": T0 + 200, "docs": [doc(fact.id, base, {"op": "add_tag", "tag": "cat"})]},
        )
        await py.apply(unb64(js_write["payload"]))
        raced = await py.get(fact.id)
        assert raced.conflicts == ("lifecycle",)
        assert not raced.deleted  # the Yjs client's "active" has the higher hlc
        assert raced.tags == ("pets", "cat")
        assert [m.id for m in await py.list(user_id="u1")] == [fact.id]  # listed: needs a decision

        # A write to a cleanly deleted memory is refused by the Yjs client, as by crdtmem.
        wall.ms = T0 + 300
        await py.resolve(fact.id, field="lifecycle", value="deleted")
        write = {"op": "set_content", "value": "Has two cats"}
        done = call_js(node, {"docs": [doc(fact.id, state(py, fact.id), write)]})
        assert done.returncode == 1 and "is deleted" in done.stderr
        with pytest.raises(MemoryDeleted):
            await py.update(fact.id, content="Has two cats")


async def test_yjs_writes_a_memory_of_ids_as_apps_have_them_on_escaped_channels(node: str) -> None:
    """Revision 2: a user id with ':' and a topic with a space escape into channel names the Yjs client
    derives by protocol.md alone, and its payload lands on exactly those channels."""
    wall = Wall(T0)
    async with Replica(None, replica_id="py", wall_clock=wall) as py:
        fact = await py.add(
            {"city": "Lyon", "since": 2019},
            user_id="org:alice",
            topics=["moving house"],
            memory_id="notes/alice:home",
        )
        plain = await py.add("plain ids keep format 1", user_id="u1")
        assert fact.channels == ("topic:moving%20house:updates", "user:org%3Aalice:memories")
        read = run_js(node, {"docs": [{"id": m.id, "state": state(py, m.id)} for m in (fact, plain)]})
        assert js_view(read, 0) == view(fact) and js_view(read, 0)["format"] == FORMAT_WIDE_IDS
        assert js_view(read, 1)["format"] == FORMAT

        write = {"op": "set_content", "value": {"city": "Paris", "since": 2024}}
        wrote = run_js(node, {"wall_ms": T0 + 1_000, "docs": [doc(fact.id, state(py, fact.id), write)]})
        assert wrote["seqs"] == {"topic:moving%20house:updates": 1, "user:org%3Aalice:memories": 1}
        result = await py.apply(unb64(wrote["payload"]))
        assert (result.applied, result.pending) == (1, 0)
        got = await py.get(fact.id)
        assert got.content == {"city": "Paris", "since": 2024} and not got.conflicted
        assert py.version_vector("user:org%3Aalice:memories")[JS] == 1
        assert js_view(wrote) == view(got)


async def test_a_node_takes_yjs_deltas_unsigned_only_where_the_operator_allows(node: str, tmp_path) -> None:
    """A foreign client cannot sign. Its unsigned deltas reach a node through a token bound to its
    replica id and allowed to deliver them unsigned; the same push through a token bound to it but
    not allowed unsigned deltas is refused, and nothing of it applies."""
    import aiohttp

    from crdtmem.access import TokenTable
    from crdtmem.server import Node

    allowed, strict = "web-unsigned-token-0001", "web-signed-only-token-1"
    rights = {"read": [USER_CHANNEL], "write": [USER_CHANNEL], "origins": [JS]}
    tokens = TokenTable.from_json(
        {
            "tokens": [
                {"token": allowed, "principal": "user:web", **rights, "unsigned": [JS]},
                {"token": strict, "principal": "user:web-strict", **rights},
            ]
        }
    )
    replica = Replica(tmp_path / "n.db", replica_id="py", wall_clock=Wall(T0))
    async with Node(replica, tokens=tokens) as running, aiohttp.ClientSession() as session:
        fact = await running.replica.add("Favourite colour is blue", user_id="u1")
        step = {"op": "set_content", "value": "Favourite colour is green"}
        wrote = run_js(
            node, {"wall_ms": T0 + 1_000, "docs": [doc(fact.id, state(running.replica, fact.id), step)]}
        )
        payload = unb64(wrote["payload"])
        url = f"{running.url}/v1/sync/push"
        async with session.post(url, data=payload, headers={"Authorization": f"Bearer {strict}"}) as r:
            assert r.status == 403 and "unsigned" in (await r.json())["message"]
        assert (await running.replica.get(fact.id)).content == BLUE
        async with session.post(url, data=payload, headers={"Authorization": f"Bearer {allowed}"}) as r:
            assert r.status == 200 and (await r.json())["applied"] == 1
        assert (await running.replica.get(fact.id)).content == "Favourite colour is green"
