"""Add-wins observed-remove set (OR-set).

Layout: a Yrs map ``{dot} -> {"v", "hlc", "by"}``; each live entry is one add of the element ``v``.

Add rule: every add creates a fresh dot for the element, even if the element is already present.
Remove rule: a remove deletes only the dots of that element it has observed.
Merge: Yrs map merge. An add concurrent with a remove carries a dot the remove never saw, so it
survives: add wins.
Read order: elements ordered by their earliest live dot (hlc, replica), i.e. by first insertion, and
deduplicated; the order is identical on every replica holding the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .dots import Dot, DotEntry, JSONValue, encode_value, put_entries


class ORSet:
    """An add-wins set of JSON values stored in one Yrs map."""

    def __init__(self, ymap: Any):
        self._map = self.ymap = ymap

    def entries(self) -> list[DotEntry]:
        found = [e for e in map(DotEntry.from_yrs, self._map.values()) if e is not None]
        found.sort(key=lambda e: e.dot)
        return found

    def elements(self) -> list[JSONValue]:
        seen: dict[str, DotEntry] = {}
        for entry in self.entries():
            seen.setdefault(entry.text, entry)
        return [entry.value for entry in seen.values()]

    def read(self) -> tuple[list[JSONValue], str]:
        """``(elements(), latest_hlc())`` from one pass over the entries."""
        entries = self.entries()
        seen: dict[str, DotEntry] = {}
        for entry in entries:
            seen.setdefault(entry.text, entry)
        latest = max((e.dot.hlc for e in entries), default="")
        return [entry.value for entry in seen.values()], latest

    def add(self, element: JSONValue, dot: Dot) -> None:
        entry = DotEntry(dot, encode_value(element))
        self._map[dot.key()] = entry.to_yrs()

    def add_texts(self, adds: Iterable[tuple[str, Dot]]) -> None:
        """:meth:`add` of many elements, each given as its canonical JSON text (``encode_value``),
        inserted as one batch."""
        put_entries(
            self._map, ((dot.key(), {"v": text, "hlc": dot.hlc, "by": dot.replica}) for text, dot in adds)
        )

    def remove(self, element: JSONValue) -> bool:
        """Remove the observed adds of ``element``; returns whether any were present."""
        text = encode_value(element)
        doomed = [k for k, raw in self._map.items() if (e := DotEntry.from_yrs(raw)) and e.text == text]
        for key in doomed:
            del self._map[key]
        return bool(doomed)

    def remove_all(self, elements: Iterable[JSONValue]) -> None:
        """:meth:`remove` of each element, in one pass over the entries (linear, not one pass each)."""
        texts = {encode_value(element) for element in elements}
        if not texts:
            return
        doomed = [k for k, raw in self._map.items() if (e := DotEntry.from_yrs(raw)) and e.text in texts]
        for key in doomed:
            del self._map[key]

    def clear(self) -> None:
        """Remove every observed add (a concurrent add survives, as for :meth:`remove`)."""
        for key in list(self._map.keys()):
            del self._map[key]

    def latest_hlc(self) -> str:
        return max((e.dot.hlc for e in self.entries()), default="")
