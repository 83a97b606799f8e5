"""The ``crdtmem`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="crdtmem", description="Real-time memory sync for AI agents.")
    parser.add_argument("--version", action="version", version=f"crdtmem {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    from .client import add_parsers

    add_parsers(commands)
    demo = commands.add_parser("demo", help="run replicas that sync, conflict and merge, step by step")
    demo.add_argument("--dir", help="keep the replicas' SQLite files in this directory")
    demo.add_argument("--keep", action="store_true", help="stay up afterwards and print the dashboard URL")
    demo.add_argument(
        "--embedder", default="hashing", help="hashing (default, offline, lexical) or minilm (semantic)"
    )

    mcp = commands.add_parser("mcp", help="serve a node's memories as MCP tools (stdio or streamable HTTP)")
    mcp.add_argument(
        "--url",
        default=os.environ.get("CRDTMEM_URL", "http://127.0.0.1:8700"),
        help="the node (default $CRDTMEM_URL or http://127.0.0.1:8700)",
    )
    mcp.add_argument("--token-file", metavar="FILE", help="stdio: the node token (default $CRDTMEM_TOKEN)")
    mcp.add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or streamable HTTP"
    )
    mcp.add_argument("--host", default="127.0.0.1", help="http: address to bind (default 127.0.0.1)")
    mcp.add_argument("--port", type=int, default=8710, help="http: port (0 picks a free one; default 8710)")

    serve = commands.add_parser("serve", help="serve one replica over HTTP and sync it with peers")
    serve.add_argument("--db", required=True, help="SQLite file of this replica (':memory:' for none)")
    serve.add_argument("--replica-id", help="this replica's id (default: the one stored in --db)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8700, help="port (0 picks a free one; default 8700)")
    serve.add_argument(
        "--peer", action="append", default=[], metavar="URL", help="a node to keep in sync with (repeatable)"
    )
    serve.add_argument(
        "--peer-token",
        help="bearer token this node presents to its peers (visible to other users in ps: prefer "
        "--peer-token-file or $CRDTMEM_PEER_TOKEN)",
    )
    serve.add_argument(
        "--peer-token-file",
        metavar="FILE",
        help="read the peer token from this file (default $CRDTMEM_PEER_TOKEN)",
    )
    serve.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="CHANNEL",
        help="subscribe to this channel (repeatable; default: every channel)",
    )
    serve.add_argument("--tokens", metavar="FILE", help="tokens file (see docs/operating.md)")
    serve.add_argument(
        "--mode",
        choices=["eager", "lazy"],
        default="eager",
        help="how peers push to this node (default eager)",
    )
    serve.add_argument("--interval", type=float, default=1.0, help="lazy batch interval, seconds")
    serve.add_argument("--write-rate", type=float, default=200.0, help="writes/s allowed per token")
    serve.add_argument("--write-burst", type=float, default=400.0, help="write burst per token")
    serve.add_argument(
        "--delta-rate",
        type=float,
        default=2_000.0,
        help="deltas/s a token may push (HTTP and WebSocket), on average; bursts of 5 s (0: no limit)",
    )
    serve.add_argument(
        "--byte-rate",
        type=float,
        default=8.0 * 1024 * 1024,
        help="bytes/s a token may send (request bodies, WebSocket frames), on average; bursts of 5 s "
        "(0: no limit)",
    )
    serve.add_argument(
        "--loop-share",
        type=float,
        default=0.25,  # crdtmem.server.loopshare.LOOP_SHARE (the parser imports no server)
        help="seconds of event-loop time per second a token's requests may take on average while "
        "another token is served, past the first 2 ms of each step (429 when in debt; streams not "
        "counted; 0: no limit)",
    )
    serve.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="change one bound of crdtmem.limits.Limits, e.g. metadata_keys=200 (repeatable; see "
        "docs/operating.md, Security model)",
    )
    serve.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="SQLite durability: FULL survives power loss, NORMAL a killed process",
    )
    serve.add_argument(
        "--compact-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fold the log entries every known peer holds into snapshots this often, and with --bus the "
        "stream messages every node holds (default: never)",
    )
    serve.add_argument(
        "--lease-hours",
        type=float,
        default=24 * 7,
        help="a peer that synced within this long keeps compaction from folding what it lacks",
    )
    serve.add_argument(
        "--retention-hours",
        type=float,
        default=None,
        help="log entries older than this fold even if a peer whose lease ran out lacks them",
    )
    serve.add_argument(
        "--slow-after",
        type=float,
        default=10.0,
        help="seconds a peer may leave frames unacknowledged before it must pull",
    )
    serve.add_argument(
        "--ack-timeout",
        type=float,
        default=10.0,
        help="seconds after which an unacknowledged frame is sent again (default 10)",
    )
    serve.add_argument(
        "--bus",
        metavar="URLS",
        help="NATS JetStream servers of a fleet, comma-separated (nats://h1:4222,nats://h2:4222); "
        "see docs/scale-out.md",
    )
    serve.add_argument(
        "--bus-replicas",
        type=int,
        default=1,
        help="replicas of each stream the node creates (1; 3 in a cluster)",
    )
    serve.add_argument(
        "--bus-principal",
        default="user:bus",
        help="tokens-file principal whose rights apply to what arrives from the bus (default user:bus)",
    )
    serve.add_argument("--bus-creds", metavar="FILE", help="NATS credentials file (accounts with JWTs)")
    serve.add_argument(
        "--bus-delivery",
        choices=["eager", "lazy"],
        default="eager",
        help="eager: publish each committed entry at once (default); lazy: publish the entries "
        "committed in each --bus-batch-interval in batches, one message per channel and origin",
    )
    serve.add_argument(
        "--bus-batch-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between lazy batches (default 1)",
    )
    serve.add_argument(
        "--bus-pull",
        action="store_true",
        help="on connecting, pull what other nodes hold beyond this node's version vectors "
        "(request/reply on the bus), beside reading the streams",
    )
    serve.add_argument(
        "--bus-request-rate",
        type=float,
        default=20.0,
        metavar="N",
        help="states and pull requests a second answered per requesting node (default 20, bursts of 2x)",
    )
    serve.add_argument(
        "--bus-partitions",
        type=int,
        metavar="N",
        help="partitions of the subject mapping (subjects carry p{hash of the id mod N}); every node "
        "of a fleet gives the same N (default: the layout file's, else none)",
    )
    serve.add_argument(
        "--bus-serve-partitions",
        metavar="SET",
        help="the partitions this node serves, e.g. 0-7,12 (default: all): its consumers filter on "
        "one wildcard subject per partition",
    )
    serve.add_argument(
        "--bus-layout",
        metavar="FILE",
        help="JSON file of streams placed before the default ones (a tenant's own stream, its limits); "
        "every node of a fleet gives the same file (docs/scale-out.md)",
    )
    serve.add_argument(
        "--index",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="index memories for search (the default; --no-index: no search, nothing embedded)",
    )
    serve.add_argument(
        "--engine",
        help="index engine: edge (default), qdrant-local, or a Qdrant server URL (default "
        "$CRDTMEM_QDRANT_URL); a server collection is shared: every node may index into it",
    )
    serve.add_argument("--embedder", default="hashing", help="hashing (default), minilm, fastembed:MODEL")
    _index_server_arguments(serve)
    serve.add_argument(
        "--log-level", choices=LEVELS, default="info", help="log records at this level and above"
    )
    serve.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="stderr log lines as text or JSON"
    )
    serve.add_argument(
        "--no-access-log", action="store_true", help="leave out the per-request access log lines"
    )

    token = commands.add_parser(
        "token", help="create a bearer token for a principal in a tokens file (printed once)"
    )
    token.add_argument("--file", required=True, help="tokens file to create or extend")
    token.add_argument("--principal", required=True, help="replica:{id} or user:{id}")
    token.add_argument(
        "--read",
        action="append",
        default=[],
        metavar="PATTERN",
        help="channel or pattern it may read, e.g. user:*:memories (repeatable)",
    )
    token.add_argument(
        "--write",
        action="append",
        default=[],
        metavar="PATTERN",
        help="channel or pattern it may write (repeatable)",
    )
    token.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="REPLICA_ID",
        help="replica id whose deltas it may introduce: a device's own id, or what a relay forwards, "
        "or '*' (repeatable; a replica:{id} principal always may introduce its own id)",
    )
    token.add_argument(
        "--unsigned",
        action="append",
        default=[],
        metavar="REPLICA_ID",
        help="one of its origins whose deltas it may deliver unsigned (a foreign client; repeatable)",
    )
    token.add_argument(
        "--states",
        action="store_true",
        help="trust this replica as a state server: catch up from the document states it signs when "
        "behind the horizon of its log",
    )
    token.add_argument("--json", action="store_true", help="print the new entry as JSON")

    key = commands.add_parser(
        "key", help='print a replica\'s public signing key (to list it under "keys" in a tokens file)'
    )
    key.add_argument("--db", required=True, help="the replica's SQLite file")

    check = commands.add_parser(
        "check", help="read a stopped replica's whole file and list what is damaged (exit 1 if any)"
    )
    check.add_argument("--db", required=True, help="the replica's SQLite file (stop its server first)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--release",
        action="append",
        metavar="ID",
        help="take this memory out of quarantine if it reads back now, after a repair (repeatable)",
    )

    compact = commands.add_parser(
        "compact", help="fold a replica's log into its snapshots behind the horizon (stop its server first)"
    )
    compact.add_argument("--db", required=True, help="the replica's SQLite file")
    compact.add_argument(
        "--retention-hours",
        type=float,
        default=None,
        help="also fold entries older than this that a peer whose lease ran out lacks",
    )
    compact.add_argument("--json", action="store_true", help="print the result as JSON")
    reindex = commands.add_parser(
        "reindex", help="rebuild a replica's search index from its store, then verify it"
    )
    reindex.add_argument("--db", required=True, help="the replica's SQLite file (stop its server first)")
    reindex.add_argument("--engine", help="edge (default), qdrant-local, memory, or a Qdrant URL")
    reindex.add_argument("--index-path", help="where the embedded engine keeps its files (default DB.index)")
    reindex.add_argument("--embedder", default="hashing", help="hashing (default), minilm, fastembed:MODEL")
    _index_server_arguments(reindex)
    reindex.add_argument("--verify-only", action="store_true", help="only compare index and store")
    reindex.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _index_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index-collection",
        metavar="NAME",
        help="the index collection, used as named (default $CRDTMEM_QDRANT_COLLECTION, else crdtmem-DIM)",
    )
    parser.add_argument(
        "--qdrant-api-key-file",
        metavar="FILE",
        help="file holding the Qdrant server's API key (default $CRDTMEM_QDRANT_API_KEY)",
    )


def _compact(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import os
    from pathlib import Path

    from ..engine.replica import Replica
    from ..errors import CrdtmemError

    if not Path(args.db).exists():
        print(f"crdtmem compact: no such database: {args.db}", file=sys.stderr)
        return 2

    async def run() -> dict[str, object]:
        retention = None if args.retention_hours is None else int(args.retention_hours * 3_600_000)
        before = os.path.getsize(args.db)
        async with Replica(args.db, retention_ms=retention) as replica:
            done = await replica.compact()
            horizon = {c: replica.store.horizon(c) for c in replica.store.channels()}
        return {
            "folded": done.folded,
            "snapshots": done.snapshots,
            "horizon": horizon,
            "bytes_before": before,
            "bytes_after": os.path.getsize(args.db),
        }

    try:
        result = asyncio.run(run())
    except CrdtmemError as exc:
        print(f"crdtmem compact: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        folded: dict[str, dict[str, int]] = result["folded"]  # type: ignore[assignment]
        moved = sum(len(v) for v in folded.values())
        print(
            f"folded {moved} (channel, origin) log(s); file {result['bytes_before']:,} -> "
            f"{result['bytes_after']:,} bytes"
        )
    return 0


def _reindex(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import json
    from pathlib import Path

    from ..engine.replica import Replica
    from ..errors import CrdtmemError
    from ..index import IndexSettings
    from .progress import ProgressBar

    if not Path(args.db).exists():
        print(f"crdtmem reindex: no such database: {args.db}", file=sys.stderr)
        return 2

    from .serve import read_secret_file

    try:
        api_key = read_secret_file(args.qdrant_api_key_file, "--qdrant-api-key-file")
    except CrdtmemError as exc:
        print(f"crdtmem reindex: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        settings = IndexSettings.from_env(
            engine=args.engine,
            path=args.index_path,
            embedder=args.embedder,
            collection=args.index_collection,
            api_key=api_key,
        )
        async with Replica(args.db, index=settings) as replica:
            assert replica.index is not None
            if args.verify_only:
                report = await replica.index.verify()
            else:
                report = await replica.index.rebuild(ProgressBar("reindex"))
        if args.json:
            print(json.dumps({"db": args.db, "ok": report.ok, **dataclasses.asdict(report)}))
            return 0 if report.ok else 1
        print(
            f"index of {args.db}: {report.expected} memories expected, {report.indexed} points; "
            f"missing {len(report.missing)}, stale {len(report.stale)}, orphans {len(report.orphans)}, "
            f"mismatched {len(report.mismatched)}"
            + (f"; ahead (newer points from other nodes) {len(report.ahead)}" if report.ahead else "")
        )
        for name in ("missing", "stale", "orphans", "mismatched"):
            ids = getattr(report, name)
            if ids:
                print(f"  {name}: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}")
        print("ok" if report.ok else "NOT consistent: run crdtmem reindex without --verify-only")
        return 0 if report.ok else 1

    try:
        return asyncio.run(run())
    except CrdtmemError as exc:
        print(f"crdtmem reindex: {exc}", file=sys.stderr)
        return 2


def _key(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..engine.signing import KeyPolicy, encode_key, open_keyring
    from ..errors import CrdtmemError
    from ..store.sqlite import SQLiteStore

    if not Path(args.db).exists():
        print(f"crdtmem key: no such database: {args.db}", file=sys.stderr)
        return 2
    store = SQLiteStore(args.db)
    try:
        store.open()
        replica_id = store.get_meta("replica_id")
        if not replica_id:
            print(f"crdtmem key: {args.db} has no replica yet; serve it once first", file=sys.stderr)
            return 2
        signer, _ = open_keyring(store, replica_id, KeyPolicy())
    except CrdtmemError as exc:
        print(f"crdtmem key: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(json.dumps({"replica_id": replica_id, "public_key": encode_key(signer.public)}))
    return 0


def _token(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..access import Principal, TokenTable, new_token
    from ..errors import InvalidInput

    path = Path(args.file)
    try:
        table = TokenTable.load(path) if path.exists() else TokenTable()
        rights = Principal.from_json(
            {
                "principal": args.principal,
                "read": args.read,
                "write": args.write,
                "origins": args.origin,
                "unsigned": args.unsigned,
                "states": args.states,
            },
            "the new token",
        )
    except InvalidInput as exc:
        print(f"crdtmem token: {exc}", file=sys.stderr)
        return 2
    secret = new_token()
    table.entries[secret] = rights

    path.write_text(json.dumps(table.to_json(), indent=2) + "\n")
    path.chmod(0o600)
    if args.json:
        print(json.dumps({"token": secret, **rights.to_json(), "file": str(path)}))
        return 0
    print(secret)
    granted = ", ".join(f"{k} {v}" for k, v in rights.to_json().items() if k != "principal")
    print(f"added {rights.name} ({granted}) to {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import MissingExtra

    try:
        return _run(args)
    except MissingExtra as exc:  # one line naming the extra, never a traceback
        print(f"crdtmem {args.command}: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .client import COMMANDS, run

    if args.command in COMMANDS:
        return run(args)
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(args.dir, keep=args.keep, embedder=args.embedder)
    if args.command == "reindex":
        return _reindex(args)
    if args.command == "compact":
        return _compact(args)
    if args.command == "key":
        return _key(args)
    if args.command == "check":
        from .check import main as check_main

        return check_main(args)
    if args.command == "token":
        return _token(args)
    if args.command == "mcp":
        from .mcp import main as mcp_main

        return mcp_main(args)
    if args.command == "serve":
        from .serve import main as serve_main

        return serve_main(args)
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
