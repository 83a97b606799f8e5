"""Storage values: the builders of received deltas make what the constructors make."""

from __future__ import annotations

import dataclasses

import pytest

from crdtmem.store import values
from crdtmem.store.values import DeltaRecord, Signature, received_delta, received_signature


def test_the_builders_set_every_field_of_their_class() -> None:
    assert len(values._DELTA_FIELDS) == len(dataclasses.fields(DeltaRecord))
    assert len(values._SIGNATURE_FIELDS) == len(dataclasses.fields(Signature))


def test_a_received_delta_equals_the_constructed_one_and_stays_frozen() -> None:
    claim = received_signature(b"s" * 64, {"c": 3}, {"c": (1, 2)}, b"h" * 64)
    assert claim == Signature(b"s" * 64, {"c": 3}, {"c": (1, 2)}, b"h" * 64)
    fields = ("o:1", "o", "m", "1", b"\x00", b"\x00\x00", ("c",), {"c": 3}, {"c": (1, 2)})
    made = received_delta(*fields, claim, None)
    assert made == DeltaRecord(*fields, claim) and hash(made.uid) == hash("o:1")
    assert dataclasses.replace(made, uid="o:2").uid == "o:2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.uid = "o:3"  # type: ignore[misc]
