"""The route exchange (CCP) state, sans-I/O: what is advertised, learned, chosen and sent."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilp.ccp import Mode, Route, RouteControlRequest, RouteUpdateRequest
from ilp.ccp.routing import (
    MAX_EPOCHS_PER_UPDATE,
    MAX_ROUTES_PER_PEER,
    ZERO_TABLE_ID,
    RouteExchange,
    RoutingRefusedError,
)

SECRET = b"s" * 32
RELATIONS = {"up": "parent", "p1": "peer", "p2": "peer", "kid": "child", "alice": "child"}


def exchange(address: str = "test.a", **kwargs: float) -> RouteExchange:
    return RouteExchange(address, SECRET, relation_of=RELATIONS.get, **kwargs)


def sync(ex: RouteExchange, peer: str, table_id: bytes = ZERO_TABLE_ID, epoch: int = 0) -> None:
    ex.handle_control(peer, RouteControlRequest(Mode.SYNC, table_id, epoch))


def update(
    *routes: tuple[str, tuple[str, ...]],
    table_id: bytes = b"T" * 16,
    first: int = 0,
    last: int = 1,
    withdrawn: tuple[str, ...] = (),
    hold_down: int = 45_000,
) -> RouteUpdateRequest:
    return RouteUpdateRequest(
        table_id,
        last,
        first,
        last,
        hold_down,
        routes[0][1][0] if routes else "test.speaker",
        tuple(Route(prefix, path, bytes(32)) for prefix, path in routes),
        withdrawn,
    )


def learned(ex: RouteExchange) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {p: (r.next_hop, r.path) for p, r in ex.learned().items()}


def test_the_node_advertises_its_address_and_static_routes_but_not_its_children() -> None:
    ex = exchange()
    ex.set_origin("test.a", {"test.a": "", "test.a.alice": "alice"}, {"test.x": "p1"})
    advertised = ex.advertised()
    assert sorted(advertised) == ["test.a", "test.x"]
    own = advertised["test.a"]
    assert own.path == ("test.a",)
    expected = hashlib.sha256(hmac.new(SECRET, b"test.a", hashlib.sha256).digest()).digest()
    assert own.auth == expected
    assert ex.epoch == 2
    # The children are routed locally all the same.
    assert ex.best("test.a.alice") is not None
    assert ex.best("test.a.alice").next_hop == "alice"  # type: ignore[union-attr]


def test_a_peer_gets_the_table_from_epoch_0_then_heartbeats() -> None:
    ex = exchange(broadcast_interval=30.0)
    ex.set_origin("test.a", {"test.a": ""}, {"test.x": "up"})
    ex.add_peer("p1", "peer")
    assert ex.controls_due(0.0) == ["p1"]  # we ask it for its routes
    assert ex.updates_due(0.0) == []  # it has not asked for ours
    sync(ex, "p1")
    assert ex.updates_due(0.0) == ["p1"]
    message, first = ex.route_update("p1", 0.0)
    assert (first, message.from_epoch_index, message.to_epoch_index) == (0, 0, 2)
    assert message.current_epoch_index == 2 and message.routing_table_id == ex.table_id
    assert message.speaker == "test.a" and message.hold_down_time == 45_000
    assert sorted(r.prefix for r in message.new_routes) == ["test.a", "test.x"]
    assert RouteUpdateRequest.decode(message.encode()) == message  # it goes on the wire as is
    assert ex.updates_due(1.0) == []  # one at a time
    ex.update_done("p1", True, first)
    assert ex.updates_due(29.0) == []
    assert ex.next_due(1.0) == 30.0
    assert ex.updates_due(30.0) == ["p1"]
    heartbeat, _ = ex.route_update("p1", 30.0)
    assert (heartbeat.from_epoch_index, heartbeat.to_epoch_index) == (2, 2)
    assert heartbeat.new_routes == () and heartbeat.withdrawn_routes == ()


def test_a_change_goes_out_soon_and_a_failed_update_is_sent_again() -> None:
    ex = exchange()
    ex.set_origin("test.a", {"test.a": ""}, {})
    ex.add_peer("p1", "peer")
    sync(ex, "p1")
    message, first = ex.route_update("p1", 0.0)
    ex.update_done("p1", True, first)
    ex.set_origin("test.a", {"test.a": ""}, {"test.x": "up"})
    assert ex.updates_due(0.1) == []  # not twice within 150 ms
    assert ex.updates_due(0.15) == ["p1"]
    message, first = ex.route_update("p1", 0.15)
    assert [r.prefix for r in message.new_routes] == ["test.x"]
    ex.update_done("p1", False, first)
    again, _ = ex.route_update("p1", 0.3)
    assert again == message


def test_the_control_request_names_where_the_peer_stands() -> None:
    ex = exchange()
    ex.set_origin("test.a", {"test.a": ""}, {"test.x": "up", "test.y": "up"})
    ex.add_peer("p1", "peer")
    sync(ex, "p1", ex.table_id, 1)
    assert ex.route_update("p1", 0.0)[0].from_epoch_index == 1
    sync(ex, "p1", ex.table_id, 99)  # ahead of us: taken as our epoch
    assert ex.route_update("p1", 1.0)[0].from_epoch_index == 3
    sync(ex, "p1", b"x" * 16, 2)  # another table: from the start
    assert ex.route_update("p1", 2.0)[0].from_epoch_index == 0
    ex.handle_control("p1", RouteControlRequest(Mode.IDLE, ex.table_id, 3))
    assert ex.updates_due(100.0) == []


def test_updates_cover_at_most_50_epochs() -> None:
    ex = exchange()
    ex.set_origin("test.a", {}, {f"test.r{i}": "up" for i in range(120)})
    ex.add_peer("p1", "peer")
    sync(ex, "p1")
    seen: list[str] = []
    now = 0.0
    while ex.updates_due(now):
        message, first = ex.route_update("p1", now)
        assert message.to_epoch_index - message.from_epoch_index <= MAX_EPOCHS_PER_UPDATE
        seen += [r.prefix for r in message.new_routes]
        ex.update_done("p1", True, first)
        now += 0.15
        if message.to_epoch_index == ex.epoch:
            break
    assert sorted(seen) == sorted(f"test.r{i}" for i in range(120))


def test_learned_routes_are_filtered() -> None:
    ex = exchange()
    ex.set_origin("test.a", {"test.a": ""}, {})
    ex.add_peer("p1", "peer")
    changed = ex.handle_update(
        "p1",
        update(
            ("test.b", ("test.b",)),
            ("test.b.c", ("test.b", "test.c")),
            ("g.other", ("test.b",)),  # another scheme
            ("test", ("test.b",)),  # the scheme alone
            ("test.a", ("test.b",)),  # our own address
            ("test.a.sub", ("test.b",)),  # under it
            ("test.loop", ("test.b", "test.a", "test.z")),  # through us already
        ),
        0.0,
    )
    assert changed == ["test.b", "test.b.c"]
    assert learned(ex) == {
        "test.b": ("p1", ("test.b",)),
        "test.b.c": ("p1", ("test.b", "test.c")),
    }
    assert ex.best("test.a") is not None
    assert ex.best("test.a").origin == "local"  # type: ignore[union-attr]


def test_the_epochs_of_a_peer_are_followed() -> None:
    ex = exchange()
    ex.add_peer("p1", "peer")
    ex.handle_update("p1", update(("test.b", ("test.b",)), first=0, last=3), 0.0)
    ex.controls_due(0.0)
    # A gap: ignored, and the peer is asked for what we lack.
    assert ex.handle_update("p1", update(("test.c", ("test.b",)), first=5, last=6), 1.0) == []
    assert ex.controls_due(1.0) == ["p1"]
    assert ex.control_request("p1") == RouteControlRequest(Mode.SYNC, b"T" * 16, 3)
    # Older than what we have: ignored.
    assert ex.handle_update("p1", update(withdrawn=("test.b",), first=0, last=2), 1.0) == []
    # A withdrawal in order.
    assert ex.handle_update("p1", update(withdrawn=("test.b",), first=3, last=4), 1.0) == ["test.b"]
    assert learned(ex) == {}
    assert ex.peers["p1"].epoch == 4


def test_a_new_table_of_the_peer_drops_its_old_routes() -> None:
    ex = exchange()
    ex.add_peer("p1", "peer")
    ex.handle_update("p1", update(("test.b", ("test.b",)), ("test.old", ("test.b",))), 0.0)
    changed = ex.handle_update(
        "p1", update(("test.b", ("test.b",)), table_id=b"N" * 16, first=0, last=1), 1.0
    )
    assert changed == ["test.old"]
    assert learned(ex) == {"test.b": ("p1", ("test.b",))}


def test_the_best_route_static_then_local_then_relation_path_and_name() -> None:
    ex = exchange()
    ex.set_origin("test.a", {"test.a": ""}, {})
    for name, relation in (("up", "parent"), ("p2", "peer"), ("p1", "peer"), ("kid", "child")):
        ex.add_peer(name, relation)
    ex.handle_update("up", update(("test.z", ("test.u",))), 0.0)
    assert learned(ex)["test.z"][0] == "up"
    ex.handle_update("p2", update(("test.z", ("test.p", "test.q", "test.r"))), 0.0)
    assert learned(ex)["test.z"][0] == "p2"  # a peer over a parent, whatever the path
    ex.handle_update("p1", update(("test.z", ("test.p", "test.q", "test.r"))), 0.0)
    assert learned(ex)["test.z"][0] == "p1"  # the same length: by name
    ex.handle_update("p2", update(("test.z", ("test.p",)), first=1, last=2), 0.0)
    assert learned(ex)["test.z"][0] == "p2"  # shorter
    ex.handle_update("kid", update(("test.z", ("test.k", "test.l", "test.m", "test.n"))), 0.0)
    assert learned(ex)["test.z"][0] == "kid"  # a child over a peer
    ex.set_origin("test.a", {"test.a": ""}, {"test.z": "up"})
    assert ex.best("test.z").origin == "static"  # type: ignore[union-attr]
    assert "test.z" not in learned(ex)
    assert ex.remove_peer("kid") == []  # the static route stays the best
    ex.set_origin("test.a", {"test.a": ""}, {})
    assert learned(ex)["test.z"][0] == "p2"


def test_what_each_peer_is_told() -> None:
    ex = exchange()
    ex.set_origin("test.a", {"test.a": ""}, {"test.kid": "kid"})
    for name, relation in (("up", "parent"), ("p1", "peer"), ("p2", "peer")):
        ex.add_peer(name, relation)
        sync(ex, name)
    ex.handle_update("p1", update(("test.b", ("test.b",))), 0.0)
    advertised = ex.advertised()["test.b"]
    assert advertised.path == ("test.a", "test.b")
    assert advertised.auth == hashlib.sha256(bytes(32)).digest()

    def told(peer: str) -> tuple[list[str], list[str]]:
        message, _ = ex.route_update(peer, 0.0)
        return sorted(r.prefix for r in message.new_routes), sorted(message.withdrawn_routes)

    # p1 is not told its own route; the parent only ours and our children's.
    assert told("p1") == (["test.a", "test.kid"], ["test.b"])
    assert told("p2") == (["test.a", "test.b", "test.kid"], [])
    assert told("up") == (["test.a", "test.kid"], ["test.b"])


def test_a_peer_that_goes_or_goes_quiet_loses_its_routes() -> None:
    ex = exchange()
    ex.set_origin("test.a", {"test.a": ""}, {})
    ex.add_peer("p1", "peer")
    ex.add_peer("p2", "peer")
    sync(ex, "p2")
    assert ex.controls_due(0.0) == ["p1", "p2"]
    ex.handle_update("p1", update(("test.b", ("test.b",)), hold_down=10_000), 0.0)
    ex.handle_update("p1", update(first=1, last=1, hold_down=10_000), 5.0)  # a heartbeat
    assert ex.next_due(5.0) <= 15.0
    assert ex.expire(14.9) == []
    assert ex.expire(15.1) == ["test.b"]
    assert ex.controls_due(15.1) == ["p1"]  # asked again
    ex.handle_update("p1", update(("test.b", ("test.b",))), 20.0)
    epoch = ex.epoch
    assert ex.remove_peer("p1") == ["test.b"]
    assert ex.epoch == epoch + 1  # the withdrawal is logged for the others
    message, _ = ex.route_update("p2", 21.0)
    assert "test.b" in message.withdrawn_routes


def test_refusals() -> None:
    ex = exchange()
    with pytest.raises(RoutingRefusedError, match="does not exchange routes"):
        sync(ex, "p1")
    ex.add_peer("p1", "peer", send=False, receive=True)
    with pytest.raises(RoutingRefusedError, match="not to send"):
        sync(ex, "p1")
    ex.add_peer("p2", "peer", send=True, receive=False)
    with pytest.raises(RoutingRefusedError, match="not to take"):
        ex.handle_update("p2", update(("test.b", ("test.b",))), 0.0)
    assert ex.controls_due(0.0) == ["p1"]  # p2's routes are not asked for


def test_too_many_routes_from_one_peer_are_refused_whole() -> None:
    ex = exchange()
    ex.add_peer("p1", "peer")
    many = tuple((f"test.r{i}", ("test.b",)) for i in range(MAX_ROUTES_PER_PEER + 1))
    with pytest.raises(RoutingRefusedError, match="more than"):
        ex.handle_update("p1", update(*many), 0.0)
    assert learned(ex) == {}
    assert ex.peers["p1"].epoch == 0


def test_a_control_request_that_fails_is_sent_again_later() -> None:
    ex = exchange(control_retry=30.0)
    ex.add_peer("p1", "peer")
    assert ex.controls_due(0.0) == ["p1"]
    assert ex.controls_due(0.0) == []  # on its way
    now = 0.0
    for wait in (1, 2, 4, 8, 16, 30, 30):  # doubling, up to control_retry
        ex.control_done("p1", False, now)
        assert ex.next_due(now) == now + wait
        assert ex.controls_due(now + wait - 0.01) == []
        now += wait
        assert ex.controls_due(now) == ["p1"]
    ex.control_done("p1", True, 32.0)
    assert ex.peers["p1"].control_failures == 0
    assert ex.controls_due(1000.0) == []
    ex.add_peer("p1", "peer")  # it reconnected
    assert ex.controls_due(1000.0) == ["p1"]


def test_a_new_address_starts_over() -> None:
    ex = exchange("local.unconfigured")
    ex.set_origin("local.unconfigured", {"local.unconfigured": ""}, {})
    ex.add_peer("p1", "peer")
    ex.handle_update("p1", update(("test.b", ("test.b",))), 0.0)
    assert learned(ex) == {}  # another scheme
    ex.set_origin("test.a", {"test.a": ""}, {})
    assert sorted(ex.advertised()) == ["test.a"]
    ex.handle_update("p1", update(("test.b", ("test.b",)), first=1, last=2), 0.0)
    assert learned(ex) == {"test.b": ("p1", ("test.b",))}


_PREFIXES = st.sampled_from([f"test.{name}" for name in ("x", "x.y", "y", "z", "b", "b.c")])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "drop", "fail"]), _PREFIXES, st.sampled_from(["up", "p1"])
        ),
        max_size=40,
    )
)
def test_a_receiver_fed_by_a_speaker_ends_with_what_the_speaker_advertises(
    steps: list[tuple[str, str, str]],
) -> None:
    """Two exchanges, ``test.a`` speaking to ``test.b`` (its peer ``p1``): whatever the static
    routes of ``test.a`` do, and whichever updates are lost on the way, once the updates due
    have gone through, ``test.b`` knows exactly what ``test.a`` advertises to it."""
    speaker, receiver = exchange("test.a"), exchange("test.b")
    speaker.add_peer("p1", "peer")
    receiver.add_peer("p1", "peer")
    speaker.set_origin("test.a", {"test.a": ""}, {})
    receiver.set_origin("test.b", {"test.b": ""}, {})
    speaker.handle_control("p1", receiver.control_request("p1"))
    static: dict[str, str] = {}
    now = 0.0

    def pump(lose: bool) -> None:
        nonlocal now
        for _ in range(100):
            now += 0.2
            if not speaker.updates_due(now):
                return
            message, first = speaker.route_update("p1", now)
            if lose:
                speaker.update_done("p1", False, first)
                lose = False
                continue
            receiver.handle_update("p1", message, now)
            speaker.update_done("p1", True, first)
        raise AssertionError("the updates never ended")

    for action, prefix, account in steps:
        if action == "set":
            static[prefix] = account
        else:
            static.pop(prefix, None)
        speaker.set_origin("test.a", {"test.a": ""}, static)
        pump(lose=action == "fail")
        while speaker.peers["p1"].next_epoch < speaker.epoch:
            pump(lose=False)
        expected = {
            p: ("p1", r.path)
            for p, r in speaker.advertised().items()
            if r.next_hop != "p1" and not p.startswith("test.b")
        }
        assert learned(receiver) == expected
