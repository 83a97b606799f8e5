"""Optional dependencies, each named by the extra that installs it (``pip install 'crdtmem[EXTRA]'``).

Code that needs one calls :func:`require` (or imports through :func:`import_optional`) before its
first use, so a missing one is a one-line :class:`~crdtmem.errors.MissingExtra` naming the extra,
never an ``ImportError`` traceback from deep inside::

    require("hypothesis", "testing", "hypothesis (for crdtmem.testing)")
    st = import_optional("sentence_transformers", "minilm", "sentence-transformers")
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .errors import MissingExtra


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless ``module`` can be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
        found = False
    if not found:
        raise MissingExtra(f"{what} is not installed: pip install 'crdtmem[{extra}]'")


def import_optional(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency by name. Through ``import_module`` the result is ``Any``, so
    mypy passes whether or not the extra is installed where it runs."""
    require(module, extra, what)
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:  # e.g. a torch build that does not fit this machine
        raise MissingExtra(
            f"{what} is installed but does not import ({exc}); reinstall 'crdtmem[{extra}]'"
        ) from exc
