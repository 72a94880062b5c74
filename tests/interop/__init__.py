"""Tests against real SIP peers (SIPp, sipsak, baresip) and the RFC 4475/5118 vectors on the wire."""
