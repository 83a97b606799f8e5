"""What verifying origin signatures costs on the remote apply path: signed vs unsigned payloads.

Setup (not timed): the workload of ``bench_remote_apply.py`` (a source replica's deltas, a mix of
kinds, users and topics), exported as version 2 payloads (every delta signed by its origin, the
origin's public key carried along) and the same payloads as version 1 (no signatures).

Timed, interleaved round by round, each on a fresh file-backed replica:

- signed: ``Replica.apply`` of the version 2 payloads: the first delta pins the origin's key, every
  delta is verified (SHA-256 of its fields, one Ed25519 verification) before it is applied;
- unsigned (the baseline): ``Replica.apply`` of the same deltas as version 1 payloads, taken from a
  caller that vouches for them, so nothing is verified.

Also reported (not a ratio): Ed25519 sign and verify per delta, alone, over the workload's deltas.

Run: ``python benchmarks/bench_verify.py`` (``--quick`` for about 10 s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import cast

import _common
from bench_remote_apply import Workload, build

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.engine.signing import Signer, verify
from crdtmem.store.sqlite import Synchronous


async def apply_all(path: Path, payloads: list[bytes], expected: int, synchronous: str) -> tuple[int, float]:
    async with Replica(path, replica_id="target", synchronous=cast(Synchronous, synchronous)) as target:
        applied = 0
        start = time.perf_counter()
        for payload in payloads:
            result = await target.apply(payload)
            applied += result.applied
        elapsed = time.perf_counter() - start
    assert applied == expected, f"applied {applied} of {expected}"
    return applied, elapsed


def crypto_alone(workload: Workload) -> tuple[float, float]:
    """Microseconds per delta to sign and to verify, over the workload's deltas."""
    deltas = [d for p in workload.payloads for d in wire.decode(p).deltas]
    signer = Signer.generate()
    start = time.perf_counter()
    signed = [dataclasses.replace(d, signature=signer.sign(d, d.seqs, d.also)) for d in deltas]
    sign_us = (time.perf_counter() - start) / len(deltas) * 1e6
    start = time.perf_counter()
    ok = sum(verify(signer.public, d) for d in signed)
    verify_us = (time.perf_counter() - start) / len(deltas) * 1e6
    assert ok == len(deltas)
    return sign_us, verify_us


async def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--deltas", type=int, default=None, help="deltas to generate (default 10000, quick 2000)")
    p.add_argument("--batch", type=int, default=None, help="deltas per payload (default 2000, quick 1000)")
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL", "OFF"])
    args = p.parse_args()
    deltas = args.deltas or (2_000 if args.quick else 10_000)
    batch = args.batch or (1_000 if args.quick else 2_000)
    rounds = _common.rounds_for(args)

    _common.print_machine()
    workload = await build(deltas, batch)
    signed = workload.payloads
    assert all(d.signature is not None for p in signed for d in wire.decode(p).deltas), "unsigned workload"
    unsigned = [wire.encode(wire.decode(p), 1) for p in signed]
    print(
        f"{rounds} interleaved rounds; payload bytes signed {sum(map(len, signed)):,}, "
        f"unsigned {sum(map(len, unsigned)):,}",
        flush=True,
    )
    with _common.workdir(args) as root:
        fresh = _common.FreshPaths(root)

        async def signed_case() -> tuple[int, float]:
            return await apply_all(fresh("signed"), signed, workload.deltas, args.synchronous)

        async def unsigned_case() -> tuple[int, float]:
            return await apply_all(fresh("unsigned"), unsigned, workload.deltas, args.synchronous)

        await signed_case()  # warm-up, not measured
        await unsigned_case()
        cases = {"apply signed (verified)": signed_case, "apply unsigned (not verified)": unsigned_case}
        series = await _common.interleave(cases, rounds, "deltas/s")
        if args.profile:
            await _common.profile_async("apply signed", signed_case)
    sign_us, verify_us = crypto_alone(workload)
    labels = list(cases)
    _common.print_table(
        f"Verification on the apply path: {workload.deltas} deltas, payloads of {batch}",
        series,
        [f"alone, per delta: sign {sign_us:.1f} us, verify {verify_us:.1f} us (SHA-256 + Ed25519)"],
    )
    ratio = _common.ratio(series, labels[0], labels[1], "signed / unsigned apply throughput")
    return _common.finish(args, "verify", series, [ratio], {"sign_us": sign_us, "verify_us": verify_us})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
