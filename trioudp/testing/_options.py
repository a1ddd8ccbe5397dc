"""What ``setsockopt`` and ``getsockopt`` do to a virtual socket: each option's effect on its :class:`~._sock.Sock`.

The option table and the binary encodings are ``_sockopts``; this module
applies them, as Linux does, and refuses what it does not know with
NotImplementedError.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from typing import TYPE_CHECKING

from ._model import is_multicast, oserror, unsupported
from ._sockopts import (
    ETHERNET_IFINDEX,
    INT_OPTIONS,
    IP_MTU,
    IP_PKTINFO,
    IP_RECVTTL,
    IPV6_MTU,
    IPV6_RECVPKTINFO,
    LOOPBACK_IFINDEX,
    SO_BINDTODEVICE,
    SO_TIMESTAMP,
    SO_TIMESTAMPNS,
    int_from_buffer,
    int_to_buffer,
    parse_ip_mreq,
    parse_ipv6_mreq,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._sock import Sock
    from ._stack import Stack

__all__ = ["getsockopt", "setsockopt"]

_LINUX_MIN_RCVBUF = 2_304
_LINUX_MIN_SNDBUF = 4_608

_SOL, _IP, _IP6 = (
    stdlib_socket.SOL_SOCKET,
    stdlib_socket.IPPROTO_IP,
    stdlib_socket.IPPROTO_IPV6,
)
_REUSEADDR = (_SOL, stdlib_socket.SO_REUSEADDR)
_REUSEPORT = (_SOL, getattr(stdlib_socket, "SO_REUSEPORT", 15))
_RCVBUF = (_SOL, stdlib_socket.SO_RCVBUF)
_SNDBUF = (_SOL, stdlib_socket.SO_SNDBUF)
_V6ONLY = (_IP6, stdlib_socket.IPV6_V6ONLY)
_MULTICAST_IF = (_IP, stdlib_socket.IP_MULTICAST_IF)
_BINDTODEVICE = (_SOL, SO_BINDTODEVICE)
_MTU = {(_IP, IP_MTU), (_IP6, IPV6_MTU)}
_IFNAMSIZ = 16
_TTL_TOS4 = ((_IP, stdlib_socket.IP_TTL), (_IP, stdlib_socket.IP_TOS))
_TTL_TOS6 = ((_IP6, stdlib_socket.IPV6_UNICAST_HOPS), (_IP6, stdlib_socket.IPV6_TCLASS))
_MULTICAST_IF6 = (_IP6, stdlib_socket.IPV6_MULTICAST_IF)
_MEMBERSHIP = {
    (_IP, stdlib_socket.IP_ADD_MEMBERSHIP): True,
    (_IP, stdlib_socket.IP_DROP_MEMBERSHIP): False,
    (_IP6, stdlib_socket.IPV6_JOIN_GROUP): True,
    (_IP6, stdlib_socket.IPV6_LEAVE_GROUP): False,
}
_READ_ONLY = {
    (_SOL, stdlib_socket.SO_ERROR),
    (_SOL, getattr(stdlib_socket, "SO_PROTOCOL", 38)),
    (_SOL, getattr(stdlib_socket, "SO_DOMAIN", 39)),
}
# Options that make a received datagram carry ancillary data.
_ANCILLARY = (
    (_SOL, SO_TIMESTAMPNS),
    (_SOL, SO_TIMESTAMP),
    (_IP, IP_PKTINFO),
    (_IP, IP_RECVTTL),
    (_IP, stdlib_socket.IP_RECVTOS),
    (_IP6, IPV6_RECVPKTINFO),
)


def setsockopt(
    sk: Sock,
    stack: Stack,
    level: int,
    optname: int,
    value: int | Buffer | None,
) -> None:
    """``setsockopt`` on the socket whose kernel half is ``sk``."""
    sk.check_open()
    key = (level, optname)
    option = INT_OPTIONS.get(key)
    if value is None:
        unsupported(f"setsockopt({level}, {optname}, None, optlen)")
    data = (
        value.to_bytes(4, "little", signed=True)
        if isinstance(value, int)
        else bytes(memoryview(value))
    )
    if key in _MEMBERSHIP:
        _set_membership(sk, stack, key, data)
        return
    if key == _MULTICAST_IF:
        _set_multicast_if(sk, stack, data)
        return
    if key == _BINDTODEVICE:
        _bind_to_device(sk, stack, data)
        return
    number = value if isinstance(value, int) else int_from_buffer(data, option, level)
    if key == _RCVBUF:
        # Linux doubles the request (for bookkeeping) within its limits;
        # the limit compares unsigned, so a negative request is the most.
        limit = min(number & 0xFFFF_FFFF, stack.sysctl.rmem_max)
        sk.rcvbuf = max(_LINUX_MIN_RCVBUF, limit * 2)
    elif key == _SNDBUF:
        limit = min(number & 0xFFFF_FFFF, stack.sysctl.wmem_max)
        sk.sndbuf = max(_LINUX_MIN_SNDBUF, limit * 2)
    elif key == _V6ONLY:
        if sk.family != stdlib_socket.AF_INET6:
            raise oserror(errno.ENOPROTOOPT, "IPV6_V6ONLY on an IPv4 socket")
        if sk.binding is not None:
            raise oserror(errno.EINVAL, "IPV6_V6ONLY must be set before bind")
        sk.v6only = bool(number)
    elif key == _MULTICAST_IF6:
        _check_family(sk, key)
        if number:
            stack.hosts.iface_index(sk.host, sk.family, "::", number)
        sk.multicast_if6 = number
    elif key in _READ_ONLY or key in _MTU:
        raise oserror(errno.ENOPROTOOPT)
    elif option is not None:
        _check_family(sk, key)
        sk.ints[key] = option.check(number)
        sk.reuseaddr = bool(sk.ints.get(_REUSEADDR))
        sk.reuseport = bool(sk.ints.get(_REUSEPORT))
        sk.ancillary = any(sk.ints.get(k) for k in _ANCILLARY)
        sk.ttl_tos4 = (sk.opt(*_TTL_TOS4[0]), sk.opt(*_TTL_TOS4[1]))
        if sk.family == stdlib_socket.AF_INET6:
            sk.ttl_tos6 = (sk.opt(*_TTL_TOS6[0]), sk.opt(*_TTL_TOS6[1]))
    else:
        unsupported(f"setsockopt(level={level}, optname={optname})")


def _check_family(sk: Sock, key: tuple[int, int]) -> None:
    # IPv6 options exist on IPv6 sockets only (IPv4 ones on both: Linux
    # applies them to an IPv6 socket's mapped traffic).
    if key[0] == _IP6 and sk.family != stdlib_socket.AF_INET6:
        raise oserror(errno.ENOPROTOOPT, "an IPv6 option on an IPv4 socket")


def _bind_to_device(sk: Sock, stack: Stack, data: bytes) -> None:
    # Linux: an interface name, NUL-terminated or not; empty unbinds.
    name = data.split(b"\0", 1)[0]
    sk.route_memo = None
    if len(data) > _IFNAMSIZ or len(name) >= _IFNAMSIZ:
        raise oserror(errno.EINVAL)
    if not name:
        sk.device = 0
    elif name == b"lo":
        sk.device = LOOPBACK_IFINDEX
    elif name == b"eth0" and any(
        stack.hosts.iface_address(sk.host, ETHERNET_IFINDEX, family)
        for family in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6)
    ):
        sk.device = ETHERNET_IFINDEX
    else:
        raise oserror(errno.ENODEV, f"{sk.host.name} has no interface {name!r}")


def _device_name(sk: Sock, buflen: int | None) -> int | bytes:
    if buflen is None:
        if sk.device:
            raise oserror(errno.EINVAL)  # Linux: the name needs IFNAMSIZ bytes
        return 0
    if buflen < _IFNAMSIZ:
        raise oserror(errno.EINVAL)
    if not sk.device:
        return b""
    return (b"lo" if sk.device == LOOPBACK_IFINDEX else b"eth0") + b"\0"


def _set_membership(sk: Sock, stack: Stack, key: tuple[int, int], data: bytes) -> None:
    if key[0] == _IP:
        group, address, ifindex = parse_ip_mreq(data)
        family = stdlib_socket.AF_INET
    else:
        _check_family(sk, key)
        group, ifindex = parse_ipv6_mreq(data)
        address, family = "::", stdlib_socket.AF_INET6
    if not is_multicast(group):
        raise oserror(errno.EINVAL, f"{group} is not a multicast group")
    ifindex = stack.hosts.iface_index(sk.host, family, address, ifindex)
    stack.groups.join(sk, group, ifindex, join=_MEMBERSHIP[key])


def _set_multicast_if(sk: Sock, stack: Stack, data: bytes) -> None:
    if len(data) >= 8:  # ip_mreq or ip_mreqn: the interface part
        _, address, ifindex = parse_ip_mreq(data)
    elif len(data) >= 4:
        address, ifindex = stdlib_socket.inet_ntoa(data[:4]), 0
    else:
        raise oserror(errno.EINVAL)
    if address != "0.0.0.0" or ifindex:
        try:
            stack.hosts.iface_index(sk.host, stdlib_socket.AF_INET, address, ifindex)
        except OSError as exc:
            raise oserror(errno.EADDRNOTAVAIL, str(exc)) from None
    sk.multicast_if4 = (address, ifindex)


def getsockopt(
    sk: Sock, stack: Stack, level: int, optname: int, buflen: int | None
) -> int | bytes:
    """``getsockopt`` on the socket whose kernel half is ``sk``."""
    sk.check_open()
    key = (level, optname)
    value: int
    if key == _BINDTODEVICE:
        return _device_name(sk, buflen)
    if key in _MTU:
        if key[0] == _IP6:
            _check_family(sk, key)
        if sk.peer is None:
            raise oserror(errno.ENOTCONN)
        value = stack.wire.path_mtu(sk, sk.peer[0])
    elif key == _RCVBUF:
        value = sk.rcvbuf
    elif key == _SNDBUF:
        value = sk.sndbuf
    elif key == _V6ONLY:
        if sk.family != stdlib_socket.AF_INET6:
            raise oserror(errno.EOPNOTSUPP, "IPV6_V6ONLY on an IPv4 socket")
        value = int(sk.v6only)
    elif key == (_SOL, stdlib_socket.SO_ERROR):
        code, sk.error = sk.error, None
        value = code or 0
    elif key == (_SOL, getattr(stdlib_socket, "SO_PROTOCOL", 38)):
        value = stdlib_socket.IPPROTO_UDP
    elif key == (_SOL, getattr(stdlib_socket, "SO_DOMAIN", 39)):
        value = int(sk.family)
    elif key == _MULTICAST_IF:
        packed = stdlib_socket.inet_aton(sk.multicast_if4[0])
        if buflen is not None:
            return packed[:buflen]
        value = int.from_bytes(packed, "little")
    elif key == _MULTICAST_IF6:
        _check_family(sk, key)
        value = sk.multicast_if6
    elif key in INT_OPTIONS:
        _check_family(sk, key)
        value = sk.opt(level, optname)
    else:
        unsupported(f"getsockopt(level={level}, optname={optname})")
    if buflen is not None:
        return int_to_buffer(value, buflen, level)
    return value
