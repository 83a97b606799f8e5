"""Reading the structs of a Yrs v1 update: which item holds which key of which root, and which are deleted.

pycrdt shows a document's live values, not the Yrs items behind them. Carrying a change over a
rebase (:mod:`.carry`) needs the items: whether the live entry under a key was inserted within a
state vector (the epoch's ``base``), and whether the document ever held an entry under a key. This
module decodes the v1 encoding (lib0) of a whole document state into :class:`Item` records::

    update  = clients:varuint, per client (structs:varuint, client:varuint, clock:varuint, struct*),
              then the delete set: clients:varuint, per client (client, ranges, (clock, len)*)
    struct  = info:u8 (low 5 bits: content kind; 0x80 origin, 0x40 right origin, 0x20 key),
              [origin id] [right origin id] [parent (root name | id) and key, when neither origin]
              content

An item inserted next to another (a map entry overwriting the previous one under its key, an array
element after another) does not name its parent or key: it shares its origin's. Values of deleted
items are gone (garbage-collected), their keys are not.

Only what crdtmem documents hold is read in full (maps and arrays of Any values); other content is
skipped by its length. An update this module cannot read raises ValueError.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from typing import Any

ItemId = tuple[int, int]


@dataclass(slots=True)
class Item:
    """One struct: ``length`` consecutive clocks of one client from ``clock``."""

    client: int
    clock: int
    length: int
    origin: ItemId | None = None
    right: ItemId | None = None
    root: str | None = None
    """The root it belongs to (None until resolved, or if it is nested in another type)."""
    parent_id: ItemId | None = None
    key: str | None = None
    values: list[Any] | None = None
    """The Any values it holds (None for other content, or deleted content)."""
    deleted: bool = False

    def holds(self, clock: int) -> bool:
        return self.clock <= clock < self.clock + self.length


@dataclass
class Structs:
    """Every item of a document state, by client, with the delete set applied to them."""

    items: dict[int, list[Item]] = field(default_factory=dict)
    deletes: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    order: list[Item] = field(default_factory=list)
    """Every item in the order the update lists them (client blocks, then clocks)."""
    gaps: int = 0
    """Structs that hold no item (garbage-collected or skipped ranges)."""
    _starts: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def find(self, item_id: ItemId) -> Item | None:
        """The item that holds clock ``item_id[1]`` of client ``item_id[0]``."""
        row = self.items.get(item_id[0])
        if not row:
            return None
        starts = self._starts.get(item_id[0])
        if starts is None or len(starts) != len(row):
            starts = self._starts[item_id[0]] = [i.clock for i in row]
        at = bisect.bisect_right(starts, item_id[1]) - 1
        return row[at] if at >= 0 and row[at].holds(item_id[1]) else None

    def in_root(self, root: str) -> list[Item]:
        return [i for row in self.items.values() for i in row if i.root == root]

    def keyed(self, root: str) -> dict[str, list[Item]]:
        """The items of a map root by key (every item ever set under a key the state still holds)."""
        out: dict[str, list[Item]] = {}
        for item in self.in_root(root):
            if item.key is not None:
                out.setdefault(item.key, []).append(item)
        return out


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at]
        self.at += 1
        return value

    def uint(self) -> int:
        data, at = self.data, self.at
        byte = data[at]
        if byte < 0x80:  # most of them: one byte
            self.at = at + 1
            return byte
        value, shift = byte & 0x7F, 7
        while True:
            at += 1
            byte = data[at]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.at = at + 1
                return value
            shift += 7

    def signed(self) -> int:
        byte = self.byte()
        value = byte & 0x3F
        negative = byte & 0x40
        shift = 6
        while byte & 0x80:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
        return -value if negative else value

    def raw(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated update")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def buf(self) -> bytes:
        return self.raw(self.uint())

    def string(self) -> str:
        n = self.uint()
        at = self.at
        if at + n > len(self.data):
            raise ValueError("truncated update")
        self.at = at + n
        return self.data[at : at + n].decode("utf-8")

    def id(self) -> ItemId:
        return self.uint(), self.uint()

    def any(self, depth: int = 0) -> Any:
        if depth > 128:
            raise ValueError("Any value nested too deep")
        tag = self.byte()
        if tag in (127, 126):
            return None
        if tag == 125:
            return self.signed()
        if tag == 124:
            return struct.unpack(">f", self.raw(4))[0]
        if tag == 123:
            return struct.unpack(">d", self.raw(8))[0]
        if tag == 122:
            return struct.unpack(">q", self.raw(8))[0]
        if tag in (121, 120):
            return tag == 120
        if tag == 119:
            return self.string()
        if tag == 118:
            return {self.string(): self.any(depth + 1) for _ in range(self.uint())}
        if tag == 117:
            return [self.any(depth + 1) for _ in range(self.uint())]
        if tag == 116:
            return self.buf()
        raise ValueError(f"unknown Any tag {tag}")


def decode(update: bytes) -> Structs:
    """Every struct of a v1 update (a whole document state), its roots and keys resolved, its
    delete set applied. Raises ValueError for what it cannot read."""
    out = read(update)
    _resolve(out)
    return out


def read(update: bytes) -> Structs:
    """Every struct of a v1 update as it is written (an item next to another names neither root
    nor key), its delete set applied; one linear pass. Raises ValueError for what it cannot read."""
    try:
        return _read(update)
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable update: {exc}") from exc


def _read(update: bytes) -> Structs:
    r = _Reader(update)
    out = Structs()
    for _ in range(r.uint()):
        count, client, clock = r.uint(), r.uint(), r.uint()
        row = out.items.setdefault(client, [])
        for _ in range(count):
            item, length = _struct(r, client, clock)
            if item is not None:
                row.append(item)
                out.order.append(item)
            else:
                out.gaps += 1
            clock += length
    for row in out.items.values():
        row.sort(key=lambda i: i.clock)
    for _ in range(r.uint()):
        client = r.uint()
        ranges = [(r.uint(), r.uint()) for _ in range(r.uint())]
        out.deletes[client] = ranges
        row = out.items.get(client, [])
        starts = [i.clock for i in row]
        for start, length in ranges:  # Yrs splits an item where a deletion starts or ends
            at = bisect.bisect_left(starts, start)
            while at < len(row) and row[at].clock < start + length:
                row[at].deleted = True
                at += 1
    return out


def _struct(r: _Reader, client: int, clock: int) -> tuple[Item | None, int]:
    """The struct at ``clock`` and its length (no item for a GC or skip range)."""
    info = r.byte()
    kind = info & 0x1F
    if kind in (0, 10):
        return None, r.uint()
    item = Item(client, clock, 1)
    if info & 0x80:
        item.origin = r.id()
    if info & 0x40:
        item.right = r.id()
    if not info & 0xC0:
        if r.uint() == 1:
            item.root = r.string()
        else:
            item.parent_id = r.id()
        if info & 0x20:
            item.key = r.string()
    if kind == 1:  # deleted
        item.length = r.uint()
        item.deleted = True
    elif kind == 2:  # JSON
        item.length = r.uint()
        for _ in range(item.length):
            r.string()
    elif kind == 3:  # binary
        r.buf()
    elif kind == 4:  # string: its length is in UTF-16 code units
        item.length = len(r.string().encode("utf-16-le")) // 2
    elif kind == 5:  # embed
        r.string()
    elif kind == 6:  # format
        r.string()
        r.string()
    elif kind == 7:  # a nested type
        if r.uint() in (3, 5):
            r.string()
    elif kind == 8:  # Any
        item.length = r.uint()
        item.values = [r.any() for _ in range(item.length)]
    elif kind == 9:  # a subdocument
        r.string()
        r.any()
    else:
        raise ValueError(f"unsupported content kind {kind}")
    return item, item.length


def _resolve(out: Structs) -> None:
    """Give every item the root and key of the item it was inserted next to (origin first),
    following each chain of neighbours once (a register rewritten 10,000 times is one chain)."""
    done: set[ItemId] = set()
    for row in out.items.values():
        for item in row:
            path: list[Item] = []
            at: Item | None = item
            while at is not None and (at.client, at.clock) not in done:
                if at.root is not None or at.parent_id is not None:
                    break
                done.add((at.client, at.clock))
                path.append(at)
                at = next(
                    (
                        found
                        for near in (at.origin, at.right)
                        if near is not None and (found := out.find(near))
                    ),
                    None,
                )
            if at is None or (at.root is None and at.parent_id is None):
                continue  # nested in a type, or next to an item the state does not hold
            for walked in path:
                walked.root, walked.parent_id, walked.key = at.root, at.parent_id, at.key
