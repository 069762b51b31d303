"""The HTTP API of ``ilp node``: a plain ASGI application, served like the SPSP server
(:mod:`ilp._http_server`).

::

    port = await nursery.start(serve_spsp, NodeApi(node), "127.0.0.1", 7769)

Every endpoint but SPSP and ILP over HTTP needs ``Authorization: Bearer <admin token>``
(compared in constant time); without it the answer is 401 with ``WWW-Authenticate: Bearer``.
``/accounts/{name}/ilp`` takes the Prepares of an ILP-over-HTTP peer instead (RFC 35, answered
by an :class:`~ilp.http.IlpHttpApp`), authenticated by that account's own token. The endpoints
(all JSON but that one; ``docs/openapi.json`` describes each one, and :data:`ROUTES` lists them)::

    GET    /status                                   node.status()
    GET    /accounts                POST /accounts   list, create (201; 409 if the name exists)
    GET    /accounts/{name}         PATCH, DELETE    read, change some settings, delete (204)
    GET    /accounts/{name}/balance POST             read, adjust by a signed amount
    POST   /accounts/{name}/payments                 pay a pointer from the account (STREAM)
    POST   /accounts/{name}/ilp                      ILP over HTTP from that account (its token)
    GET    /routes                  PUT, DELETE      the table; {"prefix", "account"} in the body
    PUT    /routes/{prefix}         DELETE           a static route (the default route "" has
                                                     no path of its own: use /routes)
    GET    /rates                                    rates and spread
    PUT    /rates/{asset_code}      DELETE           one rate
    GET    /spsp/{name}                              SPSP (public): pays account {name}

Amounts go out as decimal strings (balances can pass 2^53, where JSON numbers stop being exact)
and come in as strings or integers. Errors are ``{"error": "<Kind>", "message": "..."}``:
anything a client sends that is wrong is a 4xx with a reason, never a 500; only a bug in the node
is a 500, logged, with no details in the body. Tokens, token hashes and shared secrets never
appear in an answer; an account's ``url`` is shown without its user info or query.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, NoReturn
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

from .._asgi import Receive, Scope, Send, header
from ..btp.url import parse_btp_url
from ..errors import SpspError
from ..http.client import is_http_url, split_http_url
from ..http.server import IlpHttpApp, IlpHttpRequest
from ..link import PrepareHandler
from ..oer import MAX_UINT64
from ..spsp.pointer import PaymentPointerError
from ..spsp.server import SpspApp
from ..stream.pay import PaymentResult, PaymentSetupError, PaymentStatus
from .config import ACCOUNT_KEYS, AccountConfig, ConfigError, check_account_name
from .connector import Account, NodeError, NotFoundError, RouteInfo
from .rates import format_rate, parse_rate

if TYPE_CHECKING:
    from .node import Node

__all__ = ["MAX_BODY", "ROUTES", "NodeApi"]

_log = logging.getLogger("ilp.node.api")


MAX_BODY: Final = 64 * 1024
"""The largest request body accepted (413 above it)."""

ROUTES: Final[dict[str, tuple[str, ...]]] = {
    "/status": ("GET",),
    "/accounts": ("GET", "POST"),
    "/accounts/{name}": ("GET", "PATCH", "DELETE"),
    "/accounts/{name}/balance": ("GET", "POST"),
    "/accounts/{name}/payments": ("POST",),
    "/accounts/{name}/ilp": ("POST",),
    "/routes": ("GET", "PUT", "DELETE"),
    "/routes/{prefix}": ("PUT", "DELETE"),
    "/rates": ("GET",),
    "/rates/{asset_code}": ("PUT", "DELETE"),
    "/spsp/{name}": ("GET", "OPTIONS"),
}
"""Every path template and its methods (``docs/openapi.json`` must say the same)."""

_TEMPLATES: Final = tuple(
    (template, tuple(template.strip("/").split("/")), methods)
    for template, methods in ROUTES.items()
)

MAX_ADJUSTMENT: Final = 10**40
"""A balance adjustment is smaller than this in absolute value."""

_UNSIGNED = re.compile(r"[0-9]{1,45}")
_SIGNED = re.compile(r"[+-]?[0-9]{1,45}")
_ACCOUNT_KEYS: Final = ACCOUNT_KEYS
_CLEARABLE: Final = frozenset(
    {"max_packet_amount", "credit_limit", "url", "send_routes", "receive_routes"}
)
_JSON: Final = b"application/json"


class ApiError(Exception):
    """A request the API answers with an error status; ``message`` goes to the client."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers


