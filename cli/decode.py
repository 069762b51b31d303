"""`ilp decode`: decode ILP, BTP and STREAM bytes for people debugging traffic."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from ilp.errors import DecodeError
from ilp.packet import Fulfill, Prepare, Reject, decode_packet

from .exit_codes import ExitCode
from .main_options import debug_option
from .output import CliError, print_json, stdout_console
from .render import to_plain, to_tree

ZERO_32 = bytes(32)


def read_input(value: str, use_base64: bool) -> bytes:
    """The bytes given as hex (or base64) text, or read from standard input for ``-``."""
    text = sys.stdin.read() if value == "-" else value
    text = text.strip()
    if use_base64:
        compact = re.sub(r"\s+", "", text)
        try:
            padded = compact + "=" * (-len(compact) % 4)
            if "-" in compact or "_" in compact:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise CliError(
                "the input is not valid base64. Pass hex, or base64 with --base64.",
                ExitCode.INVALID_INPUT,
            ) from None
    compact = re.sub(r"[\s:]+", "", text)
    if compact[:2].lower() == "0x":
        compact = compact[2:]
    try:
        return bytes.fromhex(compact)
    except ValueError:
        raise CliError(
            "the input is not valid hex (use --base64 for base64 input, - to read standard input).",
            ExitCode.INVALID_INPUT,
        ) from None


def parse_secret(value: str) -> bytes:
    """A shared secret given as base64 or base64url; its value never appears in errors."""
    compact = value.strip()
    padded = compact + "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            secret = base64.urlsafe_b64decode(padded)
        else:
            secret = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise CliError("the --secret is not valid base64.", ExitCode.INVALID_INPUT) from None
    if not secret:
        raise CliError("the --secret is empty.", ExitCode.INVALID_INPUT)
    return secret


def _nested(what: str, decode: Callable[[], Any]) -> Any:
    try:
        return decode()
    except DecodeError as exc:
        raise DecodeError(f"{what}: {exc}") from exc


def _decrypt_stream(secret: bytes, data: bytes, where: str) -> dict[str, Any]:
    from ilp.stream.crypto import StreamCrypto

    crypto = StreamCrypto(secret)
    try:
        plaintext = crypto.decrypt(data)
    except DecodeError:
        raise CliError(
            f"cannot decrypt {where} as STREAM data with the given --secret "
            "(wrong secret, or not STREAM data).",
            ExitCode.INVALID_INPUT,
        ) from None
    return describe_stream(plaintext, f"the STREAM packet decrypted from {where}")


def describe_stream(raw: bytes, what: str = "") -> dict[str, Any]:
    from ilp.stream.packet import StreamPacket

    packet = _nested(what, lambda: StreamPacket.decode(raw)) if what else StreamPacket.decode(raw)
    plain: dict[str, Any] = to_plain(packet)
    plain["type"] = "stream_packet"
    return plain


def describe_ilp(raw: bytes, secret: bytes | None) -> dict[str, Any]:
    """The ILP packet, with the peer protocol or STREAM payloads it carries."""
    packet = decode_packet(raw)
    plain: dict[str, Any] = to_plain(packet)
    plain["type"] = f"ilp_{plain['type']}"
    if isinstance(packet, Prepare):
        dest = packet.destination
        if dest == "peer.config":
            plain["ildcp"] = {"type": "ildcp_request"}
        elif dest in ("peer.route.control", "peer.route.update"):
            from ilp.ccp import packet as ccp

            decoder = (
                ccp.RouteControlRequest if dest.endswith("control") else ccp.RouteUpdateRequest
            )
            message = _nested(
                f"the CCP message in prepare.data (destination {dest})",
                lambda: decoder.decode(packet.data),
            )
            plain["ccp"] = to_plain(message)
    elif isinstance(packet, Fulfill):
        if packet.fulfillment == ZERO_32 and packet.data:
            from ilp.ildcp import IldcpResponse

            # Peer protocols fulfill with 32 zero bytes; data then is most likely ILDCP.
            with contextlib.suppress(DecodeError):
                plain["ildcp"] = to_plain(IldcpResponse.decode(packet.data))
    elif isinstance(packet, Reject):
        f08 = packet.amount_too_large()
        if f08 is not None:
            plain["amount_too_large"] = to_plain(f08)
    if (
        secret is not None
        and packet.data
        and not (isinstance(packet, Reject) and packet.code == "F08")
    ):
        plain["stream"] = _decrypt_stream(secret, packet.data, f"{plain['type']}.data")
    return plain


def describe_btp(raw: bytes, secret: bytes | None) -> dict[str, Any]:
    """The BTP message, with the ILP packets in its `ilp` protocol data decoded."""
    from ilp.btp.packet import decode_btp

    message = decode_btp(raw)
    plain: dict[str, Any] = to_plain(message)
    plain["type"] = f"btp_{plain['type']}"
    for entry in plain.get("protocol_data", []):
        if entry.get("name") == "ilp" and entry.get("data"):
            data = bytes.fromhex(entry["data"])
            try:
                entry["ilp"] = describe_ilp(data, secret)
            except DecodeError as exc:
                raise DecodeError(f"the ILP packet in the BTP `ilp` protocol data: {exc}") from exc
    return plain


@click.command()
@click.argument("packet", metavar="HEX")
@click.option("--base64", "use_base64", is_flag=True, help="The input is base64, not hex.")
@click.option("--btp", "mode", flag_value="btp", help="Decode a BTP message.")
@click.option(
    "--stream",
    "mode",
    flag_value="stream",
    help="Decode a plaintext STREAM packet (with --secret: encrypted STREAM data).",
)
@click.option(
    "--secret",
    envvar="ILP_SHARED_SECRET",
    metavar="BASE64",
    help="STREAM shared secret: decrypts the data of an ILP packet, or raw encrypted STREAM data. "
    "[env: ILP_SHARED_SECRET]",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@debug_option
def decode(
    packet: str, use_base64: bool, mode: str | None, secret: str | None, as_json: bool
) -> None:
    """Decode an ILP packet, a BTP message or a STREAM packet.

    HEX is the packet as hex text (spaces allowed), or - to read standard input. By default it is
    an ILP Prepare, Fulfill or Reject; ILDCP and CCP payloads are decoded when the destination says
    so, F08 data always, STREAM data with --secret.

    \b
    Examples:
      ilp decode 0c6800...                      an ILP packet
      ilp decode --btp 0600000001...            a BTP message
      ilp decode --stream 010c0100...           a plaintext STREAM packet
      ilp decode --secret BASE64 0c6800...      an ILP packet and the STREAM packet in it
      ilp decode --json - < packet.hex          JSON on stdout
    """
    raw = read_input(packet, use_base64)
    key = parse_secret(secret) if secret is not None else None
    try:
        if mode == "btp":
            plain = describe_btp(raw, key)
        elif mode == "stream" or (
            mode is None and key is not None and raw[:1] not in b"\x0c\x0d\x0e"
        ):
            if key is None:
                plain = describe_stream(raw)
            elif raw[:1] in (b"\x0c", b"\x0d", b"\x0e") and _is_ilp(raw):
                plain = describe_ilp(raw, key)
            else:
                plain = _decrypt_stream(key, raw, "the input")
        else:
            plain = describe_ilp(raw, key)
    except DecodeError as exc:
        hint = _hint(raw, mode)
        raise CliError(f"{exc}{hint}", ExitCode.INVALID_INPUT) from exc
    if as_json:
        print_json(plain)
    else:
        stdout_console().print(to_tree(plain, f"[bold]{plain['type']}[/bold]"))


def _is_ilp(raw: bytes) -> bool:
    try:
        decode_packet(raw)
    except DecodeError:
        return False
    return True


def _hint(raw: bytes, mode: str | None) -> str:
    if mode is None and raw[:1] in (b"\x01", b"\x02", b"\x06", b"\x07"):
        if raw[:1] == b"\x01" and raw[1:2] in (b"\x0c", b"\x0d", b"\x0e"):
            return ". It looks like a STREAM packet: try --stream."
        return ". It looks like a BTP message: try --btp."
    return ""
