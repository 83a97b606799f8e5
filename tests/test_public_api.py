"""Guards the public API: exactly these names are exported, and each one exists."""

from __future__ import annotations

from pathlib import Path

import crdtmem

EXPECTED = {
    "ApplyResult",
    "Channel",
    "ClockSkewError",
    "EpochMismatch",
    "Conflict",
    "ConflictValue",
    "CrdtmemError",
    "FeedOverflow",
    "HistoryEntry",
    "Hlc",
    "HybridLogicalClock",
    "InvalidChannel",
    "InvalidInput",
    "LimitExceeded",
    "Limits",
    "MalformedPayload",
    "Memory",
    "MemoryDeleted",
    "MemoryEvent",
    "MemoryExists",
    "MemoryQuarantined",
    "NoSuchConflict",
    "NotFound",
    "PayloadError",
    "PayloadTooLarge",
    "Replica",
    "ReplicaClosed",
    "Scope",
    "Source",
    "IndexUnavailable",
    "StorageError",
    "StoreLocked",
    "SyncReplica",
    "UnknownKind",
    "UnsupportedVersion",
    "WrongKind",
    "__version__",
}


def test_all_is_exactly_the_expected_set() -> None:
    assert len(crdtmem.__all__) == len(set(crdtmem.__all__)), "duplicate names in __all__"
    assert set(crdtmem.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    for name in crdtmem.__all__:
        assert hasattr(crdtmem, name), name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from crdtmem import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPECTED


def test_public_classes_name_their_home_module() -> None:
    for name in EXPECTED - {"__version__"}:
        value = getattr(crdtmem, name)
        assert value.__module__.startswith("crdtmem."), name


def test_error_tree() -> None:
    errors = [getattr(crdtmem, n) for n in EXPECTED if n.endswith(("Error", "Closed", "Deleted"))]
    errors += [crdtmem.NotFound, crdtmem.NoSuchConflict, crdtmem.FeedOverflow, crdtmem.InvalidInput]
    assert all(issubclass(e, crdtmem.CrdtmemError) for e in errors)
    payload_errors = {crdtmem.MalformedPayload, crdtmem.PayloadTooLarge, crdtmem.UnsupportedVersion}
    assert all(issubclass(e, crdtmem.PayloadError) for e in payload_errors)
    assert issubclass(crdtmem.ClockSkewError, crdtmem.PayloadError)
    assert issubclass(crdtmem.EpochMismatch, crdtmem.PayloadError)
    for invalid in (crdtmem.UnknownKind, crdtmem.InvalidChannel, crdtmem.WrongKind, crdtmem.LimitExceeded):
        assert issubclass(invalid, crdtmem.InvalidInput)
    assert issubclass(crdtmem.InvalidInput, ValueError)
    assert issubclass(crdtmem.NotFound, KeyError)
    assert str(crdtmem.NotFound("no memory with id 'x'")) == "no memory with id 'x'"


def test_version_and_typing_marker() -> None:
    assert isinstance(crdtmem.__version__, str) and crdtmem.__version__.count(".") == 2
    assert (Path(crdtmem.__file__).parent / "py.typed").exists()
