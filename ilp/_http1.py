"""Sans-I/O pieces of HTTP/1.1: the request head, chunked bodies, the answer's head. No I/O, no
clock: :mod:`ilp._http_server` reads and writes, this module only parses and formats. The chunked
decoder also reads the answers of ILP-over-HTTP peers (:mod:`ilp.http._http11`).

The parser is strict where leniency lets two parties read one message differently (request
smuggling): a header line that is not ``name: value``, a bare CR or LF, a ``Content-Length``
that is not one number, ``Transfer-Encoding`` beside ``Content-Length``, a transfer coding other
than ``chunked`` last. Every such request is a :class:`RequestError` with the status to answer
(400, 413, 417, 431, 501, 505) and a reason for the body of that answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import hexdigits
from typing import Final
from urllib.parse import unquote

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_SIZE",
    "ChunkedDecoder",
    "RequestError",
    "RequestHead",
    "error_response",
    "parse_request_head",
    "response_head",
]

MAX_HEAD_SIZE: Final = 16 * 1024
"""The largest request head (request line and headers) read: 431 above it."""
MAX_HEADERS: Final = 100
"""The most header lines in a request head: 431 above it."""

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")
_TCHAR: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_LINE: Final = _TCHAR + rb"+:[^\r\n\x00]*\r\n"
_HEADER_BLOCK: Final = re.compile(rb"(?:" + _LINE + rb")*")
_HEADER_LINE: Final = re.compile(
    rb"(" + _TCHAR + rb"+):[ \t]*((?:[^\r\n\x00]*[^\r\n\x00 \t])?)[ \t]*\r\n"
)
_SPECIAL: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"expect", b"host"}
)
_HEX: Final = frozenset(hexdigits.encode())
_MAX_CHUNK_LINE: Final = 1024

REASONS: Final = {
    100: "Continue",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class RequestError(Exception):
    """The client sent a request this server does not take: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


CHUNKED: Final = -1
"""``RequestHead.length`` of a chunked body."""


@dataclass(slots=True)
class RequestHead:
    """A parsed request head."""

    method: str
    raw_path: bytes
    """The path as sent (percent-encoded), without the query."""
    path: str
    """The path, percent-decoded (UTF-8)."""
    query: bytes
    http_version: str
    """``"1.1"`` or ``"1.0"``."""
    headers: list[tuple[bytes, bytes]]
    """Every header in order: names in lowercase, values without surrounding whitespace."""
    length: int
    """The body's size from ``Content-Length`` (0 without a body), or :data:`CHUNKED`."""
    keep_alive: bool
    """Whether the client allows another request on this connection."""
    expect_continue: bool
    """``Expect: 100-continue``: answer ``100 Continue`` before reading the body."""


def _split_target(target: bytes, method: str) -> tuple[bytes, bytes]:
    if not _TARGET.fullmatch(target):
        raise RequestError(400, "the request target is not a URL path")
    if target[:1] != b"/":
        if target == b"*" and method == "OPTIONS":
            return b"*", b""
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise RequestError(400, "the request target is not a URL path")
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    path, _, query = target.partition(b"?")
    path = path.partition(b"#")[0]
    return path, query


def _decode_path(raw: bytes) -> str:
    text = raw.decode("ascii")
    return unquote(text) if "%" in text else text


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")}


def _header_problem(block: bytes) -> str:
    """Why a header block that does not match is refused (for the 400's reason)."""
    for line in block.split(b"\r\n")[:-1]:
        if not re.fullmatch(_LINE, line + b"\r\n"):
            name, colon, _ = line.partition(b":")
            if colon and re.fullmatch(_TCHAR + b"+", name):
                return "a header value holds a CR, LF or NUL"
            break
    return "a header line is not 'Name: value'"


