"""Hosts that crash and restart: which hosts are down, the sockets a crash closes and the tasks it cancels.

A crash (:meth:`Outages.crash`) marks the host down in ``Faults.down`` (the
wire then drops every datagram from or to it, reason ``host_down``, with no
ICMP error), cancels the tasks started under ``VirtualNetwork.on_host`` for
it, and closes every socket that lives on it. :meth:`Outages.restart` marks
it up again, empty: no socket, no task, until the test starts its program
again.

Tasks. ``on_host`` sets a context variable, which every task started in its
block (and every task those start) inherits. While a network is installed
and ``on_host`` has been used, an instrument sees each new task; one whose
context names a host is wrapped, before its first step, in a cancel scope
kept for that host (``_trio_private.wrap_new_task``). A crash cancels those
scopes: the tasks end as cancelled tasks do, running their ``finally``
blocks, and their nursery sees them end normally.

Invariants:
    * A crash cancels the host's tasks before it closes its sockets: a task
      waiting in a receive is woken by its cancellation (Cancelled), not by
      the close (ClosedResourceError), so only tasks not started under
      ``on_host`` see the sockets close under them.
    * Sockets are closed and tasks cancelled in the order they were made,
      so the same seed gives the same schedule.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, final

import trio

from .._trio_private import wrap_new_task

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Callable, Coroutine

    from ._faults import Faults
    from ._model import Host
    from ._sock import Sock
    from ._trace import Recorder

__all__ = ["Outages"]

logger = logging.getLogger("trioudp.testing")


@final
class _HostTasks(trio.abc.Instrument):
    """Wraps each new task started under ``on_host`` in its host's scope."""

    def __init__(self, outages: Outages) -> None:
        self._outages = outages

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        host = task.context.get(self._outages.home)
        if host is not None:
            self._outages.adopt(task, host)


@final
class Outages:
    """The crashes and restarts of one network's hosts."""

    def __init__(
        self,
        *,
        faults: Faults,
        trace: Recorder,
        close: Callable[[Sock], None],
        home: contextvars.ContextVar[Host | None],
    ) -> None:
        self._faults = faults
        self._trace = trace
        self._close = close
        #: The context variable ``on_host`` sets.
        self.home = home
        # Every socket not yet closed, by creation number (so in order).
        self._sockets: weakref.WeakValueDictionary[int, Sock] = (
            weakref.WeakValueDictionary()
        )
        self._made = 0
        # The scopes of each host's live tasks, in the order they started.
        self._scopes: dict[Host, dict[trio.CancelScope, None]] = {}
        self._instrument: _HostTasks | None = None
        self._installed = False
        self._watching = False
        self._warned = False

    # ---- sockets ------------------------------------------------------------

    def opened(self, sock: Sock) -> None:
        """Remember a new socket (a crash of its host closes it)."""
        self._made += 1
        self._sockets[self._made] = sock

    # ---- tasks --------------------------------------------------------------

    def install(self) -> None:
        """At install: watch new tasks again if ``on_host`` was used."""
        self._installed = True
        if self._watching:
            self._add_instrument()

    def uninstall(self) -> None:
        """At uninstall: stop watching new tasks."""
        self._installed = False
        if self._instrument is not None:
            trio.lowlevel.remove_instrument(self._instrument)
            self._instrument = None

    def watch(self) -> None:
        """From now on, track the tasks started under ``on_host`` (called by
        ``on_host``: networks that never use it pay nothing per task)."""
        self._watching = True
        if self._installed and self._instrument is None:
            self._add_instrument()

    def _add_instrument(self) -> None:
        self._instrument = _HostTasks(self)
        trio.lowlevel.add_instrument(self._instrument)

    def adopt(self, task: trio.lowlevel.Task, host: Host) -> None:
        """Wrap ``task``, just spawned under ``on_host(host)``, in a scope
        that a crash of ``host`` cancels."""
        scopes = self._scopes.setdefault(host, {})
        scope = trio.CancelScope()

        def wrap(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
            return _on_host(coro, scope, scopes)

        if wrap_new_task(task, wrap):
            scopes[scope] = None
            if host in self._faults.down:
                # Started by a task of the crashed program as it unwinds.
                scope.cancel()
        elif not self._warned:  # pragma: no cover - only on a Trio without the hook
            self._warned = True
            logger.warning(
                "this Trio does not let the virtual network wrap new tasks:"
                " crash() closes the host's sockets but cannot cancel its tasks"
            )

    # ---- crash and restart ----------------------------------------------------

    def crash(self, host: Host) -> None:
        """Take ``host`` down: cancel its tasks, close its sockets."""
        faults = self._faults
        if host in faults.down:
            msg = f"{host.name} has crashed already; restart() it first"
            raise RuntimeError(msg)
        faults.down.add(host)
        faults.refresh()
        scopes = list(self._scopes.pop(host, {}))
        for scope in scopes:
            scope.cancel()
        sockets = [
            sock
            for _, sock in sorted(self._sockets.items())
            if sock.host is host and not sock.closed
        ]
        for sock in sockets:
            self._close(sock)
        self._trace.note(
            "crash",
            f"{host.name}: {len(sockets)} sockets closed, {len(scopes)} tasks cancelled",
        )

    def restart(self, host: Host) -> None:
        """Bring ``host`` back up, empty."""
        faults = self._faults
        if host not in faults.down:
            msg = f"{host.name} is up: only a crashed host can restart"
            raise RuntimeError(msg)
        faults.down.discard(host)
        faults.refresh()
        self._trace.note("restart", host.name)

    def check_up(self, host: Host) -> None:
        """Refuse to start a program on a crashed host."""
        if host in self._faults.down:
            msg = f"{host.name} has crashed: restart() it before running code on it"
            raise RuntimeError(msg)


async def _on_host(
    coro: Coroutine[Any, Any, object],
    scope: trio.CancelScope,
    scopes: dict[trio.CancelScope, None],
) -> object:
    try:
        with scope:
            return await coro
        return None  # cancelled by a crash: the task ends as cancelled tasks do
    finally:
        scopes.pop(scope, None)
