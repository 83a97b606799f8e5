"""Adapters that make a replica fit agent frameworks: :mod:`crdtmem.integrations.langgraph` (a
LangGraph ``BaseStore``; needs the ``langgraph`` extra)."""
