"""Fixtures of the tests against real peers."""
import pytest

from tests.interop.sippcalls import UAS_HOST
from tests.node import free_port


@pytest.fixture
def sipp(require_tool) -> str:
    return require_tool("sipp")


@pytest.fixture
def baresip(require_tool) -> str:
    return require_tool("baresip")


@pytest.fixture
def uas_port() -> int:
    """A free port for the SIPp UAS on its own loopback address."""
    return free_port(UAS_HOST)
