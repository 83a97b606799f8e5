"""Two `crdtmem serve` processes: ``a`` rebases a memory while ``b``, cut off, writes to it on the
old epoch; once ``b`` syncs again it takes the epoch, carries its write over, and both converge with
the write (``docs/protocol.md`` §7.11)."""

from __future__ import annotations

import aiohttp

from tests.support.processes import ServerProcess
from tests.support.rest import Api, converged, eventually

U1 = "user:u1:memories"


async def test_a_write_made_while_a_peer_rebased_is_carried_over_between_processes(
    procs: list[ServerProcess], session: aiohttp.ClientSession, tmp_path
) -> None:
    a = ServerProcess(tmp_path, "a", channels=[U1]).start()
    procs.append(a)
    b = ServerProcess(tmp_path, "b", channels=[U1], peers=[a.url]).start()
    procs.append(b)
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    fact = await api_a.add("v0", user_id="u1", metadata={"n": 0}, tags=["x"])
    for n in range(1, 301):
        await api_a.patch(fact["id"], metadata={"n": n, "pad": "p" * 20})

    async def b_has_all() -> bool:
        memory = await api_b.get(fact["id"])
        return memory is not None and memory["metadata"].get("n") == 300

    await eventually(b_has_all, what="b holds every update")
    note = await api_b.add("b holds it all", user_id="u1")  # b's push tells a what b holds

    async def a_has_note() -> bool:
        return await api_a.get(note["id"]) is not None

    await eventually(a_has_note, what="a takes b's push")
    b.stop()
    b = ServerProcess(tmp_path, "b", channels=[U1], peers=[a.url]).start()  # b's pull tells it too
    procs.append(b)
    await eventually(lambda: converged([api_a, Api(session, b.url)]), what="b pulls")
    b.stop()
    a.stop()  # a comes back compacting: every peer holds everything, so it rebases
    a = ServerProcess(
        tmp_path,
        "a",
        channels=[U1],
        port=int(a.url.rstrip("/").rsplit(":", 1)[1]),
        extra=["--compact-every", "0.3"],
    )
    procs.append(a.start())

    async def a_rebased() -> bool:
        return (await api_a.status())["compaction"]["rebased"] >= 1

    await eventually(a_rebased, what="a rebases the memory")

    alone = ServerProcess(tmp_path, "b", channels=[U1]).start()  # b, cut off from a
    procs.append(alone)
    await Api(session, alone.url).patch(fact["id"], content="from b", add_tags=["from-b"])
    alone.stop()

    b = ServerProcess(tmp_path, "b", channels=[U1], peers=[a.url]).start()
    procs.append(b)
    api_b = Api(session, b.url)

    async def a_has_the_write() -> bool:
        memory = await api_a.get(fact["id"])
        return memory is not None and memory["content"] == "from b"

    await eventually(a_has_the_write, what="b's write carried over to a")
    await eventually(lambda: converged([api_a, api_b]), what="a and b converge")
    memory = await api_a.get(fact["id"])
    assert memory is not None
    assert set(memory["tags"]) == {"x", "from-b"} and memory["metadata"]["n"] == 300
    assert (await api_b.status())["trust"]["carried"] == 1, "b took the rebase entry over its write"
