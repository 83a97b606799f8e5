"""Realistic text for benchmarks: varied English sentences, not a few words repeated.

Compression and embedding costs depend on the text. A 20-word vocabulary compresses several times
better than anything an agent writes, so benchmarks that count bytes draw their sentences from the
docstrings of Python's standard library: real prose, thousands of distinct sentences, the same on
every machine with the same Python.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
from functools import cache

_MODULES = (
    "argparse", "asyncio", "calendar", "collections", "csv", "datetime", "decimal", "difflib", "email",
    "fractions", "ftplib", "gettext", "heapq", "http.client", "http.cookies", "imaplib", "json",
    "logging", "mailbox", "pathlib", "pickle", "poplib", "random", "shutil", "smtplib", "statistics",
    "string", "subprocess", "tarfile", "textwrap", "threading", "urllib.parse", "zipfile", "inspect",
    "typing", "functools", "unittest", "configparser", "contextlib", "dataclasses", "enum", "ipaddress",
    "locale", "optparse", "pdb", "pprint", "queue", "sched", "selectors", "socket", "ssl", "tempfile",
    "trace", "traceback", "uuid", "wave", "weakref", "xml.etree.ElementTree",
)  # fmt: skip
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@cache
def sentences() -> tuple[str, ...]:
    """Distinct sentences of 6-40 words from the standard library's docstrings, in a fixed order."""
    found: dict[str, None] = {}
    for name in _MODULES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""]
        for _, member in sorted(vars(module).items()):
            if inspect.isclass(member) or inspect.isfunction(member):
                doc = member.__doc__
                docs.append(doc if isinstance(doc, str) else "")
        for doc in docs:
            for raw in _SENTENCE.split(" ".join(doc.split())):
                words = raw.split()
                if 6 <= len(words) <= 40 and raw[0].isupper() and raw[-1] in ".!?" and ">>>" not in raw:
                    found[raw] = None
    return tuple(found)


def sentence(rng: random.Random) -> str:
    """One sentence, chosen by ``rng``."""
    pool = sentences()
    return pool[rng.randrange(len(pool))]


def text(rng: random.Random, words: int) -> str:
    """About ``words`` words of consecutive-looking prose: sentences chosen by ``rng``."""
    parts: list[str] = []
    count = 0
    while count < words:
        chosen = sentence(rng)
        parts.append(chosen)
        count += len(chosen.split())
    return " ".join(parts)
