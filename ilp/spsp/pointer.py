"""Payment pointers (RFC 26) and SPSP responses (RFC 9), sans-I/O: no HTTP here.

What is accepted, precisely:

* :func:`parse_payment_pointer` / :func:`resolve_payment_pointer` / :func:`is_valid_payment_pointer`
  take a payment pointer only: ``$host[/path]``. The host is a DNS name (ASCII letters, digits,
  ``-`` and ``_`` between dots; use the ``xn--`` form for international names), an IPv4 address
  or a bracketed IPv6 address, and is lower-cased. No userinfo, port, query or fragment; the path
  is RFC 3986 ``path-abempty`` without ``.``/``..`` segments. Trailing slashes are dropped and an
  empty path (or exactly ``/.well-known/pay``) means the default: ``$example.com`` and
  ``$example.com/`` resolve to ``https://example.com/.well-known/pay``, ``$example.com/bob/`` to
  ``https://example.com/bob``.
* :func:`resolve_spsp_endpoint` is what the CLI accepts for a receiver: a payment pointer as above;
  a bare ``host[/path]`` (read as if it began with ``$``); or an ``https://`` URL, or an
  ``http://`` URL when written out explicitly (only then is plain HTTP used). URLs get the same
  host and path rules and the same default path, keep their query and fragment, never have
  userinfo, and may name a port only on a loopback host (``localhost``, ``127.0.0.0/8``,
  ``[::1]``), for local test setups. The port rule matches @interledger/pay, which refuses ports
  in account URLs.

:func:`parse_spsp_response` checks an SPSP query's reply; :func:`check_redirect` says whether a
redirect may be followed (never from https to http). Both raise :class:`~ilp.errors.SpspError`
with messages that never contain the shared secret.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urljoin, urlsplit

from ..address import is_valid_address
from ..errors import SpspError

__all__ = [
    "DEFAULT_PATH",
    "SPSP_ACCEPT",
    "SPSP_CONTENT_TYPE",
    "PaymentPointer",
    "PaymentPointerError",
    "SpspResponse",
    "check_redirect",
    "is_valid_payment_pointer",
    "parse_payment_pointer",
    "parse_spsp_response",
    "resolve_payment_pointer",
    "resolve_spsp_endpoint",
]

DEFAULT_PATH: Final = "/.well-known/pay"
SPSP_CONTENT_TYPE: Final = "application/spsp4+json"
"""The media type of an SPSP response."""
SPSP_ACCEPT: Final = "application/spsp4+json, application/spsp+json"
"""The ``Accept`` header of an SPSP query (RFC 9)."""

_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_PATH = re.compile(r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*)*")
_QUERY = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_PORT = re.compile(r"[0-9]{1,5}")
_SHOWN = 100


class PaymentPointerError(SpspError, ValueError):
    """The text is not a payment pointer (or SPSP URL) that may be resolved."""


def _bad(text: str, why: str, what: str = "payment pointer") -> PaymentPointerError:
    shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    return PaymentPointerError(f"invalid {what} {shown!r}: {why}")


@dataclass(frozen=True, slots=True)
class PaymentPointer:
    """A parsed payment pointer: a lower-case host and a path (``""`` for the default path).

    ``str(pointer)`` is the canonical form (``$example.com/bob``), :attr:`url` the SPSP endpoint.
    """

    host: str
    path: str = ""

    def __str__(self) -> str:
        return f"${self.host}{self.path}"

    @property
    def url(self) -> str:
        """The HTTPS URL to query: ``https://host`` plus the path or ``/.well-known/pay``."""
        return f"https://{self.host}{self.path or DEFAULT_PATH}"


def _parse_host(host: str, text: str, what: str) -> str:
    if not host:
        raise _bad(text, "the host is missing", what)
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1] if host.endswith("]") else "-")
        except ValueError:
            raise _bad(text, "the IPv6 host is malformed", what) from None
        return host.lower()
    if not host.isascii():
        raise _bad(text, "the host must be ASCII (use the xn-- form of the name)", what)
    host = host.lower()
    if _HOST.fullmatch(host) is None or len(host) > 253:
        raise _bad(text, "the host is not a valid host name", what)
    return host


