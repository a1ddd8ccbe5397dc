"""A bridged LAN of network namespaces, for the scenarios in ``scenarios.py``.

The namespace the scenario runs in (``unshare -n``) is the switch: it holds
the bridge ``br0``, one port per station, and the attacker's port ``atk0``,
whose far end ``atk1`` injects hand-built frames with any source. Each
station is a namespace of its own (a ``sleep`` process made by
``unshare -n``), with ``lo`` and ``eth0`` on the bridge holding
``10.98.0.N/24`` and ``fd98::N/64``, and a default route through a router
that does not exist (``10.98.0.254``, ``fd98::fe``, resolved to ``atk1``, so
what a station sends off-link shows at the attacker's port). Programs run in a
station through ``nsenter``. A sniffer in the switch counts every UDP frame a
station sends. Nothing leaves the switch's namespace, which the scenario made.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

SUBNET4, SUBNET6 = "10.98.0", "fd98::"
BROADCAST4 = f"{SUBNET4}.255"
ROUTER4, ROUTER6 = f"{SUBNET4}.254", f"{SUBNET6}fe"
STATION = Path(__file__).with_name("station.py")
_PACKET_OUTGOING = 4
_ETH_P_ALL = 0x0003


def sh(*commands: str) -> None:
    for command in commands:
        subprocess.run(command.split(), check=True)


def write_sysctl(name: str, value: str, prefix: tuple[str, ...] = ()) -> None:
    """Set ``net.<name>`` (in a station when ``prefix`` is its nsenter)."""
    path = "/proc/sys/net/" + name.replace(".", "/")
    subprocess.run([*prefix, "sh", "-c", f"echo {value} > {path}"], check=True)


def mac_of(interface: str, prefix: tuple[str, ...] = ()) -> bytes:
    shown = subprocess.run(
        [*prefix, "ip", "-j", "link", "show", interface],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return bytes.fromhex(json.loads(shown)[0]["address"].replace(":", ""))


@attrs.define
class Station:
    """One host of the LAN: a namespace of its own."""

    number: int
    holder: subprocess.Popen[bytes]
    mac: bytes = b""

    @property
    def ipv4(self) -> str:
        return f"{SUBNET4}.{self.number}"

    @property
    def ipv6(self) -> str:
        return f"{SUBNET6}{self.number}"

    @property
    def enter(self) -> tuple[str, ...]:
        return ("nsenter", "-t", str(self.holder.pid), "-n")

    def run(self, *command: str) -> None:
        subprocess.run([*self.enter, *command], check=True)

    def sysctl(self, name: str, value: str) -> None:
        write_sysctl(name, value, self.enter)

    def start(self, *args: str, pythonpath: str | None = None) -> Program:
        """Run ``station.py`` with ``args`` here; returns once it serves."""
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        process = subprocess.Popen(
            [*self.enter, sys.executable, str(STATION), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(process.stderr.read().decode() if process.stderr else "")
        return Program(process, json.loads(line))

    def spawn(self, *command: str) -> subprocess.Popen[bytes]:
        """Run any command here, in the background."""
        return subprocess.Popen(
            [*self.enter, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@attrs.define
class Program:
    """A ``station.py`` run: what it said when it began serving."""

    process: subprocess.Popen[bytes]
    ready: dict[str, Any]

    def stop(self) -> dict[str, Any]:
        """Close its stdin (it stops) and return the JSON it printed last."""
        out, err = self.process.communicate(timeout=20)
        lines = out.decode().strip().splitlines()
        if self.process.returncode or not lines:
            raise RuntimeError(err.decode())
        result: dict[str, Any] = json.loads(lines[-1])
        return result


class Lan:
    """The switch, its stations, the attacker's port and the sniffer."""

    def __init__(self, stations: int, *, rp_filter: int = 0) -> None:
        sh(
            "ip link set lo up",
            "ip link add br0 type bridge",
            "ip link set br0 up",
            "ip link add atk0 type veth peer name atk1",
            "ip link set atk0 master br0",
            "ip link set atk0 up",
            "ip link set atk1 up",
        )
        # Only the stations' IPv6 speaks on the bridge: no router
        # advertisements or DAD from the switch's own ports.
        write_sysctl("ipv6.conf.atk1.disable_ipv6", "1")
        write_sysctl("ipv6.conf.br0.disable_ipv6", "1")
        self.attacker_mac = mac_of("atk1")
        self.stations: list[Station] = []
        for number in range(1, stations + 1):
            self.stations.append(self._add_station(number, rp_filter))
        self._raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._raw.bind(("atk1", 0))
        self._sniffer = socket.socket(
            socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL)
        )
        self._sniffer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self._sniffer.setblocking(False)
        self.sent: list[tuple[int, str, str, int, int]] = []
        self.wait_until_neighbours()

    def _add_station(self, number: int, rp_filter: int) -> Station:
        holder = subprocess.Popen(["unshare", "-n", "sleep", "600"])
        # The namespace exists once unshare has exec'd sleep.
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/exe").endswith("unshare"):
            if time.monotonic() > deadline:
                raise RuntimeError("the station's namespace did not come up")
            time.sleep(0.01)
        station = Station(number, holder)
        sh(
            f"ip link add h{number} type veth peer name eth0 netns {holder.pid}",
            f"ip link set h{number} master br0",
            f"ip link set h{number} up",
        )
        write_sysctl(f"ipv6.conf.h{number}.disable_ipv6", "1")
        for name in ("all", "default"):
            station.sysctl(f"ipv4.conf.{name}.rp_filter", str(rp_filter))
            station.sysctl(f"ipv6.conf.{name}.accept_dad", "0")
        station.run("ip", "link", "set", "lo", "up")
        station.run(
            "ip", "addr", "add", f"{station.ipv4}/24", "brd", "+", "dev", "eth0"
        )
        station.run(
            "ip", "-6", "addr", "add", f"{station.ipv6}/64", "dev", "eth0", "nodad"
        )
        station.run("ip", "link", "set", "eth0", "up")
        station.sysctl("ipv4.conf.eth0.rp_filter", str(rp_filter))
        station.run("ip", "route", "add", "default", "via", ROUTER4)
        station.run("ip", "-6", "route", "add", "default", "via", ROUTER6)
        lladdr = self.attacker_mac.hex(":")
        station.run("ip", "neigh", "add", ROUTER4, "lladdr", lladdr, "dev", "eth0")
        station.run(
            "ip", "-6", "neigh", "add", ROUTER6, "lladdr", lladdr, "dev", "eth0"
        )
        station.mac = mac_of("eth0", station.enter)
        return station

    def wait_until_neighbours(self) -> None:
        """Let every station learn every other's MAC (ARP and ND), so no
        resolution is pending when counting starts."""
        for station in self.stations:
            for other in self.stations:
                if other is not station:
                    for kind, address in (("4", other.ipv4), ("6", other.ipv6)):
                        station.run(
                            "ip", f"-{kind}", "neigh", "replace", address,
                            "lladdr", other.mac.hex(":"), "dev", "eth0",
                        )  # fmt: skip

    def close(self) -> None:
        for station in self.stations:
            station.holder.send_signal(signal.SIGTERM)
            station.holder.wait()

    # ---- the attacker -------------------------------------------------------

    def inject(self, packet: bytes, to: bytes | None = None) -> None:
        """Send an IP ``packet`` onto the bridge from the attacker's port,
        to the MAC ``to`` (the destination's group MAC when None)."""
        version = packet[0] >> 4
        if to is None:
            to = _group_mac(packet, version)
        ethertype = 0x0800 if version == 4 else 0x86DD
        self._raw.send(to + self.attacker_mac + struct.pack("!H", ethertype) + packet)

    # ---- the sniffer --------------------------------------------------------

    def reset_count(self) -> None:
        self.collect()
        self.sent.clear()

    def collect(self) -> list[tuple[int, str, str, int, int]]:
        """Every UDP datagram a station sent since the last call, as
        ``(station, source, destination, destination port, payload size)``."""
        while True:
            try:
                frame, where = self._sniffer.recvfrom(65536)
            except BlockingIOError:
                return self.sent
            interface, _, kind = where[0], where[1], where[2]
            if kind == _PACKET_OUTGOING or not interface.startswith("h"):
                continue
            parsed = _udp_of(frame[14:], struct.unpack("!H", frame[12:14])[0])
            if parsed is not None:
                self.sent.append((int(interface[1:]), *parsed))


