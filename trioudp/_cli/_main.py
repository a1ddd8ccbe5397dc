"""The entry points: :func:`main` runs the ``trioudp`` command, and
:func:`cli_worker` runs it in each ``--workers`` process; both turn errors
into exit codes."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import trio

from .._errors import TrioUDPError, WorkerStartFailed
from ._output import EXIT_FAILURE, EXIT_INTERRUPTED, error_text
from ._parser import build_parser, group_settings
from ._quic import quic_echo_command
from ._serve import SERVER_COMMANDS

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Sequence

    from .._workers import Worker

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["cli_worker", "main"]


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
    if getattr(args, "group", None) is not None:
        try:
            args.multicast = group_settings(args.group, args.interface)
        except (TypeError, ValueError) as exc:
            parser.error(str(exc))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    command: Callable[[argparse.Namespace], Awaitable[int]] = args.func
    try:
        return trio.run(command, args)
    except BaseException as exc:
        if _find(exc, KeyboardInterrupt) is not None:
            return EXIT_INTERRUPTED
        return _failed(args, exc)


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
    print(f"trioudp {args.command}: error: {text}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


async def cli_worker(worker: Worker) -> int:
    """One worker: the same command line, serving ``worker.port`` with
    ``SO_REUSEPORT``; returns the command's exit code."""
    args = build_parser().parse_args(worker.args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format=f"%(levelname)s %(name)s (worker {worker.index}): %(message)s",
    )
    commands = {**SERVER_COMMANDS, "quic-echo": quic_echo_command}
    try:
        return await commands[args.command](args, worker)
    except (Exception, BaseExceptionGroup) as exc:
        return _failed(args, exc)
