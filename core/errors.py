"""Protocol errors that carry the SIP status to answer with.

A layer boundary turns them into a response (``status`` and ``reason`` become the status line) or
an event, never a crash. ``RemoteProtocolError``: the peer sent something we refuse.
``LocalProtocolError``: we were asked to do something the protocol forbids.
"""


class ProtocolError(Exception):
    """A SIP protocol violation; ``status`` is the response code that answers it."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __reduce__(self):
        return (type(self), (self.reason, self.status))


class RemoteProtocolError(ProtocolError):
    """The peer's message breaks the protocol (answer with ``status``, or drop it)."""


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol forbids in this state."""
