"""Options shared by every command, and where the library's log records go."""

from __future__ import annotations

import logging
import sys

import click

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


_handler = _StderrHandler()
_handler.setFormatter(logging.Formatter(LOG_FORMAT))


def configure_logging(debug: bool) -> None:
    """The log of the commands that report their own results (all but `ilp node`).

    Without --debug only errors of the library show (a handler that raised: a bug); its
    warnings repeat what the command says anyway (a connector refusing our token, say). With
    --debug, everything the library logs, from DEBUG up.
    """
    logger = logging.getLogger("ilp")
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
    _handler.setLevel(logging.DEBUG if debug else logging.ERROR)
    logger.setLevel(logging.DEBUG if debug else logging.NOTSET)


def stop_cli_logging() -> None:
    """Undo :func:`configure_logging` (`ilp node` logs through the root logger instead)."""
    logger = logging.getLogger("ilp")
    logger.removeHandler(_handler)
    logger.setLevel(logging.NOTSET)


def set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """Callback of every --debug option: any of them turns debugging on."""
    root = ctx.find_root()
    if not isinstance(root.obj, dict):
        root.obj = {}
    if value:
        root.obj["debug"] = True
        configure_logging(True)
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


class Seconds(click.ParamType[float, object]):
    """A duration in seconds for a timeout: a number above 0 (``inf``: no limit). NaN, 0 and
    negative numbers are usage errors, not failures deep in trio."""

    name = "seconds"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not seconds > 0:  # also NaN
            self.fail(f"{value!r} is not a number of seconds above 0", param, ctx)
        return seconds


SECONDS = Seconds()
