"""trioudp._handlers: the eager engine (stepping a coroutine by hand), which
handlers a server takes, the bounded queue, and how each handler call is
counted."""

import contextlib
import functools
import logging
import socket
import sys

import pytest
import trio
import trio.testing

import trioudp
from trioudp import (
    Overflow,
    Responder,
    serve_udp,
)
from trioudp import _handlers as eager
from trioudp._handlers import Handlers
from trioudp.testing import VirtualNetwork

from .conftest import open_fds
from .helpers import (
    accounted,
    assert_port_free,
    client_socket,
    echo,
    free_port,
    start,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


async def test_a_coroutine_that_never_suspends_finishes_inline():
    seen = []

    async def quick():
        seen.append(trio.lowlevel.current_task())

    assert eager.start(quick()) is None
    assert seen == [trio.lowlevel.current_task()]


async def test_errors_before_suspending_propagate():
    async def broken():
        raise ValueError("early")

    with pytest.raises(ValueError, match="early"):
        eager.start(broken())


async def test_a_suspended_coroutine_finishes_in_the_same_task():
    tasks = []

    async def slow():
        tasks.append(trio.lowlevel.current_task())
        await trio.lowlevel.checkpoint()
        tasks.append(trio.lowlevel.current_task())
        return None

    suspended = eager.start(slow())
    assert suspended is not None
    await eager.finish(suspended)
    assert tasks == [trio.lowlevel.current_task()] * 2


async def test_cancellation_and_errors_pass_through_finish(autojump_clock):
    async def sleeper():
        with trio.CancelScope() as inner:
            await trio.sleep(10)
        return inner

    with trio.move_on_after(1) as outer:
        suspended = eager.start(sleeper())
        await eager.finish(suspended)
    assert outer.cancelled_caught
    assert trio.current_time() == 1

    async def fails_later():
        await trio.lowlevel.checkpoint()
        raise KeyError("late")

    with pytest.raises(KeyError, match="late"):
        await eager.finish(eager.start(fails_later()))


async def test_cancel_scopes_opened_before_suspending_stay_consistent(autojump_clock):
    async def scoped():
        with trio.move_on_after(0.5) as scope:
            await trio.sleep(5)
        assert scope.cancelled_caught

    await eager.finish(eager.start(scoped()))
    assert trio.current_time() == 0.5


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
    server = await start(nursery, handler, port=53)
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
     functools.partial(plain), "not a function"],
    ids=["function", "lambda", "plain __call__", "class", "builtin",
         "async generator", "partial", "not callable"],
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


async def test_handler_errors_are_logged_counted_and_survived(
    virtual_network, nursery, caplog
):
    async def fragile(datagram):
        if datagram.data == b"boom":
            raise ValueError("bad request")
        await datagram.reply(b"ok")

    server = await start(nursery, fragile)
    async with trioudp.open_udp_client("127.0.0.1", server.port, attempts=1) as client:
        await client.send(b"boom")
        assert (await client.request(b"fine")).data == b"ok"
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats.handler_errors == 1
    assert server.stats.handled == 1
    [record] = [
        r for r in caplog.records if r.name == "trioudp" and r.levelno == logging.ERROR
    ]
    assert "failed on a datagram" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


@pytest.mark.parametrize("fast", [True, False], ids=["real socket", "virtual"])
async def test_handler_errors_are_logged_damped_per_exception_type(
    fast, nursery, caplog
):
    """A handler failing on every datagram of a flood logs the first failure
    of each exception type with its traceback, then one line at 2, 4, 8, ...
    failures of that type; every failure is counted."""

    def fragile(datagram):
        if datagram.data.startswith(b"key"):
            raise KeyError(datagram.data)
        raise ValueError("bad request")

    payloads = [b"%d" % i for i in range(100)] + [b"key1", b"key2", b"key3"]
    with contextlib.ExitStack() as stack:
        if not fast:
            stack.enter_context(VirtualNetwork(seed=1).install())
        server = await start(nursery, Responder(fragile))
        async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
            for payload in payloads:
                await client.send_to(payload, ("127.0.0.1", server.port))
            await trio.testing.wait_all_tasks_blocked()
    records = [r for r in caplog.records if r.name == "trioudp"]
    assert all(r.levelno == logging.ERROR for r in records)
    values = [r for r in records if "ValueError" in r.getMessage()]
    keys = [r for r in records if "KeyError" in r.getMessage()]
    assert len(values) + len(keys) == len(records)
    assert [r.exc_info is not None for r in values] == [True] + [False] * 6
    assert "failed on a datagram from" in values[0].getMessage()
    counts = [int(r.getMessage().split(" failed ")[1].split()[0]) for r in values[1:]]
    assert counts == [2, 4, 8, 16, 32, 64]
    assert "'bad request'" in values[1].getMessage()
    assert [r.exc_info is not None for r in keys] == [True, False]
    assert keys[0].exc_info[0] is KeyError
    assert server.stats.handler_errors == 103


