"""The bus's stream eraser (``crdtmem/bus/erase.py``) keeps its list of forgotten memories in the
store: a save that fails in the commit listener is logged, not raised at a writer whose write has
landed, and the next pass saves the list again, so a restart still finds it. A message it replaces
keeps the other memories' entries it held (a lazy batch): a node that reads the stream later gets
them."""

from __future__ import annotations

import sqlite3
from typing import Any

from crdtmem import Replica
from crdtmem.bus import BusClient, BusSettings
from crdtmem.bus.erase import META_KEY, StreamEraser, _Marker
from crdtmem.bus.outbox import Outbox
from crdtmem.bus.subjects import Layout
from crdtmem.errors import NotFound
from crdtmem.metrics import Metrics
from tests.support.rest import eventually


async def test_a_failed_save_of_the_forgotten_list_is_saved_again_by_the_next_pass(tmp_path, monkeypatch):
    layout, metrics = Layout.of(), Metrics()
    async with Replica(tmp_path / "n.db", replica_id="n") as replica:
        eraser = StreamEraser(replica, layout, Outbox(replica, layout, metrics), metrics)
        store = replica.store
        real = store.set_meta

        def full_disk(key: str, value: str) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store, "set_meta", full_disk)
        eraser.pending["m1"] = _Marker("n", {"user:u1:memories": 3})
        eraser._save()  # as the commit listener does: logged, not raised
        assert store.get_meta(META_KEY) is None
        monkeypatch.setattr(store, "set_meta", real)

        async def publish(*_: Any) -> bool:
            raise AssertionError("nothing is in the stream yet: nothing to replace")

        assert await eraser.run(None, publish) == 0  # the marker is not published: it only saves
        assert StreamEraser(replica, layout, Outbox(replica, layout, metrics), metrics).pending == {
            "m1": _Marker("n", {"user:u1:memories": 3})
        }


async def test_a_replaced_batch_keeps_the_other_memories_entries(tmp_path, nats_server):
    lazy = BusSettings([nats_server.url], delivery="lazy", batch_interval_s=0.5)
    async with Replica(tmp_path / "a.db", replica_id="a") as a, BusClient(a, lazy) as bus:
        await a.add("zero", user_id="u1", memory_id="m0")  # the stream's first message stays
        await eventually(lambda: _drained(bus), what="m0 published")
        await a.add("one", user_id="u1", memory_id="m1")
        await a.add("two", user_id="u1", memory_id="m2")  # in m1's batch
        await eventually(lambda: _drained(bus), what="m1 and m2 published")
        await a.forget("m1")
        await eventually(lambda: _erased(bus), what="m1's batch replaced")
        written = a.version_vectors()
    async with Replica(tmp_path / "c.db", replica_id="c") as c, BusClient(c, BusSettings([nats_server.url])):
        await eventually(lambda: _holds(c, written), what="c read the whole stream")
        assert (await c.get("m2")).content == "two"
        assert (await c.get("m0")).content == "zero"
        try:
            await c.get("m1")
        except NotFound:
            pass
        else:
            raise AssertionError("the forgotten memory came back")


async def _drained(bus: BusClient) -> bool:
    return bool(bus.ready and bus.outbox is not None and bus.outbox.lag() == 0)


async def _erased(bus: BusClient) -> bool:
    return bus.eraser is not None and bus.eraser.erased >= 1


async def _holds(replica: Replica, vectors: dict[str, dict[str, int]]) -> bool:
    return replica.version_vectors() == vectors
