"""A JetStream publish handed to the socket from the caller's own stack, not a task's later turn.

An own write's commit listener hands its message to the bus at once: nats-py's ``publish_async``
is stepped on the listener's stack (it buffers the command without suspending when its limits
allow), and the buffered command is written to the socket straight away instead of at the
flusher task's next turn. Between the commit and the socket there is then no turn of the event
loop: the rest of the write (its records, its event) runs while the message travels.

::

    start_publish(...) per message ─▶ publish_async stepped now ─▶ done: the PubAck future, the
      command buffered │ suspended (a limit was reached, the first publish's reply subscription):
      the rest runs in a task, as any coroutine would ─▶ the returned future: whether the stream
      had the message already (a duplicate)
    write_pending(nc) once for all of them ─▶ the buffer written to the socket now

The socket write reads what nats-py's own inline flush reads (the client's pending buffer and
transport, nats-py 2.x); where those are missing the flusher task writes as it always does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..eager import start_now


def start_publish(js: Any, subject: str, data: bytes, msg_id: str, stream: str) -> asyncio.Future[bool]:
    """Publish ``data`` to ``subject`` of ``stream`` (deduplicated by ``msg_id``) now, into the
    connection's buffer (:func:`write_pending` hands the buffer to the socket); the future is
    whether JetStream had it already, or fails as ``publish_async`` or its PubAck fails."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[bool] = loop.create_future()
    started = start_now(js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id}, stream=stream))

    def acked(ack: asyncio.Future[Any]) -> None:
        if outcome.done():
            return
        if ack.cancelled():
            outcome.cancel()
        elif (error := ack.exception()) is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(bool(ack.result().duplicate))

    def published(step: asyncio.Future[asyncio.Future[Any]]) -> None:
        if step.cancelled():
            outcome.cancel()
        elif (error := step.exception()) is not None:
            if not outcome.done():
                outcome.set_exception(error)
        else:
            ack = step.result()
            ack.add_done_callback(acked)
            # a caller that gives up on the outcome (a timeout) gives up the PubAck too, which
            # frees its slot among nats-py's pending publishes
            outcome.add_done_callback(lambda _: ack.cancel())

    started.add_done_callback(published)
    return outcome


def write_pending(nc: Any) -> None:
    """Write the commands nats-py has buffered to the socket now (what its flusher task would do
    at its next turn; it then finds nothing left). Backpressure stays with the flusher's drain."""
    pending = getattr(nc, "_pending", None)
    transport = getattr(nc, "_transport", None)
    if not pending or transport is None or not nc.is_connected or nc.is_connecting:
        return
    transport.writelines(pending[:])
    nc._pending = []
    nc._pending_data_size = 0
