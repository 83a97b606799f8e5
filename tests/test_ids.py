"""Identifiers and channel names: parse/format round trips, and everything else is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem import Channel, InvalidChannel, InvalidInput
from crdtmem.ids import check_name, new_client_id, new_memory_id, parse_channels

names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", min_size=1, max_size=128
)
channels = st.one_of(
    st.builds(Channel.user, names),
    st.builds(Channel.tenant, names),
    st.builds(Channel.topic, names),
    st.just(Channel.system()),
)


def test_channel_wire_forms() -> None:
    assert str(Channel.user("u1")) == "user:u1:memories"
    assert str(Channel.tenant("acme")) == "tenant:acme:shared"
    assert str(Channel.topic("billing")) == "topic:billing:updates"
    assert str(Channel.system()) == "system:global"


@given(channels)
def test_format_parse_round_trip(channel: Channel) -> None:
    assert Channel.parse(str(channel)) == channel
    assert str(Channel.parse(str(channel))) == str(channel)


@given(names)
def test_valid_names_pass_unchanged(name: str) -> None:
    assert check_name(name, "user_id") == name


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
        "user:u 1:memories",
        "user:u1:memories:extra",
        "USER:u1:memories",
        "user:" + "u" * 129 + ":memories",
        "user:u1:memories\n",
        "system:global\n",
        "\nsystem:global",
        None,
        42,
        b"system:global",
        ["system:global"],
    ],
)
def test_parse_rejects_everything_else(text: object) -> None:
    with pytest.raises(InvalidChannel):
        Channel.parse(text)


@pytest.mark.parametrize(
    "name", ["", "a b", "a:b", "a/b", "a#b", "ü", "u" * 129, "u1\n", "\nu1", None, 7, b"u1", ["u1"]]
)
def test_check_name_rejects(name: object) -> None:
    with pytest.raises(InvalidInput, match="user_id"):
        check_name(name, "user_id")


@pytest.mark.parametrize("factory", [Channel.user, Channel.tenant, Channel.topic])
def test_channel_builders_validate(factory: object) -> None:
    with pytest.raises(InvalidInput):
        factory("not ok")  # type: ignore[operator]


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
    assert all(check_name(m, "memory_id") for m in memory_ids)
    client_ids = {new_client_id() for _ in range(1000)}
    assert len(client_ids) > 990  # 32 random bits
    assert all(0 <= c < 2**32 for c in client_ids)  # a safe JavaScript integer, as Yjs expects
