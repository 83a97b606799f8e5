"""Hybrid logical clock (Kulkarni et al., 2014), one per replica, with an injected wall clock.

A timestamp is ``(wall_ms, logical)``. ``now()`` never goes backwards and never repeats on one
replica, even if the wall clock does; ``observe()`` folds in a remote timestamp so that causally later
events always carry larger timestamps. Timestamps are written into CRDT documents as fixed-width
decimal strings (:func:`Hlc.encode`), so they stay exact in Yrs (which stores numbers as JavaScript
doubles) and compare correctly as plain strings.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import ClockSkewError, InvalidInput

WallClock = Callable[[], int]
"""A function returning the current wall time in integer milliseconds since the epoch."""

DEFAULT_MAX_DRIFT_MS = 5 * 60 * 1000
_WALL_DIGITS = 15
_LOGICAL_DIGITS = 6
_MAX_LOGICAL = 10**_LOGICAL_DIGITS - 1
_ENCODED = re.compile(f"[0-9]{{{_WALL_DIGITS}}}\\.[0-9]{{{_LOGICAL_DIGITS}}}")
"""What :meth:`Hlc.encode` writes and :meth:`Hlc.decode` takes."""


def system_wall_ms() -> int:
    """The system wall clock in milliseconds; the default :data:`WallClock`."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, order=True, slots=True)
class Hlc:
    """One hybrid-logical-clock timestamp. Orders by (wall_ms, logical)."""

    wall_ms: int
    logical: int = 0

    def encode(self) -> str:
        """Fixed-width string form, e.g. ``001732390000000.000003``; sorts like the timestamp."""
        return f"{self.wall_ms:0{_WALL_DIGITS}d}.{self.logical:0{_LOGICAL_DIGITS}d}"

    @classmethod
    def decode(cls, text: str) -> Hlc:
        """Parse :meth:`encode`'s form; raises :class:`InvalidInput` on anything else."""
        wall, sep, logical = text.partition(".")
        if (
            not sep
            or len(wall) != _WALL_DIGITS
            or len(logical) != _LOGICAL_DIGITS
            or not (wall.isascii() and wall.isdigit())
            or not (logical.isascii() and logical.isdigit())
        ):
            raise InvalidInput(f"not an HLC timestamp: {text!r}")
        return cls(int(wall), int(logical))

    @staticmethod
    def is_encoded(text: str) -> bool:
        """Whether :meth:`decode` takes ``text``, without building the stamp. Encoded stamps sort
        like the stamps they encode, so the newest of many is the greatest text."""
        return _ENCODED.fullmatch(text) is not None

    def isoformat(self) -> str:
        """The wall part as an ISO-8601 UTC time, for humans and the MemoryEvent feed (the year 10000
        and later, which only a broken or hostile clock sends, as milliseconds since the epoch)."""
        try:
            stamp = datetime.fromtimestamp(self.wall_ms / 1000, tz=UTC)
        except (OverflowError, ValueError, OSError):
            return f"{self.wall_ms} ms since the epoch"
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HybridLogicalClock:
    """A replica's clock.

    Args:
        wall: the wall clock, injected so tests are deterministic.
        max_drift_ms: remote timestamps further ahead of ``wall()`` than this are refused by
            :meth:`observe` with :class:`ClockSkewError`.
    """

    def __init__(self, wall: WallClock = system_wall_ms, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS):
        self._wall = wall
        self.max_drift_ms = max_drift_ms
        self._last = Hlc(0, 0)
        self._lock = threading.Lock()

    @property
    def last(self) -> Hlc:
        """The latest timestamp issued or observed."""
        return self._last

    def now(self) -> Hlc:
        """A fresh timestamp, strictly greater than every one issued or observed before."""
        with self._lock:
            wall = self._wall()
            last = self._last
            self._last = Hlc(wall, 0) if wall > last.wall_ms else self._bump(last)
            return self._last

    def stamps(self, count: int) -> list[str]:
        """``count`` fresh timestamps, encoded (:meth:`Hlc.encode`), in increasing order: what as
        many calls of ``now().encode()`` give on a still wall, from one wall reading under one lock
        and with the wall part formatted once (a write of 2,000 entries takes 2,000 dots)."""
        with self._lock:
            if count <= 0:
                return []
            wall = self._wall()
            last = self._last
            first = Hlc(wall, 0) if wall > last.wall_ms else self._bump(last)
            wall_ms, logical = first.wall_ms, first.logical
            prefix = f"{wall_ms:0{_WALL_DIGITS}d}."
            texts = []
            for _ in range(count):
                texts.append(f"{prefix}{logical:0{_LOGICAL_DIGITS}d}")
                if logical >= _MAX_LOGICAL:
                    wall_ms, logical = wall_ms + 1, 0
                    prefix = f"{wall_ms:0{_WALL_DIGITS}d}."
                else:
                    logical += 1
            self._last = Hlc.decode(texts[-1])
            return texts

    def check(self, remote: Hlc) -> None:
        """Raise :class:`ClockSkewError` if ``remote`` is too far in the future."""
        ahead = remote.wall_ms - self._wall()
        if ahead > self.max_drift_ms:
            raise ClockSkewError(
                f"remote timestamp {remote.isoformat()} is {ahead} ms ahead of this replica's clock "
                f"(max drift {self.max_drift_ms} ms); fix the sender's clock or raise max_drift_ms"
            )

    def observe(self, remote: Hlc) -> None:
        """Fold a remote timestamp in, after checking its drift."""
        self.check(remote)
        with self._lock:
            if remote > self._last:
                self._last = remote

    def restore(self, last: Hlc) -> None:
        """Resume after a restart: never issue a timestamp at or below ``last``."""
        with self._lock:
            if last > self._last:
                self._last = last

    @staticmethod
    def _bump(last: Hlc) -> Hlc:
        if last.logical >= _MAX_LOGICAL:
            return Hlc(last.wall_ms + 1, 0)
        return Hlc(last.wall_ms, last.logical + 1)
