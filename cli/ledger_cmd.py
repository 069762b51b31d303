"""`ilp ledger`: what the ledger of `ilp receive` holds; and where that ledger lives by default."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from ilp.amount import Amount
from ilp.ledger import Ledger, LedgerError, LedgerTotal, StoredCredit

from .exit_codes import ExitCode
from .main_options import debug_option
from .output import CliError, print_json, sentence
from .render import iso_utc

LEDGER_HELP = (
    "The SQLite ledger file. Default: $XDG_DATA_HOME/trio-ilp/ledger.sqlite3, else "
    "~/.local/share/trio-ilp/ledger.sqlite3. [env: ILP_LEDGER]"
)


def default_ledger_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/trio-ilp/ledger.sqlite3``, else ``~/.local/share/trio-ilp/...``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME")
    root = Path(base) if base else Path(env.get("HOME") or Path.home()) / ".local" / "share"
    return root / "trio-ilp" / "ledger.sqlite3"


def ledger_path(flag: str | None) -> Path:
    """``--ledger`` if given (or ILP_LEDGER, through click), else the default."""
    return Path(flag) if flag else default_ledger_path()


ledger_option = click.option(
    "--ledger", "ledger", metavar="PATH", envvar="ILP_LEDGER", help=LEDGER_HELP
)


def credit_json(stored: StoredCredit) -> dict[str, Any]:
    """A ledger row as JSON (amounts as decimal strings)."""
    c = stored.credit
    return {
        "id": stored.id,
        "received_at": iso_utc(c.received_at),
        "address": c.address,
        "connection": c.connection,
        "stream": c.stream,
        "amount": str(c.amount),
        "asset_code": c.asset_code,
        "asset_scale": c.asset_scale,
    }


def total_json(total: LedgerTotal) -> dict[str, Any]:
    return {
        "asset_code": total.asset_code,
        "asset_scale": total.asset_scale,
        "total": str(total.total),
        "count": total.count,
    }


@click.command("ledger", short_help="List the payments `ilp receive` recorded.")
@ledger_option
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the last N credits.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@debug_option
def ledger_command(ledger: str | None, limit: int | None, as_json: bool) -> None:
    """List the credits in the ledger of `ilp receive`, oldest first, and the totals per asset.

    \b
    Exit codes: 0 listed; 7 no ledger at that path, or not a readable ledger.
    """
    path = ledger_path(ledger)
    if not path.exists():
        raise CliError(
            f"there is no ledger at {path}: `ilp receive` creates it (--ledger / ILP_LEDGER).",
            ExitCode.INVALID_INPUT,
        )
    try:
        with Ledger(path, read_only=True) as book:
            credits = book.credits()
            totals = book.totals()
    except LedgerError as exc:
        raise CliError(sentence(exc), ExitCode.INVALID_INPUT) from None
    if limit is not None:
        credits = credits[-limit:]
    if as_json:
        print_json(
            {
                "ledger": str(path),
                "credits": [credit_json(c) for c in credits],
                "totals": [total_json(t) for t in totals],
            }
        )
        return
    lines = [f"ledger {path}"]
    for stored in credits:
        c = stored.credit
        amount = Amount(c.amount, c.asset_code, c.asset_scale)
        lines.append(
            f"  {stored.id:>6}  {c.received_at.isoformat(timespec='seconds')}  {amount}"
            f"  connection {c.connection} stream {c.stream}  to {c.address}"
        )
    if not totals:
        lines.append("  (no credits yet)")
    for t in totals:
        lines.append(f"  total {Amount(t.total, t.asset_code, t.asset_scale)} in {t.count} credits")
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
