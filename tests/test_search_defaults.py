"""Search as shipped: nodes index by default, caller vectors are used when their model is the
index's, and unrelated text is no hit."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from crdtmem import InvalidInput, Replica
from crdtmem.index import IndexSettings
from crdtmem.index.embedders import HashingEmbedder
from tests.support.processes import ServerProcess

HASHING = HashingEmbedder()


async def test_caller_vectors_are_used_when_their_model_is_the_index_s(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a", index=IndexSettings(engine="memory")) as r:
        (volcano,) = HASHING.embed(["volcano eruption"])
        pie = await r.add("apple pie recipe", user_id="u1", embedding=volcano, embedding_model=HASHING.model)
        tart = await r.add("apple tart recipe", user_id="u1")
        other_model = await r.add(
            "plum cake", user_id="u1", embedding=[1.0] * 384, embedding_model="someone/else"
        )
        assert r.index is not None
        await r.index.wait_idle()
        assert [h.memory.id for h in await r.search("volcano eruption", user_id="u1")] == [pie.id]
        assert [h.memory.id for h in await r.search("apple recipe", user_id="u1")] == [tart.id]
        assert [h.memory.id for h in await r.search("plum cake", user_id="u1")] == [other_model.id]
        # set_embedding moves a memory to where its vector says
        await r.set_embedding(tart.id, volcano, HASHING.model)
        await r.index.wait_idle()
        found = {h.memory.id for h in await r.search("volcano eruption", user_id="u1")}
        assert found == {pie.id, tart.id}
        hit = (await r.search("volcano eruption", user_id="u1"))[0]
        assert hit.lexical and hit.model == HASHING.model
        for bad in ([float("nan")] * 3, [], "abc", [True, 1.0]):
            with pytest.raises(InvalidInput):
                await r.add("x", user_id="u1", embedding=bad, embedding_model="m")
        with pytest.raises(InvalidInput):
            await r.set_embedding(pie.id, [1.0, 2.0], "")


def _search(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/v1/search", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _add(url: str, body: dict) -> None:
    request = urllib.request.Request(
        f"{url}/v1/memories", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201


def test_serve_indexes_by_default_and_no_index_opts_out(tmp_path: Path, procs: list) -> None:
    node = ServerProcess(tmp_path, "plain").start()
    procs.append(node)
    _add(node.url, {"content": "User prefers green tea", "user_id": "u1"})
    for _ in range(100):  # the index follows the store off the write path
        status, body = _search(node.url, {"query": "green tea", "user_id": "u1"})
        if body.get("count"):
            break
    assert status == 200 and body["results"][0]["memory"]["content"] == "User prefers green tea"
    assert body["lexical"] is True
    status, body = _search(node.url, {"query": "volcano eruption", "user_id": "u1"})
    assert status == 200 and body["results"] == [] and body["total"] == 0

    bare = ServerProcess(tmp_path, "bare", extra=["--no-index"]).start()
    procs.append(bare)
    status, body = _search(bare.url, {"query": "green tea"})
    assert status == 400 and "--no-index" in body["message"]
