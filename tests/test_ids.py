"""Identifiers and channel names: app ids as apps have them, escaping, parse/format round trips, and
everything else is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem import Channel, InvalidChannel, InvalidInput
from crdtmem.document.records import Scope
from crdtmem.ids import (
    CHANNEL_RESERVED,
    MAX_ID_LENGTH,
    check_id,
    check_memory_id,
    check_replica_id,
    escape_id,
    is_v1_id,
    new_client_id,
    new_memory_id,
    parse_channels,
    unescape_id,
)
from crdtmem.testing.strategies import app_ids

v1_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", min_size=1, max_size=128
)
channels = st.one_of(
    st.builds(Channel.user, app_ids()),
    st.builds(Channel.tenant, app_ids()),
    st.builds(Channel.topic, app_ids()),
    st.just(Channel.system()),
)


def test_channel_wire_forms() -> None:
    assert str(Channel.user("u1")) == "user:u1:memories"
    assert str(Channel.tenant("acme")) == "tenant:acme:shared"
    assert str(Channel.topic("billing")) == "topic:billing:updates"
    assert str(Channel.system()) == "system:global"


def test_ids_as_apps_have_them_escape_only_what_a_channel_name_reserves() -> None:
    assert str(Channel.user("alice@example.com")) == "user:alice@example.com:memories"
    assert str(Channel.user("org:alice")) == "user:org%3Aalice:memories"
    assert str(Channel.tenant("50% off")) == "tenant:50%25%20off:shared"
    assert str(Channel.topic("a*b, c")) == "topic:a%2Ab%2C%20c:updates"
    assert str(Channel.user("Zoë 🙂")) == "user:Zoë%20🙂:memories"
    assert Channel.user("org:alice").name == "org:alice"  # the id as the app has it


@given(channels)
def test_format_parse_round_trip(channel: Channel) -> None:
    assert Channel.parse(str(channel)) == channel
    assert Channel.from_text(str(channel)) == channel
    assert str(Channel.parse(str(channel))) == str(channel)


@given(app_ids())
def test_escaping_is_reversible_and_leaves_no_reserved_character(value: str) -> None:
    escaped = escape_id(value)
    assert unescape_id(escaped) == value
    assert not set(escaped) & set(CHANNEL_RESERVED.replace("%", ""))
    assert escape_id(value) == escaped  # stable


@given(v1_names)
def test_revision_1_ids_give_the_same_channel_names_as_before(name: str) -> None:
    assert is_v1_id(name)
    assert escape_id(name) == name
    assert str(Channel.user(name)) == f"user:{name}:memories"
    assert Channel.parse(f"tenant:{name}:shared") == Channel.tenant(name)


@given(app_ids(), st.text(".>$", min_size=1, max_size=3))
def test_escaping_with_more_reserved_characters_for_another_transport(value: str, extra: str) -> None:
    """The NATS bus escapes '.', '>' and more on top; the same function, reversible the same way."""
    escaped = escape_id(value, CHANNEL_RESERVED + extra)
    assert not set(escaped) & set(extra)
    assert unescape_id(escaped) == value


def test_ids_written_unescaped_are_read_as_people_mean_them() -> None:
    assert Channel.from_text("user:org:alice:memories") == Channel.user("org:alice")
    assert Channel.from_text("user:org%3Aalice:memories") == Channel.user("org:alice")
    assert Channel.from_text("user:alice@example.com:memories") == Channel.user("alice@example.com")
    assert parse_channels(["user:org:alice:memories", "system:global"]) == (
        "user:org%3Aalice:memories",
        "system:global",
    )


@pytest.mark.parametrize(
    "text",
    ["user:org:alice:memories", "user:org%3aalice:memories", "user:%40x:memories", "user:a b:memories"],
)
def test_the_wire_takes_only_the_canonical_form(text: str) -> None:
    with pytest.raises(InvalidChannel, match="canonical form"):
        Channel.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "user",
        "user:u1",
        "user::memories",
        "user:u1:shared",
        "tenant:acme:memories",
        "topic:t1:shared",
        "system",
        "system:local",
        "system:global:x",
        "group:g1:memories",
        "user:u1:memories:extra",
        "USER:u1:memories",
        "user:" + "u" * (MAX_ID_LENGTH + 1) + ":memories",
        "user:u1\n:memories",
        "user:u1:memories\n",
        "system:global\n",
        "\nsystem:global",
        "user:*:memories",  # a pattern, not a channel
        "user:a*:memories",
        "user:50%:memories",  # a lone % must be written %25
        "user:%C3:memories",  # escapes that are not UTF-8
        None,
        42,
        b"system:global",
        ["system:global"],
    ],
)
def test_parse_rejects_everything_else(text: object) -> None:
    with pytest.raises(InvalidChannel):
        Channel.parse(text)
    with pytest.raises(InvalidChannel):
        Channel.from_text(text)


@given(app_ids())
def test_app_ids_pass_unchanged(name: str) -> None:
    assert check_id(name, "user_id") == name


@pytest.mark.parametrize(
    "name",
    ["alice@example.com", "org:alice", "a b", "a/b", "a#b", "ü", "*", "%", "u" * MAX_ID_LENGTH, "漢字"],
)
def test_check_id_accepts_what_apps_use(name: str) -> None:
    assert check_id(name, "user_id") == name


@pytest.mark.parametrize(
    "name",
    ["", "u" * (MAX_ID_LENGTH + 1), "u1\n", "\tu1", "a\x00b", "a\x7fb", "a\u2028b", "\ud800", None, 7, b"u1"],
)
def test_check_id_rejects(name: object) -> None:
    with pytest.raises(InvalidInput, match="user_id"):
        check_id(name, "user_id")


@pytest.mark.parametrize("name", [".", ".."])
def test_memory_ids_that_urls_would_resolve_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="path"):
        check_memory_id(name)
    assert check_memory_id("...") == "..."


@pytest.mark.parametrize(
    "name", ["", "a b", "a:b", "a/b", "a#b", "ü", "u" * 129, "u1\n", "\nu1", None, 7, b"u1", ["u1"]]
)
def test_replica_ids_keep_the_narrow_alphabet(name: object) -> None:
    with pytest.raises(InvalidInput, match="replica_id"):
        check_replica_id(name)


@pytest.mark.parametrize("factory", [Channel.user, Channel.tenant, Channel.topic])
def test_channel_builders_validate(factory: object) -> None:
    with pytest.raises(InvalidInput):
        factory("not\nok")  # type: ignore[operator]


def test_parse_channels() -> None:
    assert parse_channels(["user:u1:memories", "system:global"]) == ("user:u1:memories", "system:global")
    assert parse_channels(()) == ()
    for bad in ("user:u1:memories", None, {"user:u1:memories": 1}, ["user:u1"]):
        with pytest.raises(InvalidChannel):
            parse_channels(bad)


def test_invalid_channel_is_invalid_input() -> None:
    assert issubclass(InvalidChannel, InvalidInput)
    assert issubclass(InvalidChannel, ValueError)


def test_fresh_ids() -> None:
    memory_ids = {new_memory_id() for _ in range(1000)}
    assert len(memory_ids) == 1000
    assert all(check_memory_id(m) and is_v1_id(m) for m in memory_ids)
    client_ids = {new_client_id() for _ in range(1000)}
    assert len(client_ids) > 990  # 32 random bits
    assert all(0 <= c < 2**32 for c in client_ids)  # a safe JavaScript integer, as Yjs expects


def test_scope_channels_remembered_are_those_computed_and_errors_are_raised_each_time() -> None:
    """Scope.channels remembers the channels of recent scopes: the same answer as computing them,
    a scope of another type with an equal value is not answered from memory, and a scope whose
    parts are invalid or unhashable (a header a foreign writer left) raises every time."""
    from crdtmem.document import records

    scope = Scope(user_id="u1", tenant_id="t1", topics=("a", "b"), shared=True)
    computed = records._channels("u1", "t1", ("a", "b"), True)
    assert scope.channels() == computed == scope.channels()
    assert computed == ("tenant:t1:shared", "topic:a:updates", "topic:b:updates", "user:u1:memories")
    assert Scope(user_id="u1", shared=1).channels() == Scope(user_id="u1", shared=True).channels()  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(InvalidInput):
            Scope(user_id=1).channels()  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            Scope(user_id="u1", topics=({"x": 1},)).channels()  # type: ignore[arg-type]
    many = tuple(f"t{i}" for i in range(records._REMEMBERED_TOPICS + 1))
    assert Scope(tenant_id="t", topics=many).channels() == records._channels(None, "t", many, False)
