"""`ilp receive`: a STREAM receiver with an SPSP endpoint, recording every credit in a ledger.

It connects to the uplink (BTP, then ILDCP for our address and asset), mounts a
:class:`~ilp.stream.server.StreamServer` as the link's Prepare handler and serves SPSP over HTTP.
Over an ILP-over-HTTP uplink the ILDCP request is a POST to the connector, and the connector
POSTs our incoming Prepares to ``/ilp`` on the same port as SPSP, with ``--incoming-token``.
Each SPSP query gets credentials with a fresh connection tag, which names the connection in the
output and the ledger.

Durability: the server's ``should_fulfill`` hook puts the credit in the ledger and returns only
once the commit that holds it is on disk, so a Fulfill never leaves for money the ledger does not
hold. Credits arriving together share one commit (:class:`GroupCommitter`); commits run in a
worker thread, so the event loop keeps serving while the disk syncs. A ledger that cannot be
written refuses the money (F99: the sender keeps it).
"""

from __future__ import annotations

import ipaddress
import secrets
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import trio

from ilp._asgi import Receive, Scope, Send
from ilp.amount import Amount
from ilp.btp.client import BtpClient
from ilp.http import IlpHttpApp, is_http_url
from ilp.ildcp import IldcpResponse
from ilp.ledger import Credit, Ledger, LedgerError
from ilp.spsp.server import SpspApp, serve_spsp
from ilp.stream.connection import Connection, DataStream
from ilp.stream.pay import AssetDetails
from ilp.stream.server import StreamServer

from .amounts import AMOUNT, AmountArg
from .connect import open_uplink
from .exit_codes import ExitCode
from .ledger_cmd import ledger_option, ledger_path
from .main_options import debug_option
from .output import CliError, print_json
from .uplink import Uplink, resolve_uplink, uplink_option

DEFAULT_PORT = 7780
CLOSE_GRACE = 5.0
"""Seconds to let connections close after --amount was reached, before exiting anyway."""

RECEIVE_EXIT_CODES = """\b
Exit codes:
  0  --amount was received
  2  bad command line, or the port cannot be bound
  5  the connector could not be reached (or the link to it failed)
  7  the ledger cannot be opened or written
  130  interrupted (Ctrl-C); everything received is in the ledger
  (4 the connector gave no address, 6 it did not answer in time (ILP over HTTP),
  8 the connector refused our credentials)"""


