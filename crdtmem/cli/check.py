"""``crdtmem check --db FILE``: read a stopped replica's whole file and report what is damaged.

A running node finds a damaged memory when it reads it (and quarantines it then); this reads all
of them at once: SQLite's full ``PRAGMA integrity_check``, then every memory's record and its Yrs
state (snapshot and deltas), as the node would. The file is opened under its lock, so a running
node's file is refused (exit 3) rather than read while it changes. Nothing is written.

Exit codes: 0 nothing damaged, 1 damage found (listed), 2 no such file, 3 the file is in use,
4 the file does not open.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import CrdtmemError, StorageError, StoreLocked
from ..store.sqlite import SQLiteStore
from .serve import EXIT_DB_IN_USE, EXIT_DB_UNREADABLE


@dataclass
class CheckReport:
    integrity: list[str]
    memories: int = 0
    damaged: dict[str, str] = field(default_factory=dict)
    """Memory id: why it does not read back."""

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"] and not self.damaged


def check_file(path: Path) -> CheckReport:
    """Read every memory of the store at ``path``; raises StoreLocked or StorageError if it cannot
    open it."""
    store = SQLiteStore(path, check=False)
    store.open()
    try:
        report = CheckReport(store.quick_check(full=True))
        try:
            ids = store.query_ids(include_deleted=True)
        except StorageError as exc:
            report.damaged["*"] = f"the list of memories does not read: {exc}"
            return report
        report.memories = len(ids)
        for memory_id in ids:
            try:
                record = store.load_record(memory_id)
                if record is not None:
                    Memory.from_dict(record)
                stored = store.load_doc(memory_id)
                if stored is not None:
                    MemoryDoc.from_parts(memory_id, stored.snapshot, stored.tail, 0).materialize()
            except (CrdtmemError, KeyError, TypeError, ValueError) as exc:
                report.damaged[memory_id] = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return report
    finally:
        store.close()


def main(args: argparse.Namespace) -> int:
    path = Path(args.db)
    if not path.exists():
        print(f"crdtmem check: no such database: {path}", file=sys.stderr)
        return 2
    try:
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
                }
            )
        )
        return 0 if report.ok else 1
    pages = "ok" if report.integrity == ["ok"] else f"{len(report.integrity)} problem(s)"
    print(f"{path}: pages {pages}; {report.memories} memories read, {len(report.damaged)} damaged")
    for problem in report.integrity if report.integrity != ["ok"] else []:
        print(f"  page: {problem}")
    for memory_id, reason in sorted(report.damaged.items()):
        print(f"  memory {memory_id}: {reason}")
    return 0 if report.ok else 1
