import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioudp import Backoff


def test_defaults_follow_rfc_6298_and_8085():
    backoff = Backoff()
    assert (backoff.initial, backoff.multiplier, backoff.maximum, backoff.jitter) == (
        1.0,
        2.0,
        60.0,
        0.1,
    )
    assert [backoff.base(i) for i in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_no_jitter_is_exact():
    assert Backoff(initial=0.5, jitter=0.0).timeouts(4, random.Random()) == [
        0.5,
        1.0,
        2.0,
        4.0,
    ]


def test_same_seed_same_schedule():
    backoff = Backoff()
    assert backoff.timeouts(5, random.Random(3)) == backoff.timeouts(
        5, random.Random(3)
    )
    assert backoff.timeouts(5, random.Random(3)) != backoff.timeouts(
        5, random.Random(4)
    )


def test_huge_attempt_numbers_do_not_overflow():
    assert Backoff().base(10_000) == 60.0


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"initial": 0}, "initial must be a positive"),
        ({"initial": math.inf}, "initial must be a positive"),
        ({"multiplier": 0.5}, "multiplier must be a number >= 1"),
        ({"maximum": -1}, "maximum must be a positive"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"jitter": -0.1}, r"jitter must be in \[0, 1\)"),
    ],
)
def test_bad_settings(settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        Backoff(**settings)


@pytest.mark.parametrize("attempts", [0, -1, 1.5, True])
def test_bad_attempts(attempts):
    with pytest.raises(ValueError, match="attempts must be an int >= 1"):
        Backoff().timeouts(attempts, random.Random())


def test_within_fits_the_budget_exactly():
    backoff = Backoff.within(1.0, 3)
    assert backoff.worst_case(3) == pytest.approx(1.0)
    assert backoff.base(0) * 2 == pytest.approx(backoff.base(1))


@given(
    initial=st.floats(0.001, 10),
    multiplier=st.floats(1, 4),
    maximum=st.floats(0.001, 100),
    jitter=st.floats(0, 0.99),
    attempts=st.integers(1, 30),
    seed=st.integers(0, 2**32),
)
def test_every_schedule_stays_within_its_worst_case(
    initial, multiplier, maximum, jitter, attempts, seed
):
    backoff = Backoff(
        initial=initial, multiplier=multiplier, maximum=maximum, jitter=jitter
    )
    waits = backoff.timeouts(attempts, random.Random(seed))
    assert len(waits) == attempts
    for i, wait in enumerate(waits):
        base = backoff.base(i)
        assert base <= max(maximum, initial) + 1e-9
        assert base * (1 - jitter) - 1e-9 <= wait <= base * (1 + jitter) + 1e-9
    assert sum(waits) <= backoff.worst_case(attempts) + 1e-6