class GroupCommitter:
    """Writes credits to a :class:`~ilp.ledger.Ledger` in groups, from a worker thread.

    :meth:`record` returns once the commit holding its credit is on disk, or raises
    :class:`~ilp.ledger.LedgerError`. Credits that arrive while a commit runs go into the next
    one. Run :meth:`run` in a nursery (``await nursery.start(committer.run)``).
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._batch = _Batch()
        self._wake = trio.Event()
        self.commits = 0
        """Commits done so far."""

    async def record(self, credit: Credit) -> None:
        """Add ``credit`` to the next commit and wait until that commit is done."""
        batch = self._batch
        batch.credits.append(credit)
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._batch = self._batch, _Batch()
            # If cancelled mid-commit the thread still finishes, but the waiters are told it
            # failed (the packets are refused): the ledger may then hold a credit that was not
            # fulfilled, never the other way round.
            batch.error = LedgerError("the receiver is stopping")
            try:
                await trio.to_thread.run_sync(self._ledger.record, batch.credits)
                batch.error = None
                self.commits += 1
            except LedgerError as exc:
                batch.error = exc
            finally:
                batch.done.set()


@dataclass(slots=True)
class _Batch:
    credits: list[Credit] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    error: LedgerError | None = None


@dataclass(slots=True)
class ReceiveArgs:
    """The command line of `ilp receive`, checked."""

    host: str
    port: int
    amount: AmountArg | None
    ledger: Path
    uplink: Uplink
    as_json: bool
    incoming_token: str | None = field(default=None, repr=False)
    """The bearer token the connector sends when it POSTs Prepares (ILP-over-HTTP uplinks)."""

    @property
    def over_http(self) -> bool:
        """Whether the uplink is ILP over HTTP (the connector POSTs our Prepares to us)."""
        return is_http_url(self.uplink.url)


@dataclass(slots=True)
class Receiver:
    """What one run learned and received (filled in as it goes)."""

    args: ReceiveArgs
    config: IldcpResponse | None = None
    target: int | None = None
    total: int = 0
    stopped: bool = False
    failure: LedgerError | None = None
    reached: trio.Event = field(default_factory=trio.Event)

    def amount(self, value: int) -> Amount:
        config = self.config
        if config is None:
            return Amount(value)
        return Amount(value, config.asset_code, config.asset_scale)

    def emit(self, event: dict[str, Any], text: str) -> None:
        """One event: a JSON line on stdout with --json, else ``text`` on stderr."""
        if self.args.as_json:
            print_json(event)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def spsp_url(host: str, port: int) -> str:
    """The URL of our SPSP endpoint (an unspecified host is shown as the loopback address)."""
    shown = host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:
        shown = "127.0.0.1" if ip.version == 4 else "::1"
        ip = ipaddress.ip_address(shown)
    if ip is not None and ip.version == 6:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/.well-known/pay"


def payment_pointer(host: str) -> str | None:
    """``$host`` for a host others can reach, None for loopback or unspecified addresses
    (``$127.0.0.1`` is no payment pointer). A pointer has no port and means
    ``https://host/.well-known/pay``: it reaches us through a TLS proxy on port 443 only."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"${host}"
    if ip.is_loopback or ip.is_unspecified:
        return None
    return f"$[{host}]" if ip.version == 6 else f"${host}"


ILP_PATH = "/ilp"
"""Where an ILP-over-HTTP uplink POSTs our incoming Prepares (any path is taken)."""


class ReceiverApp:
    """SPSP and, over an ILP-over-HTTP uplink, the Prepares the connector POSTs: one ASGI
    application on one port. Every ``POST`` goes to ``ilp`` (SPSP is ``GET`` only)."""

    def __init__(self, spsp: SpspApp, ilp: IlpHttpApp | None) -> None:
        self.spsp = spsp
        self.ilp = ilp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ilp is not None and scope["type"] == "http" and scope.get("method") == "POST":
            await self.ilp.handle_http(scope, receive, send)
        else:
            await self.spsp(scope, receive, send)


def ilp_url(host: str, port: int) -> str:
    """The URL the connector POSTs our Prepares to (as :func:`spsp_url` shows hosts)."""
    return spsp_url(host, port).removesuffix("/.well-known/pay") + ILP_PATH


