"""benchmarks/_bus_stages.py: the stage stamps of ``bench_bus.py --breakdown`` add up per write."""

from __future__ import annotations

from types import ModuleType

from tests.support.scripts import load_benchmark


def _stages() -> ModuleType:
    return load_benchmark("_bus_stages")


def test_a_write_with_every_stage_is_kept_and_its_stages_sum_to_its_total() -> None:
    mod = _stages()
    stages = mod.Stages()
    stages.begin()
    for name in ("a_commit", "publish", "b_receive", "b_commit"):
        stages.stamp(name)
        stages.stamp(name)  # a second stamp of a stage (another message) does not move it
    stages.end(keep=True)
    assert stages.totals and all(len(v) == 1 for v in stages.durations.values())
    assert abs(sum(v[0] for v in stages.durations.values()) - stages.totals[0]) < 1e-9
    assert "publish -> B's consumer receives" in stages.report({"p50, bare": 0.0005})


def test_a_warmup_write_or_one_missing_a_stage_is_not_kept() -> None:
    mod = _stages()
    stages = mod.Stages()
    stages.begin()
    stages.stamp("a_commit")
    stages.end(keep=True)  # no publish, no receive: incomplete
    stages.begin()
    for name in ("a_commit", "publish", "b_receive", "b_commit"):
        stages.stamp(name)
    stages.end(keep=False)
    published = stages.stamps["publish"]
    stages.stamp("publish")  # between writes: ignored
    assert stages.totals == [] and stages.stamps["publish"] == published
    assert stages.report({}) == "stage breakdown: no complete samples"
