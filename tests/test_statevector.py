"""State vectors: a vector decoded again (from the table of recent ones) is an equal, separate dict."""

from __future__ import annotations

import pycrdt
import pytest

from crdtmem.document import statevector
from crdtmem.errors import MalformedPayload


def _vector(clients: int) -> bytes:
    doc: pycrdt.Doc = pycrdt.Doc()
    for client in range(1, clients + 1):
        other: pycrdt.Doc = pycrdt.Doc(client_id=client * 1_000_003)
        other["m"] = pycrdt.Map()
        other["m"]["k"] = client
        doc.apply_update(other.get_update())
    return doc.get_state()


@pytest.mark.parametrize("clients", [1, 3, 40], ids=["one", "three", "long"])
def test_a_vector_decoded_again_is_equal_and_changing_it_changes_no_other(clients: int) -> None:
    data = _vector(clients)
    first = statevector.decode(data)
    assert len(first) == clients and all(clock == 1 for clock in first.values())
    first[1] = 99  # callers change what they get (dependencies raises clocks in it)
    again = statevector.decode(bytes(data))
    assert 1 not in again and len(again) == clients
    assert again is not statevector.decode(data)


def test_garbage_is_refused_every_time_and_never_kept() -> None:
    for _ in range(2):
        with pytest.raises(MalformedPayload):
            statevector.decode(b"\x02\x05")
    assert b"\x02\x05" not in statevector._DECODED


def test_the_table_of_recent_vectors_stays_bounded() -> None:
    for clock in range(statevector._DECODED_MOST + 10):
        statevector.decode(b"\x01\x07" + bytes([clock & 0x7F | 0x80, clock >> 7]))
    assert len(statevector._DECODED) <= statevector._DECODED_MOST
