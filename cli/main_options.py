"""Options shared by every command."""

from __future__ import annotations

import click


def set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """Callback of every --debug option: any of them turns debugging on."""
    root = ctx.find_root()
    if not isinstance(root.obj, dict):
        root.obj = {}
    if value:
        root.obj["debug"] = True
    return value


def is_debug(ctx: click.Context) -> bool:
    obj = ctx.find_root().obj
    return bool(isinstance(obj, dict) and obj.get("debug"))


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=set_debug,
    envvar="ILP_DEBUG",
    help="Show tracebacks and debug logs. [env: ILP_DEBUG]",
)
