"""The tutorial's tests: the hello exchange on a virtual network, exact.

Run them with ``pytest`` next to ``hello.py``: pytest-trio runs them, with
no configuration, since trioudp's ``virtual_network`` marker makes each a Trio
test (and the plugin provides the ``virtual_network`` fixture).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from hello import hello_client, hello_server

import trioudp

if TYPE_CHECKING:
    from trioudp.testing import VirtualNetwork


@pytest.mark.virtual_network(latency=0.05, loss=0.1)
async def test_hello_survives_loss(virtual_network: VirtualNetwork) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(hello_server, 12345)
        assert await hello_client(12345) == b"Hello, client!"
        # "exit" is sent once and may be lost too: stop the server ourselves.
        nursery.cancel_scope.cancel()
    # The seed comes from this test's id, so every run loses the same datagrams.
    assert virtual_network.stats.sent >= 3


@pytest.mark.virtual_network(latency=0.05)
async def test_hello_gives_up_on_schedule(virtual_network: VirtualNetwork) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(hello_server, 12345)
        virtual_network.hold()  # from now on, every datagram waits on the wire
        start = trio.current_time()
        with pytest.raises(trioudp.RequestTimeout) as caught:
            await hello_client(12345, backoff=trioudp.Backoff(initial=1, jitter=0))
        # 4 attempts: 1 + 2 + 4 + 8 seconds, on the mock clock, to the tick.
        assert trio.current_time() - start == 15.0
        assert caught.value.attempts == 4
        nursery.cancel_scope.cancel()
