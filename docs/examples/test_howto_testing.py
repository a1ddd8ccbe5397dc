"""The examples of docs/howto/testing.rst: UDP tests on trioudp's virtual network.

They need pytest-trio with ``trio_mode = true``; trioudp's pytest plugin
provides the ``virtual_network`` and ``udp_echo_server`` fixtures.
"""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING

import pytest
import trio

import trioudp

if TYPE_CHECKING:
    from pathlib import Path

    from trioudp.testing import VirtualNetwork


async def echo(datagram: trioudp.Datagram) -> None:
    await datagram.reply(datagram.data)


@pytest.mark.virtual_network(loss=0.2, latency=0.05)
async def test_client_survives_loss(
    virtual_network: VirtualNetwork, udp_echo_server: tuple[str, int]
) -> None:
    async with trioudp.open_udp_client(*udp_echo_server, attempts=10) as client:
        assert (await client.request(b"hi")).data == b"hi"
    assert virtual_network.stats.sent >= 2


@pytest.mark.virtual_network(latency=0.01)
async def test_partition_then_heal(
    virtual_network: VirtualNetwork, nursery: trio.Nursery
) -> None:
    server_host = virtual_network.add_host("10.0.0.1", names=["echo.test"])
    client_host = virtual_network.add_host("10.0.0.2")
    await nursery.start(functools.partial(trioudp.serve_udp, echo, 7, host="echo.test"))
    with virtual_network.on_host(client_host):  # the client's sockets live there
        async with trioudp.open_udp_client("echo.test", 7) as client:
            virtual_network.partition(server_host, client_host)
            with pytest.raises(trioudp.RequestTimeout):
                await client.request(b"anyone?")
            virtual_network.heal()
            assert (await client.request(b"back")).data == b"back"


@pytest.mark.virtual_network(latency=0.01)
async def test_late_reply_is_discarded(
    virtual_network: VirtualNetwork,
    udp_echo_server: tuple[str, int],
    nursery: trio.Nursery,
) -> None:
    # With match=, replies pair with requests by id (here: the first 4 bytes).
    async with trioudp.open_udp_client(
        *udp_echo_server, match=lambda data: data[:4]
    ) as client:
        virtual_network.hold()  # every datagram waits on the wire from now on
        answered = trio.Event()

        async def ask() -> None:
            await client.request(b"slow")
            answered.set()

        nursery.start_soon(ask)
        await trio.sleep(1.5)  # virtual: past the first timeout (1 s +-10%)
        assert virtual_network.held == 2  # the request and its retransmission
        virtual_network.release()
        await answered.wait()
        assert (await client.request(b"next")).data == b"next"
        assert client.stats.retransmitted == 1
        assert client.stats.replies == 2
        assert client.stats.discarded == 1  # the second "slow" echo, too late


@pytest.mark.virtual_network(latency=0.01)
async def test_trace_and_capture(
    virtual_network: VirtualNetwork,
    udp_echo_server: tuple[str, int],
    tmp_path: Path,
) -> None:
    async with trioudp.open_udp_client(*udp_echo_server) as client:
        await client.request(b"ping")
    print(virtual_network.trace_text())  # shown by pytest when the test fails
    capture = tmp_path / "echo.pcap"
    assert virtual_network.write_pcap(capture) == 2
    if shutil.which("tcpdump") is None:
        pytest.skip("reading the capture back needs tcpdump")
    tcpdump = await trio.run_process(
        ["tcpdump", "-nn", "-r", str(capture)], capture_stdout=True, capture_stderr=True
    )
    assert tcpdump.stdout.decode().count("UDP, length 4") == 2
