"""Which inbound deltas are authentic: the sender is entitled to introduce each delta's origin.

A delta's origin and its sequence numbers decide what every receiver's version vector claims, so a
delta whose origin its sender may not speak for is never applied, logged or parked: it is refused
and counted, and nothing about that origin changes here (``DESIGN.md``, trust model). The rights
come from the sender (:class:`~crdtmem.access.Principal`: a token's ``origins``); a payload handed to
the engine without one is vouched for by its caller (:data:`~crdtmem.access.OPEN`).

A replica never takes a delta of its own origin that it does not hold: it assigns its own sequence
numbers, and a foreign delta under its name would take one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..access import Principal
from ..store.base import DeltaRecord

log = logging.getLogger("crdtmem.trust")


@dataclass
class Authenticated:
    """Deltas sorted by whether their sender may introduce them."""

    accepted: list[DeltaRecord] = field(default_factory=list)
    refused: list[tuple[DeltaRecord, str]] = field(default_factory=list)
    """With the reason, for the log and for the sender."""


def authenticate(deltas: Sequence[DeltaRecord], sender: Principal, own_origin: str) -> Authenticated:
    """Split ``deltas`` (none of them stored here yet, or only some of their entries) by origin."""
    out = Authenticated()
    for delta in deltas:
        reason = refusal(delta.origin, sender, own_origin)
        if reason is None:
            out.accepted.append(delta)
        else:
            out.refused.append((delta, reason))
    if out.refused:
        first, why = out.refused[0]
        log.warning("refused %d delta(s) from %s, e.g. %s: %s", len(out.refused), sender.name, first.uid, why)
    return out


def refusal(origin: str, sender: Principal, own_origin: str) -> str | None:
    """Why ``sender`` may not introduce a delta of ``origin`` here, or None if it may."""
    if not sender.may_introduce(origin):
        listed = list(sender.origins)
        if sender.replica_id is not None:
            listed.insert(0, sender.replica_id)
        return (
            f"{sender.name} may not introduce deltas of origin {origin!r} "
            f"(it may introduce {', '.join(map(repr, listed)) or 'none'})"
        )
    if origin == own_origin:
        return f"a delta of this replica's own origin {origin!r} that it does not hold"
    return None
