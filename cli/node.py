"""`ilp node`: run a connector of our own (see docs/node.md)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import trio

from ilp.errors import IlpError
from ilp.node.config import DEFAULT_API_PORT, DEFAULT_BTP_PORT, ConfigError, NodeConfig, load_config
from ilp.node.node import Node
from ilp.node.store import StoreError

from .exit_codes import ExitCode
from .main_options import debug_option, is_debug, stop_cli_logging
from .output import CliError, print_json, sentence

NODE_EXIT_CODES = """\b
Exit codes:
  0  stopped by SIGTERM
  2  bad command line or configuration, or a port that cannot be bound
  5  the parent could not be reached to learn our address
  7  the store cannot be opened
  130  interrupted (Ctrl-C)"""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/ilp-node``, else ``~/.local/share/ilp-node``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ilp-node"


def _ready_lines(node: Node) -> tuple[dict[str, Any], str]:
    config = node.config
    api = f"http://{config.api_host}:{node.api_port}" if node.api_port is not None else None
    event = {
        "event": "ready",
        "address": node.address,
        "asset": {"code": config.asset_code, "scale": config.asset_scale},
        "btp_url": f"btp+ws://{config.btp_host}:{node.btp_port}",
        "api_url": api,
        "admin_token_file": str(node.admin_token_file) if node.admin_token_file else None,
        "store": node.store.path if node.store is not None else None,
        "accounts": len(node.connector.accounts),
    }
    token_note = (
        f" (admin token in {node.admin_token_file})"
        if node.admin_token_file
        else " (admin token from the configuration)"
        if config.admin_token
        else " (admin token kept in memory only: set ILP_NODE_ADMIN_TOKEN)"
    )
    text = (
        f"Node {node.address} ({config.asset_code}, scale {config.asset_scale}).\n"
        f"BTP: {event['btp_url']}; children connect as btp+ws://NAME:TOKEN@"
        f"{config.btp_host}:{node.btp_port}\n"
        + (f"API: {api}{token_note}\n" if api else "API: off\n")
        + f"Store: {event['store']}\nCtrl-C to stop.\n"
    )
    return event, text


DRAIN_TIMEOUT = 10.0
"""Seconds a stopping node waits for the packets it is forwarding (new ones get T03)."""


async def run_node(config: NodeConfig, as_json: bool) -> str:
    """Run until SIGINT or SIGTERM, then drain (a second signal stops at once).

    Returns the name of the signal that stopped it. A port that cannot be bound raises
    OSError; an unreachable parent, IlpError (both outside any exception group).
    """
    stopped_by = ""
    stop = trio.Event()
    failure: OSError | IlpError | None = None
    async with trio.open_nursery() as nursery:

        async def watch(*, task_status: trio.TaskStatus[None]) -> None:
            nonlocal stopped_by
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for signum in signals:
                    if stop.is_set():
                        nursery.cancel_scope.cancel()
                    stopped_by = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
                    stop.set()

        await nursery.start(watch)
        try:
            node: Node = await nursery.start(Node(config).run)
        except (OSError, IlpError) as exc:
            failure = exc
        else:
            _announce(node, as_json)
            await stop.wait()
            if as_json:
                print_json({"event": "stopping", "signal": stopped_by})
            else:
                sys.stderr.write("Stopping: finishing the packets in flight (again to stop now).\n")
            await node.shutdown(DRAIN_TIMEOUT)
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if as_json:
        print_json({"event": "stopped", "signal": stopped_by})
    return stopped_by


def _announce(node: Node, as_json: bool) -> None:
    event, text = _ready_lines(node)
    if as_json:
        print_json(event)
    else:
        sys.stdout.write(f"{event['btp_url']}\n")
        sys.stdout.flush()
        sys.stderr.write(text)
        sys.stderr.flush()


@click.command("node", epilog=NODE_EXIT_CODES, short_help="Run a connector (BTP, routing, API).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ILP_NODE_CONFIG",
    help="TOML configuration file (see docs/node.md). [env: ILP_NODE_CONFIG]",
)
@click.option("--address", help="The node's ILP address. [env: ILP_NODE_ADDRESS]")
@click.option("--asset-code", help="Asset of the node's own accounts. [env: ILP_NODE_ASSET_CODE]")
@click.option(
    "--asset-scale", type=click.IntRange(0, 255), help="Its scale. [env: ILP_NODE_ASSET_SCALE]"
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Where the store lives (default {default_data_dir()}). [env: ILP_NODE_DATA_DIR]",
)
@click.option("--memory", is_flag=True, help="Keep the store in memory: nothing survives a stop.")
@click.option(
    "--btp-host", help="Address of the BTP server (default 127.0.0.1). [env: ILP_NODE_BTP_HOST]"
)
@click.option(
    "--btp-port",
    type=click.IntRange(0, 65535),
    help=f"BTP port (default {DEFAULT_BTP_PORT}; 0 picks one). [env: ILP_NODE_BTP_PORT]",
)
@click.option(
    "--api-host", help="Address of the HTTP API (default 127.0.0.1). [env: ILP_NODE_API_HOST]"
)
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    help=f"HTTP API port (default {DEFAULT_API_PORT}; 0 picks one). [env: ILP_NODE_API_PORT]",
)
@click.option("--no-api", is_flag=True, help="Do not serve the HTTP API.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON events (ready, stopping, stopped) on stdout.",
)
@debug_option
def node_command(
    config_path: Path | None,
    address: str | None,
    asset_code: str | None,
    asset_scale: int | None,
    data_dir: Path | None,
    memory: bool,
    btp_host: str | None,
    btp_port: int | None,
    api_host: str | None,
    api_port: int | None,
    no_api: bool,
    as_json: bool,
) -> None:
    """Run a connector: children and peers over BTP, routing, balances, an HTTP API.

    Settings come from the TOML file, then ILP_NODE_* environment variables, then these flags
    (flags win). With no file the node is private.node in XRP (scale 9), with its BTP server on
    127.0.0.1:7768 open to any child (each gets an account named by its username) and its API
    on 127.0.0.1:7769. The admin token is ILP_NODE_ADMIN_TOKEN, or a random one written to
    admin-token in the data directory.
    """
    ctx = click.get_current_context()
    stop_cli_logging()
    logging.basicConfig(
        level=logging.DEBUG if is_debug(ctx) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not is_debug(ctx):
        logging.getLogger("ilp.node").setLevel(logging.INFO)
    overrides: dict[str, Any] = {
        "address": address,
        "asset_code": asset_code,
        "asset_scale": asset_scale,
        "data_dir": ":memory:" if memory else (str(data_dir) if data_dir else None),
        "btp_host": btp_host,
        "btp_port": btp_port,
        "api_host": api_host,
        "api_port": "off" if no_api else api_port,
    }
    try:
        config = load_config(
            config_path,
            environ=os.environ,
            overrides=overrides,
            default_data_dir=default_data_dir(),
        )
    except ConfigError as exc:
        raise CliError(sentence(exc), ExitCode.USAGE) from None
    try:
        stopped_by = trio.run(run_node, config, as_json)
    except OSError as exc:
        raise CliError(
            f"cannot listen: {exc.strerror or exc}. Choose other ports with --btp-port and "
            "--api-port.",
            ExitCode.USAGE,
        ) from None
    except StoreError as exc:
        raise CliError(
            f"{sentence(exc)} Choose another --data-dir.", ExitCode.INVALID_INPUT
        ) from None
    except ConfigError as exc:
        raise CliError(sentence(exc), ExitCode.USAGE) from None
    except IlpError as exc:
        raise CliError(
            f"could not learn our address from the parent: {sentence(exc)} Check its url, or set "
            "an address.",
            ExitCode.UNREACHABLE,
        ) from None
    if stopped_by == "SIGINT":
        raise CliError("interrupted; every fulfilled packet is in the store.", ExitCode.INTERRUPTED)
