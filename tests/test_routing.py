"""The routing table: longest prefix at segment boundaries, the default route, the cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ilp.routing import DEFAULT_PREFIX, RoutingTable, is_valid_prefix


def test_longest_prefix_wins() -> None:
    table = RoutingTable({"test": "a", "test.bob": "b", "test.bob.phone": "c"})
    assert table.lookup("test.bob.phone.7f") == "c"
    assert table.lookup("test.bob.phone") == "c"
    assert table.lookup("test.bob.laptop") == "b"
    assert table.lookup("test.bob") == "b"
    assert table.lookup("test.carol") == "a"
    assert table.lookup("g.carol") is None


def test_prefixes_match_only_at_segment_boundaries() -> None:
    table = RoutingTable({"test.bob": "bob"})
    assert table.lookup("test.bobby") is None
    assert table.lookup("test.bobby.x") is None
    assert table.lookup("test.bo") is None
    assert table.lookup("test.bob.x") == "bob"
    table.set("test.bobby", "bobby")
    assert table.lookup("test.bobby.x") == "bobby"
    assert table.lookup("test.bob.x") == "bob"


def test_default_route_matches_everything_else() -> None:
    table = RoutingTable({"test.bob": "bob"})
    table.set(DEFAULT_PREFIX, "parent")
    assert table.lookup("g.anything.at.all") == "parent"
    assert table.lookup("test.bobby") == "parent"
    assert table.lookup("test.bob.1") == "bob"
    assert table.get("") == "parent"


def test_scheme_alone_is_a_prefix() -> None:
    table = RoutingTable({"g": "global", "": "default"})
    assert table.lookup("g.x.y") == "global"
    assert table.lookup("test.x") == "default"


def test_set_replaces_and_remove() -> None:
    table: RoutingTable[str] = RoutingTable()
    table.set("test.bob", "one")
    table.set("test.bob", "two")
    assert len(table) == 1
    assert "test.bob" in table
    assert table.lookup("test.bob.x") == "two"
    assert table.remove("test.bob") is True
    assert table.remove("test.bob") is False
    assert "test.bob" not in table
    assert table.lookup("test.bob.x") is None


def test_remove_hop() -> None:
    table = RoutingTable({"test.a": "x", "test.b": "x", "test.c": "y"})
    assert sorted(table.remove_hop("x")) == ["test.a", "test.b"]
    assert list(table.items()) == [("test.c", "y")]
    assert table.remove_hop("x") == []


def test_cache_is_dropped_when_the_table_changes() -> None:
    table = RoutingTable({"": "parent"})
    # Fill the cache with answers, then change the table under them.
    assert table.lookup("test.bob.1") == "parent"
    assert table.lookup("test.carol.1") == "parent"
    table.set("test.bob", "bob")
    assert table.lookup("test.bob.1") == "bob"
    table.set("test.carol", "carol")
    assert table.lookup("test.carol.1") == "carol"
    table.remove("test.bob")
    assert table.lookup("test.bob.1") == "parent"
    table.remove_hop("carol")
    assert table.lookup("test.carol.1") == "parent"
    table.remove("")
    assert table.lookup("test.carol.1") is None


def test_many_distinct_lookups_stay_right() -> None:
    # More destinations than the cache holds: the cache empties itself and answers stay right.
    table = RoutingTable({"test.even": "even", "": "other"})
    for i in range(10_000):
        prefix = "test.even" if i % 2 == 0 else "test.odd"
        assert table.lookup(f"{prefix}.{i}") == ("even" if i % 2 == 0 else "other")


@pytest.mark.parametrize(
    "prefix",
    ["test.", ".test", "test..bob", "nope.bob", "test.b b", "test.bob!", "x", "TEST.bob"],
)
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    assert not is_valid_prefix(prefix)
    table: RoutingTable[str] = RoutingTable()
    with pytest.raises(ValueError, match="invalid route prefix"):
        table.set(prefix, "hop")
    with pytest.raises(ValueError, match="invalid route prefix"):
        RoutingTable({prefix: "hop"})
    assert len(table) == 0


@pytest.mark.parametrize(
    "prefix", ["", "g", "test", "test.bob", "private.n.~receive", "peer.config"]
)
def test_valid_prefixes(prefix: str) -> None:
    assert is_valid_prefix(prefix)


def test_items_shortest_first() -> None:
    table = RoutingTable({"test.bb": 2, "test.a": 1, "": 0, "test.b": 3})
    assert list(table.items()) == [("", 0), ("test.a", 1), ("test.b", 3), ("test.bb", 2)]


# -- against a brute-force reference --------------------------------------------------------

_segments = st.sampled_from(["a", "b", "ab", "ba", "a-b", "b_a"])
_prefixes = st.just("") | st.builds(
    lambda scheme, segs: ".".join([scheme, *segs]),
    st.sampled_from(["test", "g"]),
    st.lists(_segments, max_size=3),
)
_destinations = st.builds(
    lambda scheme, segs: ".".join([scheme, *segs]),
    st.sampled_from(["test", "g"]),
    st.lists(_segments, min_size=1, max_size=5),
)


def _reference(routes: dict[str, int], destination: str) -> int | None:
    best: str | None = None
    for prefix in routes:
        matches = prefix == "" or destination == prefix or destination.startswith(prefix + ".")
        if matches and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else routes[best]


@given(
    st.dictionaries(_prefixes, st.integers(0, 100), max_size=8),
    st.lists(_destinations, min_size=1, max_size=10),
    st.lists(_prefixes, max_size=3),
)
def test_lookup_equals_brute_force_longest_prefix(
    routes: dict[str, int], destinations: list[str], removed: list[str]
) -> None:
    table = RoutingTable(routes)
    for destination in destinations:
        assert table.lookup(destination) == _reference(routes, destination)
    # Changing the table after lookups (cached answers) still gives the reference's answer.
    for prefix in removed:
        assert table.remove(prefix) == (prefix in routes)
        routes.pop(prefix, None)
    table.set("test.a", -1)
    routes["test.a"] = -1
    for destination in destinations:
        assert table.lookup(destination) == _reference(routes, destination)
