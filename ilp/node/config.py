"""The node's configuration: a TOML file, environment variables and flags (flags win).

::

    address = "test.mynode"          # "" asks the parent account over ILDCP (omitted: private.node)
    asset_code = "XRP"
    asset_scale = 9
    data_dir = "node-data"           # the SQLite store lives here; omit for the default
    spread = "0.002"                 # kept by the node on every conversion
    open_children = true             # unknown BTP clients become child accounts (moneyd style)
    route_broadcast = true           # exchange routes (CCP) with peers and parents
    route_broadcast_interval = 30    # seconds between route updates to each peer
    route_expiry = 45                # seconds peers may keep our routes without a refresh

    [btp]                            # our BTP server, for children and for peers that dial us
    host = "127.0.0.1"
    port = 7768

    [api]
    host = "127.0.0.1"
    port = 7769
    admin_token = "at-least-16-characters"   # better: ILP_NODE_ADMIN_TOKEN

    [rates]                          # value of one whole unit, for accounts of other assets
    XRP = "0.5"
    USD = "1"

    [routes]                         # static routes: prefix = account
    "test.harness" = "harness"

    [accounts.alice]                 # a child that connects to our BTP server
    relation = "child"
    token = "alice-secret"
    max_packet_amount = 100000
    credit_limit = 1000000           # how far alice may go below zero; omit: no limit

    [accounts.harness]               # a peer we dial
    relation = "peer"
    url = "btp+ws://:secret@127.0.0.1:7790"
    routes = ["test.harness"]
    receive_routes = false           # CCP: tell it our routes, take none of its

Environment: ``ILP_NODE_CONFIG`` (the file), ``ILP_NODE_ADDRESS``, ``ILP_NODE_ASSET_CODE``,
``ILP_NODE_ASSET_SCALE``, ``ILP_NODE_DATA_DIR``, ``ILP_NODE_BTP_HOST``, ``ILP_NODE_BTP_PORT``,
``ILP_NODE_API_HOST``, ``ILP_NODE_API_PORT``, ``ILP_NODE_ADMIN_TOKEN``, ``ILP_NODE_SPREAD``.

Everything is checked here, before the node starts; :class:`ConfigError` names the key at fault.
Parsing is pure (no I/O but reading the file in :func:`load_config`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

from ..address import is_valid_address
from ..btp.url import parse_btp_url
from ..errors import IlpError
from ..http.client import is_http_url, split_http_url
from ..oer import MAX_UINT64
from ..routing import is_valid_prefix
from .rates import parse_rate

__all__ = [
    "ACCOUNT_KEYS",
    "ENV_VARS",
    "RELATIONS",
    "AccountConfig",
    "ConfigError",
    "NodeConfig",
    "check_account_name",
    "check_asset",
    "load_config",
    "parse_config",
]

RELATIONS: Final = ("child", "peer", "parent")

DEFAULT_ADDRESS: Final = "private.node"
DEFAULT_BTP_PORT: Final = 7768
DEFAULT_API_PORT: Final = 7769

ENV_VARS: Final = {
    "address": "ILP_NODE_ADDRESS",
    "asset_code": "ILP_NODE_ASSET_CODE",
    "asset_scale": "ILP_NODE_ASSET_SCALE",
    "data_dir": "ILP_NODE_DATA_DIR",
    "btp_host": "ILP_NODE_BTP_HOST",
    "btp_port": "ILP_NODE_BTP_PORT",
    "api_host": "ILP_NODE_API_HOST",
    "api_port": "ILP_NODE_API_PORT",
    "admin_token": "ILP_NODE_ADMIN_TOKEN",
    "spread": "ILP_NODE_SPREAD",
}
"""Setting name -> environment variable. ``ILP_NODE_CONFIG`` names the file."""

_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ASSET_CODE = re.compile(r"[A-Za-z0-9]{1,16}")


ACCOUNT_KEYS: Final = frozenset(
    {
        "relation",
        "asset_code",
        "asset_scale",
        "token",
        "url",
        "max_packet_amount",
        "credit_limit",
        "routes",
        "send_routes",
        "receive_routes",
    }
)
"""The settings of an account, in a config table or an API request."""


class ConfigError(IlpError):
    """The configuration is invalid; the message names the setting and says what is allowed."""


def check_account_name(name: object) -> str:
    """An account name: 1-64 letters, digits, ``_`` or ``-`` (it becomes an address segment)."""
    if not isinstance(name, str) or _ACCOUNT_NAME.fullmatch(name) is None:
        raise ValueError(
            "an account name is 1 to 64 letters, digits, '_' or '-' (it becomes an ILP address "
            "segment)"
        )
    return name


def check_asset(code: object, scale: object) -> tuple[str, int]:
    """A valid ``(asset_code, asset_scale)``; ValueError with a reason otherwise."""
    if not isinstance(code, str) or _ASSET_CODE.fullmatch(code) is None:
        raise ValueError("asset_code is 1 to 16 letters or digits, such as XRP or USD")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 255:
        raise ValueError("asset_scale is an integer from 0 to 255")
    return code, scale


def check_account_url(url: str) -> None:
    """ValueError unless ``url`` is a BTP URL (``btp+ws://user:token@host``) or an ILP-over-HTTP
    URL (``https://name:token@host/path``: the token goes out as a bearer token)."""
    if is_http_url(url):
        split_http_url(url)
        return
    try:
        parse_btp_url(url)
    except ValueError as exc:
        raise ValueError(f"{exc} (or http:// or https:// for ILP over HTTP)") from None


def _amount(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be a whole number of base units")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{what} must be a whole number of base units") from None
    if not 0 <= number <= MAX_UINT64:
        raise ValueError(f"{what} must be from 0 to {MAX_UINT64}")
    return number


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One account. ``token`` is what the account must send us: its BTP client's token (children
    and peers that dial us), or its bearer token when it POSTs ILP over HTTP to
    ``/accounts/<name>/ilp``. ``url`` is where we send: a BTP URL we dial, or the peer's
    ILP-over-HTTP endpoint (``https://name:token@host/path``, the token sent as a bearer token,
    the name as ``ILP-Peer-Name``). Both are secrets.
    ``credit_limit``: how far below zero the balance may go (None: no limit)."""

    name: str
    relation: str = "child"
    asset_code: str | None = None
    asset_scale: int | None = None
    token: str | None = field(default=None, repr=False)
    url: str | None = field(default=None, repr=False)
    max_packet_amount: int | None = None
    credit_limit: int | None = None
    routes: tuple[str, ...] = ()
    send_routes: bool | None = None
    """Send this account our routes over CCP (None: yes for peers and parents, no for
    children)."""
    receive_routes: bool | None = None
    """Take this account's routes over CCP (None: as for ``send_routes``)."""

    @classmethod
    def from_mapping(cls, name: str, raw: Mapping[str, Any]) -> AccountConfig:
        """Check ``raw`` (a TOML table or a JSON object); ValueError names the bad key."""
        check_account_name(name)
        known = ACCOUNT_KEYS
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        relation = raw.get("relation", "child")
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {', '.join(RELATIONS)}")
        code, scale = raw.get("asset_code"), raw.get("asset_scale")
        if code is not None or scale is not None:
            check_asset(code if code is not None else "XRP", scale if scale is not None else 0)
        token = raw.get("token")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string")
        url = raw.get("url")
        if url is not None:
            if not isinstance(url, str):
                raise ValueError("url must be a btp+ws://, btp+wss://, http:// or https:// URL")
            check_account_url(url)
        if url is not None and relation == "child" and not is_http_url(url):
            raise ValueError(
                "a child connects to us: give it a token, not a BTP url (an http(s) url is "
                "where an ILP-over-HTTP child takes our Prepares)"
            )
        routes = raw.get("routes", [])
        if not isinstance(routes, list) or not all(
            isinstance(r, str) and is_valid_prefix(r) for r in routes
        ):
            raise ValueError("routes must be a list of ILP address prefixes")
        for key in ("send_routes", "receive_routes"):
            if raw.get(key) is not None and not isinstance(raw[key], bool):
                raise ValueError(f"{key} must be true or false")
        return cls(
            name=name,
            relation=relation,
            asset_code=code,
            asset_scale=scale,
            token=token,
            url=url,
            max_packet_amount=_amount(raw.get("max_packet_amount"), "max_packet_amount"),
            credit_limit=_amount(raw.get("credit_limit"), "credit_limit"),
            routes=tuple(routes),
            send_routes=raw.get("send_routes"),
            receive_routes=raw.get("receive_routes"),
        )


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything the node needs to start. ``address`` None: ask the parent (ILDCP).
    ``data_dir`` None: keep the store in memory (nothing survives a restart)."""

    address: str | None = DEFAULT_ADDRESS
    asset_code: str = "XRP"
    asset_scale: int = 9
    data_dir: Path | None = None
    btp_host: str = "127.0.0.1"
    btp_port: int = DEFAULT_BTP_PORT
    api_host: str = "127.0.0.1"
    api_port: int | None = DEFAULT_API_PORT
    """None: no HTTP API."""
    admin_token: str | None = field(default=None, repr=False)
    """None: a random token is made and kept in ``<data_dir>/admin-token``."""
    spread: Fraction = Fraction(0)
    open_children: bool = True
    child_credit_limit: int | None = None
    """The credit limit of children created when they first connect (None: no limit)."""
    child_max_packet_amount: int | None = None
    min_message_window: float = 1.0
    """Seconds taken off every expiry we forward; less time left than this is R02."""
    max_hold_time: float = 30.0
    """The longest we hold a forwarded Prepare, whatever its expiry says."""
    route_broadcast: bool = True
    """Exchange routes (CCP) with peer and parent accounts."""
    route_broadcast_interval: float = 30.0
    """Seconds between the route updates (heartbeats) sent to each peer that asked for them."""
    route_expiry: float = 45.0
    """Seconds a peer may keep our routes without a refresh (the hold-down time we send)."""
    rates: Mapping[str, Fraction] = field(default_factory=dict)
    routes: Mapping[str, str] = field(default_factory=dict)
    accounts: tuple[AccountConfig, ...] = ()

    @property
    def store_path(self) -> str:
        return ":memory:" if self.data_dir is None else str(self.data_dir / "node.sqlite3")


def _port(value: object, key: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{key}: a port is a number from 0 to 65535")
    return value


def _flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The file's sections as the flat setting names the environment and flags use."""
    flat = {k: v for k, v in raw.items() if k not in ("btp", "api", "rates", "routes", "accounts")}
    for section in ("btp", "api"):
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        for key, value in table.items():
            name = f"{section}_{key}"
            flat[_SECTION_ALIASES.get(name, name)] = value
    return flat


_SECTION_ALIASES: Final = {"api_admin_token": "admin_token"}
"""``[api] admin_token`` (as documented) is the ``admin_token`` setting."""


_SETTINGS: Final = {
    "address",
    "asset_code",
    "asset_scale",
    "data_dir",
    "btp_host",
    "btp_port",
    "api_host",
    "api_port",
    "admin_token",
    "spread",
    "open_children",
    "child_credit_limit",
    "child_max_packet_amount",
    "min_message_window",
    "max_hold_time",
    "route_broadcast",
    "route_broadcast_interval",
    "route_expiry",
}


def parse_config(
    raw: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
    default_data_dir: Path | None = None,
) -> NodeConfig:
    """Build a :class:`NodeConfig` from a parsed file, the environment and flags (in that order
    of precedence, lowest first). ``overrides`` values of None are ignored. A relative
    ``data_dir`` from the file is taken relative to ``base_dir`` (the file's folder). Where no
    layer sets ``data_dir``, ``default_data_dir`` is used (None: the store is in memory)."""
    settings = _flatten(raw)
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    if base_dir is not None and settings.get("data_dir") not in (None, "", ":memory:"):
        # "" and ":memory:" mean no directory at all: never a folder beside the file.
        settings["data_dir"] = str(base_dir / str(settings["data_dir"]))
    for key, var in ENV_VARS.items():
        if environ and environ.get(var):
            settings[key] = environ[var]
    for key, value in (overrides or {}).items():
        if value is not None:
            settings[key] = value
    if "data_dir" not in settings and default_data_dir is not None:
        settings["data_dir"] = str(default_data_dir)
    return _build(settings, raw)


_BOOLEANS: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_MAX_SECONDS: Final = 86400


def _build(settings: dict[str, Any], raw: Mapping[str, Any]) -> NodeConfig:
    defaults = NodeConfig()
    address = settings.get("address", defaults.address)
    if address == "":
        address = None
    if address is not None and (not isinstance(address, str) or not is_valid_address(address)):
        raise ConfigError(f"address: {str(address)[:80]!r} is not a valid ILP address")
    scale = settings.get("asset_scale", defaults.asset_scale)
    if isinstance(scale, str) and scale.isascii() and scale.isdigit():
        scale = int(scale)
    try:
        code, scale = check_asset(settings.get("asset_code", defaults.asset_code), scale)
        spread = parse_rate(settings.get("spread", "0"), what="spread", allow_zero=True)
        if spread >= 1:
            raise ValueError("spread must be less than 1")
        child_credit = _amount(settings.get("child_credit_limit"), "child_credit_limit")
        child_max = _amount(settings.get("child_max_packet_amount"), "child_max_packet_amount")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    data_dir = settings.get("data_dir")
    api_port = settings.get("api_port", defaults.api_port)
    token = settings.get("admin_token")
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        raise ConfigError("admin_token: use at least 16 characters")
    open_children = _boolean(settings, "open_children")
    route_broadcast = _boolean(settings, "route_broadcast")
    windows = {}
    for key in ("min_message_window", "max_hold_time", "route_broadcast_interval", "route_expiry"):
        value = settings.get(key, getattr(defaults, key))
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= _MAX_SECONDS  # also refuses nan and inf, which TOML allows
        ):
            raise ConfigError(f"{key}: a positive number of seconds, at most {_MAX_SECONDS}")
        windows[key] = float(value)
    return NodeConfig(
        address=address,
        asset_code=code,
        asset_scale=scale,
        data_dir=None if data_dir in (None, "", ":memory:") else Path(str(data_dir)),
        btp_host=str(settings.get("btp_host", defaults.btp_host)),
        btp_port=_port(settings.get("btp_port", defaults.btp_port), "btp.port"),
        api_host=str(settings.get("api_host", defaults.api_host)),
        api_port=None if api_port in (None, "off", "") else _port(api_port, "api.port"),
        admin_token=token,
        spread=spread,
        open_children=open_children,
        route_broadcast=route_broadcast,
        child_credit_limit=child_credit,
        child_max_packet_amount=child_max,
        rates=_rates(raw.get("rates", {})),
        routes=_routes(raw.get("routes", {})),
        accounts=_accounts(raw.get("accounts", {})),
        **windows,
    )


