"""Floods, bad input, ICMP errors and protection, exact on the virtual network."""

import errno
import functools
import ipaddress
import logging
import math
import socket
import sys
import time
from contextlib import contextmanager

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trioudp
from trioudp import AccessList, RateLimit, serve_udp
from trioudp._socket import bind_udp_socket

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup
from trioudp.testing import VirtualNetwork

from .conftest import open_fds, requires_ipv6


async def echo(datagram):
    await datagram.reply(datagram.data)


async def start(nursery, handler=echo, port=53, **kwargs):
    """A server on ``port``: 53 on the virtual network; real sockets pass 0."""
    kwargs.setdefault("host", "0.0.0.0")
    return await nursery.start(functools.partial(serve_udp, handler, port, **kwargs))


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
                with trio.fail_after(2):
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

    server = await start(nursery, wide, 0, host="127.0.0.1", amplification_factor=3)
    async with client_socket("127.0.0.1") as client:
        await client.send_to(b"q" * 400, ("127.0.0.1", server.port))
        with trio.fail_after(5):
            assert len((await client.receive()).data) == 1200
        await trio.testing.wait_all_tasks_blocked()
    assert drawn == [1200]
    assert server.stats.dropped_amplification == 2
    assert server.stats.handled == 1


# ---- sockets with IP_RECVERR: the error queue is drained, never spun on ----

#: (family, loopback, option level, option) per address family; the option
#: numbers are Linux's (Python 3.11 lacks the constants).
RECVERR = {
    "ipv4": (socket.AF_INET, "127.0.0.1", socket.IPPROTO_IP, 11),
    "ipv6": (socket.AF_INET6, "::1", socket.IPPROTO_IPV6, 25),
}
#: The measured idle interval (seconds of real time: a rate is measured, the
#: wait itself proves nothing) and the most task steps and CPU allowed in it.
#: Spinning, the receive loop woke ~10,000 times and burnt the whole interval.
IDLE = 0.2
MAX_IDLE_STEPS = 10
MAX_IDLE_CPU = IDLE / 4


