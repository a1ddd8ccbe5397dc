"""Floods, bad input, ICMP errors and protection, exact on the virtual network."""

import errno
import functools
import logging
import socket
import sys

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trioudp
from trioudp import AccessList, RateLimit, serve_udp

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup
from trioudp.testing import VirtualNetwork


async def echo(datagram):
    await datagram.reply(datagram.data)


async def start(nursery, handler=echo, **kwargs):
    kwargs.setdefault("host", "0.0.0.0")
    return await nursery.start(functools.partial(serve_udp, handler, 53, **kwargs))


def client_socket(host):
    return trioudp.open_udp_socket(host, 0)


async def test_rate_limit_drops_exactly_what_the_settings_imply(
    virtual_network, autojump_clock, nursery
):
    virtual_network.add_host("192.0.2.1")
    virtual_network.add_host("192.0.2.2")
    virtual_network.add_host("198.51.100.1")
    with virtual_network.on_host("192.0.2.1"):
        server = await start(nursery, rate_limit=RateLimit(rate=10, burst=5))
    async with client_socket("192.0.2.2") as a, client_socket("198.51.100.1") as b:
        for _ in range(8):
            await a.send_to(b"x", ("192.0.2.1", 53))
        await b.send_to(b"y", ("192.0.2.1", 53))
        await trio.testing.wait_all_tasks_blocked()
        assert (server.stats.handled, server.stats.dropped_rate_limited) == (6, 3)
        await trio.sleep(0.5)  # five tokens come back
        for _ in range(6):
            await a.send_to(b"x", ("192.0.2.1", 53))
        await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.handled, stats.dropped_rate_limited) == (11, 4)
    assert stats.accounted == stats.received == 15


async def test_rate_limit_log_only_counts_but_drops_nothing(
    virtual_network, nursery, caplog
):
    server = await start(
        nursery, host="127.0.0.1", rate_limit=RateLimit(rate=1, burst=1, log_only=True)
    )
    async with client_socket("127.0.0.1") as a:
        for _ in range(4):
            await a.send_to(b"x", ("127.0.0.1", 53))
        await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.handled, stats.dropped_rate_limited, stats.rate_limited_logged) == (
        4,
        0,
        3,
    )
    assert "rate limit exceeded by 127.0.0.1" in caplog.text


async def test_amplification_guard_withholds_big_replies_until_validated(
    virtual_network, nursery
):
    async def amplify(datagram):
        if datagram.data == b"token":
            datagram.validate_peer()
        await datagram.reply(b"x" * 100)

    server = await start(nursery, amplify, host="127.0.0.1", amplification_factor=3)
    async with client_socket("127.0.0.1") as a:
        await a.send_to(b"a" * 40, ("127.0.0.1", 53))  # 120 bytes allowed: one reply
        await a.send_to(b"b", ("127.0.0.1", 53))  # 8 more bytes of credit: not enough
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats.replied == 1
        assert server.stats.dropped_amplification == 1
        await a.send_to(b"token", ("127.0.0.1", 53))
        await a.send_to(b"c", ("127.0.0.1", 53))
        await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (stats.replied, stats.dropped_amplification, stats.handled) == (3, 1, 4)


async def test_access_list_refuses_before_the_handler(virtual_network, nursery):
    virtual_network.add_host("10.0.0.1")
    virtual_network.add_host("10.6.6.6")
    seen = []

    async def record(datagram):
        seen.append(datagram.peer[0])

    with virtual_network.on_host("10.0.0.1"):
        server = await start(
            nursery,
            record,
            access=AccessList(allow=["10.0.0.0/8"], deny=["10.6.0.0/16"]),
        )
    async with client_socket("10.6.6.6") as bad:
        await bad.send_to(b"x", ("10.0.0.1", 53))
    async with client_socket("10.0.0.1") as good:
        await good.send_to(b"x", ("10.0.0.1", 53))
    await trio.testing.wait_all_tasks_blocked()
    assert seen == ["10.0.0.1"]
    assert server.stats.dropped_denied == 1


async def test_source_port_zero_is_never_answered(virtual_network, nursery):
    server = await start(nursery, host="127.0.0.1")
    spoofed = trioudp.Datagram(
        data=b"x",
        peer=("192.0.2.1", 0),
        local=("127.0.0.1", 53),
        received_at=0.0,
        origin=server.sockets[0],
    )
    assert not server._admit(spoofed)
    assert server.stats.dropped_port_zero == 1


