"""tests/conftest.py: a derandomized hypothesis test draws the same examples whichever test files are
collected with it, so a failure in the full suite reproduces when its file runs alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _drawn(out: Path, *also_collected: str) -> list[str]:
    """The examples tests/data/draws_probe.py draws in a default run that also collects (but does
    not run) the given test files."""
    env = {**os.environ, "CRDTMEM_DRAWS_OUT": str(out)}
    env.pop("CRDTMEM_HYPOTHESIS", None)  # the default (fixed) profile, whatever this run uses
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "drawn_examples"]
    subprocess.run(
        [*command, "tests/data/draws_probe.py", *also_collected],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out.read_text().splitlines()


def test_a_test_draws_the_same_examples_whichever_files_are_collected(tmp_path: Path) -> None:
    alone = _drawn(tmp_path / "alone")
    # these files import parts of crdtmem (the HTTP server, the CLI) that the probe does not
    with_others = _drawn(tmp_path / "with_others", "tests/test_rest.py", "tests/test_cli.py")
    assert len(alone) >= 100
    assert alone == with_others


def test_loading_a_benchmark_script_leaves_no_module_behind() -> None:
    from tests.support.scripts import load_benchmark

    assert load_benchmark("run_all").BENCHMARKS
    assert "run_all" not in sys.modules
