"""``ilp node``: a connector of our own (see :mod:`ilp.node.node` and ``docs/node.md``).

- :mod:`ilp.node.config`: TOML, environment and flags -> :class:`NodeConfig`
- :mod:`ilp.node.connector`: accounts, routing, the per-packet rules, balances
- :mod:`ilp.node.store`: the SQLite store
- :mod:`ilp.node.rates`: exact exchange with a spread
- :mod:`ilp.node.node`: the trio node (BTP server, dial-outs, receivers, API)
- :mod:`ilp.node.api`: the HTTP API (ASGI)
"""

from __future__ import annotations

from .config import AccountConfig, ConfigError, NodeConfig, load_config, parse_config
from .connector import Account, Connector, NodeError, NotFoundError, RouteInfo
from .node import Node, open_node
from .store import NodeStore, StoreError

__all__ = [
    "Account",
    "AccountConfig",
    "ConfigError",
    "Connector",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeStore",
    "NotFoundError",
    "RouteInfo",
    "StoreError",
    "load_config",
    "open_node",
    "parse_config",
]
