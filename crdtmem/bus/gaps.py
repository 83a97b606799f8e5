"""Where a stream dropped entries before this node's consumer received them.

A JetStream consumer skips messages its stream no longer holds without a word, so the node looks
for the holes itself, per stream, before it acknowledges anything past one:

- **on binding its consumer**: the stream's first sequence is past the consumer's ack floor + 1
  (the node was down longer than the stream's limits keep messages), or the consumer is new and the
  stream no longer begins at sequence 1 (a new node, or a node whose channels changed);
- **while consuming**: a batch's stream sequences jump over some, and the stream's first sequence,
  read after the fetch, is past the start of the jump (had those messages still been there, the
  consumer would have delivered them, or they were not on its channels).

A filtered consumer cannot tell a dropped message from one on another channel, so the first check
may find a hole where none of its messages were dropped: that costs a states fetch, never an entry.
What is found is recorded in :class:`~crdtmem.bus.states.Needs` (durably, before the batch is
acknowledged) and filled from document states.
"""

from __future__ import annotations

from typing import Any

from .states import Needs


class Gaps:
    """The stream sequence each consumer has seen last, and the holes found (module docstring)."""

    def __init__(self, needs: Needs):
        self.needs = needs
        self.last: dict[str, int] = {}

    async def bound(self, js: Any, stream: str, info: Any | None) -> None:
        """The consumer of ``stream`` is bound (``info``: its ConsumerInfo before, None if it is new)."""
        floor = int(info.ack_floor.stream_seq) if info is not None and info.ack_floor is not None else 0
        first = int((await js.stream_info(stream)).state.first_seq)
        self.last[stream] = floor
        if first > floor + 1:
            if info is None:
                why = f"stream {stream} begins at sequence {first}, not 1, for a new consumer"
            else:
                why = f"stream {stream} dropped sequences {floor + 1}-{first - 1} before this node got them"
            self.needs.raise_to(stream, first - 1, why)
            self.last[stream] = first - 1

    async def seen(self, js: Any, stream: str, batch: list[Any]) -> None:
        """Check a fetched batch for jumps before it is applied and acknowledged."""
        last = self.last.get(stream, 0)
        jumps: list[tuple[int, int]] = []
        for msg in batch:
            seq = stream_sequence(msg)
            if seq > last + 1:
                jumps.append((last, seq))
            last = max(last, seq)
        if jumps:
            first = int((await js.stream_info(stream)).state.first_seq)
            for start, seq in jumps:
                if first > start + 1:
                    upto = min(first, seq) - 1
                    why = f"stream {stream} dropped sequences {start + 1}-{upto} before this node got them"
                    self.needs.raise_to(stream, upto, why)
        self.last[stream] = last


def stream_sequence(msg: Any) -> int:
    """The stream sequence of a JetStream message, read from its reply subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...``, or with a domain and an account
    hash after ``ACK``) without building nats-py's whole ``Msg.metadata`` (a datetime and three
    objects a message, on every message of every batch); anything else is left to nats-py."""
    found = _reply_field(msg, 5, 7)
    return found if found is not None else int(msg.metadata.sequence.stream)


def pending_count(msg: Any) -> int:
    """How many messages the consumer had still to deliver after ``msg`` (JetStream's count, the
    reply subject's last number but one), read as :func:`stream_sequence` reads its sequence."""
    found = _reply_field(msg, 8, 10)
    return found if found is not None else int(getattr(msg.metadata, "num_pending", 0) or 0)


def _reply_field(msg: Any, v1: int, v2: int) -> int | None:
    """Token ``v1`` of a 9-token ack subject, or ``v2`` of a longer one (domain, account hash)."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) >= 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        at = v1 if len(tokens) == 9 else v2
        if at < len(tokens) and tokens[at].isascii() and tokens[at].isdigit():
            return int(tokens[at])
    return None
