"""Several processes serving one port: :func:`run_workers`, its
:class:`WorkerPool` and the :class:`Worker` each process receives.

The modules, from the top (each imports only those below it):

- ``_supervisor``: the supervisor's Trio program (:func:`run_workers`,
  :class:`WorkerPool`): start, restart, stop and count the workers.
- ``_child``: the supervisor's end of one worker process (starting it, its
  pipes, its report lines).
- ``_policy``: what the supervisor decides, with no I/O (restart delays,
  crash loops, summed counters).
- ``_sockets``: the sockets a supervisor binds and holds for its workers
  (:class:`WorkerSockets`), and the steering program attached to them.
- ``_worker``: a worker process's side (:class:`Worker`, the entry point).
- ``_protocol``: what both sides agree on (settings, the target's name, the
  pipes' lines); the two sides meet only there.

The command line's ``--workers`` (``trioudp._cli``) is built on this package,
never the other way round.
"""

from ._sockets import WorkerSockets as WorkerSockets
from ._supervisor import WorkerPool as WorkerPool
from ._supervisor import run_workers as run_workers
from ._worker import Worker as Worker

__all__ = ["Worker", "WorkerPool", "WorkerSockets", "run_workers"]
