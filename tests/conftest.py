"""Fixtures shared by the tests: a running node on loopback, and access to the external SIP tools.

A test that needs a real peer (SIPp, sipsak, baresip) or a network namespace skips when the tool is missing
on a developer's machine, but fails on CI (the CI environment variable set), where .ci/run installs them:
an interop test that silently skips there would prove nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.node import DEFAULT_USERS, Node, UdpClient, users_config

ON_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing_requirement(reason: str) -> None:
    """Skip here; fail on CI, where every requirement is installed on purpose."""
    if ON_CI:
        pytest.fail(f"{reason} (CI is set, so this must not be skipped)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def require_tool():
    """`require_tool("sipp")` returns the tool's path or skips (fails on CI) when it is not installed."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            missing_requirement(f"{name} is not installed (Debian: apt-get install {_PACKAGES.get(name, name)})")
        return path

    return find


_PACKAGES = {"sipp": "sip-tester", "sipsak": "sipsak", "baresip": "baresip", "unshare": "util-linux"}


@pytest.fixture
def start_node(tmp_path: Path):
    """`start_node(config_text=None)` starts a node and returns it; every node is stopped at teardown.

    Teardown sends SIGTERM and asserts what the node's contract promises: exit code 0 and no traceback.
    """
    nodes: list[Node] = []

    def start(config_text: str | None = None, **kwargs) -> Node:
        node = Node.start(tmp_path / f"node{len(nodes)}", config_text, **kwargs)
        nodes.append(node)
        return node

    yield start
    errors = []
    for node in nodes:
        try:
            node.assert_clean_exit()
        except AssertionError as exc:
            errors.append(str(exc))
        finally:
            node.kill()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def users() -> dict[str, str]:
    """The users the `node` fixture knows: name → password."""
    return dict(DEFAULT_USERS)


@pytest.fixture
def node(start_node, users) -> Node:
    """A node with the `users` configured, listening on a free loopback port."""
    return start_node(users_config(users))


@pytest.fixture
def udp():
    """A UDP client socket on 127.0.0.1, closed at teardown."""
    with UdpClient() as client:
        yield client
