"""The ``crdtmem`` command line: the parser (:mod:`.main`), REST client commands, ``serve`` and ``demo``."""

from .main import main

__all__ = ["main"]