async def run_receive(receiver: Receiver, ledger: Ledger) -> None:
    """Connect, serve SPSP and STREAM, record credits; return once --amount is reached."""
    args = receiver.args
    async with open_uplink(args.uplink) as (link, config):
        receiver.config = config
        if args.amount is not None:
            asset = AssetDetails(config.asset_code, config.asset_scale)
            receiver.target = args.amount.to_base(asset, "your account's")
        committer = GroupCommitter(ledger)
        address = config.client_address

        async def should_fulfill(conn: Connection, stream: DataStream, amount: int) -> bool:
            tag = conn.tag or "-"
            now = datetime.now(UTC)
            credit = Credit(
                now, address, tag, stream.id, amount, config.asset_code, config.asset_scale
            )
            try:
                await committer.record(credit)
            except LedgerError as exc:
                if receiver.failure is None:
                    receiver.failure = exc
                receiver.reached.set()  # stop: a receiver that cannot record must not run on
                return False
            receiver.total += amount
            receiver.emit(
                {
                    "event": "money",
                    "connection": tag,
                    "stream": stream.id,
                    "amount": str(amount),
                    "total": str(receiver.total),
                },
                f"+ {receiver.amount(amount)}  connection {tag} stream {stream.id}"
                f"  (total {receiver.amount(receiver.total)})",
            )
            if receiver.target is not None and receiver.total >= receiver.target:
                # The Fulfill is handed to the link before this task yields again.
                receiver.reached.set()
            return True

        server = StreamServer(
            secrets.token_bytes(32),
            address,
            config.asset_code,
            config.asset_scale,
            link=link,
            should_fulfill=should_fulfill,
        )
        spsp = SpspApp(server, resolve_account=lambda _path: "c" + secrets.token_hex(6))
        btp = link if isinstance(link, BtpClient) else None
        incoming = None
        if btp is None:
            incoming = IlpHttpApp(server, token=args.incoming_token, address=address)
        app = ReceiverApp(spsp, incoming)
        live: set[Connection] = set()

        async def watch(conn: Connection) -> None:
            live.add(conn)
            try:
                await conn.wait_closed()
            finally:
                live.discard(conn)
            tag = conn.tag or "-"
            receiver.emit(
                {
                    "event": "connection_closed",
                    "connection": tag,
                    "received": str(conn.total_received),
                },
                f"connection {tag} closed: received {receiver.amount(conn.total_received)}",
            )

        async def accept(nursery: trio.Nursery) -> None:
            async for conn in server.connections():
                nursery.start_soon(watch, conn)

        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            await nursery.start(server.run)
            nursery.start_soon(accept, nursery)
            try:
                port = await nursery.start(serve_spsp, app, args.host, args.port)
            except OSError as exc:
                raise CliError(
                    f"cannot serve SPSP on {args.host}:{args.port}: {exc.strerror or exc}. "
                    "Choose another --port (0 picks a free one).",
                    ExitCode.USAGE,
                ) from None
            if btp is not None:
                btp.handler = server
            _ready(receiver, port)
            await receiver.reached.wait()
            # Let the senders close their connections (bounded), then stop.
            if receiver.failure is None:
                with trio.move_on_after(CLOSE_GRACE):
                    while live:
                        await _next_close(live)
            if btp is not None:
                btp.handler = None
            if receiver.failure is None:
                receiver.emit(
                    {"event": "done", "total": str(receiver.total)},
                    f"received {receiver.amount(receiver.total)}: done.",
                )
            nursery.cancel_scope.cancel()


async def _next_close(live: set[Connection]) -> None:
    """Wait until one of ``live`` closes."""
    async with trio.open_nursery() as nursery:
        for conn in list(live):

            async def wait(c: Connection = conn) -> None:
                await c.wait_closed()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


def check_incoming(args: ReceiveArgs) -> None:
    """A usage error unless ``--incoming-token`` goes with an ILP-over-HTTP uplink."""
    if args.over_http and not args.incoming_token:
        raise CliError(
            "receiving over an ILP-over-HTTP uplink needs --incoming-token (or "
            "ILP_INCOMING_TOKEN): the bearer token the connector sends when it POSTs our "
            f"incoming Prepares to {ilp_url(args.host, args.port)}.",
            ExitCode.USAGE,
        )
    if args.incoming_token and not args.over_http:
        raise CliError(
            "--incoming-token is for ILP-over-HTTP uplinks (http:// or https://); over BTP "
            "the Prepares come back on the connection we open.",
            ExitCode.USAGE,
        )