def parse_request_head(head: bytes, max_body: int) -> RequestHead:
    """Parse ``head`` (the bytes before the blank line ending it, empty lines before the request
    line removed). Raises :class:`RequestError`."""
    line, _, block = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise RequestError(400, "the request line is not 'METHOD target HTTP/1.1'")
    method_raw, target, version_raw = parts
    if version_raw == b"HTTP/1.1":
        version = "1.1"
    elif version_raw == b"HTTP/1.0":
        version = "1.0"
    elif version_raw.startswith(b"HTTP/") and len(version_raw) == 8:
        raise RequestError(505, "this server speaks HTTP/1.1 and HTTP/1.0")
    else:
        raise RequestError(400, "the request line is not 'METHOD target HTTP/1.1'")
    method = method_raw.decode("ascii")
    raw_path, query = _split_target(target, method)
    # One pass of the regular expression engine checks every header line, one more splits
    # them: a loop over the lines in Python cost several times as much.
    if block:
        block += b"\r\n"
        if not _HEADER_BLOCK.fullmatch(block):
            raise RequestError(400, _header_problem(block))
        pairs = _HEADER_LINE.findall(block)
        if len(pairs) > MAX_HEADERS:
            raise RequestError(431, f"a request has at most {MAX_HEADERS} header lines here")
    else:
        pairs = []
    headers = [(name.lower(), value) for name, value in pairs]
    length: bytes | None = None
    coding: bytes | None = None
    connection = b""
    expect: bytes | None = None
    host = 0
    for name, value in headers:
        if name not in _SPECIAL:
            continue
        if name == b"content-length":
            length = value if length is None else length + b"," + value
        elif name == b"transfer-encoding":
            coding = value if coding is None else coding + b"," + value
        elif name == b"connection":
            connection += b"," + value
        elif name == b"expect":
            expect = value
        else:
            host += 1
    if version == "1.1" and host != 1:
        raise RequestError(400, "an HTTP/1.1 request needs exactly one Host header")
    tokens = _tokens(connection)
    keep_alive = b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens
    size = 0
    if coding is not None:
        if length is not None:
            raise RequestError(400, "a request has Transfer-Encoding or Content-Length, not both")
        if version != "1.1":
            raise RequestError(400, "Transfer-Encoding needs HTTP/1.1")
        codings = [token.strip().lower() for token in coding.split(b",")]
        if codings[-1] != b"chunked":
            raise RequestError(400, "the last transfer coding of a request must be chunked")
        if len(codings) > 1:
            raise RequestError(501, "this server takes no transfer coding but chunked")
        size = CHUNKED
    elif length is not None:
        values = {v.strip() for v in length.split(b",")}
        if len(values) != 1:
            raise RequestError(400, "the request has different Content-Lengths")
        text = values.pop()
        if not text.isdigit() or not text.isascii() or len(text) > 19:
            raise RequestError(400, "the Content-Length is not a number")
        size = int(text)
        if size > max_body:
            raise RequestError(413, f"a request body is at most {max_body} bytes here")
    expect_continue = False
    if expect is not None:
        if expect.lower() != b"100-continue":
            raise RequestError(417, "the only expectation this server meets is 100-continue")
        expect_continue = version == "1.1"
    return RequestHead(
        method,
        raw_path,
        _decode_path(raw_path),
        query,
        version,
        headers,
        size,
        keep_alive,
        expect_continue,
    )


class ChunkedDecoder:
    """Reads a chunked body (of a request, or of an answer) out of a buffer, as its bytes arrive.

    :meth:`decode` takes what it can from the front of ``buffer`` and returns the body bytes
    found; :attr:`done` turns True after the last chunk and the trailer (which is read and
    dropped). Raises :class:`RequestError` for a malformed body or one over ``max_body``.
    """

    __slots__ = ("_left", "_max_body", "_state", "_total", "_trailer", "done")

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._state = "size"
        self._left = 0
        self._total = 0
        self._trailer = 0
        self.done = False

    def decode(self, buffer: bytearray) -> bytes:
        """Body bytes taken from the front of ``buffer`` (maybe none: then read more)."""
        out = bytearray()
        while not self.done:
            if self._state == "data":
                take = min(self._left, len(buffer))
                if not take:
                    break
                out += buffer[:take]
                del buffer[:take]
                self._left -= take
                if not self._left:
                    self._state = "crlf"
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                limit = 2 if self._state == "crlf" else _MAX_CHUNK_LINE
                if len(buffer) > limit:
                    raise RequestError(400, "a line of the chunked body is too long")
                break
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if self._state == "crlf":
                if line:
                    raise RequestError(400, "a chunk does not end with CRLF")
                self._state = "size"
            elif self._state == "size":
                self._chunk_size(line)
            else:
                self._trailer += len(line) + 2
                if self._trailer > MAX_HEAD_SIZE:
                    raise RequestError(431, "the chunked body's trailer is too long")
                if not line:
                    self.done = True
        return bytes(out)

    def _chunk_size(self, line: bytes) -> None:
        text = line.partition(b";")[0].strip(b" \t")
        if not text or len(text) > 16 or not set(text) <= _HEX:
            raise RequestError(400, "a chunk size is not a hexadecimal number")
        size = int(text, 16)
        if size == 0:
            self._state = "trailer"
            return
        self._total += size
        if self._total > self._max_body:
            raise RequestError(413, f"a request body is at most {self._max_body} bytes here")
        self._left = size
        self._state = "data"


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "").encode("ascii"))


def response_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The status line and ``headers`` as bytes, up to and with the blank line. Raises
    ValueError for a status out of range or a header that would break the head apart."""
    if not 100 <= status <= 999:
        raise ValueError(f"an HTTP status has three digits, not {status}")
    parts = [_status_line(status)]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or b"\r" in value or b"\n" in value or b"\x00" in value:
            raise ValueError(f"the answer has a header that cannot be sent: {name[:40]!r}")
        parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"\r\n")
    return b"".join(parts)


def error_response(status: int, reason: str, date: bytes) -> bytes:
    """A whole ``text/plain`` answer saying ``reason``, closing the connection."""
    body = f"{reason}\n".encode()
    head = response_head(
        status,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            (b"date", date),
        ],
    )
    return head + body