def _boolean(settings: Mapping[str, Any], key: str) -> bool:
    value = settings.get(key, True)
    if isinstance(value, str) and value.lower() in _BOOLEANS:
        value = _BOOLEANS[value.lower()]
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: true or false")
    return value


def _rates(raw: object) -> dict[str, Fraction]:
    if not isinstance(raw, dict):
        raise ConfigError("[rates] must be a table of ASSET = rate")
    rates = {}
    for code, value in raw.items():
        try:
            check_asset(code, 0)
            rates[code] = parse_rate(value)
        except ValueError as exc:
            raise ConfigError(f"rates.{code}: {exc}") from None
    return rates


def _routes(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError('[routes] must be a table of "prefix" = "account"')
    for prefix, account in raw.items():
        if not is_valid_prefix(prefix):
            raise ConfigError(f"routes: {prefix[:80]!r} is not an ILP address prefix")
        if not isinstance(account, str):
            raise ConfigError(f"routes.{prefix}: the value is an account name")
    return dict(raw)


def _accounts(raw: object) -> tuple[AccountConfig, ...]:
    if not isinstance(raw, dict):
        raise ConfigError("[accounts.NAME] tables describe the accounts")
    accounts = []
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"accounts.{name} must be a table")
        try:
            accounts.append(AccountConfig.from_mapping(name, table))
        except ValueError as exc:
            raise ConfigError(f"accounts.{name}: {exc}") from None
    return tuple(accounts)


def load_config(
    path: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    default_data_dir: Path | None = None,
) -> NodeConfig:
    """Read the TOML file at ``path`` (None: no file) and apply environment and flags."""
    raw: dict[str, Any] = {}
    base_dir = None
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None
        base_dir = path.parent
    return parse_config(
        raw,
        environ=environ,
        overrides=overrides,
        base_dir=base_dir,
        default_data_dir=default_data_dir,
    )
