"""Responder: the handler form for answers that need no waiting.

A server handler is either an ``async def handler(datagram)``, or a
:class:`Responder` wrapping a plain function that returns the reply. The
second costs no coroutine per datagram: on a real socket the server calls the
function straight from its receive loop and sends (or batches) its reply
without a trip through the scheduler. Chosen explicitly, never guessed from
the function, so mypy checks the function's type.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._datagram import Datagram

__all__ = ["Answer", "Responder", "checked_answer"]

#: What a :class:`Responder`'s function returns: the reply's bytes, or None
#: for no reply.
Answer = bytes | bytearray | memoryview | None


def _check_respond(
    instance: object, attribute: object, value: Callable[[Datagram], Answer]
) -> None:
    if not callable(value):
        msg = f"Responder needs a function of one Datagram, not {value!r}"
        raise TypeError(msg)
    if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(
        getattr(value, "__call__", None)  # noqa: B004  (objects with async __call__)
    ):
        msg = (
            f"Responder needs a plain function, not the async function {value!r};"
            " pass an async handler to serve_udp directly"
        )
        raise TypeError(msg)


@final
@attrs.frozen
class Responder:
    """A server handler that answers at once: ``respond(datagram)`` returns
    the reply (bytes, bytearray or memoryview) or None for no reply.

    Use it for protocols whose answer needs no waiting (echo, DNS from a zone
    in memory, lookups, counters such as statsd): it costs no coroutine per
    datagram, and on a real socket the server calls it straight from its
    receive loop, so it is the fastest form. Use an ``async def`` handler
    when answering means awaiting something (another server, a database, a
    lock, ``trio.sleep``).

    Everything else is as for an async handler: the same intake bounds,
    counters (``handled``, ``replied``, ``handler_errors``), protection
    (rate limits, access lists, the amplification guard) and shutdown. The
    reply goes to the datagram's peer from the socket it arrived on, as
    :meth:`Datagram.reply` sends it; a full send buffer is waited for by the
    server (never by ``respond``), and a reply that still finds no room is
    counted. ``handler_timeout`` does not apply (nothing waits). A function
    that raises, or whose answer is larger than one datagram (an echo with a
    prefix, to the largest request), is logged and counted in
    ``handler_errors``; the server goes on.

    A Responder is also an async handler of the same meaning (``await
    responder(datagram)`` replies), which is how servers on sockets without
    the fast path (the virtual network) run it.

    Example:
        >>> from trioudp import Datagram
        >>> def echo(datagram: Datagram) -> bytes:
        ...     return datagram.data
        >>> handler = Responder(echo)
        >>> handler.respond(Datagram(data=b"hi", peer=("127.0.0.1", 4000),
        ...     local=("127.0.0.1", 7), received_at=0.0))
        b'hi'

        Serve it as any handler::

            await nursery.start(trioudp.serve_udp, trioudp.Responder(echo), 7)
    """

    respond: Callable[[Datagram], Answer] = attrs.field(validator=_check_respond)

    async def __call__(self, datagram: Datagram) -> None:
        """Answer ``datagram`` with what :attr:`respond` returns."""
        answer = self.answer(datagram)
        if answer is not None:
            await datagram.reply(answer)

    def answer(self, datagram: Datagram) -> Answer:
        """Call :attr:`respond`; raise TypeError if what it returns is not an
        :data:`Answer` (e.g. a coroutine: the function was async after all).

        Example:
            >>> Responder(lambda d: None).answer(None) is None
            True
        """
        answer = self.respond(datagram)
        if answer is None or type(answer) is bytes:
            return answer
        return checked_answer(answer)


def checked_answer(answer: object) -> Answer:
    """``answer`` if it is an :data:`Answer`; else TypeError (a coroutine
    is closed first: the function was async after all).

    Example:
        >>> checked_answer(bytearray(b"ok"))
        bytearray(b'ok')
    """
    if answer is None or isinstance(answer, (bytes, bytearray, memoryview)):
        return answer
    if inspect.isawaitable(answer):
        close = getattr(answer, "close", None)
        if close is not None:
            close()  # no "never awaited" warning on top of the error
    msg = (
        f"a Responder's function must return bytes, bytearray, memoryview"
        f" or None, not {type(answer).__name__}"
    )
    raise TypeError(msg)