def _group_mac(packet: bytes, version: int) -> bytes:
    if version == 4:
        destination = packet[16:20]
        if destination[0] >= 224 and destination[0] < 240:
            return b"\x01\x00\x5e" + bytes([destination[1] & 0x7F]) + destination[2:]
        return b"\xff" * 6
    return b"\x33\x33" + packet[36:40]


def _udp_of(packet: bytes, ethertype: int) -> tuple[str, str, int, int] | None:
    if ethertype == 0x0800 and packet[9] == 17:
        header = (packet[0] & 0xF) * 4
        udp = packet[header:]
        source, destination = packet[12:16], packet[16:20]
        family = socket.AF_INET
    elif ethertype == 0x86DD and packet[6] == 17:
        udp = packet[40:]
        source, destination = packet[8:24], packet[24:40]
        family = socket.AF_INET6
    else:
        return None
    port, length = struct.unpack("!2xHH", udp[:6])
    return (
        socket.inet_ntop(family, source),
        socket.inet_ntop(family, destination),
        port,
        length - 8,
    )


def settle(lan: Lan, quiet: float = 0.3, limit: float = 4.0) -> float:
    """Collect until no station has sent anything for ``quiet`` seconds, or
    ``limit`` seconds have passed; returns the seconds it took."""
    started = last = time.monotonic()
    seen = len(lan.collect())
    while time.monotonic() - last < quiet and time.monotonic() - started < limit:
        time.sleep(0.02)
        now_seen = len(lan.collect())
        if now_seen != seen:
            seen, last = now_seen, time.monotonic()
    return time.monotonic() - started