def _split_authority(authority: str, text: str, what: str) -> tuple[str, str | None]:
    """``(host, port)`` of ``authority``; ``port`` is None when there is no ``:``."""
    if "@" in authority:
        raise _bad(text, "it must not contain a user name or password", what)
    end = authority.rfind("]") if authority.startswith("[") else -1
    colon = authority.find(":", end + 1)
    if colon < 0:
        return _parse_host(authority, text, what), None
    return _parse_host(authority[:colon], text, what), authority[colon + 1 :]


def _parse_path(path: str, text: str, what: str) -> str:
    """The path with trailing slashes dropped; ``""`` for the default path."""
    if _PATH.fullmatch(path) is None:
        raise _bad(text, "the path contains characters that are not allowed", what)
    if any(segment in (".", "..") for segment in path.split("/")):
        raise _bad(text, "the path must not contain '.' or '..' segments", what)
    path = path.rstrip("/")
    return "" if path == DEFAULT_PATH else path


def _parse_pointer(rest: str, text: str, what: str) -> PaymentPointer:
    """Parse ``rest``, a pointer without its ``$``; ``text`` is what the user wrote."""
    if "#" in rest:
        raise _bad(text, "payment pointers cannot have a fragment ('#...')", what)
    if "?" in rest:
        raise _bad(text, "payment pointers cannot have a query ('?...')", what)
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    host, port = _split_authority(authority, text, what)
    if port is not None:
        raise _bad(text, "payment pointers cannot have a port", what)
    return PaymentPointer(host, _parse_path(path, text, what))


def parse_payment_pointer(text: str) -> PaymentPointer:
    """Parse ``$host[/path]``; raises :class:`PaymentPointerError` saying what is wrong."""
    if not text.startswith("$"):
        raise _bad(text, "a payment pointer starts with '$', as in $wallet.example/alice")
    return _parse_pointer(text[1:], text, "payment pointer")


def is_valid_payment_pointer(text: str) -> bool:
    """True if :func:`parse_payment_pointer` accepts ``text``."""
    try:
        parse_payment_pointer(text)
    except PaymentPointerError:
        return False
    return True


def resolve_payment_pointer(text: str) -> str:
    """The HTTPS SPSP endpoint of a payment pointer (RFC 26 resolution)."""
    return parse_payment_pointer(text).url


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_spsp_endpoint(text: str) -> str:
    """The SPSP URL for a receiver given as a pointer, a bare ``host[/path]`` or an http(s) URL.

    See the module documentation for exactly what is accepted. Raises
    :class:`PaymentPointerError`.
    """
    if text.startswith("$"):
        return resolve_payment_pointer(text)
    if "://" not in text:
        return _parse_pointer(text, text, "receiver").url
    what = "SPSP URL"
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in ("https", "http"):
        raise _bad(text, "use a $payment.pointer, an https:// URL or an http:// URL", what)
    authority = rest
    for stop in "/?#":
        cut = authority.find(stop)
        if cut >= 0:
            authority = authority[:cut]
    remainder = rest[len(authority) :]
    remainder, _, fragment = remainder.partition("#")
    path, _, query = remainder.partition("?")
    host, port = _split_authority(authority, text, what)
    if port is not None:
        if not _is_loopback(host):
            raise _bad(text, "a port is only allowed for a loopback host (localhost)", what)
        if _PORT.fullmatch(port) is None or not 0 < int(port) < 65536:
            raise _bad(text, "the port is not a number from 1 to 65535", what)
    for part in (query, fragment):
        if _QUERY.fullmatch(part) is None:
            raise _bad(text, "the query or fragment contains characters that are not allowed", what)
    url = f"{scheme}://{host}{'' if port is None else ':' + port}"
    url += _parse_path(path, text, what) or DEFAULT_PATH
    if query:
        url += "?" + query
    if fragment:
        url += "#" + fragment
    return url


