"""`ilp pay` and `ilp quote`: STREAM payments to an SPSP receiver through the uplink.

Both connect to the uplink (BTP, then ILDCP for our address and asset), query the receiver's SPSP
endpoint for STREAM credentials and quote: probe the path for the receiver's asset, the exchange
rate and the largest packet. `quote` then reports; `pay` sends the money
(:func:`ilp.stream.pay.pay`) with the same credentials.

The least acceptable rate: with the same asset code on both sides, 1:1 in asset units less the
slippage (so a connector keeping more than the slippage fails the payment before money moves);
across assets, the probed rate less the slippage (there is no price feed).

Fixed delivery (``--deliver``): AMOUNT is in the receiver's asset. In base units it is used as
is; in asset units (``5USD``) it is converted with the asset the receiver announced when probed.
``--max-source`` (in our asset) caps what may be sent: at the probed rate it must suffice, and the
payment enforces a minimum rate of at least ``delivery / max-source``, so no more than
``--max-source`` can leave even if the rate moves.

Ctrl-C and ``--timeout`` cancel what runs at the moment; during the payment that stops new
packets, and :func:`~ilp.stream.pay.pay` returns once the packets in flight are answered.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import click
import trio
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ilp.amount import Amount
from ilp.errors import SpspError
from ilp.ildcp import IldcpResponse
from ilp.link import IlpLink
from ilp.spsp import PaymentPointerError, SpspResponse, resolve_spsp_endpoint
from ilp.spsp.client import SpspTimeoutError, SpspUnreachableError, query_spsp
from ilp.stream.pay import (
    AssetDetails,
    FailureKind,
    PaymentFailure,
    PaymentProgress,
    PaymentResult,
    PaymentStatus,
    Quote,
    QuoteError,
    pay,
    quote,
)

from .amounts import AMOUNT, AmountArg
from .connect import open_uplink
from .exit_codes import ExitCode
from .main_options import SECONDS, debug_option
from .output import CliError, print_error, print_json, sentence, stderr_console
from .uplink import Uplink, resolve_uplink, uplink_option

PAY_EXIT_CODES = """\b
Exit codes:
  0  complete
  3  partial: the payment stopped after delivering part of the amount
  4  failed with nothing delivered (rate below the slippage, receiver refused, ...)
  5  the receiver or the connector could not be reached
  6  timed out (--timeout, or no progress for 30 s)
  130  interrupted (Ctrl-C): packets in flight are awaited, then the result is printed
  (2 bad command line, 8 the connector refused our credentials)"""

QUOTE_EXIT_CODES = """\b
Exit codes:
  0  quoted
  4  no quote (rate below the slippage, receiver refused, ...)
  5  the receiver or the connector could not be reached
  6  timed out
  130  interrupted (Ctrl-C)
  (2 bad command line, 8 the connector refused our credentials)"""


# --------------------------------------------------------------------------------------------
# Options


def _parse_slippage(ctx: click.Context, param: click.Parameter, value: str) -> Fraction:
    text = value.strip()
    try:
        slippage = Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(
            f"{value!r} is not a number: write 0.01 or 1% for one percent", ctx, param
        ) from None
    if not 0 <= slippage < 1:
        raise click.BadParameter(
            f"{value} is not between 0 and 1 (0% and 100%): write 0.01 or 1% for one percent",
            ctx,
            param,
        )
    return slippage


def _payment_options(*, quiet: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    options = [
        click.argument("receiver"),
        click.argument("amount", type=AMOUNT),
        click.option(
            "--deliver",
            is_flag=True,
            help="Fixed delivery: AMOUNT is what the receiver gets, in its asset (base units, "
            "or asset units with its code). Default: AMOUNT is what we send.",
        ),
        click.option(
            "--slippage",
            default="1%",
            show_default=True,
            callback=_parse_slippage,
            metavar="RATIO",
            help="How far below the expected exchange rate (1:1 for the same asset, else the "
            "probed rate) a payment may deliver, as 0.01 or 1%.",
        ),
        click.option(
            "--max-source",
            type=AMOUNT,
            metavar="AMOUNT",
            help="With --deliver: the most to send, in our asset (base or asset units).",
        ),
        click.option(
            "--timeout",
            type=SECONDS,
            metavar="SECONDS",
            help="Give up after this many seconds in all; packets in flight are awaited.",
        ),
        uplink_option,
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    ]
    if quiet:
        options.append(
            click.option("--quiet", "-q", is_flag=True, help="No progress display and no summary.")
        )
    options.append(debug_option)

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@dataclass(frozen=True, slots=True)
class PaymentArgs:
    """The command line of `pay` / `quote`, checked."""

    receiver: str
    endpoint: str
    amount: AmountArg
    deliver: bool
    slippage: Fraction
    max_source: AmountArg | None
    timeout: float | None
    uplink: Uplink


def _args(
    receiver: str,
    amount: AmountArg,
    deliver: bool,
    slippage: Fraction,
    max_source: AmountArg | None,
    timeout: float | None,
    uplink: str | None,
) -> PaymentArgs:
    try:
        endpoint = resolve_spsp_endpoint(receiver)
    except PaymentPointerError as exc:
        raise click.BadParameter(str(exc), param_hint="'RECEIVER'") from None
    if max_source is not None and not deliver:
        raise click.UsageError("--max-source only goes with --deliver (a fixed send sends AMOUNT).")
    return PaymentArgs(
        receiver,
        endpoint,
        amount,
        deliver,
        slippage,
        max_source,
        timeout,
        resolve_uplink(uplink),
    )


# --------------------------------------------------------------------------------------------
# What a run learned


@dataclass(slots=True)
class Session:
    """Everything a run learned, for the output; filled in as it goes."""

    args: PaymentArgs
    config: IldcpResponse | None = None
    credentials: SpspResponse | None = field(default=None, repr=False)
    endpoint: str | None = None
    requested: int | None = None
    """The amount asked for, in base units: ours (fixed send) or the receiver's (--deliver)."""
    destination_asset: AssetDetails | None = None
    result: PaymentResult | None = None
    quote: Quote | None = None
    quote_failure: PaymentFailure | None = None
    """Why the quote failed, when it did (its ILP code goes into the --json error)."""
    stopped: str | None = None
    """``"interrupt"`` after Ctrl-C, ``"timeout"`` when --timeout ran out."""

    @property
    def source_asset(self) -> AssetDetails | None:
        config = self.config
        return None if config is None else AssetDetails(config.asset_code, config.asset_scale)

    def source(self, value: int) -> Amount:
        asset = self.source_asset
        return Amount(value) if asset is None else Amount(value, asset.code, asset.scale)

    def destination(self, value: int) -> Amount:
        asset = self.destination_asset
        if self.result is not None and self.result.destination_asset is not None:
            asset = self.result.destination_asset
        elif self.quote is not None and self.quote.destination_asset is not None:
            asset = self.quote.destination_asset
        return Amount(value) if asset is None else Amount(value, asset.code, asset.scale)

    def requested_amount(self) -> Amount | None:
        if self.requested is None:
            return None
        return (
            self.destination(self.requested) if self.args.deliver else self.source(self.requested)
        )