class _DisconnectedError(Exception):
    """The client went away while we read its body: nothing to answer."""


def _bad(message: str) -> NoReturn:
    raise ApiError(400, "BadRequest", message)


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int,
        body: object = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers


# -- request helpers --------------------------------------------------------------------------


def _segments(scope: Scope) -> list[str] | None:
    """The path's segments, each percent-decoded on its own (so ``%2F`` stays inside one), or
    None if one is not UTF-8."""
    raw = scope.get("raw_path")
    if not raw:
        raw = str(scope.get("path", "/")).encode("utf-8")
    raw = bytes(raw).split(b"?", 1)[0]
    try:
        return [unquote_to_bytes(part).decode("utf-8") for part in raw.split(b"/")[1:]]
    except UnicodeDecodeError:
        return None


def _match(segments: list[str]) -> tuple[str, tuple[str, ...], dict[str, str]] | None:
    """The template that ``segments`` fits, its methods and the path parameters."""
    for template, parts, methods in _TEMPLATES:
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                if not segment:
                    break
                params[part[1:-1]] = segment
            elif part != segment:
                break
        else:
            return template, methods, params
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key[:40]!r} appears twice")
            seen.add(key)
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(data: bytes) -> dict[str, Any]:
    if not data.strip():
        _bad("this request needs a JSON object as its body")
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        _bad("the JSON body is nested too deeply")
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        _bad(f"the body is not valid JSON: {exc}")
    if not isinstance(value, dict):
        _bad("the body must be a JSON object")
    try:  # "\ud800" is valid JSON but no string: it cannot be encoded, hashed or stored
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        _bad("the body contains an unpaired UTF-16 surrogate (\\ud800 to \\udfff)")
    return value


