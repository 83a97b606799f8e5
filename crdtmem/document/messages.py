"""A conversation's messages as a memory document reads them from its ``messages`` array: the
:class:`~crdtmem.crdt.MessageLog` kept in step with that array by its change deltas, so a read after an
append checks only the new messages.

:class:`Messages` is part of :class:`~crdtmem.document.memory.MemoryDoc` (which inherits it); the
appends themselves are writes, in :mod:`.memory`.
"""

from __future__ import annotations

from typing import Any

from ..crdt import MessageList, MessageLog
from .layout import Layout


class Messages(Layout):
    """:meth:`messages` and :meth:`messages_added_since` of a conversation."""

    _log: MessageLog | None = None
    """A conversation's messages, kept in step with its array (built on the first read)."""
    _log_subscription: Any = None

    def _message_log(self) -> MessageLog:
        """The conversation's messages, read in full once and then kept in step by the array's
        change deltas (see :class:`MessageLog`), so a read after an append checks the new messages.

        Inside an open transaction a throwaway log is read in full: the transaction's own changes
        reach the kept one only when it commits.
        """
        if self.doc.txn is not None:
            return MessageLog(self._messages.to_py())
        log = self._log
        if log is None:
            log = self._log = MessageLog(self._messages.to_py())
            self._log_subscription = self._messages.observe(log.follow)
        elif not log.in_step:
            log.reset(self._messages.to_py())
        return log

    def messages(self) -> MessageList:
        """A conversation's messages in array order, as its record holds them (read-only)."""
        return self._message_log().content()

    def messages_added_since(self, earlier: object) -> int | None:
        """For ``earlier``, the content of an earlier record of this conversation: when every change
        since only added messages at the end, how many it held (the messages after that are new).
        None when that is not known (another change, or a record this document did not make)."""
        return self._log.added_since(earlier) if self._log is not None else None
