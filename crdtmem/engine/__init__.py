"""The replica engine: local writes, remote applies, the commit path and the in-process event feed.

Data flow (top to bottom): :class:`~crdtmem.engine.replica.Replica` (the API; its reads, search and exchange
in :mod:`.reads`, :mod:`.search`, :mod:`.exchange`) -> :mod:`.writes` (the local write path) ->
:mod:`.changes` (a write's delta and document row) or :mod:`.remote` (untrusted payloads: :mod:`.inbound`
triage, :mod:`.causal` delivery) -> :mod:`.publish` (durable commit through :mod:`.committer`, then the
working set, commit listeners and :mod:`.feed` events).
"""
