"""CCP, the route exchange between connectors (see :mod:`ilp.ccp.packet` for the wire format)."""

from .packet import (
    CCP_CONTROL_DESTINATION,
    CCP_RESPONSE,
    CCP_UPDATE_DESTINATION,
    Mode,
    Route,
    RouteControlRequest,
    RouteProp,
    RouteUpdateRequest,
)

__all__ = [
    "CCP_CONTROL_DESTINATION",
    "CCP_RESPONSE",
    "CCP_UPDATE_DESTINATION",
    "Mode",
    "Route",
    "RouteControlRequest",
    "RouteProp",
    "RouteUpdateRequest",
]
