"""A socket's kernel half: its receive queue, the buffer it charges, and the
interface its ancillary data names.

Schedule and cancel points of virtual sockets match trio's real sockets. A receive that finds a datagram queued takes one cancel point and one
schedule point; a receive that must wait is woken by the datagram and returns
it without yielding again (trio's real sockets do the same after
``wait_readable``), which halves the scheduler passes of an echo round trip.
"""

import socket

import trio
import trio.testing

from trioudp.testing import VirtualNetwork

from .conftest import bound, ifindex_of_next, pair


class StepCounter(trio.abc.Instrument):
    def __init__(self):
        self.steps = {}

    def before_task_step(self, task):
        self.steps[task.name] = self.steps.get(task.name, 0) + 1


async def test_a_receive_that_waited_returns_without_another_schedule_point(
    virtual_network,
):
    a, b = await pair()
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:

            async def receiver():
                assert await b.recv(10) == b"hi"

            nursery.start_soon(receiver, name="receiver")
            await trio.testing.wait_all_tasks_blocked()
            await a.sendto(b"hi", b.getsockname())
    finally:
        trio.lowlevel.remove_instrument(counter)
    # One step runs it into the wait; the wake-up runs it to the end.
    assert counter.steps["receiver"] == 2


async def test_receives_are_checkpoints_queued_or_not(virtual_network):
    a, b = await pair()
    await a.sendto(b"queued", b.getsockname())
    with trio.testing.assert_checkpoints():
        assert await b.recv(10) == b"queued"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.sendto, b"later", b.getsockname())
        with trio.testing.assert_checkpoints():
            assert await b.recv(10) == b"later"


async def test_a_cancelled_receive_takes_nothing(virtual_network):
    a, b = await pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.recv(10)  # empty queue: cancelled as it starts to wait
    assert scope.cancelled_caught
    await a.sendto(b"x", b.getsockname())
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.recv(10)  # queued: cancelled before taking it
    assert scope.cancelled_caught
    assert await b.recv(10) == b"x"


async def test_rcvbuf_overflow_is_counted_like_rcvbuferrors(virtual_network):
    a, b = await pair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    for _ in range(10):
        await a.sendto(b"x" * 1000, b.getsockname())
    # Linux charges a 1000-byte datagram 2304 bytes: one fits in 4096.
    assert virtual_network.stats.dropped == {"rcvbuf": 9}
    assert b.rcvbuf_errors == 9


async def test_ingress_interface_tells_loopback_from_the_network(virtual_network):
    """What a server needs to trust "loopback" only on ``lo``: a datagram
    from another host is on eth0 (2), even one addressed to 127.0.0.1."""
    remote_host = virtual_network.add_host("10.0.0.2")
    server = await bound("0.0.0.0")
    port = server.getsockname()[1]
    local = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await local.sendto(b"local", ("127.0.0.1", port))
    assert await ifindex_of_next(server) == (
        b"local",
        "127.0.0.1",
        VirtualNetwork.LOOPBACK_IFINDEX,
    )
    with virtual_network.on_host(remote_host):
        remote = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await remote.sendto(b"remote", ("127.0.0.1", port))
    assert await ifindex_of_next(server) == (
        b"remote",
        "10.0.0.2",  # its eth0 address: it reached 127.0.0.1 over eth0
        VirtualNetwork.ETHERNET_IFINDEX,
    )
    for sock in (server, local, remote):
        sock.close()
