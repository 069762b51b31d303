"""`ilp query-address`: ask the connector who we are (ILDCP over BTP)."""

from __future__ import annotations

import click
import trio

from ilp.btp.client import open_btp_client, url_text
from ilp.errors import AuthError, ConnectError, IlpError
from ilp.ildcp import IldcpError, IldcpResponse, fetch_config

from .exit_codes import ExitCode
from .main_options import debug_option
from .output import CliError, print_json, stdout_console
from .uplink import Uplink, resolve_uplink, uplink_option


def unreachable_message(uplink: Uplink, exc: ConnectError) -> str:
    """`cannot reach the connector at ws://...: ... Start one, or set --uplink / ILP_UPLINK.`"""
    where = url_text(uplink.url).replace("btp+", "", 1)
    reason = str(exc)
    return (
        f"cannot reach the connector at {where} ({_short_reason(reason)}). "
        "Start one, or set --uplink / ILP_UPLINK."
    )


def _short_reason(reason: str) -> str:
    lowered = reason.lower()
    if "refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    # The client's own message already names the URL; keep what comes after it.
    return reason.rsplit(": ", 1)[-1] if ": " in reason else reason


async def query(uplink: Uplink, timeout: float) -> IldcpResponse:
    """Connect to the uplink and fetch our ILDCP configuration, mapping failures to CLI errors."""
    try:
        with trio.fail_after(timeout):
            async with open_btp_client(uplink.url, reconnect_backoff=(0.1, 1.0)) as link:
                return await fetch_config(link)
    except trio.TooSlowError:
        raise CliError(
            f"the connector at {url_text(uplink.url)} did not answer within {timeout:g} s.",
            ExitCode.TIMEOUT,
        ) from None
    except AuthError as exc:
        raise CliError(f"{exc} (--uplink / ILP_UPLINK).", ExitCode.AUTH_REFUSED) from None
    except ConnectError as exc:
        raise CliError(unreachable_message(uplink, exc), ExitCode.UNREACHABLE) from None
    except IldcpError as exc:
        raise CliError(
            f"the connector did not give us an address: {exc}.", ExitCode.FAILED
        ) from None
    except ValueError as exc:  # an invalid uplink URL
        raise CliError(f"invalid uplink URL: {exc}", ExitCode.USAGE) from None
    except IlpError as exc:
        raise CliError(f"{exc}.", ExitCode.UNREACHABLE) from None


@click.command("query-address")
@uplink_option
@click.option(
    "--timeout",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds to wait for the connector.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {address, asset_code, asset_scale}.")
@debug_option
def query_address(uplink: str | None, timeout: float, as_json: bool) -> None:
    """Ask the connector for our ILP address and asset (ILDCP)."""
    resolved = resolve_uplink(uplink)
    config = trio.run(query, resolved, timeout)
    if as_json:
        print_json(
            {
                "address": config.client_address,
                "asset_code": config.asset_code,
                "asset_scale": config.asset_scale,
            }
        )
    else:
        out = stdout_console()
        out.print(f"address: {config.client_address}", markup=False)
        out.print(f"asset:   {config.asset_code} (scale {config.asset_scale})", markup=False)
