"""mem0's ``Memory`` and ``AsyncMemory`` on a crdtmem replica: replace ``from mem0 import Memory``
with ``from crdtmem.mem0 import Memory`` and the calls, arguments and answers stay mem0's::

    from crdtmem.mem0 import Memory

    m = Memory.from_config({"path": "memories.db"})
    m.add("I'm vegetarian and allergic to nuts", user_id="alice", metadata={"category": "diet"})
    hits = m.search("what can alice eat?", filters={"user_id": "alice", "category": "diet"})
    print(hits["results"][0]["memory"])

Every memory is a crdtmem fact: its text is the content, ``user_id`` its scope (it syncs on
``user:{user_id}:memories``), ``agent_id`` and ``run_id`` its source (``run_id`` is crdtmem's
``session_id``), other metadata its metadata. Filters are mem0's grammar, evaluated by the store
(:mod:`crdtmem.document.query`). Two ``Memory`` objects on two replicas see each other's memories
once their replicas sync (``crdtmem serve --peer``, or ``export_since``/``apply`` on ``.replica``).

What differs from mem0:

- No LLM is bundled. ``add(..., infer=True)`` needs an *extractor* (:class:`Extractor`: messages and
  the related memories in, ADD/UPDATE/DELETE operations out), given in the config; without one,
  ``infer=True`` is an error that says so, and ``add`` by default stores the messages as they are
  (what mem0 does with ``infer=False``).
- ``reset()`` deletes every memory this replica holds, and the deletes replicate like any others.
- ``history()`` lists the changes this replica applied (every replica's, merged), with ``event``
  ADD, UPDATE or DELETE.
- Search scores are cosine similarities from the replica's index: lexical (shared words) with the
  default embedder, by meaning with ``{"embedder": "minilm"}``.
"""

from ._async import AsyncMemory
from ._shapes import DEFAULT_PATH_ENV, Extractor, item
from ._sync import Memory

__all__ = ["DEFAULT_PATH_ENV", "AsyncMemory", "Extractor", "Memory", "item"]
