"""Every code sample in README.md and docs/ is executed: Python blocks run as scripts in a fresh
directory; shell blocks run their `crdtmem ...` commands (a `serve` is started, checked to be serving,
and stopped). Installation lines (`python3 -m venv`, `pip install`) are what CI itself runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for number, match in enumerate(FENCE.finditer(path.read_text())):
            if match.group(1) == language:
                found.append((f"{path.name}#{number}", match.group(2)))
    return found


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_python_sample_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "sample.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"


def _commands() -> list[tuple[str, str]]:
    found = []
    for where, code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            for part in re.split(r"\s*&&\s*", line.strip()):
                if part.startswith("crdtmem "):
                    found.append((where, part))
    return found


@pytest.mark.parametrize(("where", "command"), _commands(), ids=[f"{w}:{c[:40]}" for w, c in _commands()])
def test_shell_sample_runs(where: str, command: str, tmp_path: Path) -> None:
    argv = shlex.split(os.path.expandvars(command.replace("$LAPTOP_TOKEN", "t" * 24)))
    argv = [sys.executable, "-m", "crdtmem", *argv[1:]]
    if argv[3] == "serve":
        if "--port" in argv:
            argv[argv.index("--port") + 1] = "0"  # samples use fixed ports; tests must not collide
        if "--tokens" in argv:
            tokens = tmp_path / argv[argv.index("--tokens") + 1]
            tokens.write_text(json.dumps({"tokens": []}))
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            assert json.loads(line)["event"] == "serving", (
                f"{where}: {command}: {proc.stderr.read() if proc.stderr else ''}"
            )
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        assert proc.returncode == 0, f"{where}: {command} did not stop cleanly"
        return
    if argv[3] == "reindex":
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import crdtmem; crdtmem.SyncReplica('laptop.db', replica_id='laptop').close()",
            ],
            cwd=tmp_path,
            env=_env(),
            check=True,
        )
        argv[argv.index("--db") + 1] = "laptop.db"
    done = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{where}: {command} failed:\n{done.stdout}\n{done.stderr}"


def test_the_testing_harness_example_runs_as_an_apps_pytest_test(tmp_path: Path) -> None:
    """``crdtmem.testing``'s docstring example, run by pytest with an app's default settings."""
    import crdtmem.testing

    doc = crdtmem.testing.__doc__ or ""
    example = doc.split("::\n", 1)[1]
    lines = [line[4:] if line.startswith("    ") else line for line in example.splitlines()]
    (tmp_path / "test_app.py").write_text("\n".join(lines).strip() + "\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not crdtmem's settings: strict asyncio mode
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
