"""Telling a cancelled task from a failed nats-py call."""

from __future__ import annotations

import asyncio


def reraise_if_cancelled() -> None:
    """nats-py turns a cancellation inside some calls into its own errors (a stalled publish_async
    raises TooManyStalledMsgsError, a fetch on a closed connection ConnectionClosedError): a task
    being cancelled must stop, not take that for a failure to retry."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
