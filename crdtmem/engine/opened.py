"""The open check every side of a replica's API makes first.

:class:`~crdtmem.engine.replica.Replica` is assembled from one class per side of its API
(:mod:`.reads`, :mod:`.search`, :mod:`.exchange`, :mod:`.writes`; construction, lifecycle and events
in :mod:`.replica` itself); each declares the parts of the replica it reads, and all share this check.
"""

from __future__ import annotations

from ..errors import ReplicaClosed


class Opened:
    """Something that must be started before use: ``start`` sets ``_open``, ``stop`` clears it."""

    _open: bool

    def _check_open(self) -> None:
        if not self._open:
            raise ReplicaClosed("the replica is not open; use 'async with Replica(...)' or start()")
