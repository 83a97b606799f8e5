"""Dots and dot entries: values survive the canonical JSON text exactly, dots order by (hlc, replica)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from crdtmem.crdt.dots import Dot, DotEntry, decode_value, encode_value

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_a_value_reads_back_exactly_as_json_would(value):
    text = encode_value(value)
    assert decode_value(text) == json.loads(text)
    assert encode_value(decode_value(text)) == text


@given(st.text() | st.text().map(lambda t: f'"{t}"'))
def test_any_entry_text_decodes_as_json_does_or_is_refused_alike(text):
    try:
        expected = json.loads(text)
    except ValueError:
        expected = ValueError
    try:
        got = decode_value(text)
    except ValueError:
        got = ValueError
    assert repr(got) == repr(expected)  # repr: NaN (which json.loads takes) is not equal to itself


def test_nan_text_decodes_as_json_does() -> None:
    assert repr(decode_value("NaN")) == repr(json.loads("NaN"))


def test_dots_order_by_hlc_then_replica_and_entries_round_trip():
    a, b, c = Dot("001.000001", "b"), Dot("001.000001", "c"), Dot("002.000000", "a")
    assert sorted([c, b, a]) == [a, b, c]
    entry = DotEntry(Dot("001795470675242.000001", "phone"), '"dark"')
    assert DotEntry.from_yrs(entry.to_yrs()) == entry
    assert entry.value == "dark"
    assert DotEntry.from_yrs({"v": '"x"', "hlc": "not a stamp", "by": "p"}) is None
