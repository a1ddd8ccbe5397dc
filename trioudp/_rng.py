"""Where trioudp's own random choices come from, so a virtual network can seed them.

trioudp draws randomness in one place: a client's retransmission jitter.
Outside tests each client gets an unseeded ``random.Random``. While a
:class:`~trioudp.testing.VirtualNetwork` is installed, the network lends a
generator derived from its seed, and each new client gets its own
``random.Random`` drawn from it, so the same seed and program replay the same
schedule. The lent generator lives in a ``trio.lowlevel.RunVar``: it never
leaks from one ``trio.run`` into another.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["lend_randomness", "new_rng"]

_SOURCE: trio.lowlevel.RunVar[random.Random | None] = trio.lowlevel.RunVar(
    "trioudp.random_source", default=None
)


def new_rng() -> random.Random:
    """A generator for one client: seeded from the lent source, if any.

    Example:
        >>> new_rng().random() < 1.0
        True
    """
    try:
        source = _SOURCE.get()
    except RuntimeError:  # outside trio.run: nothing can be lent
        source = None
    if source is None:
        return random.Random()
    return random.Random(source.getrandbits(64))


@contextmanager
def lend_randomness(source: random.Random) -> Iterator[None]:
    """Within the block (inside ``trio.run``), :func:`new_rng` draws from ``source``.

    Example::

        with lend_randomness(random.Random(7)):
            rng = new_rng()   # the same generator in every run
    """
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)
