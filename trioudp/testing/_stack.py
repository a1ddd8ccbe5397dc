"""What a virtual socket may call of its network: the socket's half of the seam between them.

A :class:`Stack` is made once per network and shared by its sockets. The
network's half is :class:`~._sock.Sock`: all the network holds of a socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._groups import Groups
    from ._hosts import Hosts
    from ._ports import Ports
    from ._sock import Sock
    from ._wire import Wire

__all__ = ["LINUX_RMEM_MAX", "Stack", "Sysctl"]

#: Linux's default ``net.core.rmem_max`` and ``wmem_max``.
LINUX_RMEM_MAX = 212_992


@final
@attrs.define(kw_only=True)
class Sysctl:
    """The network's kernel settings that sockets read when options are set."""

    #: ``net.core.rmem_max``: the most ``SO_RCVBUF`` takes (then doubled).
    rmem_max: int = LINUX_RMEM_MAX
    #: ``net.core.wmem_max``: the most ``SO_SNDBUF`` takes (then doubled).
    wmem_max: int = LINUX_RMEM_MAX


@final
@attrs.frozen(kw_only=True)
class Stack:
    """The parts of one network that its sockets call: ``hosts`` (addresses,
    interfaces, names, source addresses), ``ports`` (bind, unbind),
    ``groups`` (memberships), ``wire`` (``send``), ``sysctl``, ``now``
    (virtual seconds since the first install) and ``opened`` (told of each
    new socket, so that a crash of its host can close it)."""

    hosts: Hosts
    ports: Ports
    groups: Groups
    wire: Wire
    sysctl: Sysctl
    now: Callable[[], float]
    opened: Callable[[Sock], None]

    def close(self, sk: Sock) -> None:
        """Close a socket's kernel half: leave its groups, free its port,
        drop its queue and wake its receivers (they find it closed). The
        socket's ``close()`` and a crash of its host both come here."""
        if sk.closed:
            return
        sk.closed = True
        for group, ifindex in list(sk.groups):
            self.groups.join(sk, group, ifindex, join=False)
        self.ports.unbind(sk)
        sk.discard_queue()
