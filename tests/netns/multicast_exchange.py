"""Multicast and broadcast exchanges, run inside a fresh network namespace.

``unshare -n python tests/netns/multicast_exchange.py`` sets up the
namespace's own network (loopback, and a veth pair ``v0``/``v1`` with
10.7.0.1/24 and 10.7.0.2/24 and IPv6 link-local addresses), runs every
scenario with trioudp's API and its CLI, and prints one JSON object of
results. It refuses to run outside a namespace it may configure (it checks
that only ``lo`` exists at start). Nothing leaves the namespace.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import subprocess
import sys

import trio

import trioudp

GROUP4 = "239.1.2.3"
GROUP6 = "ff15::7"
WAIT = 10  # seconds any one step may take
HOPS = {
    "ipv4": (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL),
    "ipv6": (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS),
}


def setup() -> None:
    listing = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    links = [line.split(":")[1].strip() for line in listing.splitlines()]
    if links != ["lo"]:
        sys.exit(
            f"refusing to configure a network that has {links}: run me in unshare -n"
        )
    # No duplicate address detection: link-local addresses usable at once.
    # v0 and v1 are both this namespace's: let v1 accept datagrams from v0's
    # (local) address instead of dropping them as martians.
    for setting, value in (
        ("ipv6/conf/all/accept_dad", "0"),
        ("ipv6/conf/default/accept_dad", "0"),
        ("ipv4/conf/all/accept_local", "1"),
        ("ipv4/conf/default/accept_local", "1"),
        ("ipv4/conf/all/rp_filter", "0"),
        ("ipv4/conf/default/rp_filter", "0"),
    ):
        with open(f"/proc/sys/net/{setting}", "w") as knob:
            knob.write(value)
    for command in (
        "ip link set lo up",
        "ip link add v0 type veth peer name v1",
        "ip addr add 10.7.0.1/24 dev v0",
        "ip addr add 10.7.0.2/24 dev v1",
        "ip link set v0 up",
        "ip link set v1 up",
    ):
        subprocess.run(command.split(), check=True)


async def link_local_ready() -> None:
    """Wait until both veth ends have their IPv6 link-local address."""
    with trio.fail_after(WAIT):
        while True:
            shown = await trio.run_process(
                ["ip", "-6", "-o", "addr", "show", "scope", "link"],
                capture_stdout=True,
            )
            out = shown.stdout.decode()
            if "v0" in out and "v1" in out and "tentative" not in out:
                return
            await trio.sleep(0.05)


async def first_of(sock: trioudp.UDPSocket) -> bytes:
    with trio.fail_after(WAIT):
        return (await sock.receive()).data


async def multicast(family_name: str, group: str, wildcard: str) -> dict[str, object]:
    """Join on v1, send from v0; then leaving and the loopback flag, each
    shown by ordering: a datagram that must not arrive is sent before
    one that must, and the one that must is the first received.

    Each member has a port of its own: Linux delivers a group's datagrams
    that arrive on any interface where the group is joined to every socket
    bound to the port (``IP_MULTICAST_ALL``), so ports keep them apart.
    """
    result: dict[str, object] = {}
    async with (
        trioudp.open_udp_socket(
            wildcard, 0, multicast=trioudp.Multicast(groups=[group], interface="v1")
        ) as far,
        trioudp.open_udp_socket(wildcard, 0) as near,
        trioudp.open_udp_socket(
            wildcard,
            0,
            multicast=trioudp.Multicast(interface="v0", ttl=1, loopback=True),
        ) as sender,
    ):
        port, near_port = far.local_address[1], near.local_address[1]
        result["groups"] = [list(g) for g in far.groups]
        await sender.send_to(b"hello " + family_name.encode(), (group, port))
        with trio.fail_after(WAIT):
            datagram = await far.receive()
        result["received"] = datagram.data.decode()
        result["from"] = datagram.peer[0]
        # The member answers by unicast; the sender hears it.
        await datagram.reply(b"ack")
        result["reply"] = (await first_of(sender)).decode()

        # The hop limit is the socket option the kernel reads back.
        sender.set_multicast_ttl(0)
        ttl_zero = sender.trio_socket.getsockopt(*HOPS[family_name])
        sender.set_multicast_ttl(1)
        result["ttl_option"] = [
            ttl_zero,
            sender.trio_socket.getsockopt(*HOPS[family_name]),
        ]

        # Leaving: nothing arrives until the group is joined again.
        far.leave_group(group, "v1")
        result["groups_after_leave"] = [list(g) for g in far.groups]
        await sender.send_to(b"after leaving", (group, port))
        far.join_group(group, "v1")
        await sender.send_to(b"joined again", (group, port))
        result["rejoined"] = (await first_of(far)).decode()
        far.leave_group(group, "v1")

        # The loopback flag, for a member on the sending interface (v0)
        # (no member is left on v1, where the datagrams also go).
        near.join_group(group, "v0")
        sender.set_multicast_loopback(False)
        await sender.send_to(b"loopback off", (group, near_port))
        sender.set_multicast_loopback(True)
        await sender.send_to(b"loopback on", (group, near_port))
        result["loopback"] = (await first_of(near)).decode()
    return result


async def served_multicast(group: str) -> str:
    """serve_udp(multicast=...) without a host answers a group datagram."""

    async def handler(datagram: trioudp.Datagram) -> None:
        await datagram.reply(b"served " + datagram.data)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trioudp.serve_udp(
                handler,
                0,
                multicast=trioudp.Multicast(groups=[group], interface="v1"),
                task_status=task_status,
            )
        )
        wildcard = "::" if ":" in group else "0.0.0.0"
        async with trioudp.open_udp_socket(
            wildcard,
            0,
            family=0,
            multicast=trioudp.Multicast(interface="v0"),
            dual_stack=False,
        ) as sender:
            await sender.send_to(b"ping", (group, server.port))
            reply = (await first_of(sender)).decode()
        nursery.cancel_scope.cancel()
    return reply


async def read_line(process: trio.Process, buffer: bytearray) -> str:
    """One line of ``process``'s stdout (within WAIT seconds)."""
    assert process.stdout is not None
    with trio.fail_after(WAIT):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise EOFError(bytes(buffer).decode())
            buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


