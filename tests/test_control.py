"""The control API's HTTP face on a real loopback socket: what a client that gets something wrong is
told (the campaign, DNC and agent requests themselves run through a node in
tests/interop/test_campaign_sipp.py)."""
from __future__ import annotations

import asyncio
import json

import pytest

from bindings.control import ControlApi
from core.config import decode_config
from tests.node import free_port


async def exchange(port: int, raw: bytes) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def run_with_api(token: str, requests: list[bytes]) -> list[tuple[int, dict]]:
    port = free_port()
    text = f'[control]\nlisten = "127.0.0.1:{port}"\ntoken = "{token}"\n'
    config = decode_config(text.encode(), "site.toml")

    async def main():
        api = ControlApi(config, calls=None, dialler=None)
        await api.start()
        try:
            return [await exchange(port, raw) for raw in requests]
        finally:
            await api.close()

    return asyncio.run(main())


def test_a_request_without_the_token_is_refused_and_one_with_it_is_served():
    (refused, served, wrong) = run_with_api("s3cret", [
        b"GET /campaigns HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /campaigns HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
        b"GET /campaigns HTTP/1.1\r\nAuthorization: Bearer s3cre\r\n\r\n",
    ])
    assert refused == (401, {"error": "needs Authorization: Bearer TOKEN"})
    assert served == (404, {"error": "this node runs no campaigns"})
    assert wrong[0] == 401


def test_a_fault_inside_a_request_is_a_500_and_the_server_keeps_serving():
    class Broken:  # a dialler whose store fails: what a full disk would look like to the API
        runs = property(lambda self: 1 / 0)

    port = free_port()
    config = decode_config(f'[control]\nlisten = "127.0.0.1:{port}"\n'.encode(), "site.toml")

    async def main():
        api = ControlApi(config, calls=None, dialler=Broken())
        await api.start()
        try:
            return [await exchange(port, b"GET /campaigns HTTP/1.1\r\n\r\n") for _ in range(2)]
        finally:
            await api.close()

    first, second = asyncio.run(main())
    assert first == second == (500, {"error": "internal error (see the node's log)"})


@pytest.mark.parametrize("raw, status", [
    (b"HELLO\r\n\r\n", 400),
    (b"GET /campaigns HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"POST /dnc HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /dnc HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
    (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
])
def test_a_malformed_request_gets_a_4xx_and_the_server_keeps_serving(raw, status):
    bad, good = run_with_api("", [raw, b"GET /campaigns HTTP/1.1\r\n\r\n"])
    assert bad[0] == status and "error" in bad[1]
    assert good == (404, {"error": "this node runs no campaigns"})