def _check_keys(
    body: Mapping[str, Any], allowed: frozenset[str] | set[str], required: tuple[str, ...] = ()
) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        _bad(f"unknown field {unknown[0][:40]!r} (known: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in body:
            _bad(f"the field {key!r} is required")


def _string(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        _bad(f"{key} must be a string")
    return value


def _unsigned(value: object, what: str) -> int:
    """A whole number of base units from JSON: an integer or a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _UNSIGNED.fullmatch(value):
        return int(value)
    _bad(f"{what} must be a whole number of base units, as a string of digits or an integer")


def _signed(value: object, what: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _SIGNED.fullmatch(value):
        number = int(value)
    if number is None or abs(number) >= MAX_ADJUSTMENT:
        _bad(f'{what} must be a signed whole number of base units below 10^40, such as "-500"')
    return number


def _account_spec(name: object, raw: Mapping[str, Any]) -> AccountConfig:
    """Validate an account the way the config file is validated; amounts as strings or ints."""
    fields = dict(raw)
    for key in ("max_packet_amount", "credit_limit"):
        if fields.get(key) is not None:
            fields[key] = _unsigned(fields[key], key)
    try:
        spec = AccountConfig.from_mapping(check_account_name(name), fields)
    except (ValueError, ConfigError) as exc:
        _bad(str(exc))
    for prefix in spec.routes:
        if prefix == "peer" or prefix.startswith("peer."):
            _bad("peer.* is link-local and never routed")
    return spec


def _public_url(url: str | None) -> str | None:
    """``url`` without user info (the token) or query: what the API may show."""
    if url is None:
        return None
    if is_http_url(url):
        try:
            bare = split_http_url(url)[0]
        except ValueError:
            return None
        parts = urlsplit(bare)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    try:
        ws_url = parse_btp_url(url).redacted()
    except ValueError:
        return None
    parts = urlsplit(ws_url)
    shown = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return "btp+" + shown if url.lower().startswith("btp+") else shown


def _opt_amount(value: int | None) -> str | None:
    return None if value is None else str(value)


def _route_json(route: RouteInfo) -> dict[str, object]:
    return {
        "prefix": route.prefix,
        "account": route.account or None,
        "kind": route.kind,
        "path": list(route.path),
    }


def _result_json(result: PaymentResult) -> dict[str, object]:
    """A payment's result; the shared secret is not part of it."""
    rate = result.exchange_rate
    error = result.error
    return {
        "status": result.status.value,
        "amount_sent": str(result.amount_sent),
        "amount_delivered": str(result.amount_delivered),
        "source_asset": None
        if result.source_asset is None
        else {"code": result.source_asset.code, "scale": result.source_asset.scale},
        "destination_asset": None
        if result.destination_asset is None
        else {"code": result.destination_asset.code, "scale": result.destination_asset.scale},
        "packets_fulfilled": result.packets_fulfilled,
        "packets_rejected": result.packets_rejected,
        "exchange_rate": None if rate is None else format_rate(rate),
        "duration_s": round(result.duration, 3),
        "error": None
        if error is None
        else {
            "kind": error.kind.value,
            "message": error.message,
            "code": error.code,
            "triggered_by": error.triggered_by,
        },
    }


class _NodeCredentials:
    """The :class:`~ilp.spsp.server.CredentialSource` of ``/spsp/<name>``: the tag is the
    account name, and the node's receiver for that account makes the credentials."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def generate_credentials(
        self,
        *,
        tag: str | None = None,
        receipt_nonce: bytes | None = None,
        receipt_secret: bytes | None = None,
    ) -> tuple[str, bytes]:
        if tag is None:  # the resolver always gives the account name
            raise RuntimeError("SPSP credentials need an account")
        return self._node.spsp_credentials(tag, receipt_nonce, receipt_secret)


class _Body:
    """The request body, read at most once and only up to :data:`MAX_BODY` bytes."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._scope = scope
        self._receive = receive
        length = header(scope, b"content-length")
        self.unread = (length is not None and length.strip() not in (b"", b"0")) or (
            header(scope, b"transfer-encoding") is not None
        )
        """Whether the client sent a body we have not read to its end."""

    async def read(self) -> bytes:
        too_large = ApiError(413, "PayloadTooLarge", f"the body may be at most {MAX_BODY} bytes")
        length = header(self._scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > MAX_BODY:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise _DisconnectedError
            if message["type"] != "http.request":
                continue
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > MAX_BODY:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.unread = False
                return b"".join(chunks)


# -- the application --------------------------------------------------------------------------


class NodeApi:
    """The ASGI application of the node's HTTP API (see the module documentation).

    ``/spsp/<name>`` is answered by an :class:`~ilp.spsp.server.SpspApp`, unauthenticated, with
    its headers and its own error bodies; everything else needs the node's admin token.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._spsp = SpspApp(_NodeCredentials(node), resolve_account=self._resolve_spsp)
        self._ilp = IlpHttpApp(resolve=self._resolve_ilp_peer)
        self._handlers: dict[tuple[str, str], Callable[..., Awaitable[_Response]]] = {
            ("/status", "GET"): self._status,
            ("/accounts", "GET"): self._list_accounts,
            ("/accounts", "POST"): self._create_account,
            ("/accounts/{name}", "GET"): self._get_account,
            ("/accounts/{name}", "PATCH"): self._patch_account,
            ("/accounts/{name}", "DELETE"): self._delete_account,
            ("/accounts/{name}/balance", "GET"): self._get_balance,
            ("/accounts/{name}/balance", "POST"): self._adjust_balance,
            ("/accounts/{name}/payments", "POST"): self._pay,
            ("/routes", "GET"): self._list_routes,
            ("/routes", "PUT"): self._put_route_body,
            ("/routes", "DELETE"): self._delete_route_body,
            ("/routes/{prefix}", "PUT"): self._put_route,
            ("/routes/{prefix}", "DELETE"): self._delete_route,
            ("/rates", "GET"): self._list_rates,
            ("/rates/{asset_code}", "PUT"): self._put_rate,
            ("/rates/{asset_code}", "DELETE"): self._delete_rate,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP, lifespan; WebSocket handshakes are refused)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await self._spsp(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await receive()
            await send({"type": "websocket.close", "code": 1008})
        else:
            raise ValueError(f"NodeApi does not serve {kind!r} connections")

    # -- dispatch -----------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "GET")).upper()
        segments = _segments(scope)
        found = _match(segments) if segments is not None else None
        if found is not None and found[0] == "/spsp/{name}":
            await self._spsp(scope, receive, send)
            return
        if found is not None and found[0] == "/accounts/{name}/ilp" and method == "POST":
            self._ilp.address = self._node.address
            await self._ilp.handle_http(scope, receive, send)
            return
        body = _Body(scope, receive)
        try:
            response = await self._dispatch(scope, body, method, found)
        except _DisconnectedError:
            return
        except ApiError as exc:
            response = _Response(
                exc.status, {"error": exc.error, "message": exc.message}, exc.headers
            )
        except Exception:
            _log.exception("API: %s %s failed", method, str(scope.get("path", ""))[:200])
            response = _Response(
                500, {"error": "InternalError", "message": "the node failed; see its log"}
            )
        if body.unread:
            # Answered without reading the whole body (401, 413, ...): the connection cannot
            # carry another request, and saying so keeps the client from trying.
            response.headers = (*response.headers, (b"connection", b"close"))
        await self._respond(send, response)

    async def _dispatch(
        self,
        scope: Scope,
        request_body: _Body,
        method: str,
        found: tuple[str, tuple[str, ...], dict[str, str]] | None,
    ) -> _Response:
        if not self._authorized(scope):
            raise ApiError(
                401,
                "Unauthorized",
                "send the node's admin token as 'Authorization: Bearer <token>'",
                ((b"www-authenticate", b'Bearer realm="ilp node"'),),
            )
        if found is None:
            raise ApiError(404, "NotFound", "no such endpoint (see docs/openapi.json)")
        template, methods, params = found
        handler = self._handlers.get((template, method))
        if handler is None:
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"{template} allows {', '.join(methods)}",
                ((b"allow", ", ".join(methods).encode("ascii")),),
            )
        body: dict[str, Any] | None = None
        if method in ("POST", "PUT", "PATCH") or (method == "DELETE" and template == "/routes"):
            body = _parse_json(await request_body.read())
        try:
            if body is None:
                return await handler(**params)
            return await handler(body, **params)
        except NotFoundError as exc:
            raise ApiError(404, "NotFound", str(exc)) from None
        except NodeError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None

    def _authorized(self, scope: Scope) -> bool:
        raw = header(scope, b"authorization")
        expected = self._node.admin_token.encode("utf-8")
        if raw is None or not expected:
            return False
        scheme, _, credentials = raw.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), expected)

    async def _respond(self, send: Send, response: _Response) -> None:
        headers = [(b"cache-control", b"no-store"), *response.headers]
        data = b""
        if response.body is not None:
            data = json.dumps(response.body).encode("utf-8")
            headers.append((b"content-type", _JSON))
        headers.append((b"content-length", str(len(data)).encode("ascii")))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _resolve_ilp_peer(self, request: IlpHttpRequest) -> PrepareHandler | None:
        """The account POSTing ILP over HTTP: named by the path, proven by its token."""
        parts = request.path.split("/")
        connector = self._node.connector
        account = connector.accounts.get(parts[2]) if len(parts) == 4 else None
        if account is None or request.token is None or not account.check_token(request.token):
            return None
        return connector.handler_for(account)

    def _resolve_spsp(self, path: str) -> str | None:
        name = path.removeprefix("/spsp/")
        return name if name in self._node.connector.accounts else None

    # -- status and accounts -----------------------------------------------------------------

    async def _status(self) -> _Response:
        return _Response(200, self._node.status())

    def _account_json(self, account: Account) -> dict[str, object]:
        connector = self._node.connector
        return {
            "name": account.name,
            "relation": account.relation,
            "asset_code": account.asset_code,
            "asset_scale": account.asset_scale,
            "max_packet_amount": _opt_amount(account.max_packet_amount),
            "credit_limit": _opt_amount(account.credit_limit),
            "balance": str(account.balance),
            "in_flight": str(account.in_flight),
            "connected": self._node.is_connected(account),
            "origin": account.origin,
            "address": connector.child_address(account.name)
            if account.relation == "child"
            else None,
            "has_token": account.token_hash is not None,
            "url": _public_url(account.url),
            "send_routes": account.send_routes,
            "receive_routes": account.receive_routes,
        }

    async def _list_accounts(self) -> _Response:
        accounts = self._node.connector.accounts
        return _Response(200, [self._account_json(accounts[n]) for n in sorted(accounts)])

    async def _create_account(self, body: dict[str, Any]) -> _Response:
        _check_keys(body, _ACCOUNT_KEYS | {"name"}, ("name",))
        fields = dict(body)
        name = fields.pop("name")
        spec = _account_spec(name, fields)
        if spec.name in self._node.connector.accounts:
            raise ApiError(409, "Conflict", f"an account named {spec.name!r} exists; use PATCH")
        account = self._node.put_account(spec)
        _log.info("API: account %s created (%s)", account.name, account.relation)
        return _Response(
            201,
            self._account_json(account),
            ((b"location", f"/accounts/{account.name}".encode("ascii")),),
        )

    async def _get_account(self, name: str) -> _Response:
        return _Response(200, self._account_json(self._node.connector.account(name)))

    async def _patch_account(self, body: dict[str, Any], name: str) -> _Response:
        account = self._node.connector.account(name)
        if "name" in body:
            _bad("an account cannot be renamed: create a new one")
        _check_keys(body, _ACCOUNT_KEYS)
        merged: dict[str, Any] = {
            "relation": account.relation,
            "asset_code": account.asset_code,
            "asset_scale": account.asset_scale,
            "max_packet_amount": account.max_packet_amount,
            "credit_limit": account.credit_limit,
            "url": account.url,
            "send_routes": account.send_routes,
            "receive_routes": account.receive_routes,
        }
        for key, value in body.items():
            if value is None and key not in _CLEARABLE:
                _bad(f"{key} cannot be null (only {', '.join(sorted(_CLEARABLE))} can)")
            merged[key] = value
        spec = _account_spec(name, merged)
        account = self._node.put_account(spec, origin=account.origin)
        _log.info("API: account %s changed (%s)", name, ", ".join(sorted(body)) or "nothing")
        return _Response(200, self._account_json(account))

    async def _delete_account(self, name: str) -> _Response:
        self._node.connector.delete_account(name)
        _log.info("API: account %s deleted", name)
        return _Response(204)

    # -- balances and payments ---------------------------------------------------------------

    def _balance_json(self, account: Account) -> dict[str, object]:
        return {
            "name": account.name,
            "balance": str(account.balance),
            "in_flight": str(account.in_flight),
            "asset_code": account.asset_code,
            "asset_scale": account.asset_scale,
        }

    async def _get_balance(self, name: str) -> _Response:
        return _Response(200, self._balance_json(self._node.connector.account(name)))

    async def _adjust_balance(self, body: dict[str, Any], name: str) -> _Response:
        connector = self._node.connector
        connector.account(name)
        _check_keys(body, {"adjustment"}, ("adjustment",))
        delta = _signed(body["adjustment"], "adjustment")
        account = connector.adjust_balance(name, delta)
        _log.info("API: balance of %s adjusted by %d", name, delta)
        return _Response(200, self._balance_json(account))

    async def _pay(self, body: dict[str, Any], name: str) -> _Response:
        self._node.connector.account(name)
        _check_keys(body, {"to", "amount", "delivery_amount", "slippage"}, ("to",))
        to = _string(body, "to")
        if ("amount" in body) == ("delivery_amount" in body):
            _bad("give exactly one of amount (fixed send) and delivery_amount (fixed delivery)")
        key = "amount" if "amount" in body else "delivery_amount"
        amount = _unsigned(body[key], key)
        if not 0 < amount <= MAX_UINT64:
            _bad(f"{key} must be from 1 to {MAX_UINT64}")
        slippage = Fraction(1, 100)
        if "slippage" in body:
            try:
                slippage = parse_rate(body["slippage"], what="slippage", allow_zero=True)
            except ValueError as exc:
                _bad(str(exc))
            if slippage >= 1:
                _bad("slippage must be less than 1, such as 0.01 for one percent")
        try:
            result = await self._node.pay(
                name,
                to,
                source_amount=amount if key == "amount" else None,
                delivery_amount=amount if key == "delivery_amount" else None,
                slippage=slippage,
            )
        except PaymentPointerError as exc:
            _bad(str(exc))
        except SpspError as exc:
            raise ApiError(502, "SpspError", f"the SPSP query failed: {exc}") from None
        except PaymentSetupError as exc:
            _bad(str(exc))
        _log.info(
            "API: payment from %s: %s, %d sent", name, result.status.value, result.amount_sent
        )
        status = 200 if result.status is PaymentStatus.COMPLETE else 422
        return _Response(status, _result_json(result))

    # -- routes and rates --------------------------------------------------------------------

    async def _list_routes(self) -> _Response:
        return _Response(200, [_route_json(r) for r in self._node.connector.routes()])

    def _set_route(self, prefix: str, body: Mapping[str, Any]) -> _Response:
        route = self._node.connector.set_route(prefix, _string(body, "account"))
        _log.info("API: route %r -> %s", prefix, route.account)
        return _Response(200, _route_json(route))

    async def _put_route(self, body: dict[str, Any], prefix: str) -> _Response:
        _check_keys(body, {"account"}, ("account",))
        return self._set_route(prefix, body)

    async def _put_route_body(self, body: dict[str, Any]) -> _Response:
        _check_keys(body, {"prefix", "account"}, ("prefix", "account"))
        return self._set_route(_string(body, "prefix"), body)

    async def _delete_route(self, prefix: str) -> _Response:
        self._node.connector.delete_route(prefix)
        _log.info("API: route %r deleted", prefix)
        return _Response(204)

    async def _delete_route_body(self, body: dict[str, Any]) -> _Response:
        _check_keys(body, {"prefix"}, ("prefix",))
        return await self._delete_route(_string(body, "prefix"))

    async def _list_rates(self) -> _Response:
        connector = self._node.connector
        rates = {code: format_rate(connector.rates[code]) for code in sorted(connector.rates)}
        return _Response(200, {"rates": rates, "spread": format_rate(connector.spread)})

    async def _put_rate(self, body: dict[str, Any], asset_code: str) -> _Response:
        _check_keys(body, {"rate"}, ("rate",))
        try:
            rate = parse_rate(body["rate"])
        except ValueError as exc:
            _bad(str(exc))
        self._node.connector.set_rate(asset_code, rate)
        _log.info("API: rate of %s set to %s", asset_code, format_rate(rate))
        return _Response(200, {"asset_code": asset_code, "rate": format_rate(rate)})

    async def _delete_rate(self, asset_code: str) -> _Response:
        self._node.connector.delete_rate(asset_code)
        _log.info("API: rate of %s deleted", asset_code)
        return _Response(204)
