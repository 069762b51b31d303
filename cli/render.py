"""Turn decoded packets into plain JSON-able trees, and those trees into rich trees.

JSON conventions (`--json` everywhere): snake_case field names, bytes as lowercase hex, amounts
and other 64-bit integers as decimal strings, timestamps as ISO 8601 UTC with milliseconds and `Z`.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

# Integer fields that are 64-bit on the wire: decimal strings in JSON, so no client loses precision.
U64_FIELDS = frozenset(
    {
        "amount",
        "prepare_amount",
        "sequence",
        "shares",
        "receive_max",
        "total_received",
        "send_max",
        "total_sent",
        "offset",
        "max_offset",
        "stream_id",
        "max_stream_id",
        "received_amount",
        "maximum_amount",
    }
)


def iso_utc(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def to_plain(value: Any, field: str = "") -> Any:
    """A JSON-able rendering of a decoded value (dataclasses become dicts with a ``type``)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(value) if field in U64_FIELDS else value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, tuple | list):
        return [to_plain(item, field) for item in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v, str(k)) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": snake(type(value).__name__)}
        for f in dataclasses.fields(value):
            out[f.name] = to_plain(getattr(value, f.name), f.name)
        return out
    return str(value)


def snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def to_tree(plain: Any, label: str) -> Tree:
    """A rich tree of a plain rendering, for people."""
    tree = Tree(label)
    _fill(tree, plain)
    return tree


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if value == "":
        return '""'
    return escape(str(value))


def _add(tree: Tree, markup: str) -> Tree:
    # Long hex values fold onto the next lines instead of being cut at the terminal width.
    return tree.add(Text.from_markup(markup, overflow="fold"))


def _fill(tree: Tree, plain: Any) -> None:
    if isinstance(plain, dict):
        for key, value in plain.items():
            if key == "type" and tree.label and not isinstance(value, dict | list):
                continue
            if isinstance(value, dict):
                kind = value.get("type")
                sub = _add(
                    tree,
                    f"[bold]{escape(key)}[/bold]"
                    + (f" ({escape(kind)})" if isinstance(kind, str) else ""),
                )
                _fill(sub, value)
            elif isinstance(value, list) and value and isinstance(value[0], dict | list):
                sub = _add(tree, f"[bold]{escape(key)}[/bold] \\[{len(value)}]")
                for i, item in enumerate(value):
                    kind = item.get("type") if isinstance(item, dict) else None
                    child = _add(
                        sub, f"{i}" + (f" {escape(kind)}" if isinstance(kind, str) else "")
                    )
                    _fill(child, item)
            elif isinstance(value, list):
                _add(
                    tree, f"[bold]{escape(key)}[/bold]: \\[{', '.join(_scalar(v) for v in value)}]"
                )
            else:
                _add(tree, f"[bold]{escape(key)}[/bold]: {_scalar(value)}")
    else:
        _add(tree, _scalar(plain))
