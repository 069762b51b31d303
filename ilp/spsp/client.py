"""The SPSP client (RFC 9) on httpx: ask a receiver for STREAM credentials.

::

    response = await query_spsp("$wallet.example/alice")
    result = await pay(link, response.destination_account, response.shared_secret, ...)

The receiver may be a payment pointer, a bare ``host/path`` or an ``https://`` (or explicit
``http://``) URL; see :func:`~ilp.spsp.pointer.resolve_spsp_endpoint`. Redirects are followed
(at most ``max_redirects``), never from https to http. Every failure is an
:class:`~ilp.errors.SpspError` naming the endpoint; the two that mean "could not get an answer"
have their own classes, so a caller can tell them from a receiver that answered badly:

* :class:`SpspUnreachableError`: no connection (refused, DNS, TLS), the connection broke, or the
  server said it is unavailable (HTTP 502, 503, 504);
* :class:`SpspTimeoutError` (a subclass of it): no complete answer within ``timeout``.

Messages never contain the shared secret.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Final, cast

import httpx
import trio

from .._transport import transport_reason
from ..errors import SpspError
from .pointer import (
    SPSP_ACCEPT,
    SpspResponse,
    check_redirect,
    parse_spsp_response,
    resolve_spsp_endpoint,
)

__all__ = ["SpspTimeoutError", "SpspUnreachableError", "query_spsp"]

_log = logging.getLogger("ilp.spsp.client")

MAX_RESPONSE_SIZE: Final = 64 * 1024
"""An SPSP response is a small JSON object; a larger body is refused."""

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_UNAVAILABLE: Final = frozenset({502, 503, 504})
_JSON_TYPES: Final = frozenset(
    {"application/json", "application/spsp4+json", "application/spsp+json"}
)


class SpspUnreachableError(SpspError):
    """The SPSP server could not be reached, or said it is unavailable (502, 503, 504)."""


class SpspTimeoutError(SpspUnreachableError):
    """The SPSP server did not answer in time."""


def _check_content_type(url: str, value: str | None) -> None:
    if value is None:
        return  # no type given: the JSON parser decides
    media = value.partition(";")[0].strip().lower()
    if media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise SpspError(
        f"{url} answered with Content-Type {value[:60]!r}, not application/spsp4+json: "
        "it is not an SPSP endpoint. Check the payment pointer."
    )


async def _get(client: httpx.AsyncClient, url: str) -> tuple[int, httpx.Headers, bytes]:
    async with client.stream(
        "GET", url, headers={"Accept": SPSP_ACCEPT}, follow_redirects=False
    ) as response:
        body = bytearray()
        if response.status_code not in _REDIRECTS:
            chunks = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
            async with aclosing(chunks):
                async for chunk in chunks:
                    body += chunk
                    if len(body) > MAX_RESPONSE_SIZE:
                        raise SpspError(
                            f"{url} answered with more than {MAX_RESPONSE_SIZE} bytes: "
                            "it is not an SPSP endpoint"
                        )
        return response.status_code, response.headers, bytes(body)


async def _query(
    client: httpx.AsyncClient,
    url: str,
    max_redirects: int,
    on_redirect: Callable[[str, str], object] | None,
) -> SpspResponse:
    for _ in range(max_redirects + 1):
        try:
            status, headers, body = await _get(client, url)
        except httpx.TimeoutException:
            raise SpspTimeoutError(f"the SPSP server at {url} did not answer in time") from None
        except httpx.ConnectError as exc:
            raise SpspUnreachableError(
                f"cannot reach the SPSP server at {url} ({transport_reason(exc)})"
            ) from None
        except httpx.TransportError as exc:
            raise SpspUnreachableError(
                f"the connection to the SPSP server at {url} failed ({transport_reason(exc)})"
            ) from None
        if status in _REDIRECTS:
            location = headers.get("location")
            if not location:
                raise SpspError(f"{url} answered HTTP {status} without a Location to follow")
            target = check_redirect(url, location)
            _log.info("SPSP query to %s redirected to %s", url, target)
            if on_redirect is not None:
                on_redirect(url, target)
            url = target
            continue
        if status in _UNAVAILABLE:
            raise SpspUnreachableError(
                f"the SPSP server at {url} is unavailable (HTTP {status}); try again later"
            )
        if 200 <= status < 300:
            # Bodies from an error status may be anything; those are described by the parser.
            _check_content_type(url, headers.get("content-type"))
        try:
            return parse_spsp_response(body, status=status)
        except SpspError as exc:
            raise SpspError(f"{url}: {exc}") from None
    raise SpspError(f"the SPSP query was redirected more than {max_redirects} times (last: {url})")


async def query_spsp(
    receiver: str,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = 15.0,
    max_redirects: int = 5,
    on_redirect: Callable[[str, str], object] | None = None,
) -> SpspResponse:
    """Query the SPSP endpoint of ``receiver`` and return the credentials it hands out.

    ``receiver`` is a payment pointer (``$host/path``), a bare ``host/path`` or an http(s) URL
    (:func:`~ilp.spsp.pointer.resolve_spsp_endpoint`; an invalid one raises
    :class:`~ilp.spsp.pointer.PaymentPointerError`). The request sends
    ``Accept: application/spsp4+json, application/spsp+json``. ``client`` is used when given
    (its redirect setting is ignored; this function follows redirects itself), else a client is
    made for this one query. ``timeout`` bounds the whole query, redirects included.
    ``on_redirect(from_url, to_url)`` is called for every redirect followed, so that a user can be
    shown the final host.

    Raises :class:`SpspTimeoutError`, :class:`SpspUnreachableError`, or
    :class:`~ilp.errors.SpspError` for any other bad answer: not found, not JSON, the wrong
    content type, missing or malformed fields, a secret that is not 32 bytes, too many redirects.
    """
    url = resolve_spsp_endpoint(receiver)
    own = client is None
    http = httpx.AsyncClient(timeout=timeout) if client is None else client
    try:
        with trio.fail_after(timeout):
            return await _query(http, url, max_redirects, on_redirect)
    except trio.TooSlowError:
        raise SpspTimeoutError(
            f"the SPSP server at {url} did not answer within {timeout:g} s"
        ) from None
    finally:
        if own:
            await http.aclose()
