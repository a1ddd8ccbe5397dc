"""trioudp._screening: forged sources are reported as FORGED_SOURCE (the
namespace scenarios in test_faults.py send them over a real link)."""

import socket

import pytest
import trio
import trio.testing

from trioudp import (
    open_udp_socket,
)


@pytest.mark.skipif(
    not hasattr(socket, "CMSG_SPACE"), reason="needs recvmsg control data"
)
async def test_a_loopback_source_without_its_interface_is_not_trusted():
    """A screened socket asked for each datagram's interface; when that
    control message is missing (crowded out: MSG_CTRUNC), a loopback source
    is counted as forged, never trusted (fail closed)."""
    from trioudp._screening import FORGED_SOURCE

    async with open_udp_socket("0.0.0.0", 0) as sock, open_udp_socket() as peer:
        sock._inbox.screen_sources()
        recvfrom_screened = sock._inbox.screened_recvfrom
        screen = recvfrom_screened.__self__
        await peer.send_to(b"real", ("127.0.0.1", sock.local_address[1]))
        await trio.lowlevel.wait_readable(sock.trio_socket)
        assert recvfrom_screened(100) == (
            b"real",
            ("127.0.0.1", peer.local_address[1]),
        )

        class Crowded:
            def recvmsg(self, bufsize, ancbufsize):
                return b"exit", [], socket.MSG_CTRUNC, ("127.0.0.1", 4000)

        real, screen.fast = screen.fast, Crowded()
        try:
            assert recvfrom_screened(100) == (b"exit", FORGED_SOURCE)
        finally:
            screen.fast = real
