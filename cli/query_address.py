"""`ilp query-address`: ask the connector who we are (ILDCP over BTP)."""

from __future__ import annotations

import click
import trio

from ilp.ildcp import IldcpResponse

from .connect import open_uplink, uplink_text
from .exit_codes import ExitCode
from .main_options import SECONDS, debug_option
from .output import CliError, print_json, stdout_console
from .uplink import Uplink, resolve_uplink, uplink_option


async def query(uplink: Uplink, timeout: float) -> IldcpResponse:
    """Connect to the uplink and fetch our ILDCP configuration, mapping failures to CLI errors."""
    try:
        with trio.fail_after(timeout):
            async with open_uplink(uplink) as (_link, config):
                return config
    except trio.TooSlowError:
        raise CliError(
            f"the connector at {uplink_text(uplink.url)} did not answer within {timeout:g} s.",
            ExitCode.TIMEOUT,
        ) from None


@click.command("query-address")
@uplink_option
@click.option(
    "--timeout",
    type=SECONDS,
    default=15.0,
    show_default=True,
    help="Seconds to wait for the connector.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {address, asset_code, asset_scale}.")
@debug_option
def query_address(uplink: str | None, timeout: float, as_json: bool) -> None:
    """Ask the connector for our ILP address and asset (ILDCP).

    \b
    Exit codes: 0 answered; 2 bad command line; 4 the connector gave no address; 5 it cannot
    be reached; 6 it did not answer in time; 8 it refused our credentials.
    """
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