# --------------------------------------------------------------------------------------------
# The progress display


def _short(amount: Amount) -> str:
    return amount.units or str(amount.value)


class Display:
    """A progress display on stderr while a person watches; silent otherwise."""

    def __init__(self, enabled: bool, session: Session, *, notes: bool = True) -> None:
        self._session = session
        self._notes = notes
        self._progress: Progress | None = None
        self._task: Any = None
        self._total = 0
        if enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=stderr_console(),
                refresh_per_second=10,
            )
            self._task = self._progress.add_task("connecting", total=None, detail="")
            self._progress.start()

    def phase(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def note(self, text: str) -> None:
        """A line for the person on stderr (above the progress display, if there is one)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False)
        elif self._notes:
            stderr_console().print(text, markup=False)

    def start(self, total: int) -> None:
        self._total = total
        if self._progress is not None:
            self._progress.update(
                self._task, description="paying", total=1000, completed=0, detail=""
            )

    def update(self, progress: PaymentProgress) -> None:
        if self._progress is None:
            return
        session = self._session
        done = progress.amount_delivered if session.args.deliver else progress.amount_sent
        rate = (
            _rate(Fraction(progress.amount_delivered, progress.amount_sent), 6)
            if progress.amount_sent
            else "-"
        )
        detail = (
            f"sent {_short(session.source(progress.amount_sent))}"
            f" · delivered {_short(session.destination(progress.amount_delivered))}"
            f" · in flight {_short(session.source(progress.source_amount_in_flight))}"
            f" · {progress.packets_fulfilled} packets · rate {rate}"
        )
        completed = min(1000, done * 1000 // self._total) if self._total else 0
        self._progress.update(self._task, completed=completed, detail=detail)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# --------------------------------------------------------------------------------------------
# Running


def _rate(rate: Fraction | None, digits: int = 20) -> str | None:
    """A rate as a decimal string, ``digits`` significant digits at most, never an exponent."""
    if rate is None:
        return None
    with localcontext() as ctx:
        ctx.prec = digits
        value = Decimal(rate.numerator) / Decimal(rate.denominator)
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def failure_exit_code(failure: PaymentFailure | None) -> ExitCode:
    """The exit code of a payment or quote that moved nothing, from why it failed."""
    if failure is None:
        return ExitCode.FAILED
    if failure.kind is FailureKind.IDLE_TIMEOUT:
        return ExitCode.TIMEOUT
    if failure.kind is FailureKind.LINK_ERROR or failure.code == "F02":
        return ExitCode.UNREACHABLE
    return ExitCode.FAILED


def payment_exit_code(result: PaymentResult, stopped: str | None) -> ExitCode:
    """0 complete; stopped by Ctrl-C 130, by --timeout 6; else 3 partial, or the failure's code
    (5 unreachable, 6 no progress, 4 otherwise)."""
    if result.status is PaymentStatus.COMPLETE:
        return ExitCode.OK
    if result.error is not None and result.error.kind is FailureKind.CANCELLED:
        return ExitCode.INTERRUPTED if stopped == "interrupt" else ExitCode.TIMEOUT
    if result.status is PaymentStatus.PARTIAL:
        return ExitCode.PARTIAL
    return failure_exit_code(result.error)


class Stopper:
    """The --timeout deadline and Ctrl-C, as the cancellation of what runs at the moment.

    While connecting, connecting is cancelled. Once connected, only the work on the link is (a
    scope inside the link's block): the link's own tasks keep running, so that the packets in
    flight get their replies and are counted.
    """

    def __init__(self, timeout: float | None) -> None:
        self.deadline = math.inf if timeout is None else trio.current_time() + timeout
        self.stopped: str | None = None
        """``"interrupt"`` after Ctrl-C, ``"timeout"`` once a scope ran out of time."""
        self._scopes: list[trio.CancelScope] = []

    def scope(self) -> trio.CancelScope:
        """A new scope with the deadline; Ctrl-C from now on cancels it."""
        scope = trio.CancelScope(deadline=self.deadline)
        if self.stopped is not None:
            scope.cancel()
        self._scopes.append(scope)
        return scope

    def interrupt(self) -> None:
        self.stopped = "interrupt"
        if self._scopes:
            self._scopes[-1].cancel()

    def settle(self) -> None:
        """After the run: a scope that was cancelled without Ctrl-C ran out of time."""
        if self.stopped is None and any(scope.cancel_called for scope in self._scopes):
            self.stopped = "timeout"


async def _watch_interrupts(
    stopper: Stopper,
    display: Display,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Ctrl-C stops the payment (pay() then awaits the packets in flight); twice quits at once."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            if stopper.stopped == "interrupt":
                display.close()
                print_error(
                    "interrupted twice: quitting without waiting for the packets in flight "
                    "(they may still be delivered)."
                )
                os._exit(int(ExitCode.INTERRUPTED))
            stopper.interrupt()
            display.note(
                "Interrupted: waiting for the packets in flight (Ctrl-C again to quit at once)."
            )


async def _run(
    session: Session, display: Display, on_link: Callable[[IlpLink], Awaitable[None]]
) -> None:
    """Connect and query the receiver, then ``on_link(link)``; under --timeout and Ctrl-C."""
    stopper = Stopper(session.args.timeout)
    error: Exception | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_interrupts, stopper, display)
        try:
            await _connect_and_query(session, display, stopper, on_link)
        except Exception as exc:
            error = exc
        finally:
            nursery.cancel_scope.cancel()
    stopper.settle()
    session.stopped = stopper.stopped
    if error is not None:
        raise error


def _spsp_error(exc: SpspError) -> CliError:
    if isinstance(exc, SpspTimeoutError):
        return CliError(sentence(exc), ExitCode.TIMEOUT)
    if isinstance(exc, SpspUnreachableError):
        return CliError(
            f"{sentence(exc)} Check the payment pointer and that the receiver is up.",
            ExitCode.UNREACHABLE,
        )
    return CliError(str(exc), ExitCode.FAILED)


def _quote_error(exc: QuoteError) -> CliError:
    failure = exc.failure
    hint = ""
    if failure.kind is FailureKind.INSUFFICIENT_EXCHANGE_RATE:
        hint = " Allow more with --slippage."
    return CliError(f"{exc}.{hint}", failure_exit_code(failure))


async def _connect_and_query(
    session: Session,
    display: Display,
    stopper: Stopper,
    on_link: Callable[[IlpLink], Awaitable[None]],
) -> None:
    args = session.args
    display.phase("connecting")
    with stopper.scope() as connecting:
        async with open_uplink(args.uplink) as (link, config):
            connecting.deadline = math.inf  # from here the inner scope has the deadline
            session.config = config
            with stopper.scope():
                display.phase("querying the receiver")

                def redirected(old: str, new: str) -> None:
                    display.note(f"{old} redirected to {new}")
                    session.endpoint = new

                session.endpoint = args.endpoint
                try:
                    session.credentials = await query_spsp(args.receiver, on_redirect=redirected)
                except SpspError as exc:
                    raise _spsp_error(exc) from None
                display.phase("probing")
                await on_link(link)


async def _quote(link: IlpLink, session: Session, **terms: Any) -> Quote:
    credentials = session.credentials
    assert credentials is not None
    try:
        return await quote(
            link,
            credentials.destination_account,
            credentials.shared_secret,
            source_asset=session.source_asset,
            **terms,
        )
    except QuoteError as exc:
        session.quote_failure = exc.failure
        raise _quote_error(exc) from None


def fair_rate(source: AssetDetails, destination: AssetDetails | None) -> Fraction | None:
    """The rate to expect without any fee: 1:1 (in asset units) for the same asset code.

    None across assets: there is no price feed, the probed rate is all we know.
    """
    if destination is None or destination.code.casefold() != source.code.casefold():
        return None
    return Fraction(10**destination.scale, 10**source.scale)


async def _payment_terms(link: IlpLink, session: Session) -> dict[str, Any]:
    """The amount and rate arguments of pay()/quote(), from AMOUNT and a first quote.

    The quote tells the receiver's asset (to convert a --deliver AMOUNT in asset units, and to
    see whether both sides use the same asset) and the rate (to check --max-source). With the
    same asset on both sides the least acceptable rate is 1:1 less the slippage, so connectors
    that take more than that fail the payment; across assets it is the probed rate less the
    slippage. A --max-source raises it to delivery / max-source if that is higher.
    """
    args = session.args
    source_asset = session.source_asset
    assert source_asset is not None
    max_source = None
    if args.max_source is not None:
        max_source = args.max_source.to_base(source_asset, "your account's")
    if args.deliver:
        delivery = args.amount.base_units
        first = await _quote(link, session, delivery_amount=delivery or 1, slippage=args.slippage)
        destination_asset = first.destination_asset
        if delivery is None:
            if destination_asset is None:
                raise CliError(
                    f"the receiver did not say which asset it uses, so {args.amount.text} cannot"
                    " be converted: give the amount to deliver in its base units.",
                    ExitCode.USAGE,
                )
            delivery = args.amount.to_base(destination_asset, "the receiver's")
        session.requested = delivery
        terms: dict[str, Any] = {"delivery_amount": delivery}
    else:
        session.requested = args.amount.to_base(source_asset, "your account's")
        first = await _quote(link, session, source_amount=session.requested, slippage=args.slippage)
        destination_asset = first.destination_asset
        terms = {"source_amount": session.requested}
    session.destination_asset = destination_asset
    fair = fair_rate(source_asset, destination_asset)
    min_rate = first.min_exchange_rate if fair is None else fair * (1 - args.slippage)
    if max_source is not None:
        delivery = terms["delivery_amount"]
        probed = first.probed_rate
        needed = -(-delivery * probed.denominator // probed.numerator)
        if needed > max_source:
            raise CliError(
                f"delivering {session.destination(delivery)} takes about"
                f" {session.source(needed)} at the probed rate, more than --max-source"
                f" {session.source(max_source)}.",
                ExitCode.FAILED,
            )
        min_rate = max(min_rate, Fraction(delivery, max_source))
    terms["min_exchange_rate"] = min_rate
    return terms


def _check_rate(session: Session, q: Quote) -> None:
    """`quote` fails (exit 4) where `pay` would: a probed rate below the minimum."""
    if q.probed_rate >= q.min_exchange_rate:
        return
    source_asset = session.source_asset
    assert source_asset is not None
    why = ""
    if fair_rate(source_asset, q.destination_asset) is not None:
        why = f" ({source_asset.code} to {source_asset.code} is 1:1, less the slippage)"
    raise CliError(
        f"the exchange rate is too low: probed {_rate(q.probed_rate, 8)}, at least"
        f" {_rate(q.min_exchange_rate, 8)} is needed{why}. Allow more with --slippage.",
        ExitCode.FAILED,
    )


async def run_payment(session: Session, display: Display) -> None:
    """Connect, query, quote, pay; the result lands in ``session.result``."""

    async def paying(link: IlpLink) -> None:
        terms = await _payment_terms(link, session)
        credentials = session.credentials
        assert credentials is not None
        assert session.requested is not None
        display.start(session.requested)
        session.result = await pay(
            link,
            credentials.destination_account,
            credentials.shared_secret,
            source_asset=session.source_asset,
            on_progress=display.update,
            **terms,
        )

    await _run(session, display, paying)


async def run_quote(session: Session, display: Display) -> None:
    """Connect, query, probe; the quote lands in ``session.quote``."""

    async def quoting(link: IlpLink) -> None:
        terms = await _payment_terms(link, session)
        q = await _quote(link, session, **terms)
        _check_rate(session, q)
        session.quote = q

    await _run(session, display, quoting)


# --------------------------------------------------------------------------------------------
# Output


def _party(address: str | None, asset: AssetDetails | None, amount: int) -> dict[str, Any]:
    return {
        "address": address,
        "asset_code": None if asset is None else asset.code,
        "asset_scale": None if asset is None else asset.scale,
        "amount": str(amount),
    }


_KINDS = {
    ExitCode.UNREACHABLE: "unreachable",
    ExitCode.TIMEOUT: "timeout",
    ExitCode.INTERRUPTED: "interrupted",
    ExitCode.AUTH_REFUSED: "auth_refused",
    ExitCode.USAGE: "invalid_amount",
}


def _error_json(failure: PaymentFailure | None, message: str, code: ExitCode) -> dict[str, Any]:
    if code is ExitCode.INTERRUPTED:
        kind = "interrupted"
    elif failure is not None and failure.kind is not FailureKind.CANCELLED:
        kind = failure.kind.value
    else:
        kind = _KINDS.get(code, "failed")
    return {
        "kind": kind,
        "message": message,
        "code": None if failure is None else failure.code,
        "triggered_by": None if failure is None else failure.triggered_by,
    }


def _common_json(session: Session) -> dict[str, Any]:
    args = session.args
    return {
        "receiver": args.receiver,
        "spsp_endpoint": session.endpoint or args.endpoint,
        "fixed": "delivery" if args.deliver else "send",
        "requested_amount": None if session.requested is None else str(session.requested),
    }


def payment_json(session: Session, code: ExitCode, message: str | None) -> dict[str, Any]:
    """The `pay --json` object (amounts as decimal strings, rates as decimal strings)."""
    result = session.result
    config = session.config
    credentials = session.credentials
    destination_asset = session.destination_asset
    if result is not None and result.destination_asset is not None:
        destination_asset = result.destination_asset
    return {
        "status": "failed" if result is None else result.status.value,
        **_common_json(session),
        "source": _party(
            None if config is None else config.client_address,
            session.source_asset,
            0 if result is None else result.amount_sent,
        ),
        "destination": _party(
            None if credentials is None else credentials.destination_account,
            destination_asset,
            0 if result is None else result.amount_delivered,
        ),
        "packets": {
            "fulfilled": 0 if result is None else result.packets_fulfilled,
            "rejected": 0 if result is None else result.packets_rejected,
        },
        "exchange_rate": {
            "realized": None if result is None else _rate(result.exchange_rate),
            "probed": None if result is None else _rate(result.probed_rate),
            "minimum": None if result is None else _rate(result.min_exchange_rate),
        },
        "max_packet_amount": (
            None
            if result is None or result.max_packet_amount is None
            else str(result.max_packet_amount)
        ),
        "duration_seconds": None if result is None else round(result.duration, 3),
        "error": (
            None
            if message is None
            else _error_json(
                session.quote_failure if result is None else result.error, message, code
            )
        ),
    }


def quote_json(session: Session, code: ExitCode, message: str | None) -> dict[str, Any]:
    """The `quote --json` object."""
    q = session.quote
    config = session.config
    credentials = session.credentials
    source = _party(
        None if config is None else config.client_address,
        session.source_asset,
        0 if q is None else q.estimated_source_amount,
    )
    source["max_amount"] = None if q is None else str(q.max_source_amount)
    destination = _party(
        None if credentials is None else credentials.destination_account,
        session.destination_asset if q is None else q.destination_asset,
        0 if q is None else q.estimated_delivery_amount,
    )
    destination["min_amount"] = None if q is None else str(q.min_delivery_amount)
    return {
        "status": "failed" if q is None else "ok",
        **_common_json(session),
        "source": source,
        "destination": destination,
        "exchange_rate": {
            "probed": None if q is None else _rate(q.probed_rate),
            "probed_upper": None if q is None else _rate(q.probed_rate_upper),
            "minimum": None if q is None else _rate(q.min_exchange_rate),
        },
        "max_packet_amount": (
            None if q is None or q.max_packet_amount is None else str(q.max_packet_amount)
        ),
        "duration_seconds": None if q is None else round(q.duration, 3),
        "error": None if message is None else _error_json(session.quote_failure, message, code),
    }


def _what_moved(session: Session) -> str:
    result = session.result
    assert result is not None
    requested = session.requested_amount()
    sent = session.source(result.amount_sent)
    delivered = session.destination(result.amount_delivered)
    if result.amount_sent == 0 and result.amount_delivered == 0:
        return "Nothing was delivered."
    if session.args.deliver:
        return f"Delivered {delivered} of {requested}; sent {sent}."
    return f"Sent {sent} of {requested}; delivered {delivered}."


def payment_message(session: Session, code: ExitCode) -> str | None:
    """The `Error: ...` line for a payment that did not complete: why, and what was delivered."""
    result = session.result
    assert result is not None
    if code is ExitCode.OK:
        return None
    if code is ExitCode.INTERRUPTED:
        why = "interrupted"
    elif result.error is not None and result.error.kind is FailureKind.CANCELLED:
        why = f"timed out after {session.args.timeout:g} s"
    else:
        what = "stopped early" if result.status is PaymentStatus.PARTIAL else "failed"
        why = f"the payment {what}: {result.error}"
    hint = ""
    if result.error is not None and result.error.kind is FailureKind.INSUFFICIENT_EXCHANGE_RATE:
        hint = " Allow more with --slippage."
    return f"{why}. {_what_moved(session)}{hint}"


def _print_lines(lines: list[str]) -> None:
    # Plain text, not rich: long addresses must not be wrapped at the terminal width.
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def print_payment_summary(session: Session, label: str | None) -> None:
    """The result for people, on stdout."""
    result = session.result
    assert result is not None
    status = result.status.value + (f" ({label})" if label else "")
    lines = [
        f"payment {status}",
        f"  sent       {session.source(result.amount_sent)}",
        f"  delivered  {session.destination(result.amount_delivered)}",
    ]
    if session.requested is not None:
        lines.append(
            f"  requested  {session.requested_amount()}"
            + (" (fixed delivery)" if session.args.deliver else "")
        )
    if result.probed_rate is not None:
        realized = _rate(result.exchange_rate, 8) or "-"
        lines.append(
            f"  rate       {realized} (probed {_rate(result.probed_rate, 8)},"
            f" minimum {_rate(result.min_exchange_rate, 8) or '-'})"
        )
    lines.append(
        f"  packets    {result.packets_fulfilled} fulfilled, {result.packets_rejected} rejected"
    )
    if session.config is not None:
        lines.append(f"  from       {session.config.client_address}")
    if session.credentials is not None:
        lines.append(f"  to         {session.credentials.destination_account}")
    if session.endpoint is not None and session.endpoint != session.args.endpoint:
        lines.append(f"  via        {session.endpoint} (redirected)")
    lines.append(f"  duration   {result.duration:.3f} s")
    _print_lines(lines)


def print_quote_summary(session: Session) -> None:
    """The quote for people, on stdout."""
    q = session.quote
    assert q is not None
    source, destination = session.source, session.destination
    if session.args.deliver:
        send = f"about {source(q.estimated_source_amount)}, at most {source(q.max_source_amount)}"
        deliver = f"{destination(q.min_delivery_amount)} (fixed delivery)"
    else:
        send = str(source(q.max_source_amount))
        deliver = (
            f"about {destination(q.estimated_delivery_amount)},"
            f" at least {destination(q.min_delivery_amount)}"
        )
    limit = "none found" if q.max_packet_amount is None else str(source(q.max_packet_amount))
    lines = [
        f"quote for {session.endpoint or session.args.endpoint}",
        f"  send       {send}",
        f"  deliver    {deliver}",
        f"  rate       {_rate(q.probed_rate, 8)} probed, minimum {_rate(q.min_exchange_rate, 8)}",
        f"  max packet {limit}",
    ]
    if session.config is not None:
        lines.append(f"  from       {session.config.client_address}")
    if session.credentials is not None:
        lines.append(f"  to         {session.credentials.destination_account}")
    _print_lines(lines)


def _before_money(session: Session, exc: CliError, what: str) -> CliError:
    """A failure before any money moved: the message says so; Ctrl-C and --timeout win."""
    if session.stopped == "interrupt":
        return CliError(f"interrupted. {what}", ExitCode.INTERRUPTED)
    if session.stopped == "timeout":
        return CliError(f"timed out after {session.args.timeout:g} s. {what}", ExitCode.TIMEOUT)
    return CliError(f"{sentence(exc.message)} {what}", exc.exit_code)


def _stopped_early(session: Session, what: str) -> CliError:
    if session.stopped == "interrupt":
        return CliError(f"interrupted. {what}", ExitCode.INTERRUPTED)
    return CliError(f"timed out after {session.args.timeout:g} s. {what}", ExitCode.TIMEOUT)


# --------------------------------------------------------------------------------------------
# Commands


@click.command("pay", epilog=PAY_EXIT_CODES, short_help="Pay a receiver over STREAM (SPSP).")
@_payment_options(quiet=True)
def pay_command(
    receiver: str,
    amount: AmountArg,
    deliver: bool,
    slippage: Fraction,
    max_source: AmountArg | None,
    timeout: float | None,
    uplink: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Pay RECEIVER (a $payment.pointer, host/path or URL) AMOUNT over STREAM.

    AMOUNT is base units (1000) or asset units with the asset code (0.5XRP, 12.50USD), in our
    asset, or with --deliver in the receiver's. Progress is shown on stderr when it is a
    terminal; the result goes to stdout (with --json as one object). Every failure says what
    was delivered.
    """
    args = _args(receiver, amount, deliver, slippage, max_source, timeout, uplink)
    session = Session(args)
    display = Display(
        sys.stderr.isatty() and not as_json and not quiet, session, notes=not (as_json or quiet)
    )
    try:
        try:
            trio.run(run_payment, session, display)
        finally:
            display.close()
    except CliError as exc:
        # Once the payment has a result, that is what counts: a link failing while it is closed
        # moves no money.
        if session.result is None:
            error = _before_money(session, exc, "Nothing was sent.")
            if as_json:
                print_json(payment_json(session, error.exit_code, error.message))
            raise error from None
    if session.result is None:  # stopped before the payment began
        error = _stopped_early(session, "Nothing was sent.")
        if as_json:
            print_json(payment_json(session, error.exit_code, error.message))
        raise error
    code = payment_exit_code(session.result, session.stopped)
    message = payment_message(session, code)
    if as_json:
        print_json(payment_json(session, code, message))
    elif not quiet:
        label = {ExitCode.INTERRUPTED: "interrupted", ExitCode.TIMEOUT: "timed out"}.get(code)
        print_payment_summary(session, label)
    if message is not None:
        print_error(message)
    if code is not ExitCode.OK:
        click.get_current_context().exit(int(code))


@click.command(
    "quote", epilog=QUOTE_EXIT_CODES, short_help="Quote a payment: the rate and what would arrive."
)
@_payment_options(quiet=False)
def quote_command(
    receiver: str,
    amount: AmountArg,
    deliver: bool,
    slippage: Fraction,
    max_source: AmountArg | None,
    timeout: float | None,
    uplink: str | None,
    as_json: bool,
) -> None:
    """Probe the path to RECEIVER for AMOUNT without moving money: the rate and what would arrive.

    Takes the same arguments as `ilp pay`.
    """
    args = _args(receiver, amount, deliver, slippage, max_source, timeout, uplink)
    session = Session(args)
    display = Display(False, session, notes=not as_json)
    try:
        trio.run(run_quote, session, display)
    except CliError as exc:
        if session.quote is None:
            error = _before_money(session, exc, "Nothing was sent (a quote moves no money).")
            if as_json:
                print_json(quote_json(session, error.exit_code, error.message))
            raise error from None
    if session.quote is None:
        error = _stopped_early(session, "Nothing was sent (a quote moves no money).")
        if as_json:
            print_json(quote_json(session, error.exit_code, error.message))
        raise error
    if as_json:
        print_json(quote_json(session, ExitCode.OK, None))
    else:
        print_quote_summary(session)