def _ready(receiver: Receiver, port: int) -> None:
    args = receiver.args
    config = receiver.config
    assert config is not None
    url = spsp_url(args.host, port)
    pointer = payment_pointer(args.host)
    if args.as_json:
        print_json(
            {
                "event": "ready",
                "address": config.client_address,
                "asset": {"code": config.asset_code, "scale": config.asset_scale},
                "spsp_url": url,
                "ilp_url": ilp_url(args.host, port) if args.over_http else None,
                "payment_pointer": pointer,
                "ledger": str(args.ledger),
                "amount": None if receiver.target is None else str(receiver.target),
            }
        )
        return
    lines = [url] + ([pointer] if pointer else [])
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    want = "" if receiver.target is None else f", until {receiver.amount(receiver.target)}"
    sys.stderr.write(
        f"Receiving at {config.client_address} ({config.asset_code}, scale "
        f"{config.asset_scale}){want}.\nSPSP: {url}\n"
        + (
            f"Payment pointer: {pointer} (it means https://{pointer[1:]}/.well-known/pay: put a "
            f"TLS proxy on port 443 in front of port {port})\n"
            if pointer
            else ""
        )
        + (
            f"ILP over HTTP: the connector POSTs to {ilp_url(args.host, port)}\n"
            if args.over_http
            else ""
        )
        + f"Ledger: {args.ledger}\nCtrl-C to stop.\n"
    )
    sys.stderr.flush()


async def _main(receiver: Receiver, ledger: Ledger) -> None:
    """run_receive under Ctrl-C: the first one stops it (what arrived is in the ledger)."""
    async with trio.open_nursery() as nursery:

        async def watch_interrupts(*, task_status: trio.TaskStatus[None]) -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    receiver.stopped = True
                    nursery.cancel_scope.cancel()

        await nursery.start(watch_interrupts)
        await run_receive(receiver, ledger)
        nursery.cancel_scope.cancel()


@click.command("receive", epilog=RECEIVE_EXIT_CODES, short_help="Receive payments (SPSP/STREAM).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="ILP_RECEIVE_HOST",
    help="Address to serve SPSP on. [env: ILP_RECEIVE_HOST]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="ILP_RECEIVE_PORT",
    help="Port to serve SPSP on; 0 picks a free one. [env: ILP_RECEIVE_PORT]",
)
@click.option(
    "--amount",
    type=AMOUNT,
    metavar="AMOUNT",
    help="Exit 0 once this much was received (base units, or asset units with the code).",
)
@ledger_option
@uplink_option
@click.option(
    "--incoming-token",
    envvar="ILP_INCOMING_TOKEN",
    metavar="TOKEN",
    help="With an ILP-over-HTTP uplink: the bearer token the connector sends when it POSTs "
    "our incoming Prepares to http://HOST:PORT/ilp (required there). [env: ILP_INCOMING_TOKEN]",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout.")
@debug_option
def receive_command(
    host: str,
    port: int,
    amount: AmountArg | None,
    ledger: str | None,
    uplink: str | None,
    incoming_token: str | None,
    as_json: bool,
) -> None:
    """Receive payments: serve SPSP, accept STREAM money through the uplink, record each credit.

    Prints the SPSP URL (and, for a host others can reach, the payment pointer) on stdout and
    each payment on stderr as it arrives. With --json, stdout carries one JSON event per line:
    ready, money, connection_closed, done. Every credit is committed to the ledger (see
    `ilp ledger`) before its Fulfill is sent. Runs until Ctrl-C, or until --amount arrived.
    """
    args = ReceiveArgs(
        host, port, amount, ledger_path(ledger), resolve_uplink(uplink), as_json, incoming_token
    )
    check_incoming(args)
    receiver = Receiver(args)
    try:
        book = Ledger(args.ledger)
    except LedgerError as exc:
        raise CliError(f"{exc}. Choose another --ledger.", ExitCode.INVALID_INPUT) from None
    try:
        trio.run(_main, receiver, book)
    finally:
        book.close()
    if receiver.failure is not None:
        raise CliError(
            f"{receiver.failure}. The money of that packet was refused (the sender keeps it); "
            f"received {receiver.amount(receiver.total)} before, all of it in the ledger.",
            ExitCode.INVALID_INPUT,
        )
    if receiver.stopped:
        raise CliError(
            f"interrupted. Received {receiver.amount(receiver.total)}; every credit is in the "
            f"ledger {args.ledger}.",
            ExitCode.INTERRUPTED,
        )
