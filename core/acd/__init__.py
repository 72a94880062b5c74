"""The ACD (automatic call distributor): queues, agents, tiers, strategies, overflow between agent
groups, no-answer handling, exits and live counters, sans-IO.

The face (aioquic style): ``AutomaticCallDistributor(queues, agents, seed=0)`` with
``handle_event(event, now)`` for the input events of ``core.acd.model`` (MemberJoined, MemberLeft,
AgentStatusChanged, PhoneRegistered/PhoneUnregistered, OfferAnswered, OfferRejected, NoAnswer,
AgentCallStarted, CallEnded), ``handle_timer(now)``, ``get_timer()``, ``next_output()`` (Offer,
OfferCancelled, OfferTimedOut, MemberExited, AgentPaused), ``queue_stats(queue, now)`` and
``agent_stats(agent, now)``.

Two implementations share it: ``core._acd`` (Cython, the matching hot loop in C arrays) and
``core.acd._pyacd`` (plain Python, the readable specification and differential oracle). This
package exports the Cython one when it is built; ``IMPLEMENTATIONS`` names both for the tests.
"""

from __future__ import annotations

from core.acd import _pyacd
from core.acd.model import *  # noqa: F403 - the config, event and counter types are part of the face
from core.acd.model import __all__ as _model_all

try:
    from core import _acd
except ImportError:  # the extension is not built: `python setup.py build_ext --inplace`
    _acd = None

IMPLEMENTATIONS = {"py": _pyacd, "c": _acd}
AutomaticCallDistributor = (_acd or _pyacd).AutomaticCallDistributor

__all__ = ["IMPLEMENTATIONS", "AutomaticCallDistributor", *_model_all]
