"""The entry points: :func:`main` runs the ``trioudp`` command, and
:func:`cli_worker` runs it in each ``--workers`` process; both turn errors
into exit codes, and both open the console every line is printed through
(``_console``: never a blocking write on the loop)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

from .._errors import TrioUDPError, WorkerStartFailed
from ._console import open_console, warn
from ._output import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, error_text
from ._parser import broadcast_addresses, build_parser, check_broadcast, group_settings
from ._quic import check_quic_files, quic_echo_command
from ._serve import SERVER_COMMANDS

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Sequence

    from .._workers import Worker

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["cli_worker", "main"]

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in ``exc``, looking inside exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trioudp`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "group", None) is not None:
            args.multicast = group_settings(args.group, args.interface)
        elif hasattr(args, "broadcast") and args.command != "send":
            check_broadcast(args.host, args.broadcast, broadcast_addresses())
        check_quic_files(args)
    except (TypeError, ValueError) as exc:
        args.command_parser.error(str(exc))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return trio.run(_run, args)
    except BaseException as exc:
        if _find(exc, KeyboardInterrupt) is not None:
            return EXIT_INTERRUPTED
        return _failed(args, exc)


async def _run(args: argparse.Namespace) -> int:
    """The command, its lines printed through a console; exit code 1 where
    it succeeded but stdout's reader closed its end (quietly: no error)."""
    command: Callable[[argparse.Namespace], Awaitable[int]] = args.func
    name = f"trioudp {args.command}"
    async with open_console(
        name, verbose=args.verbose, log_format=LOG_FORMAT
    ) as console:
        code = await command(args)
    return EXIT_FAILURE if code == EXIT_OK and console.out.gone.is_set() else code


def _failed(args: argparse.Namespace, exc: BaseException) -> int:
    """Report a failure (a trioudp error or an OSError, perhaps inside an
    exception group) and return the exit code; re-raise anything else."""
    failure = _find(exc, TrioUDPError) or _find(exc, OSError)
    if failure is None:
        raise exc
    if isinstance(failure, WorkerStartFailed) and failure.returncode == EXIT_FAILURE:
        return EXIT_FAILURE  # the worker has printed its own error
    text = error_text(
        failure,
        host=args.host if args.command == "send" else None,
        group=getattr(args, "group", None),
    )
    warn(f"trioudp {args.command}: error: {text}")
    return EXIT_FAILURE


async def cli_worker(worker: Worker) -> int:
    """One worker: the same command line, serving ``worker.port`` with
    ``SO_REUSEPORT``; returns the command's exit code."""
    args = build_parser().parse_args(worker.args)
    commands = {**SERVER_COMMANDS, "quic-echo": quic_echo_command}
    async with open_console(
        f"trioudp {args.command} (worker {worker.index})",
        verbose=args.verbose,
        log_format=f"%(levelname)s %(name)s (worker {worker.index}): %(message)s",
    ):
        try:
            return await commands[args.command](args, worker)
        except (Exception, BaseExceptionGroup) as exc:
            return _failed(args, exc)
