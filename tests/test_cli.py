"""The `crdtmem` CLI against a real `crdtmem serve` process: every client command, its output, and
exit codes scripts can trust (0 done, 1 refused, 2 usage, 3 unreachable)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess


def cli(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "crdtmem", *args]
    if url is not None:
        argv += ["--url", url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("cli"), "cli-node", extra=["--index"]).start()
    yield proc
    proc.stop()


def test_add_get_list_search_status(node: ServerProcess) -> None:
    added = cli(
        "add",
        "User prefers dark mode",
        "--kind",
        "preference",
        "--user-id",
        "u1",
        "--tag",
        "ui",
        "--meta",
        "source=chat",
        "--json",
        url=node.url,
    )
    assert added.returncode == 0, added.stderr
    memory = json.loads(added.stdout)
    assert memory["content"] == "User prefers dark mode" and memory["metadata"] == {"source": "chat"}
    assert cli("add", '["milk", "eggs"]', "--kind", "list", "--user-id", "u1", url=node.url).returncode == 0

    shown = cli("get", memory["id"], url=node.url)
    assert shown.returncode == 0 and "User prefers dark mode" in shown.stdout
    listed = cli("list", "--user-id", "u1", url=node.url)
    assert listed.returncode == 0 and "(2 memories)" in listed.stdout and '["milk", "eggs"]' in listed.stdout
    found = cli("search", "dark mode", "--user-id", "u1", "--json", url=node.url)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["memory"]["id"] == memory["id"]
    status = cli("status", url=node.url)
    assert status.returncode == 0 and "replica cli-node" in status.stdout and "index:" in status.stdout
    assert "(0 open conflicts)" in cli("conflicts", url=node.url).stdout


def test_exit_codes(node: ServerProcess, tmp_path: Path) -> None:
    missing = cli("get", "no-such-memory", url=node.url)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    refused = cli("resolve", "no-such-memory", "--field", "content", "--value", "x", url=node.url)
    assert refused.returncode == 1
    bad_kind = cli("add", "x", "--kind", "bogus", url=node.url)
    assert bad_kind.returncode == 2  # argparse
    bad_meta = cli("add", "x", "--meta", "novalue", url=node.url)
    assert bad_meta.returncode == 2 and "KEY=VALUE" in bad_meta.stderr
    unreachable = cli("status", url="http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
    no_db = cli("reindex", "--db", str(tmp_path / "missing.db"))
    assert no_db.returncode == 2 and "no such database" in no_db.stderr


def test_reindex_with_progress(tmp_path: Path) -> None:
    import asyncio

    import crdtmem
    from crdtmem.index import IndexSettings

    async def seed() -> None:
        async with crdtmem.Replica(tmp_path / "r.db", replica_id="r", index=IndexSettings()) as r:
            for i in range(25):
                await r.add(f"memory number {i}", user_id="u1")
            assert r.index is not None
            await r.index.wait_idle()

    asyncio.run(seed())
    done = cli("reindex", "--db", str(tmp_path / "r.db"))
    assert done.returncode == 0, done.stderr
    assert "reindex: 25/25" in done.stderr  # the progress bar (non-TTY form)
    assert "25 memories expected, 25 points; missing 0, stale 0, orphans 0" in done.stdout
    verify = cli("reindex", "--db", str(tmp_path / "r.db"), "--verify-only")
    assert verify.returncode == 0 and verify.stdout.strip().endswith("ok")


def test_token_creates_a_usable_tokens_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    made = cli("token", "--file", str(tokens), "--principal", "user:agent", "--read", "user:*:memories")
    assert made.returncode == 0
    secret = made.stdout.strip()
    entry = json.loads(tokens.read_text())["tokens"][0]
    assert entry == {"token": secret, "principal": "user:agent", "read": ["user:*:memories"], "write": []}
    assert tokens.stat().st_mode & 0o777 == 0o600
    assert cli("token", "--file", str(tokens), "--principal", "nobody").returncode == 2
    assert cli("token", "--file", str(tokens), "--principal", "user:x", "--read", "tenant:").returncode == 2
    bound = cli(
        "token", "--file", str(tokens), "--principal", "user:web", "--origin", "web-1", "--unsigned", "web-1"
    )
    assert bound.returncode == 0
    assert json.loads(tokens.read_text())["tokens"][1]["origins"] == ["web-1"]
    refused = cli("token", "--file", str(tokens), "--principal", "user:web", "--unsigned", "laptop")
    assert refused.returncode == 2 and "not an origin this token may introduce" in refused.stderr
