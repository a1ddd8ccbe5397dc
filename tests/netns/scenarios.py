"""Fault scenarios on real sockets, each run inside a fresh network namespace.

Run as ``unshare -n python tests/netns/scenarios.py NAME [ARGS...]`` (the
``netns`` fixture in ``tests/conftest.py`` does): the script sets up the
namespace's links (loopback, veth pairs, ``tc`` shaping), runs one scenario
and prints one JSON object on its last line of stdout. Every address used is
inside the namespace; nothing leaves it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import select
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

import trioudp

Scenario = Callable[..., Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {}

#: The namespace-local network of the veth pair: v0 (the server's side) and
#: v1 (a neighbour's, from which frames are injected).
V0_IPV4, V0_IPV6 = "192.0.2.1", "2001:db8::1"


def scenario(function: Scenario) -> Scenario:
    SCENARIOS[function.__name__] = function
    return function


def sh(*commands: str) -> None:
    for command in commands:
        subprocess.run(command.split(), check=True)


def add_veth() -> None:
    """v0 <-> v1, v0 with documentation addresses; IPv6 without DAD delay."""
    sh(
        "ip link add v0 type veth peer name v1",
        f"ip addr add {V0_IPV4}/24 dev v0",
        f"ip -6 addr add {V0_IPV6}/64 dev v0 nodad",
        "ip link set v0 up",
        "ip link set v1 up",
    )


def mac(interface: str) -> bytes:
    shown = subprocess.run(
        ["ip", "-j", "link", "show", interface],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return bytes.fromhex(json.loads(shown)[0]["address"].replace(":", ""))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _udp(pseudo_header: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    checksum = _checksum(pseudo_header + header + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, checksum) + payload


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp = _udp(
        s + d + struct.pack("!BBH", 0, 17, 8 + len(payload)), sport, dport, payload
    )
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, s, d)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def ipv6_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s = socket.inet_pton(socket.AF_INET6, src)
    d = socket.inet_pton(socket.AF_INET6, dst)
    udp = _udp(
        s + d + struct.pack("!I3xB", 8 + len(payload), 17), sport, dport, payload
    )
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, s, d) + udp


class Neighbour:
    """Injects hand-built frames into v1, so they arrive on v0 from outside:
    over a real, non-loopback interface, with any source address."""

    def __init__(self) -> None:
        self._raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._raw.bind(("v1", 0))
        self._ethernet = mac("v0") + mac("v1")

    def send(self, packet: bytes) -> None:
        ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
        self._raw.send(self._ethernet + struct.pack("!H", ethertype) + packet)


def drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return count
        count += 1


def recording_echo() -> tuple[list[str], Callable[[trioudp.Datagram], Awaitable[None]]]:
    """An echo handler, and the list of the texts it answered."""
    handled: list[str] = []

    async def echo(datagram: trioudp.Datagram) -> None:
        handled.append(datagram.data.decode())
        await datagram.reply(datagram.data)

    return handled, echo


class WarningCount(logging.Handler):
    """Counts the warnings (and worse) logged on the ``trioudp`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.messages: list[str] = []
        trioudp_logger = logging.getLogger("trioudp")
        trioudp_logger.addHandler(self)
        trioudp_logger.setLevel(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.messages.append(record.getMessage()[:200])


def stats_of(server: trioudp.UDPServer) -> dict[str, Any]:
    stats = server.stats
    return attrs.asdict(stats) | {"accounted": stats.accounted}


@scenario
async def full_send_buffer(form: str = "twice", rounds: str = "40") -> dict[str, Any]:
    """An echo over a loopback shaped to 20 Mbit/s, to a mix of 100 B and
    3000 B datagrams: its send buffer fills. ``form`` is the handler: an
    async one that replies ``twice`` or ``five`` times, or a ``responder``.
    The result counts the warnings logged on the ``trioudp`` logger."""
    sh(
        "ip link set lo up",
        "tc qdisc add dev lo root tbf rate 20mbit burst 32kb latency 300ms",
    )
    warnings = WarningCount()

    async def twice(datagram: trioudp.Datagram) -> None:
        await datagram.reply(datagram.data)
        await datagram.reply(datagram.data)

    async def five(datagram: trioudp.Datagram) -> None:
        for _ in range(5):
            await datagram.reply(datagram.data)

    def echo(datagram: trioudp.Datagram) -> bytes:
        return datagram.data

    handler = {"twice": twice, "five": five}.get(form) or trioudp.Responder(echo)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    client.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    client.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE
    received = 0
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trioudp.serve_udp(
                handler, 0, host="127.0.0.1", task_status=task_status
            )
        )
        target = ("127.0.0.1", server.port)
        sent = 0
        for _ in range(int(rounds)):
            for i in range(40):
                client.sendto(b"x" * (3000 if i % 2 else 100), target)
                sent += 1
            await trio.sleep(0.02)  # pacing only: the link's speed is real
            received += drain(client)
        with trio.move_on_after(2):
            while received < 2 * sent:
                await trio.lowlevel.wait_readable(client)
                received += drain(client)
        result = {"sent": sent, "received": received, "stats": stats_of(server)}
        await server.shutdown(grace=1)
    return result | {"warnings": warnings.count, "messages": warnings.messages}


@scenario
async def closed_while_waiting_for_room() -> dict[str, Any]:
    """A Responder echo over the shaped loopback of ``full_send_buffer``,
    flooded with 3000 B datagrams until the receiver waits for room to send
    the replies it holds; then its socket is closed under it."""
    sh(
        "ip link set lo up",
        "tc qdisc add dev lo root tbf rate 20mbit burst 32kb latency 300ms",
    )
    answers = 0

    def echo(datagram: trioudp.Datagram) -> bytes:
        nonlocal answers
        answers += 1
        return datagram.data

    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    client.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE
    raised = None
    waited = False
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: trioudp.serve_udp(
                    trioudp.Responder(echo),
                    0,
                    host="127.0.0.1",
                    task_status=task_status,
                )
            )
            sock = server.sockets[0]
            with trio.move_on_after(10):
                while not sock._outbox.room_watched:
                    for _ in range(20):
                        client.sendto(b"x" * 3000, ("127.0.0.1", server.port))
                    await trio.sleep(0.002)
            waited = sock._outbox.room_watched
            sock.close()
            with trio.fail_after(5):
                await server._stopped.wait()
    except Exception as exc:  # what the server raised is the result
        raised = repr(exc)
    return {
        "waited_for_room": waited,
        "raised": raised,
        "answers": answers,
        "stats": stats_of(server),
    }


@scenario
async def closed_while_a_batch_waits_for_room() -> dict[str, Any]:
    """An async echo of 1500 B replies over the shaped loopback, where every
    tenth request makes its handler wait a little (no reply): the batch's
    replies held until then meet a full send buffer and go to a task of
    their own (``_send_leftover``), which waits for room; then the socket is
    closed under it."""
    sh(
        "ip link set lo up",
        "tc qdisc add dev lo root tbf rate 20mbit burst 32kb latency 300ms",
    )
    replies = 0

    async def echo(datagram: trioudp.Datagram) -> None:
        nonlocal replies
        if datagram.data == b"wait":
            await trio.sleep(0.001)
            return
        await datagram.reply(b"r" * 1500)
        replies += 1

    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    client.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE
    raised = None
    leftovers = 0
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: trioudp.serve_udp(
                    echo, 0, host="127.0.0.1", task_status=task_status
                )
            )
            send_leftover = server._intake._send_leftover

            async def counted(held: Any) -> None:
                nonlocal leftovers
                leftovers += 1
                await send_leftover(held)

            server._intake._send_leftover = counted  # type: ignore[method-assign]
            with trio.move_on_after(10):
                while not leftovers:
                    for i in range(30):
                        payload = b"wait" if i % 10 == 9 else b"x"
                        with contextlib.suppress(BlockingIOError):
                            client.sendto(payload, ("127.0.0.1", server.port))
                    await trio.sleep(0.001)
            server.sockets[0].close()
            with trio.fail_after(5):
                await server._stopped.wait()
    except Exception as exc:  # what the server raised is the result
        raised = repr(exc)
    return {
        "leftovers": leftovers,
        "raised": raised,
        "replies": replies,
        "stats": stats_of(server),
    }


@scenario
async def forged_sources(pktinfo: str = "yes") -> dict[str, Any]:
    """An echo server on all addresses (IPv4 and IPv6) of a host with a real interface (v0); a
    neighbour sends datagrams whose sources are forged: unspecified
    addresses, and loopback (IPv4-mapped) arriving over v0. Victim services
    listen on the host's loopback at the port the forged sources name.
    ``pktinfo="no"`` serves as on a system without IP_PKTINFO."""
    if pktinfo == "no":
        from trioudp import _screening

        _screening._IP_PKTINFO = _screening._IPV6_RECVPKTINFO = None
    sh("ip link set lo up")
    add_veth()
    await trio.sleep(0.2)  # let the links come up

    handled, echo = recording_echo()

    victims = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        victim = socket.socket(family, socket.SOCK_DGRAM)
        victim.bind((host, 4000))
        victim.setblocking(False)
        victims.append(victim)
    neighbour = Neighbour()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trioudp.serve_udp(echo, 0, task_status=task_status)
        )
        port = server.port
        neighbour.send(ipv6_udp("::ffff:127.0.0.1", V0_IPV6, 4000, port, b"exit"))
        neighbour.send(ipv6_udp("::", V0_IPV6, 4000, port, b"unspecified"))
        neighbour.send(ipv6_udp("::1", V0_IPV6, 4000, port, b"loopback6"))
        neighbour.send(ipv4_udp("0.0.0.0", "255.255.255.255", 4000, port, b"bcast"))
        neighbour.send(ipv4_udp("0.0.0.0", V0_IPV4, 4000, port, b"unspecified4"))
        # A genuine neighbour: handled.
        neighbour.send(ipv6_udp("2001:db8::2", V0_IPV6, 4000, port, b"hello"))
        # A genuine loopback client: handled (its source really is loopback).
        local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        local.sendto(b"local", ("127.0.0.1", port))
        await trio.sleep(0.5)  # a real link: let every datagram and reply land
        result = {
            "stats": stats_of(server),
            "victims_received": sum(drain(victim) for victim in victims),
            "handled": sorted(handled),
        }
        await server.shutdown(grace=1)
    return result


@scenario
async def forged_mapped_sources(host: str = "::") -> dict[str, Any]:
    """An echo server (``host``: ``::`` is one dual-stack socket, ``none``
    an IPv4 and an IPv6-only one) on a host with routes out of v0. A
    neighbour sends IPv6 packets whose sources are IPv4-mapped: this host's
    own IPv4 address, a multicast group, the limited and the subnet
    broadcast. A reply would go out as IPv4 to that address: to this host's
    own services (a victim listens on 0.0.0.0 at the forged port), or onto
    the link. A real IPv4 neighbour (192.0.2.2) and a loopback client are
    answered; what leaves v0 as IPv4 is recorded at v1."""
    sh("ip link set lo up")
    add_veth()
    sh(
        "ip route add default dev v0",
        f"ip neigh add 192.0.2.2 lladdr {mac('v1').hex(':')} dev v0",
    )
    await trio.sleep(0.2)

    handled, echo = recording_echo()

    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("0.0.0.0", 4000))
    victim.setblocking(False)
    wire = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    wire.bind(("v1", 0))
    wire.setblocking(False)
    neighbour = Neighbour()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trioudp.serve_udp(
                echo,
                0,
                host=None if host == "none" else host,
                task_status=task_status,
            )
        )
        port = server.port
        for name, source in (
            ("own", "::ffff:192.0.2.1"),
            ("multicast", "::ffff:224.0.0.1"),
            ("broadcast", "::ffff:255.255.255.255"),
            ("subnet-broadcast", "::ffff:192.0.2.255"),
        ):
            neighbour.send(ipv6_udp(source, V0_IPV6, 4000, port, name.encode()))
        # Genuine IPv4 peers: a neighbour over v0, and a loopback client.
        neighbour.send(ipv4_udp("192.0.2.2", V0_IPV4, 4000, port, b"neighbour4"))
        local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        local.sendto(b"local4", ("127.0.0.1", port))
        await trio.sleep(0.5)  # a real link: let every datagram and reply land
        out = []
        while True:
            try:
                frame = wire.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if frame[23] == 17:  # UDP
                out.append(socket.inet_ntoa(frame[30:34]))
        result = {
            "stats": stats_of(server),
            "victim_received": drain(victim),
            "ipv4_out_to": sorted(out),
            "handled": sorted(handled),
        }
        await server.shutdown(grace=1)
    return result


@scenario
async def forged_own_ipv6_source() -> dict[str, Any]:
    """A neighbour sends an IPv6 packet whose source is this host's own
    address on v0 (2001:db8::1): Linux accepts it (IPv4 would drop it as
    martian), and the reply goes to this host's own services (a victim on
    [::]:4000). A real client on this host, sending from that same address,
    must still be answered."""
    sh("ip link set lo up")
    add_veth()
    await trio.sleep(0.2)

    handled, echo = recording_echo()

    victim = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    victim.bind(("::", 4000))
    victim.setblocking(False)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trioudp.serve_udp(
                echo, 0, host="::", task_status=task_status
            )
        )
        Neighbour().send(ipv6_udp(V0_IPV6, V0_IPV6, 4000, server.port, b"forged"))
        local = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        local.bind((V0_IPV6, 0))
        local.setblocking(False)
        local.sendto(b"local", (V0_IPV6, server.port))
        await trio.sleep(0.5)  # a real link: let every datagram and reply land
        result = {
            "stats": stats_of(server),
            "victim_received": drain(victim),
            "local_received": drain(local),
            "handled": sorted(handled),
        }
        await server.shutdown(grace=1)
    return result


@scenario
async def forged_sources_with_timestamps() -> dict[str, Any]:
    """``forged_sources``' loopback and IPv4-mapped forgeries, against a
    dual-stack socket of the user's own that also asks for receive
    timestamps (``SO_TIMESTAMPNS``): another control message that comes
    before the interface's in each datagram."""
    sh("ip link set lo up")
    add_veth()
    await trio.sleep(0.2)

    handled, echo = recording_echo()

    sockets = await trioudp.open_udp_sockets(0, "::")
    # SO_TIMESTAMPNS (35 on Linux; Python names only SO_TIMESTAMP)
    sockets[0].trio_socket.setsockopt(socket.SOL_SOCKET, 35, 1)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trioudp.serve_udp_sockets, echo, sockets)
        port = server.port
        neighbour = Neighbour()
        neighbour.send(ipv6_udp("::ffff:127.0.0.1", V0_IPV6, 4000, port, b"exit"))
        neighbour.send(ipv6_udp("::ffff:192.0.2.1", V0_IPV6, 4000, port, b"own"))
        neighbour.send(ipv6_udp("2001:db8::2", V0_IPV6, 4000, port, b"hello"))
        local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        local.sendto(b"local", ("127.0.0.1", port))
        await trio.sleep(0.5)  # a real link: let every datagram and reply land
        result = {"stats": stats_of(server), "handled": sorted(handled)}
        await server.shutdown(grace=1)
    return result


@scenario
async def unroutable_peers(count: str = "40") -> dict[str, Any]:
    """Datagrams arrive over v0 from a network this host has no route back
    to: every reply fails at once with ENETUNREACH, in batches."""
    sh("ip link set lo up")
    add_veth()
    await trio.sleep(0.2)

    async def echo(datagram: trioudp.Datagram) -> None:
        await datagram.reply(datagram.data)

    neighbour = Neighbour()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trioudp.serve_udp(
                echo, 0, host="0.0.0.0", task_status=task_status
            )
        )
        for i in range(int(count)):
            neighbour.send(
                ipv4_udp("198.51.100.7", V0_IPV4, 4000 + i, server.port, b"x")
            )
        await trio.sleep(0.5)  # a real link: let every datagram land
        result = {"stats": stats_of(server)}
        await server.shutdown(grace=1)
    return result


@scenario
async def forged_exit_to_cli() -> dict[str, Any]:
    """``trioudp serve --host ::`` stops on ``exit`` from a loopback peer; a
    neighbour forges that peer (::ffff:127.0.0.1 over v0)."""
    sh("ip link set lo up")
    add_veth()
    await trio.sleep(0.2)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::", 0))
        port = probe.getsockname()[1]
    client = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    await client.bind(("::1", 0))

    async def answered() -> bool:
        await client.sendto(b"Hello, server!", ("::1", port))
        with trio.move_on_after(0.2):
            return bool(await client.recv(100))
        return False

    async with trio.open_nursery() as nursery:
        command = [sys.executable, "-m", "trioudp", "serve", "--host", "::"]
        server = await nursery.start(
            functools.partial(
                trio.run_process,
                [*command, "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        )
        with trio.fail_after(10):
            while not await answered():
                pass
        neighbour = Neighbour()
        for _ in range(3):
            neighbour.send(ipv6_udp("::ffff:127.0.0.1", V0_IPV6, 4000, port, b"exit"))
        await trio.sleep(0.5)  # a real link: let the forged datagrams land
        alive = server.returncode is None and await answered()
        await client.sendto(b"exit", ("::1", port))
        with trio.fail_after(10):
            await server.wait()
    return {"alive_after_forged_exit": alive, "returncode": server.returncode}


class _TaskSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


@scenario
async def recverr_send_wait() -> dict[str, Any]:
    """A send that waits for room in a full send buffer, on a socket with
    ``IP_RECVERR`` and an ICMP error queued: the queue keeps the socket
    polling ready (EPOLLERR), so a wait for room that never drained it woke
    at once, again and again, until the shaped link made room."""
    sh(
        "ip link set lo up",
        "tc qdisc add dev lo root tbf rate 200kbit burst 4kb latency 2s",
    )
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # never read: it only takes the datagrams
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        fast = sock._fast
        assert fast is not None
        fast.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
        fast.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        fast.sendto(b"?", closed)
        with trio.fail_after(5):  # the ICMP error makes it poll ready
            await trio.lowlevel.wait_readable(fast)
        assert _polls_error(fast)
        # Sends would fail on the pending error (sk_err): clear it; the copy
        # in the error queue stays, and keeps the socket polling ready.
        fast.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        filled = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                fast.sendto(b"x" * 1400, sink.getsockname())
                filled += 1
        steps = _TaskSteps()
        trio.lowlevel.add_instrument(steps)
        started = trio.current_time()
        with trio.fail_after(10):
            await sock.send_to(b"x" * 1400, sink.getsockname())
        waited = trio.current_time() - started
        trio.lowlevel.remove_instrument(steps)
        return {
            "filled": filled,
            "waited": waited,
            "steps": steps.steps,
            "receive_errors": sock.stats.receive_errors,
        }


def _polls_error(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, 0)
    return any(events & select.POLLERR for _, events in poller.poll(0))


async def _main(name: str, *args: str) -> None:
    result = await SCENARIOS[name](*args)
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    trio.run(_main, *sys.argv[1:])
