"""The ``trioudp`` command line: the socket tutorial's server and client, done safely.

Exit codes: 0 success; 1 a network failure (no reply, peer unreachable, bind
failure, bad address); 2 bad usage; 130 interrupted by Ctrl-C (SIGINT); 143
stopped by SIGTERM. A server stopped by either signal shuts down gracefully
first.

Peer data is printed only through :func:`printable` (no control character
reaches the terminal, at most 512 bytes of a datagram), and every line
through ``_console`` (never a blocking write on the Trio loop). Only this
package prints.

The modules, from the top (each imports only those below it):

- ``_main``: the entry points, :func:`main` and ``cli_worker`` (each
  ``--workers`` process).
- ``_parser``: the argument parser (:func:`build_parser`).
- ``_send``: the client commands, ``send`` and ``demo``.
- ``_quic``: ``quic-echo`` (``--workers N`` too) and ``quic-send``; they
  import :mod:`trioudp.quic` only when they run.
- ``_serve``: the server commands, ``serve``, ``echo`` and ``listen``.
- ``_supervise``: ``serve|echo|quic-echo --workers N``, over
  :func:`run_workers`.
- ``_bench``: the ``bench`` command.
- ``_console``: where every line goes: queued, written by a task, dropped
  and counted when not read in time.
- ``_output``: the lines it prints (other than peer data) and exit codes.
- ``_argtypes``: argument types that make bad values usage errors.
- ``_terminal``: peer bytes made safe to print.
"""

from ._main import main as main
from ._parser import build_parser as build_parser

__all__ = ["build_parser", "main"]
