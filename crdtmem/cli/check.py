"""``crdtmem check --db FILE``: read a stopped replica's whole file and report what is damaged.

A running node finds a damaged memory when it reads it (and quarantines it then, durably); this
reads all of them at once: SQLite's full ``PRAGMA integrity_check``, then every memory's record and
its Yrs state (snapshot and deltas), as the node would, and lists the memories the file keeps as
quarantined. The file is opened under its lock, so a running node's file is refused (exit 3) rather
than read while it changes. Nothing is written, except by ``--release ID``: it reads that memory
again and, if it reads back now (after a repair), takes it out of quarantine.

Exit codes: 0 nothing damaged or quarantined (or every memory given to ``--release`` released),
1 damage found or memories still quarantined (listed), 2 no such file, 3 the file is in use,
4 the file does not open.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import CrdtmemError, StorageError, StoreLocked
from ..store.base import Quarantined
from ..store.sqlite import SQLiteStore
from .serve import EXIT_DB_IN_USE, EXIT_DB_UNREADABLE


@dataclass
class CheckReport:
    integrity: list[str]
    memories: int = 0
    damaged: dict[str, str] = field(default_factory=dict)
    """Memory id: why it does not read back."""
    quarantined: list[Quarantined] = field(default_factory=list)
    """The memories the file keeps as quarantined (a node answers 503 for them until released)."""

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"] and not self.damaged and not self.quarantined


def read_memory(store: SQLiteStore, memory_id: str, *, history: bool = False) -> str | None:
    """Why the memory does not read back as the node reads it; None if it does (or is not stored).
    ``history``: each of its logged deltas too, as its history is read."""
    try:
        record = store.load_record(memory_id)
        if record is not None:
            Memory.from_dict(record)
        stored = store.load_doc(memory_id)
        if stored is not None:
            MemoryDoc.from_parts(memory_id, stored.snapshot, stored.tail, 0).materialize()
        if history:
            doc = MemoryDoc.empty(memory_id, 0)
            for delta in store.history(memory_id):
                doc.apply(delta.update)
    except (CrdtmemError, KeyError, TypeError, ValueError) as exc:
        return getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
    return None


def check_file(path: Path) -> CheckReport:
    """Read every memory of the store at ``path``; raises StoreLocked or StorageError if it cannot
    open it."""
    store = SQLiteStore(path, check=False)
    store.open()
    try:
        report = CheckReport(store.quick_check(full=True))
        try:
            report.quarantined = store.quarantined()
        except StorageError as exc:
            report.damaged["*"] = f"the quarantined memories do not read: {exc}"
        try:
            ids = store.query_ids(include_deleted=True)
        except StorageError as exc:
            report.damaged["*"] = f"the list of memories does not read: {exc}"
            return report
        report.memories = len(ids)
        for memory_id in ids:
            reason = read_memory(store, memory_id)
            if reason is not None:
                report.damaged[memory_id] = reason
        return report
    finally:
        store.close()


def release(path: Path, memory_ids: list[str]) -> dict[str, str | None]:
    """Take each memory out of quarantine if it reads back now; ``{id: None (released) or why
    not}``. Raises StoreLocked or StorageError if the file cannot be opened."""
    store = SQLiteStore(path, check=False)
    store.open()
    try:
        kept = {entry.memory_id for entry in store.quarantined()}
        outcome: dict[str, str | None] = {}
        for memory_id in memory_ids:
            if memory_id not in kept:
                outcome[memory_id] = "it is not quarantined"
                continue
            reason = read_memory(store, memory_id, history=True)
            if reason is not None:
                outcome[memory_id] = f"it still does not read back: {reason}"
                continue
            store.release(memory_id)
            outcome[memory_id] = None
        return outcome
    finally:
        store.close()


def main(args: argparse.Namespace) -> int:
    path = Path(args.db)
    if not path.exists():
        print(f"crdtmem check: no such database: {path}", file=sys.stderr)
        return 2
    try:
        if args.release:
            return _print_released(path, release(path, args.release), args.json)
        report = check_file(path)
    except StoreLocked as exc:
        print(f"crdtmem check: {exc}", file=sys.stderr)
        return EXIT_DB_IN_USE
    except StorageError as exc:  # StoreUnreadable, or a read that failed outright
        print(f"crdtmem check: {exc}", file=sys.stderr)
        return EXIT_DB_UNREADABLE
    if args.json:
        print(
            json.dumps(
                {
                    "db": str(path),
                    "ok": report.ok,
                    "integrity": report.integrity,
                    "memories": report.memories,
                    "damaged": [{"memory_id": m, "reason": r} for m, r in sorted(report.damaged.items())],
                    "quarantined": [
                        {"memory_id": q.memory_id, "reason": q.reason, "since": _iso(q.since_ms)}
                        for q in report.quarantined
                    ],
                }
            )
        )
        return 0 if report.ok else 1
    pages = "ok" if report.integrity == ["ok"] else f"{len(report.integrity)} problem(s)"
    print(
        f"{path}: pages {pages}; {report.memories} memories read, {len(report.damaged)} damaged, "
        f"{len(report.quarantined)} quarantined"
    )
    for problem in report.integrity if report.integrity != ["ok"] else []:
        print(f"  page: {problem}")
    for memory_id, reason in sorted(report.damaged.items()):
        print(f"  memory {memory_id}: {reason}")
    for entry in report.quarantined:
        now = "still damaged" if entry.memory_id in report.damaged else "reads back now: --release it"
        print(f"  quarantined {entry.memory_id} since {_iso(entry.since_ms)} ({now}): {entry.reason}")
    return 0 if report.ok else 1


def _print_released(path: Path, outcome: dict[str, str | None], as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                {
                    "db": str(path),
                    "released": [m for m, why in outcome.items() if why is None],
                    "not_released": [{"memory_id": m, "reason": why} for m, why in outcome.items() if why],
                }
            )
        )
    else:
        for memory_id, why in outcome.items():
            print(f"{path}: memory {memory_id} " + ("released" if why is None else f"not released: {why}"))
    return 0 if all(why is None for why in outcome.values()) else 1


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="milliseconds")
