"""The Embedder port's conformance suite: every embedder runs it (see ``tests/test_embedders.py``).

Subclass :class:`EmbedderSuite`, implement :meth:`EmbedderSuite.make_embedder`, and set ``spec`` (what
:func:`crdtmem.index.embedders.load_embedder` takes to build the same embedder in another process) or
override :meth:`EmbedderSuite.subprocess_setup`. ``tolerance`` is how far two computations of the same
vector may differ (0 for an exact embedder; a neural one may differ in the last float32 bits between a
batch and a single text, because padding changes the order of additions).

The suite checks the contract of :class:`crdtmem.index.base.Embedder` only: dimension, unit length,
order, determinism (within and across processes), batch == single, empty and odd unicode input, bad
input, thread-safety, and that nothing touches the network. What "similar" means is each embedder's own
business and is tested beside it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest

from crdtmem import InvalidInput
from crdtmem.index.base import Embedder

REPO = Path(__file__).resolve().parents[2]

TEXTS = [
    "The user likes dark themes",
    "Meeting with Alice moved to Tuesday at 10:00.",
    "",
    "   \n\t ",
    "!!! ... ???",
    "café",
    "cafe\u0301",  # the same word, decomposed (NFD)
    "用户喜欢深色主题",
    "المستخدم يحب السمات الداكنة",
    "🙂🎉 emoji only? 🙂",
    "Ünïcödé wïth ﬁ ligatures and \uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 (fullwidth) letters",
    "\ud800 a lone surrogate, as JSON can carry",
    "word " * 2000,
]


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def max_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    assert len(a) == len(b)
    return max(
        (abs(x - y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True)), default=0.0
    )


def _refuse_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"an embedder tried to use the network: {args!r}")


NETWORK_GUARD = """
import socket
def _refuse(*args, **kwargs):
    raise AssertionError(f"an embedder tried to use the network: {args!r}")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


