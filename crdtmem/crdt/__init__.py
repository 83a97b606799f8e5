"""The CRDT types a memory document is made of, one module per type.

Each type lives in a Yrs map (or array) inside the memory's pycrdt ``Doc`` and is changed only inside
a transaction opened by :class:`crdtmem.document.memory.MemoryDoc`. Merge is Yrs' own ``apply_update``;
these modules define what is written so that the merged Yrs state reads as the intended CRDT.
Their docstrings are the specification; ``docs/protocol.md`` gives the byte-level layout.
"""

from .conversation import Conversation, FrozenMessage, Message, MessageList, MessageLog, frozen
from .counter import PNCounter
from .dots import Dot, DotEntry
from .orset import ORSet
from .register import MVRegister, Sibling

__all__ = [
    "Conversation",
    "Dot",
    "DotEntry",
    "FrozenMessage",
    "MVRegister",
    "Message",
    "MessageList",
    "MessageLog",
    "ORSet",
    "PNCounter",
    "Sibling",
    "frozen",
]
