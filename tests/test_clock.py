"""The hybrid logical clock: monotonic whatever the wall clock does, exact string encoding, drift."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem import ClockSkewError, Hlc, HybridLogicalClock, InvalidInput

START_MS = 1_700_000_000_000
MAX_WALL = 10**15 - 1
MAX_LOGICAL = 10**6 - 1

hlcs = st.builds(Hlc, st.integers(0, MAX_WALL), st.integers(0, MAX_LOGICAL))


class Wall:
    """A wall clock that returns scripted values, then repeats the last one."""

    def __init__(self, *values: int):
        self.values = list(values)
        self.current = values[0]

    def __call__(self) -> int:
        if self.values:
            self.current = self.values.pop(0)
        return self.current


def test_now_uses_the_wall_clock_and_counts_within_a_millisecond() -> None:
    clock = HybridLogicalClock(Wall(START_MS, START_MS, START_MS, START_MS + 5))
    assert [clock.now() for _ in range(4)] == [
        Hlc(START_MS, 0),
        Hlc(START_MS, 1),
        Hlc(START_MS, 2),
        Hlc(START_MS + 5, 0),
    ]


def test_now_is_monotonic_when_the_wall_clock_goes_backwards() -> None:
    clock = HybridLogicalClock(Wall(START_MS, START_MS - 1000, START_MS - 5000, START_MS, START_MS + 1))
    stamps = [clock.now() for _ in range(5)]
    assert stamps == [
        Hlc(START_MS, 0),
        Hlc(START_MS, 1),
        Hlc(START_MS, 2),
        Hlc(START_MS, 3),
        Hlc(START_MS + 1, 0),
    ]


@given(st.lists(st.integers(0, 2 * START_MS), min_size=1, max_size=200))
def test_now_strictly_increases_for_any_wall_clock(walls: list[int]) -> None:
    clock = HybridLogicalClock(Wall(*walls))
    stamps = [clock.now() for _ in walls]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    assert all(a.encode() < b.encode() for a, b in itertools.pairwise(stamps))
    assert clock.last == stamps[-1]


def test_logical_overflow_carries_into_the_wall_part() -> None:
    clock = HybridLogicalClock(Wall(START_MS))
    clock.restore(Hlc(START_MS, MAX_LOGICAL))
    assert clock.now() == Hlc(START_MS + 1, 0)
    assert len(clock.now().encode()) == len(Hlc(0, 0).encode())


@given(hlcs)
def test_encode_decode_round_trip(stamp: Hlc) -> None:
    text = stamp.encode()
    assert len(text) == 22
    assert Hlc.decode(text) == stamp


@given(hlcs, hlcs)
def test_encoding_preserves_order(a: Hlc, b: Hlc) -> None:
    assert (a < b) == (a.encode() < b.encode())
    assert (a == b) == (a.encode() == b.encode())


def test_encode_form() -> None:
    assert Hlc(1732390000000, 3).encode() == "001732390000000.000003"
    assert Hlc(START_MS).isoformat() == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1700000000000",
        "001700000000000",
        "001700000000000.",
        "001700000000000.00000",
        "0001700000000000.000000",
        "01700000000000.000000",
        "001700000000000.0000001",
        "001700000000000-000000",
        "00170000000000a.000000",
        "+01700000000000.000000",
        " 01700000000000.000000",
        "001700000000000.00000 ",
        "001700000000000.000000.000000",
        "001700000000000.000000\n",
    ],
)
def test_decode_rejects_malformed_text(text: str) -> None:
    with pytest.raises(InvalidInput):
        Hlc.decode(text)


@pytest.mark.parametrize(
    "text",
    [
        "00000000000000\u00b2.000000",  # superscript two: str.isdigit() says yes, int() says no
        "\u0660\u0660\u0661\u0667" + "\u0660" * 11 + ".000000",  # Arabic-Indic digits: not canonical
        "001700000000000.00000\uff11",  # a fullwidth digit
    ],
)
def test_decode_accepts_only_ascii_digits(text: str) -> None:
    """Only the canonical form may decode: any other text would sort differently from its value."""
    with pytest.raises(InvalidInput):
        Hlc.decode(text)


def test_drift_refusal() -> None:
    clock = HybridLogicalClock(Wall(START_MS), max_drift_ms=1000)
    clock.check(Hlc(START_MS + 1000, MAX_LOGICAL))  # at the limit: fine
    with pytest.raises(ClockSkewError, match="1001 ms ahead"):
        clock.check(Hlc(START_MS + 1001))
    with pytest.raises(ClockSkewError):
        clock.observe(Hlc(START_MS + 10**9))
    assert clock.last == Hlc(0, 0)  # a refused timestamp is not folded in
    clock.check(Hlc(0))  # the past is always fine


def test_observe_moves_the_clock_forward_only() -> None:
    clock = HybridLogicalClock(Wall(START_MS), max_drift_ms=60_000)
    clock.observe(Hlc(START_MS + 30_000, 7))
    assert clock.now() == Hlc(START_MS + 30_000, 8)  # causally after what it observed
    clock.observe(Hlc(START_MS - 30_000))
    assert clock.now() == Hlc(START_MS + 30_000, 9)


def test_restore_never_goes_back() -> None:
    clock = HybridLogicalClock(Wall(START_MS))
    clock.restore(Hlc(START_MS + 500, 2))
    assert clock.now() == Hlc(START_MS + 500, 3)
    clock.restore(Hlc(START_MS))
    assert clock.now() == Hlc(START_MS + 500, 4)
    assert clock.last == Hlc(START_MS + 500, 4)


def test_now_is_unique_across_threads() -> None:
    clock = HybridLogicalClock(Wall(START_MS))
    found: list[list[Hlc]] = [[] for _ in range(4)]

    def tick(out: list[Hlc]) -> None:
        out.extend(clock.now() for _ in range(2000))

    threads = [threading.Thread(target=tick, args=(out,)) for out in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps = [s for out in found for s in out]
    assert len(set(stamps)) == len(stamps) == 8000
    assert all(a < b for out in found for a, b in itertools.pairwise(out))


@given(hlcs, st.integers(0, MAX_WALL), st.integers(0, 300))
def test_stamps_are_what_as_many_calls_of_now_give_on_a_still_wall(last: Hlc, wall: int, count: int) -> None:
    one, many = HybridLogicalClock(Wall(wall)), HybridLogicalClock(Wall(wall))
    one.restore(last)
    many.restore(last)
    assert many.stamps(count) == [one.now().encode() for _ in range(count)]
    assert many.last == one.last


def test_stamps_carry_a_logical_overflow_into_the_wall_part() -> None:
    clock = HybridLogicalClock(Wall(START_MS))
    clock.restore(Hlc(START_MS, MAX_LOGICAL - 2))
    assert clock.stamps(4) == [
        Hlc(START_MS, MAX_LOGICAL - 1).encode(),
        Hlc(START_MS, MAX_LOGICAL).encode(),
        Hlc(START_MS + 1, 0).encode(),
        Hlc(START_MS + 1, 1).encode(),
    ]
    assert clock.last == Hlc(START_MS + 1, 1)