def check_redirect(url: str, location: str) -> str:
    """The absolute URL a redirect from ``url`` to ``location`` leads to, if it may be followed.

    Redirects to https are followed; to http only when ``url`` itself was http (an explicit local
    setup). A redirect from https to anything else raises :class:`~ilp.errors.SpspError`, as
    @interledger/pay refuses insecure redirects.
    """
    target = urljoin(url, location)
    scheme = urlsplit(target).scheme.lower()
    if scheme == "https" or (scheme == "http" and urlsplit(url).scheme.lower() == "http"):
        return target
    shown = target if len(target) <= _SHOWN else target[:_SHOWN] + "..."
    raise SpspError(
        f"the SPSP server at {url} redirected to {shown!r}, which is not https; an insecure "
        "redirect is not followed. Ask the receiver for an https payment pointer."
    )


@dataclass(frozen=True, slots=True)
class SpspResponse:
    """The credentials an SPSP server hands out for one STREAM connection."""

    destination_account: str
    shared_secret: bytes = field(repr=False)
    receipts_enabled: bool = False


def _decode_secret(value: object) -> bytes:
    if not isinstance(value, str):
        raise SpspError("the SPSP response has no shared_secret string")
    if not value.isascii():
        raise SpspError("the shared_secret in the SPSP response is not base64")
    # Base64 with padding is standard; base64url and missing padding are accepted too.
    compact = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        secret = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SpspError("the shared_secret in the SPSP response is not base64") from None
    if len(secret) != 32:
        raise SpspError(
            f"the shared_secret in the SPSP response decodes to {len(secret)} bytes, must be 32"
        )
    return secret


def _error_detail(obj: object) -> str:
    if not isinstance(obj, Mapping):
        return ""
    parts = [str(obj[k])[:_SHOWN] for k in ("id", "message") if isinstance(obj.get(k), str)]
    return f" ({': '.join(parts)})" if parts else ""


def parse_spsp_response(body: bytes | str | object, *, status: int = 200) -> SpspResponse:
    """Check an SPSP reply: ``body`` as JSON bytes/text or already parsed, ``status`` its HTTP code.

    Requires a JSON object with a valid ILP address in ``destination_account`` and a
    ``shared_secret`` decoding to 32 bytes (base64 or base64url, padding optional);
    ``receipts_enabled`` must be a boolean if present. Unknown fields are ignored. A non-2xx
    ``status`` raises with the server's ``id``/``message`` when its body has them (RFC 9 errors).
    """
    obj: object = body
    if isinstance(body, bytes | bytearray | memoryview | str):
        try:
            obj = json.loads(body if isinstance(body, str) else bytes(body))
        except (ValueError, RecursionError):
            if 200 <= status < 300:
                raise SpspError("the SPSP response is not JSON") from None
            obj = None
    if not 200 <= status < 300:
        hint = (
            "the receiver does not exist; check the payment pointer."
            if status == 404
            else "try again later or check the payment pointer."
        )
        raise SpspError(f"the SPSP server answered HTTP {status}{_error_detail(obj)}: {hint}")
    if not isinstance(obj, Mapping):
        raise SpspError("the SPSP response is not a JSON object")
    account = obj.get("destination_account")
    if not isinstance(account, str):
        raise SpspError("the SPSP response has no destination_account string")
    if not is_valid_address(account):
        shown = account[:_SHOWN]
        raise SpspError(f"the destination_account {shown!r} is not a valid ILP address")
    secret = _decode_secret(obj.get("shared_secret"))
    receipts = obj.get("receipts_enabled")
    if receipts is not None and not isinstance(receipts, bool):
        raise SpspError("receipts_enabled in the SPSP response is not a boolean")
    return SpspResponse(account, secret, bool(receipts))
