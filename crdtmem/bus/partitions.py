"""Partitions of the subject mapping (subject mapping version 2, ``docs/protocol.md`` §7.12).

With a layout of ``P`` partitions a channel's subject carries a partition token,
``{prefix}.{stream}.{kind}.p{N}.{id}``, where ``N`` is :func:`partition_of` its app id: the first
eight bytes of the SHA-256 of the id's UTF-8 bytes, big-endian, modulo ``P``. A node that serves a
set of partitions filters each stream with one wildcard subject per partition
(``crdtmem.users.*.p17.*``) instead of one subject per channel, so its consumer's configuration
does not grow with the users it holds. The hash is fixed by this version of the mapping: every
node of a fleet computes the same ``N``, and changing ``P`` moves channels to other subjects (a
new layout, :class:`~crdtmem.bus.subjects.Layout`).
"""

from __future__ import annotations

import hashlib
import re

from ..errors import InvalidInput

MAX_PARTITIONS = 65_536
_TOKEN = re.compile(r"^p(0|[1-9][0-9]{0,4})$")


def partition_of(app_id: str, count: int) -> int:
    """The partition of a channel whose app id is ``app_id``, of ``count`` partitions."""
    digest = hashlib.sha256(app_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def token(partition: int) -> str:
    """The subject token of ``partition``."""
    return f"p{partition}"


def from_token(text: str) -> int | None:
    """The partition a subject token names (``p0``, ``p17``), or None if it names none."""
    found = _TOKEN.fullmatch(text)
    return int(found.group(1)) if found else None


def parse_set(text: str, count: int) -> frozenset[int]:
    """A set of partitions written as numbers and ranges (``0-7,12``), each below ``count``;
    raises ValueError saying what is wrong."""
    if count < 1:
        raise ValueError("the layout has no partitions: give it some first (--bus-partitions N)")
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{part!r} is not a partition number or a range like 0-7")
        first, last = int(low), int(high) if dash else int(low)
        if not first <= last < count:
            raise ValueError(f"{part!r}: partitions are 0 to {count - 1}, in increasing ranges")
        out.update(range(first, last + 1))
    return frozenset(out)


def check_served(served: frozenset[int] | None, count: int) -> None:
    """Raise InvalidInput unless ``served`` (None: all) is a set of some of ``count`` partitions."""
    if served is not None and (not count or not served or max(served) >= count or min(served) < 0):
        raise InvalidInput(
            f"a node serves some of its layout's {count} partitions, got {sorted(served)[:5]}: "
            "give the layout partitions (--bus-partitions N) and the node some of them"
        )
