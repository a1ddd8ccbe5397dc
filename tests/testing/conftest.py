"""The ``lan`` fixture: one host with ``lo`` and an ``eth0``, either a real
network namespace that the test creates or the virtual network; and
``two_hosts``: two such hosts joined by a link (a veth pair between two
namespaces, or two virtual hosts).

A test that takes ``lan`` runs twice. With ``lan="namespace"`` this process
does not run it: it runs the same test again in a child process inside
``unshare -n`` (a network namespace of its own, no way out), where the fixture
gives the namespace ``lo`` (index 1) and a carrier-less tap device ``eth0``
(index 2) holding 10.9.0.1/24 and fd00:9::1/64, with
a default route and IPv6 multicast routes through it. Nothing it sends can
leave the namespace. With ``lan="virtual"`` it runs here, on a VirtualNetwork
whose ``localhost`` has the same addresses.

``two_hosts="namespace"`` runs the same way, in a child inside ``unshare -n``
(host A, 10.9.0.1/24 on ``eth0``, its default route), which makes host B with
``unshare -n`` again (a process that only holds the namespace) and joins
them by a veth pair (B: 10.9.0.2/24, the same; neither has IPv6 but
``::1``). The test makes B's sockets in a
``with hosts.on_b():`` block (the thread enters B's namespace to create
them; a socket stays in the namespace it was made in). The link's MTU is
settable; ARP gives up after 0.2 s rather than 3 s.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from trioudp.testing import VirtualNetwork

from ..conftest import netns_missing, unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

_IN_NAMESPACE = "TRIOUDP_TEST_IN_NETNS"
_ROOT = Path(__file__).resolve().parents[2]
_SETUP = [
    "ip link set lo up",
    "ip link set lo multicast on",
    "ip tuntap add eth0 mode tap",
    "ip addr add 10.9.0.1/24 brd + dev eth0",
    "ip addr add fd00:9::1/64 nodad dev eth0",
    "ip link set eth0 up",
    "ip route add default dev eth0",
    "ip -6 route add ff00::/8 dev eth0 table local metric 10",
]


@attrs.frozen
class Lan:
    """What a ``lan`` test knows about its host."""

    kind: str
    net: VirtualNetwork | None
    eth4: str = "10.9.0.1"
    eth6: str = "fd00:9::1"
    broadcast: str = "10.9.0.255"
    lo_index: int = 1
    eth_index: int = 2


def _in_fresh_namespace() -> bool:
    """True only where the sole interface is a loopback that is down: the
    state of a namespace that ``unshare -n`` just made."""
    if socket.if_nameindex() != [(1, "lo")]:
        return False
    link = subprocess.run(
        ["ip", "-o", "link", "show", "lo"], capture_output=True, text=True, check=True
    ).stdout
    return "<LOOPBACK>" in link


def _runs_in_a_child_namespace(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "namespace" not in (
        callspec.params.get("lan"),
        callspec.params.get("two_hosts"),
    ):
        return False
    return not os.environ.get(_IN_NAMESPACE)  # else we are the child


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _runs_in_a_child_namespace(item):
        missing = netns_missing()
        if missing is None and not os.path.exists("/dev/net/tun"):
            missing = "needs /dev/net/tun for the namespace's eth0 (a tap device)"
        if missing is not None:
            unavailable(missing)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not _runs_in_a_child_namespace(pyfuncitem):
        return None
    child = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "0",
            "-q",
            "-p",
            "no:cacheprovider",
            "--no-header",
            pyfuncitem.nodeid,
        ],
        cwd=_ROOT,
        env={**os.environ, _IN_NAMESPACE: "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if child.returncode:
        pytest.fail(
            f"in a network namespace:\n{child.stdout[-6000:]}{child.stderr[-2000:]}",
            pytrace=False,
        )
    return True


def _configure_namespace() -> None:
    if not os.environ.get(_IN_NAMESPACE) or not _in_fresh_namespace():
        pytest.fail("the namespace side of a lan test runs only in unshare -n")
    for command in _SETUP:
        subprocess.run(command.split(), check=True)


@pytest.fixture(params=["namespace", "virtual"])
async def lan(request):
    if request.param == "namespace":
        _configure_namespace()
        yield Lan("namespace", None)
        return
    net = VirtualNetwork(seed=0)
    net.add_address(net.localhost, ["10.9.0.1/24", "fd00:9::1/64"])
    with net.install():
        yield Lan("virtual", net)


def sysctl(name, default):
    """A net.core setting of this machine (``default`` where unreadable)."""
    try:
        return int(Path(f"/proc/sys/net/core/{name}").read_text())
    except OSError:
        return default


@pytest.fixture(params=["kernel", "virtual"])
async def network(request):
    """Real loopback sockets, or a VirtualNetwork installed."""
    if request.param == "kernel":
        yield None
    else:
        # This machine's buffer limits, so that both sides cap SO_RCVBUF alike.
        net = VirtualNetwork(
            seed=0,
            rmem_max=sysctl("rmem_max", 212_992),
            wmem_max=sysctl("wmem_max", 212_992),
        )
        with net.install():
            yield net


async def udp(family=socket.AF_INET, host=None):
    """A UDP socket bound to loopback (or ``host``), any port."""
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host or ("127.0.0.1" if family == socket.AF_INET else "::1"), 0))
    return sock


@attrs.define
class TwoHosts:
    """What a ``two_hosts`` test knows: A (this test's own host) and B."""

    kind: str
    net: VirtualNetwork | None
    a: str = "10.9.0.1"
    b: str = "10.9.0.2"
    #: What the test calls to make B's sockets: a context manager.
    on_b: Any = None
    #: Set the link's MTU (both ways).
    set_mtu: Any = None


_CLONE_NEWNET = 0x40000000


@contextmanager
def _in_namespace(target: int) -> Iterator[None]:
    """Run the block in the network namespace open at descriptor ``target``
    (this thread only), then come back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns")
        try:
            yield
        finally:
            if libc.setns(home, _CLONE_NEWNET):  # pragma: no cover
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)


def _namespace_of(pid: int) -> int:
    """The inode of a process's network namespace."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


@pytest.fixture(params=["namespace", "virtual"])
async def two_hosts(request):
    if request.param == "virtual":
        net = VirtualNetwork(seed=0)
        net.add_address(net.localhost, "10.9.0.1/24")
        b = net.add_host("10.9.0.2/24", name="b")
        with net.install():
            yield TwoHosts(
                "virtual",
                net,
                on_b=lambda: net.on_host(b),
                set_mtu=lambda mtu: net.set_link(net.localhost, b, mtu=mtu),
            )
        return
    with _namespace_pair() as hosts:
        yield hosts


@contextmanager
def _namespace_pair() -> Iterator[TwoHosts]:
    if not os.environ.get(_IN_NAMESPACE) or not _in_fresh_namespace():
        pytest.fail("the namespace side of a two_hosts test runs only in unshare -n")
    for command in _SETUP_A:
        subprocess.run(command.split(), check=True)
    # Host B: a process that holds a namespace of its own, and says so once
    # it is in it.
    holder = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", "echo in; exec sleep 120"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"in\n"
        assert _namespace_of(holder.pid) != _namespace_of(os.getpid())
        b_net = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY)
        b_side = ["nsenter", "-t", str(holder.pid), "-n"]
        veth = f"ip link add eth0 type veth peer name eth0 netns {holder.pid}"
        subprocess.run(veth.split(), check=True)
        for command in _SETUP_A_LINK:
            subprocess.run(command.split(), check=True)
        for command in _SETUP_B:
            subprocess.run([*b_side, *command.split()], check=True)

        def set_mtu(mtu: int) -> None:
            for side in ([], b_side):
                subprocess.run(
                    [*side, "ip", "link", "set", "eth0", "mtu", str(mtu)], check=True
                )

        try:
            yield TwoHosts(
                "namespace", None, on_b=lambda: _in_namespace(b_net), set_mtu=set_mtu
            )
        finally:
            os.close(b_net)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


