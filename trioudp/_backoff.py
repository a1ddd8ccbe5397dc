"""Retransmission schedules: exponential backoff with a cap and jitter. No I/O.

Defaults. RFC 8085 section 3.1.3 asks a request/response application that has
no RTT estimate to back its retransmission timer off exponentially and points
to TCP's retransmission timer for the starting value; TCP's initial timeout is
1 second (RFC 6298 section 2.1). So ``initial=1.0`` and ``multiplier=2.0``:
three attempts wait 1 + 2 + 4 s. ``maximum=60.0`` is RFC 6298's ceiling
(section 2.5). Jitter of +-10% keeps many clients that lost the same datagram
from retransmitting in lockstep. For links known to be fast, a smaller
``initial`` (or :meth:`Backoff.within`) is fine.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import random

__all__ = ["Backoff"]


def _positive(
    instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        msg = f"{attribute.name} must be a positive number of seconds, not {value!r}"
        raise ValueError(msg)


def check_attempts(attempts: int) -> int:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        msg = f"attempts must be an int >= 1, not {attempts!r}"
        raise ValueError(msg)
    return attempts


@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait for a reply before each retransmission.

    The wait after attempt ``i`` (from 0) is
    ``min(maximum, initial * multiplier**i)``, scaled by a factor drawn
    uniformly from ``[1 - jitter, 1 + jitter]``.

    Args:
        initial: the first wait, in seconds.
        multiplier: growth per attempt (>= 1; 1 means a constant wait).
        maximum: the cap on one wait, before jitter.
        jitter: the relative spread, in [0, 1).

    Example:
        >>> import random
        >>> b = Backoff(initial=1.0, multiplier=2.0, jitter=0.0)
        >>> b.timeouts(3, random.Random(0))
        [1.0, 2.0, 4.0]
        >>> b.worst_case(3)
        7.0
    """

    initial: float = attrs.field(default=1.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0)
    maximum: float = attrs.field(default=60.0, validator=_positive)
    jitter: float = attrs.field(default=0.1)

    @multiplier.validator
    def _check_multiplier(
        self, attribute: attrs.Attribute[float], value: float
    ) -> None:
        if not (
            isinstance(value, (int, float)) and math.isfinite(value) and value >= 1
        ):
            msg = f"multiplier must be a number >= 1, not {value!r}"
            raise ValueError(msg)

    @jitter.validator
    def _check_jitter(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not (isinstance(value, (int, float)) and 0 <= value < 1):
            msg = f"jitter must be in [0, 1), not {value!r}"
            raise ValueError(msg)

    def base(self, attempt: int) -> float:
        """The wait after attempt ``attempt`` (0-based), before jitter.

        Example:
            >>> Backoff(initial=1.0, maximum=5.0).base(10)
            5.0
        """
        if attempt < 0:
            msg = f"attempt must be >= 0, not {attempt!r}"
            raise ValueError(msg)
        # Compare exponents first so huge attempt numbers cannot overflow.
        if self.multiplier > 1 and attempt > math.log(
            self.maximum / self.initial, self.multiplier
        ):
            return self.maximum
        return min(self.maximum, self.initial * self.multiplier**attempt)

    def timeouts(self, attempts: int, rng: random.Random) -> list[float]:
        """The waits of ``attempts`` attempts, jitter drawn from ``rng``.

        Example:
            >>> import random
            >>> waits = Backoff().timeouts(3, random.Random(1))
            >>> [round(w, 3) for w in waits]
            [0.927, 2.139, 4.211]
        """
        check_attempts(attempts)
        spread = self.jitter
        return [
            self.base(i) * (1 + rng.uniform(-spread, spread) if spread else 1.0)
            for i in range(attempts)
        ]

    def worst_case(self, attempts: int) -> float:
        """The longest total wait of ``attempts`` attempts (jitter at its maximum).

        This bounds how long a request can take before it raises
        :class:`RequestTimeout`.

        Example:
            >>> round(Backoff().worst_case(3), 3)
            7.7
        """
        check_attempts(attempts)
        return math.fsum(self.base(i) for i in range(attempts)) * (1 + self.jitter)

    @classmethod
    def within(cls, total: float, attempts: int, *, jitter: float = 0.1) -> Backoff:
        """A doubling schedule whose worst case is exactly ``total`` seconds.

        Example:
            >>> b = Backoff.within(7.0, 3, jitter=0.0)
            >>> b.initial, b.worst_case(3)
            (1.0, 7.0)
        """
        check_attempts(attempts)
        if not (math.isfinite(total) and total > 0):
            msg = f"total must be a positive number of seconds, not {total!r}"
            raise ValueError(msg)
        initial = total / ((2**attempts - 1) * (1 + jitter))
        return cls(
            initial=initial,
            multiplier=2.0,
            maximum=initial * 2 ** (attempts - 1),
            jitter=jitter,
        )
