"""The ``lan`` fixture: one host with ``lo`` and an ``eth0``, either a real
network namespace that the test creates or the virtual network.

A test that takes ``lan`` runs twice. With ``lan="namespace"`` this process
does not run it: it runs the same test again in a child process inside
``unshare -n`` (a network namespace of its own, no way out), where the fixture
gives the namespace ``lo`` (index 1) and a carrier-less tap device ``d0``
(index 2, the stand-in for ``eth0``) holding 10.9.0.1/24 and fd00:9::1/64, with
a default route and IPv6 multicast routes through it. Nothing it sends can
leave the namespace. With ``lan="virtual"`` it runs here, on a VirtualNetwork
whose ``localhost`` has the same addresses.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from trioudp.testing import VirtualNetwork

from ..conftest import netns_missing, unavailable

_IN_NAMESPACE = "TRIOUDP_TEST_IN_NETNS"
_ROOT = Path(__file__).resolve().parents[2]
_SETUP = [
    "ip link set lo up",
    "ip link set lo multicast on",
    "ip tuntap add d0 mode tap",
    "ip addr add 10.9.0.1/24 brd + dev d0",
    "ip addr add fd00:9::1/64 nodad dev d0",
    "ip link set d0 up",
    "ip route add default dev d0",
    "ip -6 route add ff00::/8 dev d0 table local metric 10",
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
    if callspec is None or callspec.params.get("lan") != "namespace":
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
