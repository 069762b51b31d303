"""SPSP (RFC 9) and payment pointers (RFC 26); see :mod:`ilp.spsp.pointer`."""

from .pointer import (
    DEFAULT_PATH,
    SPSP_ACCEPT,
    SPSP_CONTENT_TYPE,
    PaymentPointer,
    PaymentPointerError,
    SpspResponse,
    check_redirect,
    is_valid_payment_pointer,
    parse_payment_pointer,
    parse_spsp_response,
    resolve_payment_pointer,
    resolve_spsp_endpoint,
)

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
