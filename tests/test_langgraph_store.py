"""crdtmem.integrations.langgraph.CrdtmemStore used as LangGraph's own InMemoryStore is used: the same
operations, run on both, give the same results (hypothesis draws the sequences); semantic search
through the replica's index; concurrent puts on two replicas are a conflict, not a lost write."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from crdtmem import Replica, Scope, SyncReplica
from crdtmem.errors import InvalidInput
from crdtmem.index import IndexSettings
from crdtmem.integrations.langgraph import CrdtmemStore, LangGraphEmbedder, namespace_scope


def _put(namespace: tuple[str, ...], key: str, value: dict[str, Any] | None) -> PutOp:
    """A put as BaseStore.put makes one (st.builds would draw the optional index and ttl too)."""
    return PutOp(namespace, key, value)


NAMESPACES = [("a",), ("a", "b"), ("a", "c"), ("d",), ("a", "b", "e"), ("d", "b")]
KEYS = ["k1", "k2", "k 3/x"]
values = st.fixed_dictionaries(
    {"n": st.integers(0, 5), "tag": st.sampled_from(["x", "y"])},
    optional={
        "nested": st.fixed_dictionaries({"color": st.sampled_from(["red", "blue"])}),
        "list": st.just([1, 2]),
    },
)
filters = st.one_of(
    st.none(),
    st.fixed_dictionaries({"tag": st.sampled_from(["x", "y"])}),
    st.fixed_dictionaries({"n": st.sampled_from([{"$gt": 2}, {"$lte": 1}, {"$ne": 3}, {"$eq": 4}, 2])}),
    st.fixed_dictionaries({"nested": st.just({"color": "red"})}),
    st.fixed_dictionaries({"list": st.just([1, 2]), "tag": st.just("x")}),
)
prefixes = st.sampled_from([(), ("a",), ("a", "b"), ("d",), ("x",)])
paths = st.sampled_from([("a",), ("a", "*"), ("*", "b"), ("b",), ("e",), ("a", "b", "e")])

put_ops = st.builds(_put, st.sampled_from(NAMESPACES), st.sampled_from(KEYS), values)
delete_ops = st.builds(_put, st.sampled_from(NAMESPACES), st.sampled_from(KEYS), st.none())
get_ops = st.builds(GetOp, st.sampled_from(NAMESPACES), st.sampled_from(KEYS))
search_ops = st.builds(SearchOp, prefixes, filters, st.integers(1, 6), st.integers(0, 4))
list_ops = st.builds(
    ListNamespacesOp,
    st.one_of(
        st.none(),
        st.tuples(st.builds(MatchCondition, st.sampled_from(["prefix", "suffix"]), paths)),
        st.tuples(
            st.builds(MatchCondition, st.just("prefix"), paths),
            st.builds(MatchCondition, st.just("suffix"), paths),
        ),
    ),
    st.one_of(st.none(), st.integers(1, 3)),
    st.integers(1, 5),
    st.integers(0, 3),
)
any_op = st.one_of(put_ops, put_ops, delete_ops, get_ops, search_ops, list_ops)
steps = st.lists(
    st.one_of(any_op.map(lambda op: [op]), st.lists(any_op, min_size=2, max_size=4)), max_size=25
)


@pytest.fixture(scope="module")
def replica() -> Iterator[SyncReplica]:
    with SyncReplica(None, replica_id="lg") as r:
        yield r


def _clear(replica: SyncReplica) -> None:
    for memory in replica.list():
        replica.delete(memory.id)


def _prune(reference: InMemoryStore) -> None:
    """InMemoryStore keeps a namespace in list_namespaces after its last item is deleted (and creates
    one on a get): it lists namespaces it has seen, crdtmem those that hold items. Drop the empty
    ones so the two can be compared."""
    for namespace in [ns for ns, items in reference._data.items() if not items]:
        del reference._data[namespace]


def _reference_batch(reference: InMemoryStore, batch: list[Any]) -> list[Any]:
    """``reference.batch(batch)``, pruned after every read: InMemoryStore answers a batch's reads
    first, one by one, then applies its puts, as here."""
    results: list[Any] = []
    for op in batch:
        results.append(None if isinstance(op, PutOp) else reference.batch([op])[0])
        _prune(reference)
    reference.batch([op for op in batch if isinstance(op, PutOp)])
    _prune(reference)
    return results


def _plain(result: Any) -> Any:
    if isinstance(result, Item):
        return (result.namespace, result.key, json.dumps(result.value, sort_keys=True))
    if isinstance(result, list):
        return [_plain(r) for r in result]
    return result


def _compare(op: Any, mine: Any, theirs: Any, reference: InMemoryStore) -> None:
    if isinstance(op, SearchOp):
        # both give the page asked for, of the same matching items; the order differs (InMemoryStore:
        # insertion order; crdtmem: most recently updated first, the same on every replica)
        everything = reference.batch([op._replace(limit=10_000, offset=0)])[0]
        assert len(mine) == len(theirs), (op, _plain(mine), _plain(theirs))
        assert set(_plain(mine)) <= set(_plain(everything)), (op, _plain(mine), _plain(everything))
        assert len(set(_plain(mine))) == len(mine)
    else:
        assert _plain(mine) == _plain(theirs), op


@pytest.mark.parametrize("scope", [None, namespace_scope(user=0)], ids=["one scope", "user from namespace"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_same_operations_give_the_same_results_as_langgraphs_in_memory_store(replica, scope, steps):
    _clear(replica)
    store = CrdtmemStore(replica, scope=scope)
    reference = InMemoryStore()
    for batch in steps:
        mine = store.batch(batch)
        theirs = _reference_batch(reference, batch)
        for op, a, b in zip(batch, mine, theirs, strict=True):
            _compare(op, a, b, reference)
    # and the whole state agrees
    assert sorted(_plain(store.search((), limit=1000))) == sorted(_plain(reference.search((), limit=1000)))
    assert store.list_namespaces() == reference.list_namespaces()


def test_list_namespaces_as_langgraphs_docstring_shows(replica):
    store = CrdtmemStore(replica)
    _clear(replica)
    for namespace in [
        ("a", "b", "c"),
        ("a", "b", "d", "e"),
        ("a", "b", "d", "i"),
        ("a", "b", "f"),
        ("a", "c", "f"),
    ]:
        store.put(namespace, "k", {"v": 1})
    assert store.list_namespaces(prefix=("a", "b"), max_depth=3) == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "b", "f"),
    ]
    assert store.list_namespaces(suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(prefix=("a", "*", "d")) == [("a", "b", "d", "e"), ("a", "b", "d", "i")]
    assert store.list_namespaces(limit=2, offset=1) == [("a", "b", "d", "e"), ("a", "b", "d", "i")]


def test_search_pages_are_most_recently_updated_first_and_add_up(replica):
    store = CrdtmemStore(replica)
    _clear(replica)
    for i in range(7):
        store.put(("p",), f"k{i}", {"i": i})
    store.put(("p",), "k2", {"i": 2, "again": True})
    everything = store.search(("p",), limit=100)
    assert [item.key for item in everything] == ["k2", "k6", "k5", "k4", "k3", "k1", "k0"]
    pages = [store.search(("p",), limit=3, offset=at) for at in (0, 3, 6)]
    assert [item.key for page in pages for item in page] == [item.key for item in everything]
    assert all(item.score is None for item in everything)


def test_items_keep_timestamps_and_a_revived_key_starts_again(replica):
    store = CrdtmemStore(replica)
    _clear(replica)
    store.put(("t",), "k", {"v": 1})
    first = store.get(("t",), "k")
    store.put(("t",), "k", {"v": 2})
    second = store.get(("t",), "k")
    assert first is not None and second is not None
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert second.value == {"v": 2}
    store.delete(("t",), "k")
    assert store.get(("t",), "k") is None
    assert store.search(("t",)) == [] and store.list_namespaces() == []
    store.put(("t",), "k", {"v": 3})
    revived = store.get(("t",), "k")
    assert revived is not None and revived.value == {"v": 3}


def test_namespaces_map_to_scopes_and_ids_are_the_same_everywhere(replica):
    store = CrdtmemStore(replica, scope=namespace_scope(user=1, topics=[0]))
    store.put(("notes", "alice"), "trip", {"text": "Lisbon in May"})
    memory_id = store.memory_id(("notes", "alice"), "trip")
    assert memory_id == "langgraph/topic:notes:updates,user:alice:memories/notes/alice/trip"
    memory = replica.get(memory_id)
    assert memory.scope == Scope(user_id="alice", topics=("notes",))
    assert memory.channels == ("topic:notes:updates", "user:alice:memories")
    assert memory.content == {"text": "Lisbon in May"}
    # the same namespace and key under another scope is another item: stores do not see each other's
    other = CrdtmemStore(replica, scope=Scope(user_id="bob"))
    assert other.get(("notes", "alice"), "trip") is None
    assert ("notes", "alice") not in other.list_namespaces()
    with pytest.raises(InvalidInput, match="no label at position 1"):
        store.put(("notes",), "k", {"v": 1})
    # a part with '/' or '%' is escaped; an id too long for an app id is hashed
    assert store.memory_id(("a/b", "c%d"), "e/f").endswith("/a%2Fb/c%25d/e%2Ff")
    long_id = store.memory_id(("n", "u" * 200), "k" * 100)
    assert long_id.startswith("langgraph#") and len(long_id) == len("langgraph#") + 64
    store.put(("n", "u" * 200), "k" * 100, {"v": 1})
    assert store.get(("n", "u" * 200), "k" * 100).value == {"v": 1}  # type: ignore[union-attr]


def test_a_search_within_a_scope_reads_only_its_channel(replica):
    store = CrdtmemStore(replica, scope=namespace_scope(user=1, topics=[0]))
    assert store._channel_of(("notes", "alice", "2024")) == "topic:notes:updates"
    assert store._channel_of(("notes",)) is None and store._channel_of(()) is None
    assert namespace_scope(user=-1).depth is None and namespace_scope().depth == 0
    assert CrdtmemStore(replica, scope=Scope(user_id="u1"))._channel_of(("x",)) == "user:u1:memories"
    _clear(replica)
    store.put(("notes", "alice"), "a", {"v": 1})
    store.put(("notes", "bob"), "b", {"v": 2})
    assert [i.key for i in store.search(("notes", "alice"))] == ["a"]
    assert sorted(i.key for i in store.search(("notes",))) == ["a", "b"]


def test_invalid_input_is_refused_as_langgraph_refuses_it(replica):
    store = CrdtmemStore(replica)
    with pytest.raises(InvalidNamespaceError):
        store.put(("a.b",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.put(("langgraph",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.batch([GetOp(("",), "k")])
    with pytest.raises(NotImplementedError, match="TTL"):
        store.put(("a",), "k", {"v": 1}, ttl=5)
    with pytest.raises(InvalidInput, match="operator"):
        store.search(("a",), filter={"v": {"$in": [1]}})
    with pytest.raises(InvalidInput, match="dict"):
        store.batch([PutOp(("a",), "k", ["not", "a", "dict"])])  # type: ignore[arg-type]


async def test_async_methods_on_the_replicas_loop_and_blocking_ones_refused_there(tmp_path):
    async with Replica(tmp_path / "a.db", replica_id="a", index=True) as replica:
        store = CrdtmemStore(replica, scope=Scope(user_id="u1"))
        await store.aput(("docs",), "py", {"text": "Python tutorial for beginners"})
        await store.aput(("docs",), "ts", {"text": "TypeScript guide"})
        await store.aput(("docs", "old"), "c", {"text": "C programming manual"})
        await store.aput(("other",), "py", {"text": "Python snakes in the zoo"})
        assert (await store.aget(("docs",), "py")).value == {"text": "Python tutorial for beginners"}  # type: ignore[union-attr]
        assert await store.alist_namespaces(prefix=("docs",)) == [("docs",), ("docs", "old")]
        with pytest.raises(InvalidInput, match="async methods"):
            store.get(("docs",), "py")
        # from another thread, the blocking methods run on the replica's loop
        item = await asyncio.to_thread(store.get, ("docs",), "ts")
        assert item is not None and item.value == {"text": "TypeScript guide"}

        assert replica.index is not None
        await replica.index.wait_idle()
        hits = await store.asearch(("docs",), query="python tutorial")
        assert (hits[0].namespace, hits[0].key) == (("docs",), "py")
        assert {(h.namespace, h.key) for h in hits} == {
            (("docs",), "py"),
            (("docs",), "ts"),
            (("docs", "old"), "c"),
        }
        scores = [h.score for h in hits]
        assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
        # the prefix and the filter restrict what the index returns
        assert [h.key for h in await store.asearch(("docs", "old"), query="python tutorial")] == ["c"]
        only_ts = await store.asearch(("docs",), query="python tutorial", filter={"text": "TypeScript guide"})
        assert [h.key for h in only_ts] == ["ts"]
        anywhere = await store.asearch((), query="python", limit=2)
        assert {(h.namespace, h.key) for h in anywhere} == {(("docs",), "py"), (("other",), "py")}
        second = await store.asearch(("docs",), query="python tutorial", limit=1, offset=1)
        assert [(h.key, h.score) for h in second] == [(hits[1].key, hits[1].score)]


async def test_concurrent_puts_on_two_replicas_are_a_conflict_and_read_alike():
    async with Replica(None, replica_id="phone") as phone, Replica(None, replica_id="laptop") as laptop:
        a = CrdtmemStore(phone, scope=namespace_scope(user=0))
        b = CrdtmemStore(laptop, scope=namespace_scope(user=0))
        await a.aput(("u1", "prefs"), "theme", {"mode": "dark"})
        await b.aput(("u1", "prefs"), "theme", {"mode": "light"})
        channel = "user:u1:memories"
        await laptop.apply(await phone.export_since(channel, laptop.version_vector(channel)))
        await phone.apply(await laptop.export_since(channel, phone.version_vector(channel)))
        mine, theirs = await a.aget(("u1", "prefs"), "theme"), await b.aget(("u1", "prefs"), "theme")
        assert mine is not None and theirs is not None and mine.value == theirs.value
        conflicts = await phone.conflicts(user_id="u1")
        assert [c.field for c in conflicts] == ["content"]
        assert sorted(v.value["mode"] for v in conflicts[0].values) == ["dark", "light"]
        assert await a.alist_namespaces() == await b.alist_namespaces() == [("u1", "prefs")]


def test_without_the_extra_the_import_names_it(tmp_path):
    code = "import sys; sys.modules['langgraph'] = None; import crdtmem.integrations.langgraph"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    assert "pip install 'crdtmem[langgraph]'" in done.stderr.splitlines()[-1]


VOCABULARY = ["tea", "coffee", "python", "guide", "tennis", "pizza", "music", "sea"]


def embed_words(texts: list[str]) -> list[list[float]]:
    """A deterministic embedding for the comparison: word counts over a small vocabulary, and a
    constant so no vector is zero."""
    return [[1.0, *(float(text.split().count(word)) for word in VOCABULARY)] for text in texts]


INDEX: Any = {"dims": len(VOCABULARY) + 1, "embed": embed_words, "fields": ["text"]}
texts = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=4).map(" ".join)
semantic_puts = st.builds(
    _put,
    st.sampled_from(NAMESPACES),
    st.sampled_from(KEYS),
    st.fixed_dictionaries({"text": texts, "n": st.integers(0, 5)}),
)
semantic_searches = st.builds(
    SearchOp,
    prefixes,
    st.one_of(st.none(), st.fixed_dictionaries({"n": st.sampled_from([{"$gt": 2}, 3])})),
    st.integers(1, 6),
    st.integers(0, 3),
    texts,
)


@pytest.fixture(scope="module")
def indexed() -> Iterator[SyncReplica]:
    settings_ = IndexSettings(engine="memory", embedder=LangGraphEmbedder(INDEX))
    with SyncReplica(None, replica_id="lg-index", index=settings_) as r:
        yield r


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(semantic_puts, semantic_puts, delete_ops, semantic_searches), max_size=20))
def test_search_by_query_ranks_and_scores_as_langgraphs_in_memory_store(indexed, steps):
    _clear(indexed)
    store = CrdtmemStore(indexed, index=INDEX)
    reference = InMemoryStore(index=INDEX)
    for op in steps:
        mine, theirs = store.batch([op])[0], reference.batch([op])[0]
        if not isinstance(op, SearchOp):
            continue
        # the same page: the same number of items, with the same scores (items of equal score may
        # come in another order), each item scored as the reference scores it
        assert len(mine) == len(theirs), (op, _plain(mine), _plain(theirs))
        assert [round(i.score, 6) for i in mine] == [round(i.score, 6) for i in theirs], op
        everything = {
            (i.namespace, i.key): i.score for i in reference.batch([op._replace(limit=100, offset=0)])[0]
        }
        for item in mine:
            assert item.score == pytest.approx(everything[(item.namespace, item.key)], abs=1e-6)


def test_a_puts_index_paths_decide_what_is_embedded(indexed):
    _clear(indexed)
    store = CrdtmemStore(indexed, index=INDEX)
    store.put(("docs",), "a", {"text": "tea", "note": "coffee coffee"})
    store.put(("docs",), "b", {"text": "tea", "note": "coffee coffee"}, index=["note"])
    store.put(("docs",), "c", {"text": "coffee"}, index=False)
    memory = indexed.get(store.memory_id(("docs",), "b"))
    assert memory.embedding_model == "langgraph/embed_words"
    assert memory.embedding[VOCABULARY.index("coffee") + 1] > 0  # from "note", as index= said
    assert indexed.get(store.memory_id(("docs",), "c")).embedding is None
    hits = store.search(("docs",), query="coffee", limit=3)
    assert hits[0].key == "b"
    assert {h.key for h in hits} == {"a", "b", "c"}


def test_an_index_config_needs_a_replica_that_embeds_alike(replica):
    with pytest.raises(InvalidInput, match="dims"):
        LangGraphEmbedder({"embed": embed_words})  # type: ignore[typeddict-item]
    with (
        SyncReplica(None, replica_id="other-embedder", index=True) as hashing,
        pytest.raises(InvalidInput, match="LangGraphEmbedder"),
    ):
        CrdtmemStore(hashing, index=INDEX)
