"""Retransmission schedules: exponential backoff with a cap and jitter. No I/O.

Defaults. RFC 8085 section 3.1.3 asks a request/response application that has
no RTT estimate to back its retransmission timer off exponentially and points
to TCP's retransmission timer for the starting value; TCP's initial timeout is
1 second (RFC 6298 section 2.1). So ``initial=1.0`` and ``multiplier=2.0``:
three attempts wait 1 + 2 + 4 s. ``maximum=60.0`` is RFC 6298's ceiling
(section 2.5). Jitter of +-10% keeps many clients that lost the same datagram
from retransmitting in lockstep. For links known to be fast, a smaller
``initial`` (or :meth:`Backoff.within`) is fine.

Cost. A schedule is computed as it is used (:meth:`Backoff.waits`), one wait
per attempt, and :meth:`Backoff.worst_case` takes O(log attempts) steps, so
``attempts`` may be as large as the caller likes.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import attrs

from ._checks import check_attempts, check_seconds, real_number, short_repr

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator

__all__ = ["Backoff", "check_attempts"]

#: Schedules up to this many attempts are summed term by term (exactly).
_SUMMED = 64


def _positive(
    instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    check_seconds(attribute.name, value)


def _jitter(value: object) -> float:
    number = real_number("jitter", value)
    if not 0 <= number < 1:
        msg = f"jitter must be in [0, 1), not {short_repr(value)}"
        raise ValueError(msg)
    return number


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

    Raises:
        TypeError: a setting is not a number.
        ValueError: a setting is out of range (the message names it).

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
        number = real_number("multiplier", value)
        if not (math.isfinite(number) and number >= 1):
            msg = f"multiplier must be a number >= 1, not {short_repr(value)}"
            raise ValueError(msg)

    @jitter.validator
    def _check_jitter(self, attribute: attrs.Attribute[float], value: float) -> None:
        _jitter(value)

    def base(self, attempt: int) -> float:
        """The wait after attempt ``attempt`` (0-based), before jitter.

        Example:
            >>> Backoff(initial=1.0, maximum=5.0).base(10)
            5.0
        """
        initial, maximum = self.initial, self.maximum
        if attempt == 0:  # every request's first wait: the short way
            return min(initial, maximum)
        if attempt < 0:
            msg = f"attempt must be >= 0, not {attempt!r}"
            raise ValueError(msg)
        multiplier = self.multiplier
        if initial >= maximum:
            return maximum
        if multiplier == 1:
            return initial
        # Compare exponents first so that huge attempt numbers cannot overflow
        # (logs of each bound: their ratio may not fit in a float).
        if attempt > (math.log(maximum) - math.log(initial)) / math.log(multiplier):
            return maximum
        try:
            return min(maximum, initial * multiplier**attempt)
        except OverflowError:  # the power alone is past floats, not the wait
            return min(
                maximum, math.exp(math.log(initial) + attempt * math.log(multiplier))
            )

    def waits(self, attempts: int, rng: random.Random) -> Iterator[float]:
        """The waits of ``attempts`` attempts, computed one at a time as they
        are taken (jitter drawn from ``rng`` then), so a huge ``attempts``
        costs nothing up front.

        Example:
            >>> import random
            >>> waits = Backoff(jitter=0.0).waits(10**9, random.Random(0))
            >>> next(waits), next(waits)
            (1.0, 2.0)
        """
        check_attempts(attempts)
        return self._waits(attempts, rng)

    def _waits(self, attempts: int, rng: random.Random) -> Iterator[float]:
        attempt = 0
        while attempt < attempts:
            yield self.wait(attempt, rng)
            attempt += 1

    def wait(self, attempt: int, rng: random.Random) -> float:
        """The wait after attempt ``attempt`` (0-based), jitter drawn from
        ``rng`` now (one draw, none without jitter): one step of :meth:`waits`.

        Example:
            >>> import random
            >>> Backoff(jitter=0.0).wait(2, random.Random(0))
            4.0
        """
        spread = self.jitter
        base = self.base(attempt)
        return base * (1 + rng.uniform(-spread, spread)) if spread else base

    def timeouts(self, attempts: int, rng: random.Random) -> list[float]:
        """The waits of ``attempts`` attempts as a list (see :meth:`waits`).

        Example:
            >>> import random
            >>> waits = Backoff().timeouts(3, random.Random(1))
            >>> [round(w, 3) for w in waits]
            [0.927, 2.139, 4.211]
        """
        return list(self.waits(attempts, rng))

    def worst_case(self, attempts: int) -> float:
        """The longest total wait of ``attempts`` attempts (jitter at its maximum).

        This bounds how long a request can take before it raises
        :class:`RequestTimeout`. It takes O(log attempts) steps.

        Example:
            >>> round(Backoff().worst_case(3), 3)
            7.7
            >>> Backoff(jitter=0.0).worst_case(10**12)
            59999999999703.0
        """
        check_attempts(attempts)
        try:
            if attempts <= _SUMMED:
                total = math.fsum(self.base(i) for i in range(attempts))
            else:
                growing = self._growing(attempts)
                total = self._sum_growing(growing) + (attempts - growing) * float(
                    self.maximum
                )
        except OverflowError:  # every wait is positive: the sum is past floats
            return math.inf
        return total * (1 + self.jitter)

    def _growing(self, attempts: int) -> int:
        """How many of the first ``attempts`` waits are below the cap (a
        binary search: :meth:`base` never decreases)."""
        low, high = 0, attempts  # base(i) < maximum for i < low; high is past it
        while low < high:
            middle = (low + high) // 2
            if self.base(middle) < self.maximum:
                low = middle + 1
            else:
                high = middle
        return low

    def _sum_growing(self, count: int) -> float:
        """``initial * multiplier**i`` summed over ``i < count``, all below the cap."""
        if count <= _SUMMED:
            return math.fsum(self.base(i) for i in range(count))
        step = self.multiplier - 1  # exact for any float >= 1
        if step == 0:
            return count * float(self.initial)
        exponent = count * math.log1p(step)
        if exponent > 700:  # initial is negligible next to the last term
            return math.exp(math.log(self.initial) + exponent) / step
        return self.initial * math.expm1(exponent) / step

    @classmethod
    def within(cls, total: float, attempts: int, *, jitter: float = 0.1) -> Backoff:
        """A doubling schedule whose worst case is exactly ``total`` seconds.

        Raises:
            TypeError: ``total`` or ``jitter`` is not a number.
            ValueError: a value is out of range, or so many attempts cannot
                share ``total`` (the first wait would not fit in a float).

        Example:
            >>> b = Backoff.within(7.0, 3, jitter=0.0)
            >>> b.initial, b.worst_case(3)
            (1.0, 7.0)
        """
        check_attempts(attempts)
        total = check_seconds("total", total)
        spread = _jitter(jitter)
        share = total / (1 + spread)
        if attempts <= 53:
            initial = share / (2**attempts - 1)
        else:  # 2**attempts - 1 rounds to 2**attempts
            initial = math.ldexp(share, -attempts)
        if initial < sys.float_info.min:
            msg = (
                f"{short_repr(attempts)} doubling attempts cannot share {total!r} s:"
                " the first wait would be below the smallest float"
            )
            raise ValueError(msg)
        return cls(
            initial=initial,
            multiplier=2.0,
            maximum=math.ldexp(initial, attempts - 1),
            jitter=jitter,
        )
