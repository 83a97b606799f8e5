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


def test_stamps_from_two_processes_are_kept_as_one_write() -> None:
    mod = _stages()
    stages = mod.Stages()
    writer = {"start": 10.0, "a_commit": 10.0005, "publish": 10.0007}  # node A's process
    reader = {"b_receive": 10.0012, "b_commit": 10.0020, "event": 10.0023}  # node B's process
    stages.record(writer)  # one side alone is not a write
    stages.record({**writer, **reader})
    assert len(stages.totals) == 1 and abs(stages.totals[0] - 0.0023) < 1e-9
    assert abs(stages.durations["B apply and commit"][0] - 0.0008) < 1e-9
