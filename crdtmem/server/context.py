"""What the routes need of a node: the :class:`NodeContext` port.

Routes are built for a node (``routes(node)``) but never import :mod:`.node`, which imports them;
:class:`~crdtmem.server.node.Node` satisfies this protocol structurally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..access import Principal, TokenTable
    from ..engine.replica import Replica
    from ..metrics import Metrics
    from ..sync.link import Link
    from ..sync.settings import LinkSettings
    from .loopshare import LoopShare


class NodeContext(Protocol):
    replica: Replica
    tokens: TokenTable | None
    metrics: Metrics
    links: set[Link]
    settings: LinkSettings
    max_body_bytes: int
    loop: LoopShare

    @property
    def url(self) -> str: ...

    @property
    def serving(self) -> bool:
        """Whether the HTTP server is up (long-lived streams end when it stops)."""
        ...

    def check_rate(self, principal: Principal, cost: float = 1.0) -> None: ...

    def check_volume(self, principal: Principal, *, deltas: int = 0, size: int = 0) -> None: ...

    def admit_bytes(self, principal: Principal) -> None: ...

    def admit_loop(self, principal: Principal) -> None: ...

    def charge_bytes(self, principal: Principal, size: int) -> None: ...

    def link_settings(self, mode: str, interval_ms: int) -> LinkSettings: ...

    def status(self) -> dict[str, Any]: ...

    def readiness(self) -> dict[str, Any]:
        """``{"ready": bool, "bus": {...} or None}``: whether the node's writes reach its fleet."""
        ...
