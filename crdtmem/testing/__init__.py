"""crdtmem's property-based test harness, for crdtmem itself and for apps that embed it.

Five parts (they need hypothesis: ``pip install 'crdtmem[testing]'``):

- :mod:`~crdtmem.testing.strategies`: hypothesis strategies for names, channels, memories
  (:func:`memory_specs`) and operations on them (:func:`operations`), each a small dataclass with
  ``await op.apply(replica, memory_id)``.
- :mod:`~crdtmem.testing.network`: :class:`SimulatedNetwork`, which carries real ``export_since`` /
  ``apply`` payloads between in-process replicas and drops, duplicates, delays, reorders, truncates
  and corrupts them, and partitions and heals; deterministic given a ``random.Random``.
- :mod:`~crdtmem.testing.ledger`: the :class:`AcknowledgedWrites` ledger, which knows exactly what
  every replica must hold after a full exchange, so a lost write cannot hide.
- :mod:`~crdtmem.testing.checks`: :func:`assert_converged`, :func:`assert_store_consistent`,
  :func:`assert_acknowledged_present` (a replica against the ledger) and
  :func:`assert_forgotten_absent`, reading replicas as :mod:`~crdtmem.testing.state` does.
- :mod:`~crdtmem.testing.machine`: :class:`ReplicaMachine`, a hypothesis ``RuleBasedStateMachine``
  running replicas on SQLite files under all of the above plus restarts; subclass it to add rules.

An app checks that its own agents' memories survive a bad network like this (a pytest test; the
``asyncio`` mark comes from pytest-asyncio, installed separately)::

    import random

    import pytest
    from crdtmem import Replica
    from crdtmem.testing import (
        AcknowledgedWrites, Faults, SimulatedNetwork, assert_acknowledged_present, assert_converged,
    )
    from crdtmem.testing.strategies import AddItems, MemorySpec

    @pytest.mark.asyncio
    async def test_shopping_list_survives_chaos():
        net = SimulatedNetwork(random.Random(7), Faults.chaos())
        acked = AcknowledgedWrites()
        async with Replica(None, replica_id="phone") as phone, Replica(None, replica_id="laptop") as laptop:
            net.join(phone)
            net.join(laptop)
            memory = await acked.create(phone, MemorySpec("list", ["milk"], user_id="u1"))
            await net.exchange("phone", "laptop")
            await acked.run(laptop, memory.id, AddItems(("eggs",)))
            await acked.run(phone, memory.id, AddItems(("bread",)))
            await net.settle()  # heal, then a full exchange over a perfect link
            assert_converged([phone, laptop])
            for replica in (phone, laptop):
                assert_acknowledged_present(replica, acked)
"""

from ..extras import require

require("hypothesis", "testing", "hypothesis, which crdtmem.testing needs,")

from .checks import (  # noqa: E402
    assert_acknowledged_present,
    assert_converged,
    assert_forgotten_absent,
    assert_store_consistent,
    canonical_state,
)
from .ledger import AcknowledgedWrites  # noqa: E402
from .machine import ReplicaMachine, all_channels  # noqa: E402
from .network import Delivery, Faults, Message, NetworkStats, SimulatedNetwork  # noqa: E402
from .strategies import MemorySpec, Operation, memory_specs, operations  # noqa: E402

__all__ = [
    "AcknowledgedWrites",
    "Delivery",
    "Faults",
    "MemorySpec",
    "Message",
    "NetworkStats",
    "Operation",
    "ReplicaMachine",
    "SimulatedNetwork",
    "all_channels",
    "assert_acknowledged_present",
    "assert_converged",
    "assert_forgotten_absent",
    "assert_store_consistent",
    "canonical_state",
    "memory_specs",
    "operations",
]
