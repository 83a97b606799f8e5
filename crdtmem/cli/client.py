"""The CLI commands that talk to a running node over its REST API: add, get, list, update, delete,
history, search, conflicts, resolve, status.

Every command takes ``--url`` (default ``$CRDTMEM_URL`` or http://127.0.0.1:8700) and a bearer token
from ``--token``, ``--token-file`` or ``$CRDTMEM_TOKEN`` (in that order; a token on the command line
is visible to other users in ``ps``), and prints a readable summary or, with ``--json``, the server's
JSON on stdout (and errors as one JSON object on stderr: ``{"error", "message", "status"}``).
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
from pathlib import Path
from typing import Any

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
COMMANDS = (
    "add",
    "get",
    "list",
    "update",
    "delete",
    "forget",
    "history",
    "search",
    "conflicts",
    "resolve",
    "status",
)


def add_parsers(commands: Any) -> None:
    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--url",
            default=os.environ.get("CRDTMEM_URL", "http://127.0.0.1:8700"),
            help="the node (default $CRDTMEM_URL or http://127.0.0.1:8700)",
        )
        parser.add_argument(
            "--token", help="bearer token (default $CRDTMEM_TOKEN; on the command line it shows in ps)"
        )
        parser.add_argument("--token-file", metavar="FILE", help="read the bearer token from this file")
        parser.add_argument("--json", action="store_true", help="print the server's JSON (errors too)")
        return parser

    add = common(commands.add_parser("add", help="add a memory on a running node"))
    add.add_argument("content", help="text; for --kind list a JSON list, for counter an int")
    add.add_argument(
        "--json-content", action="store_true", help="the content is JSON (a fact may hold any JSON value)"
    )
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
    listing.add_argument(
        "--filters", metavar="JSON", help='mem0\'s filter grammar, e.g. \'{"category": "diet"}\''
    )
    listing.add_argument("--cursor", help="the next page (the cursor the previous page printed)")

    update = common(commands.add_parser("update", help="change a memory (every change lands, or none)"))
    update.add_argument("memory_id")
    content = update.add_mutually_exclusive_group()
    content.add_argument("--content", help="new content (fact and preference)")
    content.add_argument("--content-json", metavar="JSON", help="new content as a JSON value")
    update.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="set metadata")
    update.add_argument("--remove-meta", action="append", default=[], metavar="KEY", help="remove metadata")
    update.add_argument("--add-tag", action="append", default=[], metavar="TAG")
    update.add_argument("--remove-tag", action="append", default=[], metavar="TAG")
    update.add_argument("--increment", type=int, metavar="N", help="counter: add N (negative subtracts)")
    update.add_argument("--add-item", action="append", default=[], metavar="ITEM", help="list: add (JSON)")
    update.add_argument("--remove-item", action="append", default=[], metavar="ITEM", help="list: remove")
    update.add_argument("--append", nargs=2, metavar=("ROLE", "TEXT"), help="conversation: add a message")

    delete = common(commands.add_parser("delete", help="mark a memory deleted (it replicates)"))
    delete.add_argument("memory_id")

    forget = common(
        commands.add_parser(
            "forget",
            help="erase a memory: its content leaves this node and every replica that syncs it (no undo)",
        )
    )
    forget.add_argument("memory_id")

    history = common(commands.add_parser("history", help="every change of a memory, oldest first"))
    history.add_argument("memory_id")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--cursor", help="the next page (the cursor the previous page printed)")

    search = common(commands.add_parser("search", help="search memories by meaning"))
    search.add_argument("query")
    for name in ("user-id", "tenant-id", "topic", "kind"):
        search.add_argument(f"--{name}")
    search.add_argument("--tag", action="append", default=[])
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--filters", metavar="JSON", help="mem0's filter grammar")
    search.add_argument("--threshold", type=float, help="the lowest score to show (-1 to 1)")
    search.add_argument("--cursor", help="the next page (the cursor the previous page printed)")

    conflicts = common(commands.add_parser("conflicts", help="list open conflicts"))
    for name in ("user-id", "tenant-id", "memory-id"):
        conflicts.add_argument(f"--{name}")
    conflicts.add_argument("--limit", type=int, default=100)
    conflicts.add_argument("--cursor", help="the next page (the cursor the previous page printed)")

    resolve = common(commands.add_parser("resolve", help="settle a conflicted field to a value"))
    resolve.add_argument("memory_id")
    resolve.add_argument("--field", required=True, help="content, lifecycle or metadata.KEY")
    resolve.add_argument("--value", required=True, help="the value (JSON if it parses as JSON)")

    common(commands.add_parser("status", help="replica, channels, peers and their lag, index lag"))


def run(args: argparse.Namespace) -> int:
    try:
        args.token = bearer_token(args)
        body = _COMMANDS[args.command](args)
    except Refused as exc:
        return _fail(args, REFUSED, exc.code, f"{exc} (HTTP {exc.status})", str(exc), exc.status)
    except UsageError as exc:
        return _fail(args, USAGE, "Usage", str(exc), str(exc))
    except (urllib.error.URLError, OSError) as exc:
        reason = f"cannot reach {args.url}: {getattr(exc, 'reason', exc)}"
        return _fail(args, UNREACHABLE, "Unreachable", reason, reason)
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        _PRINT[args.command](body)
    return OK


def _fail(
    args: argparse.Namespace, exit_code: int, code: str, text: str, message: str, status: int = 0
) -> int:
    if args.json:
        error: dict[str, Any] = {"error": code, "message": message}
        if status:
            error["status"] = status
        print(json.dumps(error, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"crdtmem {args.command}: {text}", file=sys.stderr)
    return exit_code


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


class UsageError(Exception):
    pass


def bearer_token(args: argparse.Namespace) -> str | None:
    """The token from --token, --token-file or $CRDTMEM_TOKEN (in that order), or None."""
    if args.token is not None and args.token_file is not None:
        raise UsageError("give --token or --token-file, not both")
    if args.token is not None:
        return str(args.token)
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --token-file {args.token_file}: {exc}") from None
        if not token or "\n" in token:
            raise UsageError(f"--token-file {args.token_file} must hold one token on one line")
        return token
    return os.environ.get("CRDTMEM_TOKEN") or None


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
            error = json.loads(exc.read())
            code, message = str(error.get("error", "HTTPError")), str(error.get("message", exc.reason))
        except (ValueError, AttributeError):
            code, message = "HTTPError", str(exc.reason)
        raise Refused(exc.code, code, message) from exc


def _strict_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


def _loose_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _filters(text: str) -> Any:
    return _strict_json(text, "--filters")


def _metadata(items: list[str]) -> dict[str, Any]:
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--meta takes KEY=VALUE, got {item!r}")
        metadata[key] = _loose_json(value)
    return metadata


def _memory_path(memory_id: str, tail: str = "") -> str:
    return f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}{tail}"


def _add(args: argparse.Namespace) -> Any:
    content: Any = args.content
    if args.json_content:
        content = _strict_json(args.content, "the content")
    elif args.kind in ("list", "counter", "conversation"):
        content = _loose_json(args.content)
    metadata = _metadata(args.meta)
    body = {
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
    given = {k: v for k, v in body.items() if v not in (None, [], {})}
    return _call(args, "POST", "/v1/memories", {"content": content, **given})


def _get(args: argparse.Namespace) -> Any:
    return _call(args, "GET", _memory_path(args.memory_id))


def _update(args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {
        "metadata": _metadata(args.meta),
        "remove_metadata": args.remove_meta,
        "add_tags": args.add_tag,
        "remove_tags": args.remove_tag,
        "increment": args.increment,
        "add_items": [_loose_json(item) for item in args.add_item],
        "remove_items": [_loose_json(item) for item in args.remove_item],
        "append_message": {"role": args.append[0], "text": args.append[1]} if args.append else None,
    }
    body = {k: v for k, v in body.items() if v not in (None, [], {})}
    if args.content_json is not None:  # any JSON value, null and {} included
        body["content"] = _strict_json(args.content_json, "--content-json")
    elif args.content is not None:
        body["content"] = args.content
    if not body:
        raise UsageError(
            "nothing to change: give --content, --content-json, --meta, --remove-meta, --add-tag, "
            "--remove-tag, --increment, --add-item, --remove-item or --append"
        )
    return _call(args, "PATCH", _memory_path(args.memory_id), body)


def _delete(args: argparse.Namespace) -> Any:
    return _call(args, "DELETE", _memory_path(args.memory_id))


def _forget(args: argparse.Namespace) -> Any:
    return _call(args, "DELETE", _memory_path(args.memory_id) + "?purge=true")


def _print_forgotten(body: Any) -> None:
    print(f"forgot {body['id']}")


def _history(args: argparse.Namespace) -> Any:
    return _call(
        args,
        "GET",
        _memory_path(args.memory_id, "/history"),
        query={"limit": args.limit, "cursor": args.cursor},
    )


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
            "filters": json.dumps(_filters(args.filters)) if args.filters else None,
            "cursor": args.cursor,
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
        "filters": _filters(args.filters) if args.filters else None,
        "threshold": args.threshold,
        "cursor": args.cursor,
    }
    return _call(args, "POST", "/v1/search", {k: v for k, v in body.items() if v not in (None, [])})


def _conflicts(args: argparse.Namespace) -> Any:
    return _call(
        args,
        "GET",
        "/v1/conflicts",
        query={
            "user_id": args.user_id,
            "tenant_id": args.tenant_id,
            "memory_id": args.memory_id,
            "limit": args.limit,
            "cursor": args.cursor,
        },
    )


def _resolve(args: argparse.Namespace) -> Any:
    value = _loose_json(args.value) if args.field != "content" else args.value
    return _call(
        args, "POST", _memory_path(args.memory_id, "/resolve"), {"field": args.field, "value": value}
    )


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


def _page(body: Any, what: str) -> str:
    """The closing line of a page: how many, of how many, and how to get the next page."""
    line = f"({body['count']} {what}" + (
        f" of {body['total']}" if body.get("total", body["count"]) != body["count"] else ""
    )
    return line + (f"; next page: --cursor {body['next_cursor']})" if body.get("next_cursor") else ")")


def _print_list(body: Any) -> None:
    for memory in body["memories"]:
        print(_line(memory))
    print(_page(body, "memories"))


def _print_history(body: Any) -> None:
    for entry in body["history"]:
        flags = "".join(f" [{f}]" for f in ("deleted", "conflicted") if entry.get(f))
        content = json.dumps(entry["content"], ensure_ascii=False)
        print(f"{entry['hlc']}  {entry['origin']:<12} {content}{flags}")
    print(_page(body, "changes"))


def _print_search(body: Any) -> None:
    for hit in body["results"]:
        print(f"{hit['score']:.3f}  {_line(hit['memory'])}")
    if body.get("lexical"):
        print("(scores are lexical: shared words, not meaning; serve --embedder minilm searches by meaning)")
    print(_page(body, "results"))


def _print_conflicts(body: Any) -> None:
    for conflict in body["conflicts"]:
        values = ", ".join(
            f"{json.dumps(v['value'], ensure_ascii=False)} by {v['replica']}" for v in conflict["values"]
        )
        print(f"{conflict['memory_id']}  {conflict['field']}: {values}")
    print(_page(body, "open conflicts"))


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
    "update": _update,
    "delete": _delete,
    "forget": _forget,
    "history": _history,
    "search": _search,
    "conflicts": _conflicts,
    "resolve": _resolve,
    "status": _status,
}
_PRINT = {
    "add": _print_memory,
    "get": _print_memory,
    "list": _print_list,
    "update": _print_memory,
    "delete": _print_memory,
    "forget": _print_forgotten,
    "history": _print_history,
    "search": _print_search,
    "conflicts": _print_conflicts,
    "resolve": _print_memory,
    "status": _print_status,
}
