"""What virtual sockets do not simulate raises an error that names it (the
conformance suite covers what they do)."""

import socket

import pytest
import trio


async def test_unsupported_operations_name_themselves(virtual_network):
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(NotImplementedError, match="detach"):
            sock.detach()
        with pytest.raises(
            NotImplementedError, match=r"setsockopt\(level=0, optname=4\)"
        ):
            sock.setsockopt(0, 4, 1)  # IP_OPTIONS
        with pytest.raises(NotImplementedError, match="receive flags"):
            await sock.recv(10, socket.MSG_OOB)
        with pytest.raises(OSError, match="listen"):
            sock.listen()
