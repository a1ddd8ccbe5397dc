"""What the supervisor and a worker process agree on: how a worker is started,
what it is told, how it finds its function, and what the pipes carry.

The supervisor starts ``python -c CHILD_PROGRAM`` with a
:class:`WorkerSettings` as JSON in the ``TRIOUDP_WORKER`` environment
variable and two pipes: *control* (supervisor to worker) and *reports*
(worker to supervisor), and the sockets the supervisor bound for it, if it
binds them (``_sockets``). Both pipes carry lines of text:

- control: ``stats`` asks for a report of the counters (the supervisor's
  liveness checks are such requests). End of file means the supervisor is
  gone: the worker stops as on SIGTERM, so a supervisor killed with SIGKILL
  leaves no worker behind.
- reports: JSON objects, one a line: ``{"event": "ready", "port": N,
  "addresses": [[host, port], ...]}`` once the worker serves,
  ``{"event": "stats", "stats": {...}}`` for each request, and
  ``{"event": "final", "stats": {...}}`` when its main function has ended
  (returned or raised). ``stats`` holds the fields of :class:`ServerStats`.

A worker starts with :data:`STARTUP_SIGNALS` blocked (the supervisor blocks
them between fork and exec): a signal that comes while the worker imports
waits until its handlers are in place, instead of killing it or printing a
traceback.

The function a worker runs travels as a name (:func:`target_spec` makes it,
:func:`load_target` finds it again in the worker). The two sides import this
module and never each other; it imports neither (a target is typed as any
callable here, and as taking a :class:`Worker` where it is called).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "CHILD_PROGRAM",
    "ENVIRONMENT_KEY",
    "STARTUP_SIGNALS",
    "STOP_MARGIN",
    "WorkerSettings",
    "load_target",
    "target_spec",
]

#: The environment variable that carries a worker's settings.
ENVIRONMENT_KEY = "TRIOUDP_WORKER"
#: The program a worker runs (``python -c``): ``_worker``'s ``main``.
CHILD_PROGRAM = "import trioudp._workers._worker as w; w.main()"
#: Seconds a worker's main may run past ``grace`` after a stop before it is
#: cancelled (by the worker) or killed (by the supervisor, which waits as
#: long).
STOP_MARGIN = 1.0
#: Signals blocked in a worker from its first instruction until it handles
#: them: SIGINT and SIGTERM stop it gracefully, SIGUSR1 (meant for the
#: supervisor) is ignored.
STARTUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGUSR1})


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """What the supervisor tells a worker (JSON in ``TRIOUDP_WORKER``)."""

    target: str
    index: int
    count: int
    port: int
    args: tuple[str, ...]
    grace: float
    control_fd: int
    report_fd: int
    path: tuple[str, ...] = ()
    #: Descriptors of the sockets the supervisor bound for this worker.
    socket_fds: tuple[int, ...] = ()
    #: The pool's secret, hex (the same for every worker of one pool).
    secret: str = ""

    def to_environment(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_environment(cls) -> WorkerSettings:
        fields = json.loads(os.environ[ENVIRONMENT_KEY])
        fields["args"] = tuple(fields["args"])
        fields["path"] = tuple(fields["path"])
        fields["socket_fds"] = tuple(fields.get("socket_fds", ()))
        return cls(**fields)


def target_spec(target: str | Callable[..., Awaitable[object]]) -> str:
    """The ``"module:function"`` (or ``"/path/file.py:function"``) a worker loads.

    A function of the script being run (``__main__``) is named by the script's
    path.

    Example:
        >>> target_spec(load_target)
        'trioudp._workers._protocol:load_target'
    """
    if isinstance(target, str):
        head, _, tail = target.rpartition(":")
        if not head or not tail:
            msg = f"a worker target is 'module:function' or 'file.py:function', not {target!r}"
            raise ValueError(msg)
        return target
    module: str | None = getattr(target, "__module__", None)
    name: str = getattr(target, "__qualname__", "<locals>")
    if module is None or "<locals>" in name or "<lambda>" in name:
        msg = f"a worker target must be a module-level function, not {target!r}"
        raise ValueError(msg)
    if module == "__main__":
        path: str | None = getattr(sys.modules["__main__"], "__file__", None)
        if path is None:
            msg = (
                f"{target!r} is in a __main__ without a file; name it 'module:function'"
            )
            raise ValueError(msg)
        module = os.path.abspath(path)
    return f"{module}:{name}"


def load_target(spec: str) -> Callable[..., Awaitable[int | None]]:
    """The function a ``"module:function"`` or ``"/path/file.py:function"``
    spec names.

    A file is loaded as a module named ``__trioudp_worker__``, so its
    ``if __name__ == "__main__":`` block does not run in the worker.

    Raises:
        ValueError: ``spec`` has no ``:`` between a module and a name.
        ImportError, AttributeError: the module or the name does not exist.

    Example:
        >>> load_target("trioudp._workers._protocol:target_spec").__name__
        'target_spec'
    """
    module_name, _, name = spec.rpartition(":")
    if not module_name or not name:
        msg = (
            f"a worker target is 'module:function' or 'file.py:function', not {spec!r}"
        )
        raise ValueError(msg)
    if module_name.endswith(".py"):
        location = importlib.util.spec_from_file_location(
            "__trioudp_worker__", module_name
        )
        if location is None or location.loader is None:
            msg = f"cannot load {module_name!r}"
            raise ImportError(msg)
        module = importlib.util.module_from_spec(location)
        sys.modules[location.name] = module
        location.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    found: Any = module
    for part in name.split("."):
        found = getattr(found, part)
    target: Callable[..., Awaitable[int | None]] = found
    return target
