"""The access policy (``crdtmem.access``): every channel pattern form the docs show, what it matches
and what it refuses; tokens files; and a node serving a pattern grant."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from crdtmem import Channel, InvalidInput, Replica
from crdtmem.access import (
    OPEN,
    Principal,
    TokenTable,
    check_patterns,
    check_principal,
    matches,
    may_write_memory,
)
from crdtmem.server import Node

CHANNELS = [
    "user:u1:memories",
    "user:u2:memories",
    "tenant:acme:shared",
    "tenant:globex:shared",
    "topic:billing:updates",
    "system:global",
]

# pattern -> the channels of CHANNELS it matches (each form the docs and docstrings show)
FORMS = {
    "*": set(CHANNELS),
    "user:u1:memories": {"user:u1:memories"},
    "system:global": {"system:global"},
    "user:*:memories": {"user:u1:memories", "user:u2:memories"},
    "tenant:acme:*": {"tenant:acme:shared"},
    "tenant:*:shared": {"tenant:acme:shared", "tenant:globex:shared"},
    "topic:*:*": {"topic:billing:updates"},
}


@pytest.mark.parametrize("pattern", list(FORMS))
def test_every_documented_pattern_form_is_accepted_and_matches_what_it_says(pattern: str) -> None:
    assert check_patterns([pattern], "read") == (pattern,)
    assert {c for c in CHANNELS if matches(pattern, c)} == FORMS[pattern]


def test_the_tokens_file_example_of_the_access_module_loads() -> None:
    """The docstring's example file, as written there (it used ``tenant:acme:*`` and was refused)."""
    import crdtmem.access

    doc = crdtmem.access.__doc__ or ""
    example = doc.split("A tokens file is JSON::", 1)[1].split("\n\n", 2)[1]
    table = TokenTable.from_json(__import__("json").loads(example))
    admin = next(p for p in table.entries.values() if p.name == "user:admin")
    assert admin.may_read("tenant:acme:shared") and admin.may_read("user:u7:memories")
    assert not admin.may_read("tenant:globex:shared") and not admin.may_write("tenant:acme:shared")


@pytest.mark.parametrize(
    "pattern",
    [
        "user:*:shared",  # a suffix of another kind: could match nothing
        "tenant:acme:memories",
        "user:u*:memories",  # '*' stands for a whole part only
        "system:*",
        "tenant:acme",
        "user:*:memories:x",
        "**",
        "",
        "user:*:memories\n",
        "user:*:Memories",
    ],
)
def test_patterns_that_could_never_match_or_are_malformed_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidInput, match="read"):
        check_patterns([pattern], "read")


def test_a_wildcard_never_matches_an_empty_part_or_another_kind() -> None:
    assert not matches("user:*:memories", "user::memories")
    assert not matches("tenant:acme:*", "user:acme:memories")
    assert not matches("topic:*:*", "system:global")
    assert not matches("user:*:memories", "user:u1:memories:extra")


def test_writing_a_memory_needs_every_one_of_its_channels() -> None:
    agent = Principal("user:agent", write=("tenant:acme:*", "user:*:memories"))
    assert may_write_memory(agent, ["user:u1:memories", "tenant:acme:shared"])
    assert not may_write_memory(agent, ["user:u1:memories", "topic:billing:updates"])
    assert not may_write_memory(agent, [])
    assert may_write_memory(OPEN, CHANNELS)


async def test_a_node_serves_a_tenant_wildcard_grant(tmp_path: Path) -> None:
    token = "acme-wildcard-token-000001"
    tokens = TokenTable.from_json(
        {"tokens": [{"token": token, "principal": "user:acme", "read": ["tenant:acme:*"], "write": []}]}
    )
    async with Node(Replica(tmp_path / "a.db", replica_id="a"), tokens=tokens) as node:
        mine = await node.replica.add("acme's note", tenant_id="acme", shared=True)
        await node.replica.add("globex's note", tenant_id="globex", shared=True)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{node.url}/v1/memories") as response:
                assert response.status == 200
                assert [m["id"] for m in (await response.json())["memories"]] == [mine.id]
            async with session.post(
                f"{node.url}/v1/memories", json={"content": "x", "tenant_id": "acme"}
            ) as r:
                assert r.status == 403


# -- ids as apps have them ----------------------------------------------------------------------


def test_patterns_are_kept_in_canonical_form() -> None:
    assert check_patterns(
        [
            "user:alice@example.com:memories",
            "user:org:alice:memories",
            "user:org%3Aalice:memories",  # the same channel, escaped: kept once
            "topic:moving house:updates",
            "user:*:memories",
            "*",
        ],
        "read",
    ) == (
        "user:alice@example.com:memories",
        "user:org%3Aalice:memories",
        "topic:moving%20house:updates",
        "user:*:memories",
        "*",
    )


@pytest.mark.parametrize(
    "pattern",
    ["user:a*:memories", "user:50%:memories", "user:u\n:memories", "group:g:x", ""],
)
def test_what_is_neither_a_channel_nor_a_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(InvalidInput, match="read"):
        check_patterns([pattern], "read")


def test_an_id_that_is_a_star_is_one_id_not_a_wildcard() -> None:
    star = str(Channel.user("*"))
    assert star == "user:%2A:memories"
    principal = Principal("user:x", check_patterns(["user:%2A:memories"], "read"))
    assert principal.may_read(star)
    assert not principal.may_read("user:bob:memories")
    assert matches("user:*:memories", star)  # the wildcard covers it like any id


def test_a_suffix_wildcard_takes_an_id_as_apps_have_it() -> None:
    (pattern,) = check_patterns(["tenant:org:acme:*"], "read")
    assert pattern == "tenant:org%3Aacme:*"
    assert matches(pattern, str(Channel.tenant("org:acme")))
    assert not matches(pattern, str(Channel.tenant("org")))


def test_wildcards_match_escaped_ids_of_their_shape_only() -> None:
    assert matches("user:*:memories", str(Channel.user("org:alice")))
    assert not matches("user:*:memories", str(Channel.tenant("org:alice")))
    assert matches("*", "system:global")


def test_principals_take_app_ids_and_replica_ids() -> None:
    assert check_principal("user:alice@example.com") == "user:alice@example.com"
    assert check_principal("user:org:alice") == "user:org:alice"
    with pytest.raises(InvalidInput):
        check_principal("replica:org:alice")  # replica ids keep the narrow alphabet
    table = TokenTable.from_json(
        {"tokens": [{"token": "t" * 16, "principal": "user:org:alice", "read": ["user:org:alice:memories"]}]}
    )
    principal = table.lookup("t" * 16)
    assert principal is not None and principal.read == ("user:org%3Aalice:memories",)
    assert principal.may_read(str(Channel.user("org:alice")))
    assert table.to_json()["tokens"][0]["read"] == ["user:org%3Aalice:memories"]
