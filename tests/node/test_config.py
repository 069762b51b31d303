"""Configuration: the TOML file, environment and flags, and every check made before starting."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import ilp.node.config
from ilp.node.config import (
    DEFAULT_API_PORT,
    DEFAULT_BTP_PORT,
    AccountConfig,
    ConfigError,
    NodeConfig,
    load_config,
    parse_config,
)


def _docstring_example() -> str:
    """The example TOML of the module docstring (the one the docs show), de-indented."""
    doc = ilp.node.config.__doc__
    assert doc is not None
    block = doc.split("::\n\n", 1)[1].split("\n\nEnvironment:", 1)[0]
    return "\n".join(line.removeprefix("    ") for line in block.splitlines())


def test_the_documented_example_parses(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(_docstring_example())
    config = load_config(path, environ={})
    assert config.address == "test.mynode"
    assert (config.asset_code, config.asset_scale) == ("XRP", 9)
    assert config.data_dir == tmp_path / "node-data"  # relative: beside the file
    assert config.store_path == str(tmp_path / "node-data" / "node.sqlite3")
    assert config.spread == Fraction(2, 1000)
    assert config.open_children is True
    assert (config.btp_host, config.btp_port) == ("127.0.0.1", 7768)
    assert (config.api_host, config.api_port) == ("127.0.0.1", 7769)
    assert config.admin_token == "at-least-16-characters"  # [api] admin_token
    assert config.rates == {"XRP": Fraction(1, 2), "USD": Fraction(1)}
    assert config.routes == {"test.harness": "harness"}
    alice, harness = config.accounts
    assert alice == AccountConfig(
        "alice",
        relation="child",
        token="alice-secret",
        max_packet_amount=100000,
        credit_limit=1000000,
    )
    assert harness == AccountConfig(
        "harness",
        relation="peer",
        url="btp+ws://:secret@127.0.0.1:7790",
        routes=("test.harness",),
        receive_routes=False,
    )


def test_defaults() -> None:
    config = parse_config({})
    assert config == NodeConfig()
    assert config.address == "private.node"
    assert config.data_dir is None
    assert config.store_path == ":memory:"
    assert (config.btp_port, config.api_port) == (DEFAULT_BTP_PORT, DEFAULT_API_PORT)
    assert config.spread == 0
    assert config.accounts == ()


def test_environment_beats_the_file_and_flags_beat_both() -> None:
    raw: dict[str, Any] = {
        "address": "test.file",
        "asset_code": "USD",
        "asset_scale": 2,
        "spread": "0.01",
        "btp": {"port": 1000},
        "api": {"port": 2000, "host": "0.0.0.0"},
    }
    environ = {
        "ILP_NODE_ADDRESS": "test.env",
        "ILP_NODE_ASSET_SCALE": "6",
        "ILP_NODE_BTP_PORT": "1001",
        "ILP_NODE_API_PORT": "2001",
        "ILP_NODE_SPREAD": "0.02",
        "ILP_NODE_DATA_DIR": "/var/env",
        "ILP_NODE_ADMIN_TOKEN": "e" * 16,
        "ILP_NODE_API_HOST": "",  # empty: not set
    }
    config = parse_config(raw, environ=environ)
    assert config.address == "test.env"
    assert config.asset_code == "USD"  # the file, no variable for it
    assert config.asset_scale == 6
    assert (config.btp_port, config.api_port) == (1001, 2001)
    assert config.api_host == "0.0.0.0"
    assert config.spread == Fraction(2, 100)
    assert config.data_dir == Path("/var/env")
    assert config.admin_token == "e" * 16

    overrides = {"address": "test.flag", "btp_port": 1002, "api_port": None, "spread": "0.03"}
    config = parse_config(raw, environ=environ, overrides=overrides)
    assert config.address == "test.flag"
    assert config.btp_port == 1002
    assert config.api_port == 2001  # None: the flag was not given
    assert config.spread == Fraction(3, 100)


def test_api_off_and_address_from_parent() -> None:
    config = parse_config({"address": "", "api": {"port": "off"}})
    assert config.address is None
    assert config.api_port is None


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'adress'"):
        parse_config({"adress": "test.x"})
    with pytest.raises(ConfigError, match="unknown setting 'btp_prot'"):
        parse_config({"btp": {"prot": 1}})
    with pytest.raises(ConfigError, match=r"accounts\.alice: unknown key 'tokn'"):
        parse_config({"accounts": {"alice": {"tokn": "x"}}})
    path = tmp_path / "node.toml"
    path.write_text('[api]\nhots = "x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'api_hots'"):
        load_config(path)


@pytest.mark.parametrize(
    ("raw", "environ", "match"),
    [
        ({"btp": {"port": 70000}}, {}, "btp.port"),
        ({"btp": {"port": -1}}, {}, "btp.port"),
        ({"btp": {"port": True}}, {}, "btp.port"),
        ({"btp": {"port": "http"}}, {}, "btp.port"),
        ({}, {"ILP_NODE_BTP_PORT": "99999"}, "btp.port"),
        ({}, {"ILP_NODE_BTP_PORT": "²"}, "btp.port"),  # a digit to str.isdigit, not to int()
        ({}, {"ILP_NODE_API_PORT": "x"}, "api.port"),
        ({"address": "nope.x"}, {}, "address"),
        ({"address": "test"}, {}, "address"),
        ({}, {"ILP_NODE_ADDRESS": "test..x"}, "address"),
        ({"address": 5}, {}, "address"),
        ({"asset_code": "X-P"}, {}, "asset_code"),
        ({"asset_code": ""}, {}, "asset_code"),
        ({"asset_scale": 256}, {}, "asset_scale"),
        ({"asset_scale": -1}, {}, "asset_scale"),
        ({"asset_scale": 2.0}, {}, "asset_scale"),
        ({}, {"ILP_NODE_ASSET_SCALE": "²"}, "asset_scale"),
        ({"spread": "1"}, {}, "spread must be less than 1"),
        ({"spread": "-0.1"}, {}, "spread"),
        ({"spread": "lots"}, {}, "spread"),
        ({"child_credit_limit": -1}, {}, "child_credit_limit"),
        ({"child_credit_limit": 2**64}, {}, "child_credit_limit"),
        ({"child_max_packet_amount": 1.5}, {}, "child_max_packet_amount"),
        ({"child_max_packet_amount": "ten"}, {}, "child_max_packet_amount"),
        ({"admin_token": "short"}, {}, "admin_token"),
        ({"min_message_window": 0}, {}, "min_message_window"),
        ({"max_hold_time": float("nan")}, {}, "max_hold_time"),
        ({"max_hold_time": float("inf")}, {}, "max_hold_time"),
        ({"max_hold_time": True}, {}, "max_hold_time"),
        ({"open_children": "maybe"}, {}, "open_children"),
        ({"open_children": 5}, {}, "open_children"),
        ({"route_broadcast": "sometimes"}, {}, "route_broadcast"),
        ({"route_broadcast_interval": 0}, {}, "route_broadcast_interval"),
        ({"route_expiry": -1}, {}, "route_expiry"),
        ({"btp": "7768"}, {}, r"\[btp\]"),
        ({"rates": {"USD": "0"}}, {}, "rates.USD"),
        ({"rates": {"USD": "x"}}, {}, "rates.USD"),
        ({"rates": {"U S": "1"}}, {}, "rates.U S"),
        ({"rates": ["USD"]}, {}, r"\[rates\]"),
        ({"routes": {"nope.x": "alice"}}, {}, "routes"),
        ({"routes": {"test.x": 5}}, {}, "routes.test.x"),
        ({"accounts": {"al ice": {}}}, {}, "accounts.al ice"),
        ({"accounts": {"alice": "child"}}, {}, "accounts.alice"),
        ({"accounts": {"alice": {"send_routes": "yes"}}}, {}, "send_routes must be true or false"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(
    raw: dict[str, Any], environ: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(raw, environ=environ)


def test_string_values_from_the_environment_are_parsed() -> None:
    config = parse_config({"open_children": "no", "child_credit_limit": "18446744073709551615"})
    assert config.open_children is False
    assert config.child_credit_limit == 2**64 - 1
    assert parse_config({"open_children": "TRUE"}).open_children is True
    assert parse_config({"max_hold_time": 5}).max_hold_time == 5.0


def test_route_exchange_settings() -> None:
    default = parse_config({})
    assert (default.route_broadcast, default.route_broadcast_interval) == (True, 30.0)
    assert default.route_expiry == 45.0
    config = parse_config(
        {"route_broadcast": "false", "route_broadcast_interval": 5, "route_expiry": 7.5}
    )
    assert (config.route_broadcast, config.route_broadcast_interval) == (False, 5.0)
    assert config.route_expiry == 7.5


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"relation": "child", "url": "btp+ws://:s@127.0.0.1:1"}, "child connects to us"),
        ({"url": "btp+ws://:s@127.0.0.1:1"}, "child connects to us"),  # child is the default
        ({"relation": "sibling"}, "relation must be one of child, peer, parent"),
        ({"relation": 1}, "relation"),
        ({"relation": "peer", "url": "ftp://127.0.0.1"}, "btp\\+ws"),
        ({"relation": "peer", "url": "https://user:pw@"}, "no host"),
        ({"relation": "peer", "url": "http://h/#x"}, "fragment"),
        ({"relation": "peer", "url": 5}, "url"),
        ({"token": ""}, "token"),
        ({"token": 5}, "token"),
        ({"asset_code": "toolongassetcode!"}, "asset_code"),
        ({"asset_scale": 300}, "asset_scale"),
        ({"max_packet_amount": -5}, "max_packet_amount"),
        ({"credit_limit": 2**64}, "credit_limit"),
        ({"credit_limit": True}, "credit_limit"),
        ({"routes": "test.a"}, "routes"),
        ({"routes": ["test..a"]}, "routes"),
    ],
)
def test_account_validation(table: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AccountConfig.from_mapping("alice", table)
    with pytest.raises(ConfigError, match=f"accounts.alice: .*{match}"):
        parse_config({"accounts": {"alice": table}})


def test_account_relations_and_fields() -> None:
    for relation in ("child", "peer", "parent"):
        assert AccountConfig.from_mapping("a", {"relation": relation}).relation == relation
    parent = AccountConfig.from_mapping(
        "up",
        {
            "relation": "parent",
            "url": "btp+wss://me:tok@example.com/ilp",
            "asset_code": "USD",
            "asset_scale": 2,
            "max_packet_amount": "500",
            "routes": ["", "g"],
        },
    )
    assert parent.url == "btp+wss://me:tok@example.com/ilp"
    assert (parent.asset_code, parent.asset_scale) == ("USD", 2)
    assert parent.max_packet_amount == 500
    assert parent.routes == ("", "g")
    assert parent.credit_limit is None
    with pytest.raises(ValueError, match="account name"):
        AccountConfig.from_mapping("a.b", {})
    with pytest.raises(ValueError, match="account name"):
        AccountConfig.from_mapping("x" * 65, {})


def test_relative_data_dir_is_beside_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "node.toml"
    path.write_text('data_dir = "data"\n')
    assert load_config(path).data_dir == folder / "data"
    path.write_text(f'data_dir = "{tmp_path / "abs"}"\n')
    assert load_config(path).data_dir == tmp_path / "abs"
    # From the environment or a flag, a relative directory is the caller's, not the file's.
    path.write_text('data_dir = "data"\n')
    assert load_config(path, environ={"ILP_NODE_DATA_DIR": "env"}).data_dir == Path("env")
    assert load_config(path, overrides={"data_dir": "flag"}).data_dir == Path("flag")


@pytest.mark.parametrize("value", ["", ":memory:"])
def test_in_memory_data_dir_in_a_file_stays_in_memory(tmp_path: Path, value: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'data_dir = "{value}"\n')
    config = load_config(path)
    assert config.data_dir is None
    assert config.store_path == ":memory:"


def test_default_data_dir_applies_only_when_nothing_sets_it(tmp_path: Path) -> None:
    assert parse_config({}, default_data_dir=tmp_path).data_dir == tmp_path
    assert parse_config({"data_dir": "/x"}, default_data_dir=tmp_path).data_dir == Path("/x")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.toml")
    path = tmp_path / "bad.toml"
    path.write_text("address = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_secrets_are_not_in_reprs() -> None:
    account = AccountConfig.from_mapping(
        "harness",
        {"relation": "peer", "token": "tok-SECRET-1", "url": "btp+ws://u:url-SECRET-2@h:1"},
    )
    config = parse_config(
        {
            "admin_token": "admin-SECRET-3-long-enough",
            "accounts": {
                "harness": {
                    "relation": "peer",
                    "token": "tok-SECRET-1",
                    "url": "btp+ws://u:url-SECRET-2@h:1",
                }
            },
        }
    )
    assert config.accounts == (account,)
    for text in (repr(account), repr(config), str(config)):
        assert "harness" in text or "NodeConfig" in text
        assert "SECRET" not in text
    # A bad URL's message does not carry the token either.
    with pytest.raises(ValueError) as info:
        AccountConfig.from_mapping("x", {"relation": "peer", "url": "ftp://u:url-SECRET@h"})
    assert "SECRET" not in str(info.value)


def test_toml_example_is_valid_toml() -> None:
    # Guards the helper above: the docstring block must stay a full, parseable example.
    raw = tomllib.loads(_docstring_example())
    assert set(raw["accounts"]) == {"alice", "harness"}