class EmbedderSuite:
    spec: ClassVar[str | None] = None
    tolerance: ClassVar[float] = 0.0
    unit_tolerance: ClassVar[float] = 1e-9

    def make_embedder(self) -> Embedder:
        raise NotImplementedError

    def subprocess_setup(self) -> str:
        """Python source that binds ``embedder`` to a fresh instance of the embedder under test."""
        assert self.spec is not None, "set spec or override subprocess_setup()"
        return f"from crdtmem.index.embedders import load_embedder\nembedder = load_embedder({self.spec!r})\n"

    @pytest.fixture(autouse=True)
    def no_network(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("connect", "connect_ex"):
            monkeypatch.setattr(socket.socket, name, _refuse_network)
        monkeypatch.setattr(socket, "create_connection", _refuse_network)
        monkeypatch.setattr(socket, "getaddrinfo", _refuse_network)

    @pytest.fixture
    def embedder(self) -> Embedder:
        return self.make_embedder()

    def assert_unit(self, vector: Sequence[float], dim: int) -> None:
        assert len(vector) == dim
        assert all(type(x) is float and math.isfinite(x) for x in vector)
        assert abs(math.sqrt(math.fsum(x * x for x in vector)) - 1.0) <= self.unit_tolerance

    # -- the contract ------------------------------------------------------------------------------

    def test_is_an_embedder_with_a_model_name_and_size(self, embedder: Embedder) -> None:
        assert isinstance(embedder, Embedder)
        assert isinstance(embedder.model, str) and embedder.model.strip()
        assert isinstance(embedder.dim, int) and embedder.dim > 0

    def test_every_vector_has_the_dimension_and_unit_length(self, embedder: Embedder) -> None:
        vectors = embedder.embed(TEXTS)
        assert len(vectors) == len(TEXTS)
        for vector in vectors:
            self.assert_unit(vector, embedder.dim)

    def test_no_texts_give_no_vectors(self, embedder: Embedder) -> None:
        assert embedder.embed([]) == []
        assert embedder.embed(()) == []

    def test_a_batch_equals_the_texts_one_by_one(self, embedder: Embedder) -> None:
        batch = embedder.embed(TEXTS)
        single = [embedder.embed([text])[0] for text in TEXTS]
        assert max_difference(batch, single) <= self.tolerance

    def test_order_follows_the_input(self, embedder: Embedder) -> None:
        forward = embedder.embed(TEXTS)
        backward = embedder.embed(TEXTS[::-1])
        assert max_difference(forward, backward[::-1]) <= self.tolerance

    def test_the_same_text_gives_the_same_vector(self, embedder: Embedder) -> None:
        first = embedder.embed(TEXTS)
        again = embedder.embed(TEXTS)
        assert max_difference(first, again) <= self.tolerance
        duplicated = embedder.embed(["same text", "same text"])
        assert max_difference(duplicated[:1], duplicated[1:]) <= self.tolerance

    def test_another_process_computes_the_same_vectors(self, embedder: Embedder) -> None:
        """Vectors stored by one process are searched by another, so they must agree, whatever
        PYTHONHASHSEED is (a salted hash() would fail here); the child also refuses the network."""
        script = (
            NETWORK_GUARD
            + self.subprocess_setup()
            + textwrap.dedent(
                """
            import json, sys
            texts = json.loads(sys.stdin.read())
            sys.stdout.write(json.dumps({"model": embedder.model, "dim": embedder.dim,
                                         "vectors": embedder.embed(texts)}))
            """
            )
        )
        env = {**os.environ, "PYTHONHASHSEED": "12345", "HF_HUB_OFFLINE": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(TEXTS, ensure_ascii=True),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        child = json.loads(done.stdout)
        assert (child["model"], child["dim"]) == (embedder.model, embedder.dim)
        assert max_difference(child["vectors"], embedder.embed(TEXTS)) <= self.tolerance

    def test_empty_and_blank_texts_are_valid_unit_vectors(self, embedder: Embedder) -> None:
        blank = ["", " ", "\n\t  ", "\u3000"]
        vectors = embedder.embed(blank)
        for vector in vectors:
            self.assert_unit(vector, embedder.dim)
        with_neighbours = embedder.embed(["before", "", "after"])
        alone = embedder.embed(["before", "after"])
        assert max_difference([with_neighbours[0], with_neighbours[2]], alone) <= self.tolerance

    def test_unicode_forms_of_one_word_agree(self, embedder: Embedder) -> None:
        composed, decomposed = embedder.embed(["café", "cafe\u0301"])
        assert dot(composed, decomposed) >= 0.99

    def test_a_lone_surrogate_is_embedded_not_refused(self, embedder: Embedder) -> None:
        (vector,) = embedder.embed(["bad \ud800 half pair"])
        self.assert_unit(vector, embedder.dim)

    def test_identical_text_scores_one_and_a_close_copy_beats_an_unrelated_text(
        self, embedder: Embedder
    ) -> None:
        base, copy, near, far = embedder.embed(
            [
                "The user prefers dark mode in the editor",
                "The user prefers dark mode in the editor",
                "The user prefers dark mode in the editor!",
                "Quarterly invoice totals for the Berlin office",
            ]
        )
        assert dot(base, copy) == pytest.approx(1.0, abs=1e-6)
        assert dot(base, near) > dot(base, far)

    def test_threads_share_one_embedder(self, embedder: Embedder) -> None:
        """The indexer calls embed() from worker threads (asyncio.to_thread)."""
        expected = embedder.embed(TEXTS[:6])
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: embedder.embed(TEXTS[:6]), range(8)))
        for result in results:
            assert max_difference(result, expected) <= self.tolerance

    def test_a_single_string_is_refused(self, embedder: Embedder) -> None:
        # A str type-checks as a Sequence[str]; only the runtime check stops one vector per character.
        with pytest.raises(InvalidInput, match="single string"):
            embedder.embed("not a list")

    def test_a_non_string_item_is_refused(self, embedder: Embedder) -> None:
        with pytest.raises(InvalidInput):
            embedder.embed(["fine", 42])  # type: ignore[list-item]
