"""Reading a document's Yrs items (``crdtmem/document/ystructs.py``) agrees with what pycrdt reads."""

from __future__ import annotations

import random

import pytest

from crdtmem.document import statevector, ystructs
from crdtmem.document.yroots import YArray, YDoc, YMap

VALUES = [None, True, False, 0, -7, 2**40, -(2**60), 1.5, "text", "ünï ✓", {"v": "1", "by": "a"}, [1, [2]]]


def _edited(seed: int) -> YDoc:
    """Two replicas' random writes to maps and an array, merged both ways."""
    rng = random.Random(seed)
    docs = [YDoc(1, "m"), YDoc(2, "m")]
    for _ in range(60):
        doc = rng.choice(docs)
        with doc.transaction():
            for _ in range(rng.randint(1, 3)):
                root = YMap(doc, rng.choice(["content", "tags"]))
                op = rng.random()
                key = f"k{rng.randint(0, 6)}"
                if op < 0.6:
                    root[key] = rng.choice(VALUES)
                elif key in root:
                    del root[key]
                array = YArray(doc, "messages")
                if rng.random() < 0.4:
                    array.append({"id": f"{doc.raw.client_id()}:{rng.random()}", "text": "x"})
                elif rng.random() < 0.1 and array.to_py():
                    array.remove(rng.randrange(len(array.to_py())))
        if rng.random() < 0.3:
            other = docs[1] if doc is docs[0] else docs[0]
            other.apply_update(doc.get_update())
    docs[0].apply_update(docs[1].get_update())
    return docs[0]


@pytest.mark.parametrize("seed", range(8))
def test_live_items_and_clocks_agree_with_pycrdt(seed: int) -> None:
    doc = _edited(seed)
    structs = ystructs.decode(doc.get_update())
    for name in ("content", "tags"):
        live = {key: i for key, items in structs.keyed(name).items() for i in items if not i.deleted}
        plain = YMap(doc, name).plain()
        assert set(live) == set(plain)
        for key, item in live.items():
            assert item.values == [plain[key]]
            assert sum(not i.deleted for i in structs.keyed(name)[key]) == 1
    messages = [
        v
        for i in sorted(structs.in_root("messages"), key=lambda i: (i.client, i.clock))
        for v in i.values or []
    ]
    assert sorted(m["id"] for m in messages if not _deleted(structs, m)) == sorted(
        m["id"] for m in YArray(doc, "messages").to_py()
    )
    ends = {client: max(i.clock + i.length for i in row) for client, row in structs.items.items() if row}
    for client, clock in statevector.decode(doc.get_state()).items():
        assert ends.get(client, 0) <= clock


def _deleted(structs: ystructs.Structs, message: dict[str, str]) -> bool:
    return any(message in (i.values or []) and i.deleted for i in structs.in_root("messages"))


def test_an_update_that_is_not_yrs_raises_value_error() -> None:
    with pytest.raises(ValueError):
        ystructs.decode(b"\x01\x01\x05\x00\xff")
