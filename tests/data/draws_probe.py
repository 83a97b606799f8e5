"""Run only by tests/test_hypothesis_selection.py: records the examples a derandomized test draws."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=200)
@given(st.integers(), st.text(), st.floats(allow_nan=False))
def test_drawn_examples(n: int, s: str, x: float) -> None:
    with open(os.environ["CRDTMEM_DRAWS_OUT"], "a", encoding="utf-8") as out:
        out.write(repr((n, s, x)) + "\n")
