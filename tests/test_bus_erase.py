"""The bus's stream eraser keeps its list of forgotten memories in the store
(``crdtmem/bus/erase.py``): a save that fails in the commit listener is logged, not raised at a
writer whose write has landed, and the next pass saves the list again, so a restart still finds it."""

from __future__ import annotations

import sqlite3
from typing import Any

from crdtmem import Replica
from crdtmem.bus.erase import META_KEY, StreamEraser, _Marker
from crdtmem.bus.outbox import Outbox
from crdtmem.bus.subjects import Layout
from crdtmem.metrics import Metrics


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
