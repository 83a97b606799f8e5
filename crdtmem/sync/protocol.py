"""Frames of the replication WebSocket: versioned msgpack maps, validated on the way in.

Every frame is a binary WebSocket message holding one msgpack map with ``"t"`` (type) and ``"v"``
(protocol version)::

    hello   {replica, channels, mode: "eager"|"lazy", interval_ms, vectors: {channel: {origin: seq}},
             versions?: [payload versions it reads]}   absent: [1]; each side sends the highest common
    deltas  {n: frame number, payload: <crdtmem.deltas payload bytes>}
    ack     {n, vectors, rejected?}      receiver's version vectors after applying frame n; rejected:
                                         how many of its deltas failed their checks (engine/remote.py)
    error   {n, code, message, retry_after?}   frame n was refused; nothing of it was applied;
                                         retry_after: seconds to wait before sending again (a rate
                                         limit), at most 3600
    mode    {mode: "pull", reason}       sender stops pushing: the receiver must pull to catch up
    resume  {vectors}                    receiver caught up by pulling; push may start again from here

Frames from peers are untrusted: :func:`decode_frame` raises :class:`FrameError` for anything that is
not one of these shapes, and the link answers with an ``error`` frame and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from ..engine import payload as wire
from ..errors import InvalidInput, MalformedPayload
from ..ids import Channel, check_replica_id, parse_channels
from ..store.codec import MAX_SEQ

VERSION = 1
MAX_RETRY_AFTER = 3600
"""The longest pause a peer may ask for in an error frame's ``retry_after`` (seconds)."""
FrameType = Literal["hello", "deltas", "ack", "error", "mode", "resume"]
MODES = ("eager", "lazy")


class FrameError(MalformedPayload):
    """A WebSocket frame that is not a valid crdtmem frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    body: dict[str, Any]


def encode_frame(frame_type: FrameType, **body: Any) -> bytes:
    return bytes(msgpack.packb({"t": frame_type, "v": VERSION, **body}, use_bin_type=True))


def decode_frame(data: bytes | str) -> Frame:
    if not isinstance(data, bytes):
        raise FrameError("frames are binary msgpack; got a text message")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise FrameError(f"frame is not valid msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise FrameError("a frame is a msgpack map")
    if body.get("v") != VERSION:
        raise FrameError(f"frame protocol version {body.get('v')!r}; this build speaks {VERSION}")
    frame_type = body.pop("t", None)
    body.pop("v")
    checker = _CHECKS.get(frame_type) if isinstance(frame_type, str) else None
    if checker is None:
        raise FrameError(f"unknown frame type {frame_type!r}")
    try:
        checker(body)
    except InvalidInput as exc:  # a channel name that does not parse, say
        raise FrameError(str(exc)) from exc
    return Frame(frame_type, body)


def check_vectors(raw: Any) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict):
        raise FrameError("vectors must map channels to {origin: seq}")
    for channel, vector in raw.items():
        try:
            Channel.parse(channel)  # vectors are keyed by canonical names, as the log is
        except InvalidInput as exc:
            raise FrameError(f"vectors: {exc}") from exc
        if not isinstance(vector, dict) or not all(
            isinstance(o, str) and isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEQ
            for o, s in vector.items()
        ):
            raise FrameError(f"version vector of {channel!r} must map origins to seqs 0..{MAX_SEQ}")
    return raw


def _frame_number(body: dict[str, Any]) -> None:
    n = body.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise FrameError("frame number 'n' must be an int >= 0")


def _hello(body: dict[str, Any]) -> None:
    if not isinstance(body.get("replica"), str):
        raise FrameError("hello needs the sender's replica id")
    try:
        check_replica_id(body["replica"], "the hello's replica id")  # it names the peer in logs and metrics
    except InvalidInput as exc:
        raise FrameError(str(exc)) from exc
    body["channels"] = list(parse_channels(body.get("channels", [])))  # decode_frame maps its errors
    if body.get("mode", "eager") not in MODES:
        raise FrameError(f"hello mode must be one of {MODES}")
    interval = body.get("interval_ms", 0)
    if not isinstance(interval, int) or isinstance(interval, bool) or not 0 <= interval <= 3_600_000:
        raise FrameError("hello interval_ms must be an int between 0 and 3600000")
    check_vectors(body.get("vectors", {}))
    versions = body.get("versions", [1])
    if (
        not isinstance(versions, list)
        or not 0 < len(versions) <= 16
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in versions)
    ):
        raise FrameError("hello versions must list the payload versions the sender reads")


def payload_version(hello: dict[str, Any]) -> int:
    """The payload version to send a peer: the highest both read (1 if it announces none)."""
    common = set(hello.get("versions", [1])) & set(wire.VERSIONS)
    return max(common) if common else 1


def _deltas(body: dict[str, Any]) -> None:
    _frame_number(body)
    if not isinstance(body.get("payload"), bytes):
        raise FrameError("deltas frame needs a binary payload")


def _ack(body: dict[str, Any]) -> None:
    _frame_number(body)
    check_vectors(body.get("vectors", {}))


def _error(body: dict[str, Any]) -> None:
    if not isinstance(body.get("code"), str) or not isinstance(body.get("message"), str):
        raise FrameError("error frame needs a code and a message")
    if "retry_after" in body:
        retry_after = body["retry_after"]
        if (
            not isinstance(retry_after, (int, float))
            or isinstance(retry_after, bool)
            or not 0 <= retry_after <= MAX_RETRY_AFTER
        ):
            raise FrameError(f"error frame retry_after must be seconds between 0 and {MAX_RETRY_AFTER}")


def _mode(body: dict[str, Any]) -> None:
    if body.get("mode") != "pull":
        raise FrameError("mode frame only switches a subscription to 'pull'")


def _resume(body: dict[str, Any]) -> None:
    check_vectors(body.get("vectors", {}))


_CHECKS = {
    "hello": _hello,
    "deltas": _deltas,
    "ack": _ack,
    "error": _error,
    "mode": _mode,
    "resume": _resume,
}
