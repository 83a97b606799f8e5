"""Multi-value register, read as last-writer-wins.

Layout: a Yrs map whose values are dot entries ``{"v", "hlc", "by"}`` (the dot is in the value) and
whose keys are ``{field}#{replica}`` (or just ``{replica}`` when the map holds a single register).
Entries written by earlier versions are keyed by their whole dot (``{replica}:{hlc}``); they read and
are overwritten exactly the same way, since readers never look at the key beyond the field prefix.

Write rule: a write deletes every entry of the field it has observed and adds one entry, under its
replica's key, carrying its own dot. Concurrent writes come from different replicas (a replica's own
writes are causally ordered), so they never share a key, never see each other's entries, and after a
merge both survive as *siblings*.

Why the replica and not the dot as key: Yrs keeps a tombstone for every overwritten map entry, key
included. A fact update writes three registers (content, a metadata key, lifecycle): keyed by dot it
grew the document by ~134 bytes for good, keyed by replica by ~15 (``tests/test_memory.py``).

Read rule: the sibling with the highest ``(hlc, replica)`` wins, so every replica reads the same value
from the same merged state. Clock assumption: hlc is a hybrid logical clock, so a write that observed
another always carries a larger hlc.

Conflict rule: siblings with differing values are a conflict; siblings that agree are not. A later
write that observed all siblings resolves the conflict (it deletes them all). Nothing is lost silently:
until then every concurrent value stays readable through :meth:`MVRegister.siblings`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .dots import Dot, DotEntry, JSONValue, encode_value, put_entries

Sibling = DotEntry


class MVRegister:
    """One or more registers in a Yrs map, addressed by field name."""

    def __init__(self, ymap: Any, field: str | None = None):
        self._map = self.ymap = ymap
        self._prefix = "" if field is None else f"{field}#"

    def siblings(self) -> list[Sibling]:
        """Live entries, highest (hlc, replica) first."""
        found = []
        for key, raw in self._map.items():
            if self._prefix and not key.startswith(self._prefix):
                continue
            entry = DotEntry.from_yrs(raw)
            if entry is not None:
                found.append(entry)
        found.sort(key=lambda e: e.dot, reverse=True)
        return found

    def write(self, value: JSONValue, dot: Dot) -> None:
        """Overwrite: delete every observed sibling, add ``value`` under ``dot``."""
        self.clear()
        entry = DotEntry(dot, encode_value(value))
        self._map[self._prefix + dot.replica] = entry.to_yrs()

    def clear(self) -> None:
        """Delete every observed sibling (used by writes and by metadata key removal)."""
        for key in list(self._map.keys()):
            if not self._prefix or key.startswith(self._prefix):
                del self._map[key]

    @staticmethod
    def read(siblings: list[Sibling]) -> Sibling | None:
        """The winning sibling of an already-sorted list, or None when empty."""
        return siblings[0] if siblings else None

    @staticmethod
    def in_conflict(siblings: list[Sibling]) -> bool:
        return len({s.text for s in siblings}) > 1

    @staticmethod
    def grouped(entries: Any) -> dict[str, list[Sibling]]:
        """Siblings of every ``{field}#{dot}`` register in one map (or plain dict), in one pass,
        each list highest (hlc, replica) first."""
        found: dict[str, list[Sibling]] = {}
        for key, raw in entries.items():
            field, sep, _ = key.rpartition("#")
            entry = DotEntry.from_yrs(raw) if sep else None
            if entry is not None:
                found.setdefault(field, []).append(entry)
        for siblings in found.values():
            siblings.sort(key=lambda e: e.dot, reverse=True)
        return found

    @staticmethod
    def write_fields(
        ymap: Any, writes: Iterable[tuple[str, JSONValue, Dot]], clears: Iterable[str] = ()
    ) -> None:
        """Write many registers of one map, then clear others, in one pass over its keys.

        The same as :meth:`write` per ``(field, value, dot)`` followed by :meth:`clear` per cleared
        field, but linear in the map's size plus the changes: one register at a time scans every key
        of the map per field (20,000 metadata keys in one request took the event loop for seconds).
        """
        MVRegister.write_field_texts(
            ymap, [(field, encode_value(value), dot) for field, value, dot in writes], clears
        )

    @staticmethod
    def write_field_texts(
        ymap: Any, writes: Iterable[tuple[str, str, Dot]], clears: Iterable[str] = ()
    ) -> None:
        """:meth:`write_fields` with each value given as its canonical JSON text (``encode_value``),
        for a caller that encoded the values already; the new entries go in as one batch."""
        keys: dict[str, list[str]] = {}
        for key in list(ymap):
            field, sep, _ = key.rpartition("#")
            if sep:
                keys.setdefault(field, []).append(key)
        entries: dict[str, dict[str, str]] = {}
        for field, text, dot in writes:
            for key in keys.pop(field, ()):
                if entries.pop(key, None) is None:
                    del ymap[key]
            key = f"{field}#{dot.replica}"
            entries[key] = {"v": text, "hlc": dot.hlc, "by": dot.replica}
            keys[field] = [key]
        for field in clears:
            for key in keys.pop(field, ()):
                if entries.pop(key, None) is None:
                    del ymap[key]
        put_entries(ymap, entries.items())

    @staticmethod
    def fields(ymap: Any) -> set[str]:
        """The field names present in a map of ``{field}#{dot}`` keys."""
        return {key.rsplit("#", 1)[0] for key in ymap if "#" in key}