def closed_port(family, host):
    """A loopback address where nothing listens (ICMP port unreachable)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[:2]


class TaskSteps(trio.abc.Instrument):
    """Counts every step of every task: a task that spins steps thousands of
    times in ``IDLE``, one that waits steps about once."""

    def __init__(self):
        self.steps = 0

    def before_task_step(self, task):
        self.steps += 1


@contextmanager
def idle_cost():
    """Task steps and process CPU seconds spent inside the block."""
    steps = TaskSteps()
    cost = {"cpu": -time.process_time()}
    trio.lowlevel.add_instrument(steps)
    try:
        yield cost
    finally:
        trio.lowlevel.remove_instrument(steps)
        cost["cpu"] += time.process_time()
        cost["steps"] = steps.steps


async def wait_idle():
    """Let ``IDLE`` seconds of real time pass (a rate is measured over them)."""
    with trio.move_on_after(IDLE):
        await trio.sleep_forever()


def recverr_param():
    return pytest.mark.parametrize(
        "family",
        [pytest.param("ipv4"), pytest.param("ipv6", marks=requires_ipv6)],
    )


@recverr_param()
async def test_a_server_socket_with_ip_recverr_drains_and_counts_icmp_errors(
    nursery, family
):
    family, host, level, option = RECVERR[family]
    sock = await bind_udp_socket(host, 0)
    sock.trio_socket.setsockopt(level, option, 1)
    server = await nursery.start(trioudp.serve_udp_sockets, echo, [sock])
    # Five requests from a client that is gone before the echoes leave: each
    # echo draws an ICMP port unreachable, queued on the server's socket.
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.bind((host, 0))
        for _ in range(5):
            client.sendto(b"ping", server.addresses[0][:2])
    with trio.move_on_after(1):  # spinning, the tasks never all block
        await trio.testing.wait_all_tasks_blocked()
    with idle_cost() as cost:
        await wait_idle()
    assert cost["steps"] <= MAX_IDLE_STEPS
    assert cost["cpu"] < MAX_IDLE_CPU
    stats = server.stats
    assert stats.replied == 5
    assert stats.receive_errors == {"ECONNREFUSED": 5}


async def test_a_client_socket_with_ip_recverr_does_not_spin_while_it_waits():
    peer = closed_port(socket.AF_INET, "127.0.0.1")
    async with trioudp.open_udp_client(
        *peer,
        attempts=1,
        backoff=trioudp.Backoff(initial=IDLE, jitter=0),
        on_unreachable="retry",
    ) as client:
        client.socket.trio_socket.setsockopt(*RECVERR["ipv4"][2:], 1)
        with idle_cost() as cost, pytest.raises(trioudp.RequestTimeout):
            await client.request(b"ping")
        assert cost["steps"] <= MAX_IDLE_STEPS
        assert cost["cpu"] < MAX_IDLE_CPU
        assert client.stats.unreachable == 1
        assert client.socket.stats.receive_errors == {"ECONNREFUSED": 1}


async def test_receive_on_a_socket_with_ip_recverr_does_not_spin():
    peer = closed_port(socket.AF_INET, "127.0.0.1")
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        sock.trio_socket.setsockopt(*RECVERR["ipv4"][2:], 1)
        await sock.send_to(b"ping", peer)
        with pytest.raises(ConnectionRefusedError), trio.fail_after(5):
            await sock.receive()  # the kernel reports the error once...
        with idle_cost() as cost, trio.move_on_after(IDLE):
            await sock.receive()  # ...and its queued copy is drained
        assert cost["steps"] <= MAX_IDLE_STEPS
        assert cost["cpu"] < MAX_IDLE_CPU
        assert sock.stats.receive_errors == {"ECONNREFUSED": 1}


# ---- bad settings fail at start, naming the value, leaving nothing open ----


def free_port():
    """A loopback port nothing is bound to now."""
    return closed_port(socket.AF_INET, "127.0.0.1")[1]


def assert_port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))


#: serve_udp's settings that are open_udp_sockets' (serve_udp_sockets lacks them).
SOCKET_SETTINGS = {
    "host",
    "max_datagram_size",
    "receive_buffer",
    "multicast",
    "broadcast",
}
BAD_SERVER_SETTINGS = [
    ({"host": 127}, TypeError, "host must be a str or None, not int 127"),
    ({"max_datagram_size": 1.5}, TypeError, "max_datagram_size must be an int, not float 1.5"),
    ({"max_datagram_size": True}, TypeError, "max_datagram_size must be an int"),
    ({"max_datagram_size": 10**6}, ValueError, "max_datagram_size must be in 0..65507, not 1000000"),
    ({"receive_buffer": 0}, ValueError, "receive_buffer must be >= 1, not 0"),
    ({"receive_buffer": "1M"}, TypeError, "receive_buffer must be an int, not str '1M'"),
    ({"multicast": {"groups": ["239.1.2.3"]}}, TypeError, "multicast must be a Multicast or None, not dict"),
    ({"broadcast": 1}, TypeError, "broadcast must be True or False, not 1"),
    ({"max_in_flight": 1.5}, ValueError, "max_in_flight must be an int >= 1, not 1.5"),
    ({"overflow": "drop_random"}, ValueError, "'drop_random' is not a valid Overflow"),
    ({"rate_limit": {"rate": 10, "burst": 5}}, TypeError, "rate_limit must be a RateLimit or None, not dict"),
    ({"access": ["10.0.0.0/8"]}, TypeError, r"access must be an AccessList or None, not list \['10.0.0.0/8'\]"),
    ({"amplification_factor": "3"}, TypeError, "amplification_factor must be a number, not '3'"),
    ({"amplification_factor": True}, TypeError, "amplification_factor must be a number"),
    ({"amplification_factor": 0.5}, ValueError, "amplification_factor must be a finite number >= 1, not 0.5"),
    ({"amplification_factor": math.inf}, ValueError, "amplification_factor must be a finite number >= 1, not inf"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "error", "fragment"), BAD_SERVER_SETTINGS)
async def test_a_refused_serve_udp_leaves_no_socket_bound_and_no_descriptor_open(
    settings, error, fragment
):
    port = free_port()
    before = open_fds()
    with pytest.raises(error, match=fragment) as refused, trio.fail_after(2):
        await serve_udp(echo, port, **{"host": "127.0.0.1", **settings})
    # While the exception (and the frames its traceback holds) lives:
    assert refused.value is not None
    assert open_fds() == before
    assert_port_free(port)


@pytest.mark.parametrize(
    ("settings", "error", "fragment"),
    [
        (settings, error, fragment)
        for settings, error, fragment in BAD_SERVER_SETTINGS
        if not SOCKET_SETTINGS & settings.keys()
    ],
)
async def test_a_refused_serve_udp_sockets_closes_the_sockets_it_was_given(
    settings, error, fragment
):
    before = open_fds()
    sock = await bind_udp_socket("127.0.0.1", 0)
    port = sock.local_address[1]
    with pytest.raises(error, match=fragment) as refused, trio.fail_after(2):
        await trioudp.serve_udp_sockets(echo, [sock], **settings)
    assert refused.value is not None
    assert sock.closed
    assert open_fds() == before
    assert_port_free(port)


async def test_serve_udp_sockets_refuses_what_is_not_a_udp_socket_and_closes_it():
    before = open_fds()
    raw = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await raw.bind(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    with pytest.raises(
        TypeError, match=r"trioudp.UDPSocket objects .* not _SocketType"
    ):
        with trio.fail_after(2):
            await trioudp.serve_udp_sockets(echo, [raw])
    assert open_fds() == before
    assert_port_free(port)


@pytest.mark.parametrize(
    ("settings", "error", "fragment"),
    [
        ({"max_datagram_size": 10**6}, ValueError, "max_datagram_size must be in 0..65507"),
        ({"max_datagram_size": 1.5}, TypeError, "max_datagram_size must be an int"),
        ({"host": "::1", "max_datagram_size": 65_528}, ValueError, "must be in 0..65527"),
        ({"receive_buffer": -1}, ValueError, "receive_buffer must be >= 1"),
        ({"reuse_port": "yes"}, TypeError, "reuse_port must be True or False, not 'yes'"),
        ({"dual_stack": "no"}, TypeError, "dual_stack must be True or False, not 'no'"),
        ({"multicast": "239.1.2.3"}, TypeError, "multicast must be a Multicast or None"),
        ({"host": b"127.0.0.1"}, TypeError, "host must be a str or None, not bytes"),
        ({"port": "53"}, trioudp.InvalidAddress, "port must be in 0..65535, not '53'"),
    ],
)  # fmt: skip
async def test_a_refused_open_udp_socket_leaves_no_descriptor_open(
    settings, error, fragment
):
    before = open_fds()
    settings = {"host": "127.0.0.1", "port": 0, **settings}
    for _ in range(3):
        with pytest.raises(error, match=fragment) as refused:
            async with trioudp.open_udp_socket(**settings):
                pass  # pragma: no cover
        assert refused.value is not None
        assert open_fds() == before
    if not {"reuse_port", "dual_stack"} & settings.keys():
        with pytest.raises(error, match=fragment):
            await trioudp.open_udp_sockets(**settings)
        assert open_fds() == before


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        (lambda: RateLimit(rate=1, burst=1, ipv4_prefix=24.5), TypeError, "ipv4_prefix must be an int, not float 24.5"),
        (lambda: RateLimit(rate=1, burst=1, ipv6_prefix="56"), TypeError, "ipv6_prefix must be an int, not str '56'"),
        (lambda: RateLimit(rate=1, burst=1, ipv6_prefix=129), ValueError, "ipv6_prefix must be in 1..128, not 129"),
        (lambda: RateLimit(rate=1, burst=1, table_size=1.5), TypeError, "table_size must be an int"),
        (lambda: RateLimit(rate=1, burst=1, log_only="no"), TypeError, "log_only must be True or False, not 'no'"),
        (lambda: RateLimit(rate=True, burst=1), ValueError, "rate must be a positive number"),
        (lambda: RateLimit(rate=1, burst=1, exempt="127.0.0.0/8"), TypeError, "exempt must be a list of networks"),
        (lambda: AccessList(allow="10.0.0.0/8"), TypeError, "allow must be a list of networks .* not str '10.0.0.0/8'"),
        (lambda: AccessList(deny=ipaddress.ip_network("192.0.2.0/30")), TypeError, "deny must be a list of networks"),
        (lambda: AccessList(allow=["10.0.0.0/33"]), ValueError, "10.0.0.0/33"),
        (lambda: trioudp.AmplificationGuard(factor="3"), TypeError, "factor must be a number, not '3'"),
        (lambda: trioudp.AmplificationGuard(factor=math.nan), ValueError, "factor must be a number, not nan"),
        (lambda: trioudp.AmplificationGuard(table_size=1.5), TypeError, "table_size must be an int"),
    ],
)  # fmt: skip
def test_protection_settings_are_checked_when_made(make, error, fragment):
    with pytest.raises(error, match=fragment):
        make()


class AsyncCall:
    async def __call__(self, datagram):
        await echo(datagram)


class Awaitable:
    def __init__(self, datagram):
        self.datagram = datagram

    def __await__(self):
        return echo(self.datagram).__await__()


def logged(handler):
    @functools.wraps(handler)
    def wrapper(datagram):
        return handler(datagram)

    return wrapper


async def echo_with(datagram, suffix):
    await datagram.reply(datagram.data + suffix)


@pytest.mark.parametrize(
    "handler",
    [
        functools.partial(echo_with, suffix=b""),
        AsyncCall(),
        Awaitable,
        logged(echo),
        trioudp.Responder(lambda datagram: datagram.data),
    ],
    ids=[
        "partial",
        "async __call__",
        "awaitable class",
        "functools.wraps",
        "Responder",
    ],
)
async def test_callables_that_return_awaitables_are_accepted_and_serve(
    virtual_network, nursery, handler
):
    server = await start(nursery, handler, host="127.0.0.1")
    async with trioudp.open_udp_client("127.0.0.1", 53) as client:
        assert (await client.request(b"hi")).data == b"hi"
    await trio.testing.wait_all_tasks_blocked()  # the server counts after replying
    assert server.stats.handled == 1


def plain(datagram):
    return None


class PlainCall:
    def __call__(self, datagram):
        return None


async def generator(datagram):
    yield


@pytest.mark.parametrize(
    "handler",
    [plain, lambda datagram: None, PlainCall(), PlainCall, print, generator,
     functools.partial(plain)],
    ids=["function", "lambda", "plain __call__", "class", "builtin",
         "async generator", "partial"],
)  # fmt: skip
async def test_plain_handlers_are_refused_before_binding(handler):
    port = free_port()
    before = open_fds()
    with (
        pytest.raises(TypeError, match="handler must be an async function"),
        trio.fail_after(2),
    ):
        await serve_udp(handler, port, host="127.0.0.1")
    assert open_fds() == before
    assert_port_free(port)


async def test_a_send_waiting_for_room_on_an_ip_recverr_socket_does_not_spin(netns):
    """In a namespace whose loopback is shaped, a send waits for room in a
    full send buffer while an ICMP error is queued (it woke ~1,000 times in
    13 ms before the wait for room drained the queue)."""
    result = await netns("recverr_send_wait")
    assert result["filled"] > 0
    assert result["waited"] > 0
    assert result["steps"] <= MAX_IDLE_STEPS
    assert result["receive_errors"] == {"ECONNREFUSED": 1}
