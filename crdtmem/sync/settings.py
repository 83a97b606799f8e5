"""A replication link's settings and the status it reports (``Node.status``, the dashboard)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..engine import payload as wire

Mode = Literal["eager", "lazy", "pull"]


@dataclass
class LinkSettings:
    mode: Literal["eager", "lazy"] = "eager"
    interval: float = 1.0
    """Seconds between lazy batches."""
    page: int = 2_000
    """At most this many deltas per frame."""
    window: int = 16
    """At most this many frames in flight (sent, not acknowledged)."""
    slow_after: float = 10.0
    """Seconds without an acknowledgement, with frames in flight, before switching the peer to pull."""
    ack_timeout: float = 10.0
    """Seconds after which an unacknowledged frame counts as lost and its deltas are sent again."""
    max_frame_bytes: int = wire.DEFAULT_MAX_PAYLOAD_BYTES


@dataclass
class LinkStatus:
    peer: str
    mode: Mode
    push_channels: list[str]
    accept_channels: list[str]
    in_flight: int
    lag: int
    frames_sent: int = 0
    frames_received: int = 0
    deltas_sent: int = 0
    deltas_received: int = 0
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
