"""The `ilp` command: a click group, one module per subcommand."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from ilp import __version__

from .exit_codes import ExitCode, describe_exit_codes
from .main_options import configure_logging, debug_option, is_debug
from .output import CliError, print_error

HELP = f"""Interledger from the terminal: pay, receive, inspect packets.

\b
Exit codes:
{describe_exit_codes()}
"""


def _sole_cli_error(group: BaseExceptionGroup[BaseException]) -> CliError | None:
    """The one :class:`CliError` in ``group`` when the group holds nothing else (a command's
    error raised inside a nursery comes out wrapped), else None."""
    matched, rest = group.split(CliError)
    if matched is None or rest is not None:
        return None
    leaves: list[BaseException] = []
    pending: list[BaseException] = [matched]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) != 1 or not isinstance(leaves[0], CliError):
        return None
    return leaves[0]


class IlpGroup(click.Group):
    """Turns our errors into `Error: ...` and an exit code; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except BaseExceptionGroup as group:
                ours = _sole_cli_error(group)
                if ours is None:
                    raise
                raise ours from group
        except CliError as exc:
            if is_debug(ctx):
                # The traceback too, but the same exit code: a script debugging us sees it.
                traceback.print_exc()
            print_error(exc.message)
            ctx.exit(int(exc.exit_code))
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            if is_debug(ctx):
                raise
            print_error("interrupted.")
            ctx.exit(int(ExitCode.INTERRUPTED))
        except Exception as exc:
            if is_debug(ctx):
                raise
            print_error(
                f"unexpected failure: {type(exc).__name__}: {exc}. "
                "This is a bug; run again with --debug for the traceback and report it."
            )
            ctx.exit(int(ExitCode.ERROR))


@click.group(cls=IlpGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ilp")
@debug_option
def cli() -> None:
    configure_logging(is_debug(click.get_current_context()))


def _register() -> None:
    from .decode import decode
    from .ledger_cmd import ledger_command
    from .node import node_command
    from .pay import pay_command, quote_command
    from .query_address import query_address
    from .receive import receive_command

    cli.add_command(decode)
    cli.add_command(ledger_command)
    cli.add_command(node_command)
    cli.add_command(pay_command)
    cli.add_command(query_address)
    cli.add_command(quote_command)
    cli.add_command(receive_command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="ilp", standalone_mode=True)
    sys.exit(0)
