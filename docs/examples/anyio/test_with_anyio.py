"""The example of docs/howto/testing.rst for anyio's pytest plugin: trioudp's
fixtures and marker in tests that anyio runs on its Trio backend.

pytest-trio is not needed (if it is installed, leave ``trio_mode`` off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

import trioudp

if TYPE_CHECKING:
    from trioudp.testing import VirtualNetwork

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    # Trio, on the clock the virtual network's tests run on.
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


async def test_echo(udp_echo_server: tuple[str, int]) -> None:
    async with trioudp.open_udp_client(*udp_echo_server) as client:
        assert (await client.request(b"hi")).data == b"hi"


@pytest.mark.virtual_network(latency=5.0)
async def test_a_slow_link(
    virtual_network: VirtualNetwork, udp_echo_server: tuple[str, int]
) -> None:
    assert virtual_network.policy.latency == 5.0
    backoff = trioudp.Backoff(initial=60)  # wait out the 10 s round trip
    async with trioudp.open_udp_client(*udp_echo_server, backoff=backoff) as client:
        start = trio.current_time()
        await client.request(b"x")
        assert trio.current_time() - start == 10.0  # virtual seconds: none spent