async def test_icmp_error_on_receive_then_the_next_request_is_answered(
    virtual_network, nursery
):
    server = await start(nursery, host="127.0.0.1")
    server.sockets[0].trio_socket._set_error(errno.ECONNREFUSED)
    await trio.testing.wait_all_tasks_blocked()
    async with trioudp.open_udp_client("127.0.0.1", 53) as client:
        assert (await client.request(b"after icmp")).data == b"after icmp"
    assert server.stats.receive_errors == {"ECONNREFUSED": 1}


async def test_icmp_error_on_send_then_the_next_request_is_answered(
    virtual_network, nursery
):
    server = await start(nursery, host="127.0.0.1")
    async with trioudp.open_udp_client("127.0.0.1", 53) as client:
        # A pending ICMP report surfaces on the server's next send, which the
        # kernel then does not transmit: the reply is retried once.
        async def report_then_echo(datagram):
            server.sockets[0].trio_socket._error = errno.EHOSTUNREACH
            await datagram.reply(datagram.data)

        server._handler = report_then_echo
        assert (await client.request(b"one")).data == b"one"
        server._handler = echo
        assert (await client.request(b"two")).data == b"two"
    assert server.stats.send_errors == {"EHOSTUNREACH": 1}
    assert server.stats.replied == 2


async def test_oversize_empty_and_garbage_are_counted_and_the_server_goes_on(
    virtual_network, nursery
):
    async def strict(datagram):
        datagram.data.decode("ascii")
        await datagram.reply(b"ok")

    server = await start(nursery, strict, host="127.0.0.1", max_datagram_size=512)
    async with client_socket("127.0.0.1") as a:
        await a.send_to(b"x" * 513, ("127.0.0.1", 53))
        await a.send_to(b"", ("127.0.0.1", 53))
        await a.send_to(b"\xff\xfe\x00garbage", ("127.0.0.1", 53))
        await a.send_to(b"fine", ("127.0.0.1", 53))
        replies = [(await a.receive()).data for _ in range(2)]
    assert replies == [b"ok", b"ok"]
    # The server counts a datagram handled once its reply is sent: let it.
    await trio.testing.wait_all_tasks_blocked()
    stats = server.stats
    assert (
        stats.dropped_oversize,
        stats.handled,
        stats.handler_errors,
        stats.received,
    ) == (1, 2, 1, 3)
    assert stats.accounted == stats.received


async def test_send_larger_than_the_limit_is_refused_before_the_kernel(virtual_network):
    async with client_socket("127.0.0.1") as a:
        with pytest.raises(trioudp.DatagramTooLarge):
            await a.send_to(b"x" * 70_000, ("127.0.0.1", 53))
    assert virtual_network.stats.sent == 0


async def test_receive_buffer_is_requested_and_a_shortfall_logged(
    virtual_network, nursery, caplog
):
    server = await start(nursery, host="127.0.0.1", receive_buffer=4_000_000)
    granted = server.sockets[0].trio_socket.getsockopt(
        trioudp._socket.stdlib_socket.SOL_SOCKET,
        trioudp._socket.stdlib_socket.SO_RCVBUF,
    )
    assert granted == 425_984
    assert (
        "asked for a 4000000-byte UDP receive buffer, the kernel granted 425984"
        in caplog.text
    )


async def test_kernel_drops_are_read_on_real_sockets(nursery):
    server = await nursery.start(
        functools.partial(serve_udp, echo, 0, host="127.0.0.1")
    )
    assert server.stats.kernel_drops == 0


async def test_flood_with_a_slow_handler_is_bounded_and_accounted(
    virtual_network, autojump_clock, nursery
):
    async def slow(datagram):
        await trio.sleep(1)
        await datagram.reply(b"done")

    server = await start(
        nursery, slow, host="127.0.0.1", max_in_flight=8, queue_size=16
    )
    async with client_socket("127.0.0.1") as a:
        for i in range(5000):
            await a.send_to(b"%d" % i, ("127.0.0.1", 53))
        await trio.testing.wait_all_tasks_blocked()
        stats = server.stats
        assert (stats.in_flight, stats.queued, stats.dropped_queue_full) == (
            8,
            16,
            5000 - 24,
        )
        assert stats.tasks <= 8 + 1
        await trio.sleep(5)
        stats = server.stats
        assert (stats.handled, stats.replied) == (24, 24)
        await a.send_to(b"still alive?", ("127.0.0.1", 53))
        await trio.sleep(2)
        assert server.stats.handled == 25
    assert server.stats.accounted == server.stats.received == 5001


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payloads=st.lists(st.binary(max_size=2048), min_size=1, max_size=20))
def test_fuzzed_datagrams_never_crash_or_hang_and_are_all_accounted(payloads):
    import dns.message

    logging.getLogger("trioudp").disabled = True  # every malformed query logs an error

    async def dns_like(datagram):
        query = dns.message.from_wire(datagram.data)
        await datagram.reply(dns.message.make_response(query).to_wire())

    async def main():
        net = VirtualNetwork(seed=1)
        with net.install():
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(serve_udp, dns_like, 53, host="127.0.0.1")
                )
                async with client_socket("127.0.0.1") as a:
                    for payload in payloads:
                        await a.send_to(payload, ("127.0.0.1", 53))
                await trio.testing.wait_all_tasks_blocked()
                with trio.fail_after(5):
                    await server.shutdown()
                stats = server.stats
                assert stats.received == len(payloads)
                assert stats.accounted == stats.received
                assert stats.handled + stats.handler_errors == len(payloads)

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logging.getLogger("trioudp").disabled = False


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=65_507))
def test_any_payload_size_round_trips_through_the_parsers(data):
    from trioudp._address import check_payload

    assert check_payload(data, 65_507) == data


