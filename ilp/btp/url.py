"""BTP URLs: ``btp+ws://[username[:token]@]host[:port][/path]`` (and ``btp+wss://``).

The ``btp+`` prefix is dropped to get the WebSocket URL; the userinfo, percent-decoded, becomes
the ``auth_username`` and ``auth_token`` of the BTP auth Message. Plain ``ws://``/``wss://`` URLs
are accepted too (empty credentials). :meth:`BtpUrl.redacted` is the form for messages and logs:
the WebSocket URL without any credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["BtpUrl", "parse_btp_url"]

_SCHEMES = {"btp+ws": "ws", "btp+wss": "wss", "ws": "ws", "wss": "wss"}


@dataclass(frozen=True, slots=True)
class BtpUrl:
    """A parsed BTP URL. ``token`` is left out of ``repr``."""

    ws_url: str
    username: str = ""
    token: str = field(default="", repr=False)

    def redacted(self) -> str:
        """The WebSocket URL, which never holds the token: safe for messages and logs."""
        return self.ws_url

    def __str__(self) -> str:
        return self.redacted()


def parse_btp_url(url: str) -> BtpUrl:
    """Split ``url`` into the WebSocket URL and the credentials.

    Raises :class:`ValueError` for a scheme other than ``btp+ws``/``btp+wss``/``ws``/``wss`` or a
    URL without a host; the message never contains the token.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid BTP URL: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(
            f"a BTP URL starts with btp+ws:// or btp+wss://, got {parts.scheme or 'no'} scheme"
        )
    host = parts.hostname
    if not host:
        raise ValueError("a BTP URL needs a host, as in btp+ws://user:token@127.0.0.1:7768")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    ws_url = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    return BtpUrl(
        ws_url=ws_url,
        username=unquote(parts.username or ""),
        token=unquote(parts.password or ""),
    )
