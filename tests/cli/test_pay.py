"""`ilp pay` and `ilp quote` through click's runner, over an in-memory connector and receiver.

The uplink (``open_uplink``) and the SPSP query (``query_spsp``) are replaced by a
:class:`World`: a :class:`~ilp.testing.FakeConnector` with our account ``alice`` and a real
:class:`~ilp.stream.server.StreamServer` as ``bob``, so every payment really runs STREAM. What bob
accepted is counted, and every test compares the command's output with it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result
from ilp_cli.amounts import AmountArg, parse_amount
from ilp_cli.exit_codes import ExitCode
from ilp_cli.main import cli
from ilp_cli.output import CliError
from ilp_cli.pay import failure_exit_code, fair_rate, payment_exit_code

from ilp.amount import Amount
from ilp.errors import SpspError
from ilp.ildcp import IldcpResponse
from ilp.packet import ErrorCode, Prepare, Reject
from ilp.spsp import SpspResponse, SpspTimeoutError, SpspUnreachableError
from ilp.stream.connection import Connection, DataStream
from ilp.stream.pay import AssetDetails, FailureKind, PaymentFailure, PaymentResult, PaymentStatus
from ilp.stream.server import StreamServer
from ilp.testing import FakeConnector
from tests.interop.harness import free_port

RECEIVER = "$bob.example"


@dataclasses.dataclass
class World:
    """The fake network one command runs against (built inside its trio.run)."""

    sender_asset: tuple[str, int] = ("XRP", 9)
    receiver_asset: tuple[str, int] = ("XRP", 9)
    max_packet_amount: int | None = None
    rate: Fraction = Fraction(1)
    """What bob gets per unit sent (the connector forwards the rest nowhere)."""
    hang: bool = False
    """Bob never answers."""
    stall_after: int | None = None
    """After this many fulfilled money packets, bob answers T04 (temporarily unavailable)."""
    interrupt_after: int | None = None
    """After this many fulfilled money packets, SIGINT goes to this process (Ctrl-C)."""
    unroutable: bool = False
    """The SPSP answer names an address the connector has no route to."""
    spsp_error: SpspError | None = None
    fail_on_close: bool = False
    """The link fails as it is closed (after the payment)."""
    received: int = 0
    money_packets: int = 0
    queries: int = 0
    secrets: list[bytes] = dataclasses.field(default_factory=list)
    _server: StreamServer | None = None

    async def _should_fulfill(self, conn: Connection, stream: DataStream, amount: int) -> bool:
        self.received += amount
        self.money_packets += 1
        if self.interrupt_after is not None and self.money_packets == self.interrupt_after:
            os.kill(os.getpid(), signal.SIGINT)
        return True

    @asynccontextmanager
    async def open_uplink(self, uplink: Any, **kw: Any) -> AsyncIterator[tuple[Any, Any]]:
        code, scale = self.sender_asset
        connector = FakeConnector(
            "test.connector",
            asset_code=code,
            asset_scale=scale,
            max_packet_amount=self.max_packet_amount,
        )
        server = StreamServer(
            os.urandom(32),
            connector.child_address("bob"),
            *self.receiver_asset,
            should_fulfill=self._should_fulfill,
            backlog=0,
        )

        async def bob(prepare: Prepare) -> Any:
            if self.hang:
                await trio.sleep_forever()
            if self.stall_after is not None and self.money_packets >= self.stall_after:
                return Reject(ErrorCode("T04"), "test.connector.bob", "stalled")
            amount = prepare.amount * self.rate.numerator // self.rate.denominator
            return await server(dataclasses.replace(prepare, amount=amount))

        connector.add_child("bob", bob)
        alice = connector.add_child("alice")
        self._server = server
        async with server:
            yield alice, IldcpResponse(connector.child_address("alice"), scale, code)
        if self.fail_on_close:
            raise CliError("the connector refused our credentials", ExitCode.AUTH_REFUSED)

    async def query_spsp(self, receiver: str, **kw: Any) -> SpspResponse:
        self.queries += 1
        if self.spsp_error is not None:
            raise self.spsp_error
        assert self._server is not None
        destination, secret = self._server.generate_credentials()
        self.secrets.append(secret)
        if self.unroutable:
            destination = "test.connector.nobody." + destination.rsplit(".", 1)[1]
        return SpspResponse(destination, secret)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = World()
    monkeypatch.setattr("ilp_cli.pay.open_uplink", w.open_uplink)
    monkeypatch.setattr("ilp_cli.pay.query_spsp", w.query_spsp)
    return w


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_json(*args: str) -> tuple[Result, dict[str, Any]]:
    result = run(*args, "--json")
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # one object, nothing else on stdout
    return result, json.loads(lines[0])


def assert_no_secret(world: World, result: Result) -> None:
    for secret in world.secrets:
        b64, b64url = base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode()
        for text in (b64.rstrip("="), b64url.rstrip("="), secret.hex()):
            assert text not in result.stdout and text not in result.stderr


# --------------------------------------------------------------------------------------------
# Paying


def test_pay_base_units_prints_a_summary(world: World) -> None:
    result = run("pay", RECEIVER, "1000")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "payment complete"
    assert "  sent       1000 (0.000001 XRP)" in lines
    assert "  delivered  1000 (0.000001 XRP)" in lines
    assert "  rate       1 (probed 1, minimum 0.99)" in lines
    assert "  packets    1 fulfilled, 0 rejected" in lines
    assert "  from       test.connector.alice" in lines
    assert world.received == 1000
    assert world.queries == 1
    assert_no_secret(world, result)


def test_pay_asset_units_json(world: World) -> None:
    result, out = run_json("pay", RECEIVER, "0.5XRP")
    assert result.exit_code == 0, result.stderr
    assert world.received == 500_000_000
    destination = out.pop("destination")
    assert destination["address"].startswith("test.connector.bob.")
    assert destination == {
        "address": destination["address"],
        "asset_code": "XRP",
        "asset_scale": 9,
        "amount": "500000000",
    }
    duration = out.pop("duration_seconds")
    assert isinstance(duration, float) and duration >= 0
    assert out == {
        "status": "complete",
        "receiver": RECEIVER,
        "spsp_endpoint": "https://bob.example/.well-known/pay",
        "fixed": "send",
        "requested_amount": "500000000",
        "source": {
            "address": "test.connector.alice",
            "asset_code": "XRP",
            "asset_scale": 9,
            "amount": "500000000",
        },
        "packets": {"fulfilled": 1, "rejected": 0},
        "exchange_rate": {"realized": "1", "probed": "1", "minimum": "0.99"},
        "max_packet_amount": None,
        "error": None,
    }
    assert_no_secret(world, result)


def test_amounts_of_any_size_are_exact(world: World) -> None:
    # 2^60 + 7 base units: a float cannot hold it exactly.
    amount = 2**60 + 7
    result, out = run_json("pay", RECEIVER, str(amount))
    assert result.exit_code == 0, result.stderr
    assert out["source"]["amount"] == out["destination"]["amount"] == str(amount)
    assert world.received == amount


def test_many_packets_when_the_path_limits_them(world: World) -> None:
    world.max_packet_amount = 1000
    result, out = run_json("pay", RECEIVER, "25000")
    assert result.exit_code == 0, result.stderr
    assert out["packets"]["fulfilled"] == 25 == world.money_packets
    assert out["max_packet_amount"] == "1000"
    assert world.received == 25_000


def test_wrong_asset_code_is_refused_before_paying(world: World) -> None:
    result, out = run_json("pay", RECEIVER, "0.5USD")
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr == (
        "Error: the amount 0.5USD is in USD, but your account's asset is XRP (scale 9): give it in"
        " XRP, or as an integer of base units. Nothing was sent.\n"
    )
    assert out["status"] == "failed"
    assert out["error"]["kind"] == "invalid_amount"
    assert out["source"]["amount"] == out["destination"]["amount"] == "0"
    assert world.received == 0


def test_more_decimals_than_the_scale_is_refused(world: World) -> None:
    world.sender_asset = ("USD", 2)
    result = run("pay", RECEIVER, "0.001usd")
    assert result.exit_code == ExitCode.USAGE
    assert "has more decimals than USD allows: its scale is 2" in result.stderr
    assert world.received == 0


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0.5", "0.5 has a decimal point but no asset code"),
        ("12.", "no asset code"),
        ("0", "must be more than 0"),
        ("0.00XRP", "must be more than 0"),
        ("1,000", "is not an amount"),
        ("1.2.3XRP", "is not an amount"),
    ],
)
def test_bad_amounts_are_usage_errors(world: World, amount: str, message: str) -> None:
    result = run("pay", RECEIVER, amount)
    assert result.exit_code == ExitCode.USAGE
    assert "Invalid value for 'AMOUNT'" in result.stderr
    assert message in result.stderr
    assert world.queries == 0


def test_bad_receivers_are_usage_errors(world: World) -> None:
    result = run("pay", "$bob.example:8080", "1000")
    assert result.exit_code == ExitCode.USAGE
    assert "Invalid value for 'RECEIVER'" in result.stderr
    assert "cannot have a port" in result.stderr
    assert world.queries == 0


@pytest.mark.parametrize(
    ("slippage", "ok"),
    [("1%", True), ("0.5%", True), ("0.01", True), ("0", True), ("1", False), ("x", False)],
)
def test_slippage_syntax(world: World, slippage: str, ok: bool) -> None:
    result = run("pay", RECEIVER, "100", "--slippage", slippage)
    if ok:
        assert result.exit_code == 0, result.stderr
    else:
        assert result.exit_code == ExitCode.USAGE
        assert "write 0.01 or 1% for one percent" in result.stderr


@pytest.mark.parametrize("command", ["pay", "quote", "query-address"])
@pytest.mark.parametrize("seconds", ["nan", "0", "-5", "soon"])
def test_timeouts_that_are_no_duration_are_usage_errors(
    world: World, command: str, seconds: str
) -> None:
    args = [RECEIVER, "100"] if command != "query-address" else []
    result = run(command, *args, "--timeout", seconds)
    assert result.exit_code == ExitCode.USAGE, result.stderr
    assert "Invalid value for '--timeout'" in result.stderr
    assert world.queries == 0


def test_max_source_needs_deliver(world: World) -> None:
    result = run("pay", RECEIVER, "100", "--max-source", "200")
    assert result.exit_code == ExitCode.USAGE
    assert "--max-source only goes with --deliver" in result.stderr


# --------------------------------------------------------------------------------------------
# Rates, slippage, fixed delivery


def test_a_fee_above_the_slippage_fails_with_nothing_delivered(world: World) -> None:
    world.rate = Fraction(95, 100)  # the connector keeps 5 %, same asset on both sides
    result, out = run_json("pay", RECEIVER, "100000", "--slippage", "0.01")
    assert result.exit_code == ExitCode.FAILED
    assert out["status"] == "failed"
    assert out["error"]["kind"] == "insufficient_exchange_rate"
    assert out["exchange_rate"]["probed"] == "0.95"
    assert out["exchange_rate"]["minimum"] == "0.99"
    assert result.stderr.startswith("Error: the payment failed: insufficient_exchange_rate")
    assert result.stderr.endswith("Nothing was delivered. Allow more with --slippage.\n")
    assert world.received == 0
    # ... and passes when the slippage covers the fee.
    result, out = run_json("pay", RECEIVER, "100000", "--slippage", "6%")
    assert result.exit_code == 0, result.stderr
    assert out["destination"]["amount"] == "95000" == str(world.received)


def test_across_assets_the_probed_rate_is_the_reference(world: World) -> None:
    world.receiver_asset = ("USD", 2)
    world.rate = Fraction(1, 2)
    result, out = run_json("pay", RECEIVER, "1000")
    assert result.exit_code == 0, result.stderr
    assert out["destination"]["asset_code"] == "USD"
    assert out["destination"]["amount"] == "500" == str(world.received)
    assert out["exchange_rate"] == {"realized": "0.5", "probed": "0.5", "minimum": "0.495"}
    result = run("pay", RECEIVER, "1000")
    assert "  delivered  500 (5 USD)" in result.stdout.splitlines()


def test_deliver_in_the_receivers_asset_units(world: World) -> None:
    world.receiver_asset = ("USD", 2)
    world.rate = Fraction(1, 2)
    result, out = run_json("pay", RECEIVER, "--deliver", "12.34USD")
    assert result.exit_code == 0, result.stderr
    assert out["fixed"] == "delivery"
    assert out["requested_amount"] == "1234"
    assert int(out["destination"]["amount"]) >= 1234
    assert int(out["destination"]["amount"]) == world.received
    assert out["destination"]["asset_code"] == "USD"
    assert int(out["source"]["amount"]) <= 2 * 1234 * 100 // 99 + 1


def test_deliver_in_our_asset_units_is_refused_when_the_receiver_uses_another(
    world: World,
) -> None:
    world.receiver_asset = ("USD", 2)
    result = run("pay", RECEIVER, "--deliver", "1XRP")
    assert result.exit_code == ExitCode.USAGE
    assert "the amount 1XRP is in XRP, but the receiver's asset is USD (scale 2)" in result.stderr
    assert world.received == 0


def test_deliver_with_max_source(world: World) -> None:
    world.rate = Fraction(1, 2)
    world.receiver_asset = ("USD", 9)
    result = run("pay", RECEIVER, "--deliver", "1000", "--max-source", "1500")
    assert result.exit_code == ExitCode.FAILED
    assert result.stderr == (
        "Error: delivering 1000 (0.000001 USD) takes about 2000 (0.000002 XRP) at the probed"
        " rate, more than --max-source 1500 (0.0000015 XRP). Nothing was sent.\n"
    )
    assert world.received == 0
    result, out = run_json("pay", RECEIVER, "--deliver", "1000", "--max-source", "0.0000021XRP")
    assert result.exit_code == 0, result.stderr
    assert int(out["source"]["amount"]) <= 2100
    assert int(out["destination"]["amount"]) >= 1000


# --------------------------------------------------------------------------------------------
# Failures and exit codes


@pytest.mark.parametrize(
    ("error", "code", "kind"),
    [
        (
            SpspUnreachableError("cannot reach the SPSP server at X"),
            ExitCode.UNREACHABLE,
            "unreachable",
        ),
        (SpspTimeoutError("the SPSP server at X did not answer"), ExitCode.TIMEOUT, "timeout"),
        (SpspError("X: the SPSP server answered HTTP 404"), ExitCode.FAILED, "failed"),
    ],
)
def test_spsp_failures(world: World, error: SpspError, code: ExitCode, kind: str) -> None:
    world.spsp_error = error
    result, out = run_json("pay", RECEIVER, "1000")
    assert result.exit_code == code
    assert result.stderr.startswith(f"Error: {error}")
    assert result.stderr.endswith("Nothing was sent.\n")
    assert out["status"] == "failed"
    assert out["error"]["kind"] == kind
    assert out["source"]["address"] == "test.connector.alice"
    assert out["destination"]["address"] is None


@pytest.mark.parametrize("command", ["pay", "quote"])
def test_no_route_to_the_receiver_is_unreachable(world: World, command: str) -> None:
    world.unroutable = True
    result = run(command, RECEIVER, "1000")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "F02" in result.stderr and "Nothing was sent" in result.stderr
    # --json names the Reject that ended it.
    result, out = run_json(command, RECEIVER, "1000")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert out["error"]["code"] == "F02"
    assert out["error"]["triggered_by"] == "test.connector"


def test_unreachable_connector() -> None:
    port = free_port()
    result = run("pay", "-u", f"btp+ws://me:secret-token@127.0.0.1:{port}", RECEIVER, "1000")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert result.stderr == (
        f"Error: cannot reach the connector at ws://127.0.0.1:{port} (connection refused). "
        "Start one, or set --uplink / ILP_UPLINK. Nothing was sent.\n"
    )
    assert "secret-token" not in result.stderr


def test_a_link_failing_after_the_payment_does_not_hide_the_result(world: World) -> None:
    world.fail_on_close = True
    result, out = run_json("pay", RECEIVER, "1000")
    assert result.exit_code == 0, result.stderr
    assert out["status"] == "complete" and out["destination"]["amount"] == "1000"
    assert world.received == 1000
    # Before any money moved, the same failure is the command's failure.
    world.spsp_error = SpspError("X: not found")
    result = run("pay", RECEIVER, "1000")
    assert result.exit_code == ExitCode.FAILED
    assert result.stderr == "Error: X: not found. Nothing was sent.\n"


def test_timeout_before_any_money(world: World) -> None:
    world.hang = True
    result, out = run_json("pay", RECEIVER, "1000", "--timeout", "0.3")
    assert result.exit_code == ExitCode.TIMEOUT
    assert result.stderr == "Error: timed out after 0.3 s. Nothing was sent.\n"
    assert out["error"]["kind"] == "timeout"


def test_timeout_mid_payment_reports_what_was_delivered(world: World) -> None:
    world.max_packet_amount = 100
    world.stall_after = 3
    result, out = run_json("pay", RECEIVER, "1000", "--timeout", "1")
    assert result.exit_code == ExitCode.TIMEOUT
    assert out["status"] == "partial"
    assert out["error"]["kind"] == "timeout"
    assert out["destination"]["amount"] == str(world.received)
    assert world.received >= 300
    moved = Amount(world.received, "XRP", 9)
    assert result.stderr == (
        f"Error: timed out after 1 s. Sent {moved} of 1000 (0.000001 XRP); delivered {moved}.\n"
    )


def test_interrupt_waits_for_packets_in_flight_and_prints_the_partial_result(
    world: World,
) -> None:
    world.max_packet_amount = 10
    world.interrupt_after = 5
    result, out = run_json("pay", RECEIVER, "1000000")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert out["status"] == "partial"
    assert out["error"]["kind"] == "interrupted"
    # Every packet that left was answered and counted: what we say is what bob has.
    assert out["destination"]["amount"] == out["source"]["amount"] == str(world.received)
    assert 0 < world.received < 1_000_000
    assert result.stderr.startswith("Error: interrupted. Sent ")
    assert f"delivered {world.received} (" in result.stderr


def test_exit_code_rules() -> None:
    def result(status: PaymentStatus, failure: PaymentFailure | None) -> PaymentResult:
        return PaymentResult(status, 0, 0, None, None, 0, 0, None, None, None, 0.0, failure)

    rejected = PaymentFailure(FailureKind.REJECTED, "x", "F02", "test.c")
    idle = PaymentFailure(FailureKind.IDLE_TIMEOUT, "x")
    rate = PaymentFailure(FailureKind.INSUFFICIENT_EXCHANGE_RATE, "x")
    assert payment_exit_code(result(PaymentStatus.COMPLETE, None), "interrupt") is ExitCode.OK
    cancelled = PaymentFailure(FailureKind.CANCELLED, "x")
    assert payment_exit_code(result(PaymentStatus.PARTIAL, cancelled), "interrupt") == 130
    assert payment_exit_code(result(PaymentStatus.FAILED, cancelled), "interrupt") == 130
    assert payment_exit_code(result(PaymentStatus.PARTIAL, cancelled), "timeout") == 6
    # A payment that had already failed for its own reason keeps that reason's code.
    assert payment_exit_code(result(PaymentStatus.PARTIAL, idle), "interrupt") == 3
    assert payment_exit_code(result(PaymentStatus.PARTIAL, rejected), None) == 3
    assert payment_exit_code(result(PaymentStatus.FAILED, rejected), None) == 5
    assert payment_exit_code(result(PaymentStatus.FAILED, idle), None) == 6
    assert payment_exit_code(result(PaymentStatus.FAILED, rate), None) == 4
    assert failure_exit_code(PaymentFailure(FailureKind.LINK_ERROR, "x")) == 5
    assert failure_exit_code(None) == 4


def test_fair_rate() -> None:
    xrp9, xrp6, usd2 = AssetDetails("XRP", 9), AssetDetails("xrp", 6), AssetDetails("USD", 2)
    assert fair_rate(xrp9, xrp9) == 1
    assert fair_rate(xrp9, xrp6) == Fraction(1, 1000)
    assert fair_rate(xrp9, usd2) is None
    assert fair_rate(xrp9, None) is None


# --------------------------------------------------------------------------------------------
# Quoting


def test_quote_moves_no_money(world: World) -> None:
    world.receiver_asset = ("USD", 2)
    world.rate = Fraction(1, 4)
    result = run("quote", RECEIVER, "0.000004XRP")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[:5] == [
        "quote for https://bob.example/.well-known/pay",
        "  send       4000 (0.000004 XRP)",
        "  deliver    about 1000 (10 USD), at least 990 (9.9 USD)",
        "  rate       0.25 probed, minimum 0.2475",
        "  max packet none found",
    ]
    assert world.received == 0
    result, out = run_json("quote", RECEIVER, "--deliver", "10USD")
    assert result.exit_code == 0, result.stderr
    assert out["status"] == "ok"
    assert out["destination"]["amount"] == out["destination"]["min_amount"] == "1000"
    assert out["source"]["amount"] == "4000"
    assert out["source"]["max_amount"] == str(-(-1000 * 400 // 99))
    assert out["exchange_rate"]["probed"] == "0.25"
    assert world.received == 0


def test_quote_fails_where_pay_would(world: World) -> None:
    world.rate = Fraction(9, 10)
    result, out = run_json("quote", RECEIVER, "1000")
    assert result.exit_code == ExitCode.FAILED
    assert "probed 0.9, at least 0.99 is needed (XRP to XRP is 1:1, less the slippage)" in (
        result.stderr
    )
    assert out["status"] == "failed"
    assert world.received == 0


def test_help_lists_exit_codes_and_environment() -> None:
    for command in ("pay", "quote"):
        result = run(command, "--help")
        assert result.exit_code == 0
        assert "ILP_UPLINK" in result.stdout
        assert "Exit codes:" in result.stdout and "130" in result.stdout


def test_parse_amount() -> None:
    assert parse_amount("1000") == AmountArg("1000", base_units=1000)
    assert parse_amount(" 12.50 USD ") == AmountArg("12.50 USD", units="12.50", code="USD")
    assert parse_amount("9" * 40).base_units == int("9" * 40)
    arg = parse_amount("0.5XRP")
    assert arg.to_base(AssetDetails("XRP", 9), "x") == 500_000_000
    assert arg.to_base(AssetDetails("xrp", 1), "x") == 5