_SETUP_A = ["ip link set lo up"]
_SETUP_A_LINK = [
    "ip addr add 10.9.0.1/24 dev eth0",
    "ip link set eth0 up",
    "ip route add default dev eth0",
    # An address no host has: ARP gives up in 0.2 s, not 3.
    "sysctl -qw net.ipv4.neigh.eth0.retrans_time_ms=100",
    "sysctl -qw net.ipv4.neigh.eth0.mcast_solicit=2",
]
_SETUP_B = [
    "ip link set lo up",
    "ip addr add 10.9.0.2/24 dev eth0",
    "ip link set eth0 up",
    "ip route add default dev eth0",
]


async def pair(a_host="127.0.0.1", b_host="127.0.0.1"):
    """Two IPv4 sockets, bound to ``a_host`` and ``b_host`` (any port)."""
    a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await a.bind((a_host, 0))
    await b.bind((b_host, 0))
    return a, b


async def drain(sock, count):
    return [await sock.recv(100) for _ in range(count)]


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


async def bound(host, port=0, *, family=socket.AF_INET):
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    return sock


async def ifindex_of_next(sock):
    data, ancdata, _, peer = await sock.recvmsg(100, 256)
    [(_, _, info)] = ancdata
    return data, peer[0], struct.unpack("@i", info[:4])[0]


def force_public_alarm() -> None:
    """Make ``trioudp._trio_private.new_alarm`` take its public fallback (a
    system task asleep in a cancel scope), as on a Trio whose deadline heap
    it does not know. For fresh interpreters; tests use ``alarm_kind``."""
    from trioudp import _trio_private

    _trio_private._runner = lambda: None  # type: ignore[assignment]


@pytest.fixture(params=["trio_private", "public_fallback"])
def alarm_kind(request, monkeypatch):
    """Run a test with each kind of alarm the wire may get."""
    if request.param == "public_fallback":
        from trioudp import _trio_private

        monkeypatch.setattr(_trio_private, "_runner", lambda: None)
    return request.param
