"""The one place that decides which connector a command talks to.

In order: ``--uplink/-u URL``, else ``ILP_UPLINK``, else the ``server`` of ``ILP_CREDENTIALS``
(JSON, the ilp-plugin convention), else ``ILP_BTP_SERVER``, else ``btp+ws://localhost:7768`` with a
random secret per run (the moneyd convention for a local connector). A URL is BTP
(``btp+ws://``, ``btp+wss://``) or ILP over HTTP (``http://``, ``https://``; see
:mod:`ilp_cli.connect`).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import click

from .exit_codes import ExitCode
from .output import CliError

DEFAULT_UPLINK_HOST = "localhost:7768"

UPLINK_HELP = (
    "Connector to use: a btp+ws:// or btp+wss:// URL with user:token@, or an ILP-over-HTTP "
    "http(s)://name:token@host/path URL (receive then needs --incoming-token). Default: ILP_UPLINK, "
    "else the server of ILP_CREDENTIALS (JSON), else ILP_BTP_SERVER, else "
    "btp+ws://localhost:7768 with a random token. [env: ILP_UPLINK]"
)


@dataclass(frozen=True, slots=True)
class Uplink:
    """A connector URL and where it came from (for messages)."""

    url: str
    source: str


def resolve_uplink(flag: str | None, environ: Mapping[str, str] | None = None) -> Uplink:
    """Apply the uplink rules; ``flag`` is the value of ``--uplink``."""
    env = os.environ if environ is None else environ
    if flag:
        return Uplink(flag, "--uplink")
    if env.get("ILP_UPLINK"):
        return Uplink(env["ILP_UPLINK"], "ILP_UPLINK")
    credentials = env.get("ILP_CREDENTIALS")
    if credentials:
        try:
            server = json.loads(credentials).get("server")
        except (ValueError, AttributeError):
            raise CliError(
                'ILP_CREDENTIALS is not a JSON object. Set it to {"server": "btp+ws://..."}.',
                ExitCode.USAGE,
            ) from None
        if not isinstance(server, str) or not server:
            raise CliError(
                'ILP_CREDENTIALS has no "server" URL. Set it to {"server": "btp+ws://..."}.',
                ExitCode.USAGE,
            )
        return Uplink(server, "ILP_CREDENTIALS")
    if env.get("ILP_BTP_SERVER"):
        return Uplink(env["ILP_BTP_SERVER"], "ILP_BTP_SERVER")
    token = secrets.token_urlsafe(16)
    return Uplink(f"btp+ws://:{token}@{DEFAULT_UPLINK_HOST}", "default")


uplink_option = click.option("--uplink", "-u", "uplink", metavar="URL", help=UPLINK_HELP)
