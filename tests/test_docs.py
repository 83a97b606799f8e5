"""Every code sample in README.md and docs/ is executed: Python blocks run as scripts in a fresh
directory and must print what their `print(...)  # promise` comments say; shell blocks run their
`crdtmem ...` commands in order in one directory (a `serve` is started, checked to be serving and to
enforce the tokens the block made, and stopped at the end of the block). Installation lines
(`python3 -m venv`, `pip install`) are what CI itself runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(language: str, tag: str = "") -> list[tuple[str, str]]:
    """Fenced blocks of ``language`` whose info string is ``tag`` (```bash session: a shell session
    run whole, by bash, against a node)."""
    found = []
    for path in DOCS:
        for number, match in enumerate(FENCE.finditer(path.read_text())):
            if match.group(1) == language and match.group(2).strip() == tag:
                found.append((f"{path.name}#{number}", match.group(3)))
    return found


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def promised_output(code: str) -> list[str]:
    """The output a sample promises: the comment on each line that is a ``print(...)``, in order."""
    promises = []
    for line in code.splitlines():
        statement, hash_, comment = line.strip().partition("  # ")
        if hash_ and statement.startswith("print("):
            promises.append(comment.strip())
    return promises


def check_promises(where: str, promises: list[str], stdout: str) -> None:
    """Every promised line appears in ``stdout``, in the order of the prints (other lines may be
    between them: a sample may print more than it promises)."""
    lines = iter(line.strip() for line in stdout.splitlines())
    for promise in promises:
        assert any(line == promise for line in lines), (
            f"{where} promised {promise!r} (in this order) but printed:\n{stdout}"
        )


def test_promises_are_read_from_print_comments_and_checked_in_order() -> None:
    code = 'x = 1  # not a print\nprint(x)  # 1\nprint("a")\nprint([2])  # [2]\n'
    assert promised_output(code) == ["1", "[2]"]
    check_promises("here", ["1", "[2]"], "1\na\n[2]\n")
    for wrong in ("[2]\n1\n", "1\n[3]\n", ""):
        with pytest.raises(AssertionError, match="promised"):
            check_promises("here", ["1", "[2]"], wrong)


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_python_sample_runs_and_prints_what_it_promises(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "sample.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
    check_promises(where, promised_output(code), done.stdout)


def shell_commands(code: str) -> list[str]:
    """The ``crdtmem ...`` commands of a shell block, in order (installation steps are CI's own)."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s*&&\s*", line.strip()):
            if part.startswith("crdtmem "):
                found.append(part)
    return found


SHELL_BLOCKS = [(where, code) for where, code in blocks("bash") if shell_commands(code)]


@pytest.mark.parametrize(("where", "code"), SHELL_BLOCKS, ids=[w for w, _ in SHELL_BLOCKS])
def test_shell_sample_runs(where: str, code: str, tmp_path: Path) -> None:
    """A block's commands run in order in one directory, as a reader would type them: a ``token``
    command writes the tokens file a later ``serve --tokens`` reads, and servers stay up until the
    block ends so a ``--peer`` reaches the node started before it. Fixed ports become free ones (the
    same mapping for ``--port`` and peer URLs) and any host becomes loopback."""
    ports: dict[str, str] = {}
    secrets: list[str] = []
    servers: list[subprocess.Popen[str]] = []
    try:
        for command in shell_commands(code):
            argv = shlex.split(os.path.expandvars(command.replace("$LAPTOP_TOKEN", "t" * 24)))
            argv = [_local(arg, ports) for arg in argv[1:]]
            if argv[0] == "serve":
                servers.append(_serve(where, command, argv, tmp_path, secrets))
                continue
            if argv[0] == "reindex":
                _make_replica(tmp_path, argv[argv.index("--db") + 1])
            done = subprocess.run(
                [sys.executable, "-m", "crdtmem", *argv],
                cwd=tmp_path,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{where}: {command} failed:\n{done.stdout}\n{done.stderr}"
            if argv[0] == "token":
                secrets.append(done.stdout.strip())
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            proc.communicate(timeout=30)
    for proc in servers:
        assert proc.returncode == 0, f"{where}: a server did not stop cleanly"


def _local(arg: str, ports: dict[str, str]) -> str:
    """``arg`` with fixed ports mapped to free ones and hosts made loopback."""
    if arg == "0.0.0.0":
        return "127.0.0.1"
    match = re.fullmatch(r"(http://127\.0\.0\.1:)?(87\d\d)", arg)
    if match is None:
        return arg
    port = ports.setdefault(match[2], str(free_port()))
    return f"{match[1] or ''}{port}"


def _serve(where: str, command: str, argv: list[str], cwd: Path, secrets: list[str]) -> subprocess.Popen[str]:
    if "--peer-token-file" in argv and not (cwd / argv[argv.index("--peer-token-file") + 1]).exists():
        (cwd / argv[argv.index("--peer-token-file") + 1]).write_text("t" * 24 + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crdtmem", *argv],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"{where}: {command} did not serve:\n{err}")
    url = json.loads(line)["url"]
    if "--tokens" in argv:
        tokens = json.loads((cwd / argv[argv.index("--tokens") + 1]).read_text())["tokens"]
        assert sorted(t["token"] for t in tokens) == sorted(secrets), "serve reads the tokens just made"
        assert _status(url, None) == 401
        assert all(_status(url, secret) == 200 for secret in secrets)
    else:
        assert _status(url, None) == 200
    return proc


def _status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url + "/v1/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _make_replica(cwd: Path, db: str) -> None:
    subprocess.run(
        [sys.executable, "-c", f"import crdtmem; crdtmem.SyncReplica({db!r}, replica_id='laptop').close()"],
        cwd=cwd,
        env=_env(),
        check=True,
    )


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


SESSIONS = blocks("bash", "session")


@pytest.mark.parametrize(("where", "code"), SESSIONS, ids=[w for w, _ in SESSIONS])
def test_cli_session_runs(where: str, code: str, tmp_path: Path) -> None:
    """A documented CLI session, run by bash as written, against a real node."""
    from tests.support.processes import ServerProcess

    node = ServerProcess(tmp_path, "docs", extra=["--index"]).start()
    try:
        script = code.replace("http://127.0.0.1:8700", node.url)
        env = dict(_env(), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        node.stop()
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"


FLEETS = blocks("bash", "fleet")
FLEET_PORT = re.compile(r"(?<=[: ])([468]\d{3})\b")


@pytest.mark.parametrize(("where", "code"), FLEETS, ids=[w for w, _ in FLEETS])
def test_fleet_session_runs(where: str, code: str, tmp_path: Path) -> None:
    """A documented fleet (NATS servers and crdtmem nodes started in the background), run by bash as
    written, with every fixed port (NATS clients, routes and monitoring, crdtmem nodes) moved to a
    free one. The block cleans up after itself (a trap on EXIT)."""
    ports: dict[str, str] = {}
    script = FLEET_PORT.sub(lambda m: ports.setdefault(m[1], str(free_port())), code)
    env = dict(_env(), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(tmp_path.glob("*.log")))
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}\n{logs}"
    assert len(ports) >= 12, ports  # every server and node got its own port
    assert "green tea" in done.stdout
    assert "'ready': True" in done.stdout