def test_failures_of_many_exception_types_share_one_count_past_the_limit(caplog):
    handlers = Handlers(
        echo, max_in_flight=1, queue_size=0, overflow=Overflow.DROP_NEWEST,
        handler_timeout=None,
    )  # fmt: skip
    datagram = trioudp.Datagram(
        data=b"", peer=("127.0.0.1", 1), local=("127.0.0.1", 2), received_at=0.0
    )
    kinds = [
        type(f"Error{i}", (Exception,), {}) for i in range(eager._LOGGED_KINDS + 8)
    ]
    for kind in kinds:
        try:
            raise kind
        except Exception:
            handlers.failed(datagram)
    assert handlers.handler_errors == len(kinds)
    assert len(handlers._failures) == eager._LOGGED_KINDS + 1
    # One traceback per type it keeps, then the rest counted as one:
    # the first of them with its traceback, then at 2, 4 and 8.
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == eager._LOGGED_KINDS + 1
    assert "failed 8 times with other exceptions" in caplog.records[-1].getMessage()


async def test_handler_timeout_is_counted(virtual_network, autojump_clock, nursery):
    async def forever(datagram):
        await trio.sleep_forever()

    server = await start(nursery, forever, handler_timeout=0.5)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        await client.send_to(b"x", ("127.0.0.1", server.port))
    await trio.sleep(1)
    assert server.stats.handler_timeouts == 1
    assert accounted(server.stats) == 1


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


async def test_datagrams_beyond_max_in_flight_are_dropped_and_counted(
    virtual_network, nursery
):
    gate = trio.Event()
    seen = []

    async def slow(datagram):
        seen.append(datagram.data)
        await gate.wait()

    server = await start(nursery, slow, max_in_flight=2, queue_size=0)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        for i in range(5):
            await client.send_to(b"%d" % i, ("127.0.0.1", server.port))
        await trio.testing.wait_all_tasks_blocked()
        stats = server.stats
        assert (stats.received, stats.in_flight, stats.dropped_queue_full) == (5, 2, 3)
        assert stats.tasks == 3
        assert accounted(stats) == stats.received
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert seen == [b"0", b"1"]
    assert server.stats.handled == 2


@pytest.mark.parametrize(
    ("overflow", "handled", "dropped"),
    [
        (Overflow.DROP_NEWEST, [b"0", b"1", b"2"], 2),
        ("drop_oldest", [b"0", b"3", b"4"], 2),
    ],
)
async def test_overflow_policies_drop_exactly_the_expected_datagrams(
    virtual_network, nursery, overflow, handled, dropped
):
    gate = trio.Event()
    seen = []

    async def slow(datagram):
        await gate.wait()
        seen.append(datagram.data)

    server = await start(
        nursery, slow, max_in_flight=1, queue_size=2, overflow=overflow
    )
    async with trioudp.open_udp_socket("127.0.0.1", 0) as client:
        for i in range(5):
            await client.send_to(b"%d" % i, ("127.0.0.1", server.port))
            await trio.testing.wait_all_tasks_blocked()
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert seen == handled
    assert server.stats.dropped_queue_full == dropped
    assert accounted(server.stats) == 5


async def test_flood_with_a_slow_handler_is_bounded_and_accounted(
    virtual_network, autojump_clock, nursery
):
    async def slow(datagram):
        await trio.sleep(1)
        await datagram.reply(b"done")

    server = await start(nursery, slow, port=53, max_in_flight=8, queue_size=16)
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
