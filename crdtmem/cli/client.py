"""The CLI commands that talk to a running node over its REST API: add, get, list, search,
conflicts, resolve, status.

Every command takes ``--url`` (default ``$CRDTMEM_URL`` or http://127.0.0.1:8700) and ``--token``
(default ``$CRDTMEM_TOKEN``), prints a readable summary or, with ``--json``, the server's JSON.
Exit codes scripts can trust: 0 done, 1 the server refused (the message says why), 2 bad usage,
3 the node could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
COMMANDS = ("add", "get", "list", "search", "conflicts", "resolve", "status")


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def add_parsers(commands: Any) -> None:
    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--url",
            default=os.environ.get("CRDTMEM_URL", "http://127.0.0.1:8700"),
            help="the node (default $CRDTMEM_URL or http://127.0.0.1:8700)",
        )
        parser.add_argument(
            "--token", default=os.environ.get("CRDTMEM_TOKEN"), help="bearer token (default $CRDTMEM_TOKEN)"
        )
        parser.add_argument("--json", action="store_true", help="print the server's JSON")
        return parser

    add = common(commands.add_parser("add", help="add a memory on a running node"))
    add.add_argument("content", help="text; for --kind list a JSON list, for counter an int")
    add.add_argument(
        "--kind", default="fact", choices=["fact", "preference", "list", "counter", "conversation"]
    )
    for name in ("user-id", "agent-id", "session-id", "tenant-id"):
        add.add_argument(f"--{name}")
    add.add_argument("--topic", action="append", default=[], help="repeatable")
    add.add_argument("--tag", action="append", default=[], help="repeatable")
    add.add_argument("--shared", action="store_true", help="share with the tenant")
    add.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata (repeatable)")

    get = common(commands.add_parser("get", help="show one memory"))
    get.add_argument("memory_id")

    listing = common(commands.add_parser("list", help="list memories, newest first"))
    for name in ("user-id", "tenant-id", "topic", "kind"):
        listing.add_argument(f"--{name}")
    listing.add_argument("--include-deleted", action="store_true")
    listing.add_argument("--limit", type=int, default=20)

    search = common(commands.add_parser("search", help="search memories by meaning"))
    search.add_argument("query")
    for name in ("user-id", "tenant-id", "topic", "kind"):
        search.add_argument(f"--{name}")
    search.add_argument("--tag", action="append", default=[])
    search.add_argument("--limit", type=int, default=10)

    conflicts = common(commands.add_parser("conflicts", help="list open conflicts"))
    for name in ("user-id", "tenant-id", "memory-id"):
        conflicts.add_argument(f"--{name}")

    resolve = common(commands.add_parser("resolve", help="settle a conflicted field to a value"))
    resolve.add_argument("memory_id")
    resolve.add_argument("--field", required=True, help="content, lifecycle or metadata.KEY")
    resolve.add_argument("--value", required=True, help="the value (JSON if it parses as JSON)")

    common(commands.add_parser("status", help="replica, channels, peers and their lag, index lag"))


def run(args: argparse.Namespace) -> int:
    try:
        body = _COMMANDS[args.command](args)
    except Refused as exc:
        print(f"crdtmem {args.command}: {exc} (HTTP {exc.status})", file=sys.stderr)
        return REFUSED
    except UsageError as exc:
        print(f"crdtmem {args.command}: {exc}", file=sys.stderr)
        return USAGE
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"crdtmem {args.command}: cannot reach {args.url}: {reason}", file=sys.stderr)
        return UNREACHABLE
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        _PRINT[args.command](body)
    return OK


class UsageError(Exception):
    pass


def _call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
) -> Any:
    params = {k: v for k, v in (query or {}).items() if v not in (None, False, [])}
    url = args.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except ValueError:
            message = exc.reason
        raise Refused(exc.code, str(message)) from exc


def _loose_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _add(args: argparse.Namespace) -> Any:
    content: Any = args.content
    if args.kind in ("list", "counter", "conversation"):
        content = _loose_json(args.content)
    metadata = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--meta takes KEY=VALUE, got {item!r}")
        metadata[key] = _loose_json(value)
    body = {
        "content": content,
        "kind": args.kind,
        "user_id": args.user_id,
        "agent_id": args.agent_id,
        "session_id": args.session_id,
        "tenant_id": args.tenant_id,
        "topics": args.topic,
        "tags": args.tag,
        "shared": args.shared,
        "metadata": metadata,
    }
    return _call(args, "POST", "/v1/memories", {k: v for k, v in body.items() if v not in (None, [], {})})


def _get(args: argparse.Namespace) -> Any:
    return _call(args, "GET", f"/v1/memories/{urllib.parse.quote(args.memory_id, safe='')}")


def _list(args: argparse.Namespace) -> Any:
    return _call(
        args,
        "GET",
        "/v1/memories",
        query={
            "user_id": args.user_id,
            "tenant_id": args.tenant_id,
            "topic": args.topic,
            "kind": args.kind,
            "include_deleted": "true" if args.include_deleted else None,
            "limit": args.limit,
        },
    )


def _search(args: argparse.Namespace) -> Any:
    body = {
        "query": args.query,
        "user_id": args.user_id,
        "tenant_id": args.tenant_id,
        "topic": args.topic,
        "kind": args.kind,
        "tags": args.tag,
        "limit": args.limit,
    }
    return _call(args, "POST", "/v1/search", {k: v for k, v in body.items() if v not in (None, [])})


def _conflicts(args: argparse.Namespace) -> Any:
    return _call(
        args,
        "GET",
        "/v1/conflicts",
        query={"user_id": args.user_id, "tenant_id": args.tenant_id, "memory_id": args.memory_id},
    )


def _resolve(args: argparse.Namespace) -> Any:
    value = _loose_json(args.value) if args.field != "content" else args.value
    path = f"/v1/memories/{urllib.parse.quote(args.memory_id, safe='')}/resolve"
    return _call(args, "POST", path, {"field": args.field, "value": value})


def _status(args: argparse.Namespace) -> Any:
    return _call(args, "GET", "/v1/status")


def _line(memory: dict[str, Any]) -> str:
    flags = "".join(f" [{f}]" for f in ("deleted", "conflicted") if memory.get(f))
    scope = memory["scope"]
    owner = scope.get("user_id") or scope.get("tenant_id") or "global"
    content = json.dumps(memory["content"], ensure_ascii=False)
    return f"{memory['id']}  {memory['kind']:<12} {owner:<12} {content}{flags}"


def _print_memory(body: Any) -> None:
    print(_line(body))


def _print_list(body: Any) -> None:
    for memory in body["memories"]:
        print(_line(memory))
    print(f"({body['count']} memories)")


def _print_search(body: Any) -> None:
    for hit in body["results"]:
        print(f"{hit['score']:.3f}  {_line(hit['memory'])}")
    print(f"({body['count']} results)")


def _print_conflicts(body: Any) -> None:
    for conflict in body["conflicts"]:
        values = ", ".join(
            f"{json.dumps(v['value'], ensure_ascii=False)} by {v['replica']}" for v in conflict["values"]
        )
        print(f"{conflict['memory_id']}  {conflict['field']}: {values}")
    print(f"({len(body['conflicts'])} open conflicts)")


def _print_status(body: Any) -> None:
    print(
        f"replica {body['replica_id']} at {body['url']}: {body['memories']} memories, "
        f"{body['pending_deltas']} pending deltas"
    )
    for channel, vector in sorted(body["version_vectors"].items()):
        print(f"  {channel}: {vector}")
    for peer in [*body["peers"], *body["links"]]:
        name = peer.get("url") or peer.get("peer_id")
        print(f"  {peer['direction']:<8} {name}: mode {peer['mode']}, lag {peer['lag']}")
    if body.get("index"):
        index = body["index"]
        print(f"  index: {index['engine']} / {index['model']}, lag {index['lag_versions']} versions")


_COMMANDS = {
    "add": _add,
    "get": _get,
    "list": _list,
    "search": _search,
    "conflicts": _conflicts,
    "resolve": _resolve,
    "status": _status,
}
_PRINT = {
    "add": _print_memory,
    "get": _print_memory,
    "list": _print_list,
    "search": _print_search,
    "conflicts": _print_conflicts,
    "resolve": _print_memory,
    "status": _print_status,
}