async def test_an_icmp_report_on_a_fast_reply_is_counted_and_the_reply_sent_again(
    nursery,
):
    import socket

    server = await nursery.start(
        functools.partial(serve_udp, echo, 0, host="127.0.0.1")
    )
    sock = server.sockets[0]
    real = sock._fast

    class ReportsOnce:
        reported = False

        def sendto(self, data, peer):
            if not self.reported:
                self.reported = True
                raise OSError(errno.EHOSTUNREACH, "No route to host")
            return real.sendto(data, peer)

        def __getattr__(self, name):
            return getattr(real, name)

    sock._fast = ReportsOnce()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(b"ping", ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
        assert client.recv(100) == b"ping"
    sock._fast = real
    stats = server.stats
    assert stats.send_errors == {"EHOSTUNREACH": 1}
    assert stats.replied == 1


@pytest.mark.parametrize(
    "make_exception",
    [
        SystemExit,
        KeyboardInterrupt,
        lambda: BaseExceptionGroup("handler's nursery", [KeyboardInterrupt()]),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "BaseExceptionGroup"],
)
@pytest.mark.parametrize("suspends_first", [False, True])
async def test_base_exceptions_from_handlers_are_counted_and_logged_then_propagate(
    caplog, make_exception, suspends_first
):
    """They stop the server, as Trio would propagate them, but the datagram
    is accounted for and the cause logged first (both were lost)."""

    async def fatal(datagram: trioudp.Datagram) -> None:
        if suspends_first:
            await trio.lowlevel.checkpoint()
        raise make_exception()

    server = None
    with pytest.raises(BaseExceptionGroup) as raised:  # noqa: PT012
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(trioudp.serve_udp, fatal, 0, host="127.0.0.1")
            )
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.sendto(b"boom", ("127.0.0.1", server.port))
                await trio.sleep_forever()
    assert raised.group_contains(type(make_exception()))
    stats = server.stats
    assert stats.received == stats.accounted == stats.handler_errors == 1
    assert stats.in_flight == 0
    assert any("it stops the server" in r.getMessage() for r in caplog.records)


async def test_amplification_guard_counts_bytes_not_items(nursery):
    """A reply given as a memoryview of 8-byte items, or a 2-D memoryview,
    counts its bytes: a 400-byte request can draw at most 1200 bytes (it
    drew 8x that when the guard counted len(), the items)."""
    await guard_counts_bytes(nursery)


async def test_amplification_guard_counts_bytes_on_the_virtual_network(
    virtual_network, nursery
):
    await guard_counts_bytes(nursery)


async def guard_counts_bytes(nursery):
    import array

    drawn = []

    async def wide(datagram):
        for reply in (
            memoryview(array.array("Q", bytes(1200))),  # 150 items, 1200 bytes
            memoryview(bytes(800)).cast("B", (20, 40)),  # 20 rows, 800 bytes
            memoryview(array.array("Q", bytes(8))),
        ):
            before = server.stats.replied
            await datagram.reply(reply)
            if server.stats.replied > before:
                drawn.append(reply.nbytes)

    server = await start(nursery, wide, host="127.0.0.1", amplification_factor=3)
    async with client_socket("127.0.0.1") as client:
        await client.send_to(b"q" * 400, ("127.0.0.1", server.port))
        with trio.fail_after(5):
            assert len((await client.receive()).data) == 1200
        await trio.testing.wait_all_tasks_blocked()
    assert drawn == [1200]
    assert server.stats.dropped_amplification == 2
    assert server.stats.handled == 1
