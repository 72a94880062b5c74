"""The call layer: routes (``routes.py``) and the B2BUA that bridges two INVITE sessions per call
(``b2bua.py``)."""
from core.call.b2bua import B2BUA, Call, CallSummary, MediaBridge, MediaRelease, PortAllocator
from core.call.routes import Router, RouteMatch, TrunkSources, dialled_number, normalise

__all__ = ["B2BUA", "Call", "CallSummary", "MediaBridge", "MediaRelease", "PortAllocator", "Router",
           "RouteMatch", "TrunkSources", "dialled_number", "normalise"]