async def cli_listen(group: str) -> str:
    """``trioudp listen --group`` prints what a sender sends to the group."""
    command = [
        sys.executable,
        "-m",
        "trioudp",
        "listen",
        "--group",
        group,
        "--port",
        "0",
    ]
    command += ["--interface", "v1"]
    buffer = bytearray()
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process, command, stdout=subprocess.PIPE, check=False
            )
        )
        banner = await read_line(process, buffer)
        port = int(re.search(r"port (\d+)$", banner).group(1))  # type: ignore[union-attr]
        wildcard = "::" if ":" in group else "0.0.0.0"
        async with trioudp.open_udp_socket(
            wildcard, 0, multicast=trioudp.Multicast(interface="v0"), dual_stack=False
        ) as sender:
            await sender.send_to(b"to the group", (group, port))
        line = await read_line(process, buffer)
        process.terminate()
    return line


async def cli_broadcast() -> dict[str, object]:
    """``trioudp send --broadcast`` to 127.255.255.255 reaches an echo that
    answers broadcasts (``broadcast=True``), and is not answered by one that
    does not (the default); without --broadcast the kernel refuses the send."""

    def echo(datagram: trioudp.Datagram) -> bytes:
        return datagram.data

    async with trio.open_nursery() as nursery:
        servers = [
            await nursery.start(
                functools.partial(
                    trioudp.serve_udp,
                    trioudp.Responder(echo),
                    0,
                    host="0.0.0.0",
                    broadcast=broadcast,
                )
            )
            for broadcast in (True, False)
        ]
        runs = []
        for server, flags in (
            (servers[0], ["--broadcast"]),
            (servers[1], ["--broadcast"]),
            (servers[0], ["--no-exit"]),
        ):
            send = [
                sys.executable,
                "-m",
                "trioudp",
                "send",
                "--host",
                "127.255.255.255",
            ]
            send += ["--port", str(server.port), "--timeout", "1", *flags]
            with trio.fail_after(WAIT):
                runs.append(
                    await trio.run_process(
                        [*send, "anyone there?"],
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
                )
        stats = [server.stats for server in servers]
        port = servers[0].port
        nursery.cancel_scope.cancel()
    allowed, unanswered, refused = runs
    return {
        "broadcast": [allowed.returncode, allowed.stdout.decode(), port],
        "unanswered": [unanswered.returncode, stats[1].dropped_broadcast],
        "without": [refused.returncode, refused.stderr.decode()],
    }


async def main() -> None:
    setup()
    await link_local_ready()
    results = {
        "ipv4": await multicast("ipv4", GROUP4, "0.0.0.0"),
        "ipv6": await multicast("ipv6", GROUP6, "::"),
        "served_ipv4": await served_multicast(GROUP4),
        "served_ipv6": await served_multicast(GROUP6),
        "listen_ipv4": await cli_listen(GROUP4),
        "listen_ipv6": await cli_listen(GROUP6),
        **await cli_broadcast(),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    trio.run(main)
