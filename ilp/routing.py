"""A routing table: longest-prefix match from ILP addresses to next hops (sans-I/O).

::

    table = RoutingTable()
    table.set("test.bob", "bob")            # a static route
    table.set("", "upstream")               # the default route: the empty prefix matches all
    table.lookup("test.bob.7f3a")           # -> "bob"
    table.lookup("g.elsewhere")             # -> "upstream"

Prefixes are compared as strings, as ilp-connector's PrefixMap does, but a route only matches at a
segment boundary: ``test.bob`` matches ``test.bob`` and ``test.bob.x``, never ``test.bobby``. That
keeps an account called ``bob`` from catching the packets of an account called ``bobby``.

Lookups cost one dictionary probe per segment of the destination (at most a few dozen), not one
per route, and recent answers are cached; the cache is dropped whenever the table changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, Generic, TypeVar

from .address import is_valid_address

__all__ = ["DEFAULT_PREFIX", "RoutingTable", "is_valid_prefix"]

T = TypeVar("T")

DEFAULT_PREFIX: Final = ""
"""The prefix of the default route: it matches every destination."""

_CACHE_SIZE: Final = 4096


def is_valid_prefix(prefix: str) -> bool:
    """True for ``""`` (the default route), a scheme alone (``"g"``), or a valid ILP address."""
    if prefix == DEFAULT_PREFIX:
        return True
    return is_valid_address(prefix) or is_valid_address(prefix + ".x")


class RoutingTable(Generic[T]):
    """Maps address prefixes to next hops of type ``T`` (account names, links...).

    :meth:`lookup` returns the next hop of the longest prefix that matches a destination at a
    segment boundary, or ``None``.
    """

    def __init__(self, routes: Mapping[str, T] | None = None) -> None:
        self._routes: dict[str, T] = {}
        self._cache: dict[str, T | None] = {}
        for prefix, hop in (routes or {}).items():
            self.set(prefix, hop)

    def set(self, prefix: str, hop: T) -> None:
        """Add or replace the route for ``prefix``; raises ValueError for an invalid prefix."""
        if not is_valid_prefix(prefix):
            raise ValueError(f"invalid route prefix {prefix[:80]!r}")
        self._routes[prefix] = hop
        self._cache.clear()

    def remove(self, prefix: str) -> bool:
        """Remove the route for ``prefix``; False if there was none."""
        if prefix not in self._routes:
            return False
        del self._routes[prefix]
        self._cache.clear()
        return True

    def remove_hop(self, hop: T) -> list[str]:
        """Remove every route to ``hop``; returns their prefixes."""
        gone = [prefix for prefix, value in self._routes.items() if value == hop]
        for prefix in gone:
            del self._routes[prefix]
        if gone:
            self._cache.clear()
        return gone

    def get(self, prefix: str) -> T | None:
        """The hop of exactly ``prefix``, if that route exists."""
        return self._routes.get(prefix)

    def lookup(self, destination: str) -> T | None:
        """The next hop for ``destination``: longest matching prefix, else the default route."""
        cache = self._cache
        try:
            return cache[destination]
        except KeyError:
            pass
        routes = self._routes
        hop: T | None = None
        end = len(destination)
        while end > 0:
            found = routes.get(destination[:end])
            if found is not None:
                hop = found
                break
            end = destination.rfind(".", 0, end)
        else:
            hop = routes.get(DEFAULT_PREFIX)
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[destination] = hop
        return hop

    def items(self) -> Iterator[tuple[str, T]]:
        """The routes, shortest prefix first, then alphabetically."""
        return iter(sorted(self._routes.items(), key=lambda item: (len(item[0]), item[0])))

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._routes
