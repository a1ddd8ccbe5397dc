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


class _CountingBase:
    """Patches ``Backoff.base`` to count its calls and to fail past ``limit``
    (so an up-front O(attempts) computation fails fast instead of hanging)."""

    def __init__(self, monkeypatch, limit):
        self.calls = 0
        original = Backoff.base

        def counted(backoff, attempt):
            self.calls += 1
            assert self.calls <= limit, "the schedule is computed up front"
            return original(backoff, attempt)

        monkeypatch.setattr(Backoff, "base", counted)


def test_waits_are_computed_lazily(monkeypatch):
    counter = _CountingBase(monkeypatch, limit=10)
    waits = Backoff(initial=0.5, jitter=0.0).waits(10**12, random.Random(0))
    assert [next(waits) for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert counter.calls == 4


@pytest.mark.parametrize("attempts", [10**7, 10**100])
def test_worst_case_of_huge_attempts_takes_logarithmic_steps(monkeypatch, attempts):
    counter = _CountingBase(monkeypatch, limit=2000)
    expected = 63 + (attempts - 6) * 60
    assert Backoff(jitter=0.0).worst_case(attempts) == pytest.approx(expected)
    assert counter.calls < 2000


@pytest.mark.parametrize("multiplier", [1.0, 2.0])
def test_worst_case_beyond_floats_is_infinite(multiplier):
    assert Backoff(multiplier=multiplier).worst_case(10**400) == math.inf


def test_worst_case_with_a_multiplier_near_one():
    backoff = Backoff(initial=0.001, multiplier=1.0001, maximum=10.0, jitter=0.0)
    attempts = 200_000
    exact = math.fsum(backoff.base(i) for i in range(attempts))
    assert backoff.worst_case(attempts) == pytest.approx(exact, rel=1e-9)


@given(
    initial=st.floats(1e-6, 10),
    multiplier=st.floats(1, 4),
    maximum=st.floats(1e-6, 1000),
    jitter=st.floats(0, 0.99),
    attempts=st.integers(1, 3000),
)
def test_worst_case_is_the_sum_of_the_largest_waits(
    initial, multiplier, maximum, jitter, attempts
):
    backoff = Backoff(
        initial=initial, multiplier=multiplier, maximum=maximum, jitter=jitter
    )
    exact = math.fsum(backoff.base(i) for i in range(attempts)) * (1 + jitter)
    assert backoff.worst_case(attempts) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: Backoff.within(1, 3, jitter=-1), ValueError, r"jitter .*-1"),
        (
            lambda: Backoff.within(1, 3, jitter="x"),
            TypeError,
            "jitter must be a number",
        ),
        (lambda: Backoff.within("1", 3), TypeError, "total must be a number, not '1'"),
        (lambda: Backoff.within(1, 5000), ValueError, "5000 doubling attempts"),
        (lambda: Backoff.within(10**400, 3), ValueError, "total is too large"),
        (lambda: Backoff.within(math.nan, 3), ValueError, "total must be a number"),
        (lambda: Backoff(initial=10**400), ValueError, "initial is too large"),
        (lambda: Backoff(multiplier=10**400), ValueError, "multiplier is too large"),
        (lambda: Backoff(maximum="60"), TypeError, "maximum must be a number"),
        (lambda: Backoff(jitter=10**400), ValueError, "jitter is too large"),
        (lambda: Backoff(jitter=1), ValueError, r"jitter must be in \[0, 1\)"),
        (lambda: Backoff(initial=math.nan), ValueError, "initial must be a number"),
    ],
)
def test_bad_values_name_themselves_at_construction(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


def test_within_many_attempts_still_fits_the_budget():
    backoff = Backoff.within(1.0, 1000, jitter=0.0)
    assert backoff.worst_case(1000) == pytest.approx(1.0)


@given(
    initial=st.floats(min_value=1e-310, max_value=1e308),
    multiplier=st.floats(min_value=1, max_value=1e308),
    maximum=st.floats(min_value=1e-310, max_value=1e308),
    jitter=st.floats(0, 0.99),
    attempts=st.one_of(st.integers(1, 100), st.integers(1, 10**500)),
)
def test_extreme_settings_never_overflow(
    initial, multiplier, maximum, jitter, attempts
):
    backoff = Backoff(
        initial=initial, multiplier=multiplier, maximum=maximum, jitter=jitter
    )
    assert backoff.worst_case(attempts) >= 0
    assert 0 < backoff.base(attempts) <= max(initial, maximum)
    waits = backoff.waits(attempts, random.Random(0))
    assert next(waits) > 0


def test_a_wait_whose_power_alone_overflows():
    backoff = Backoff(initial=1e-300, multiplier=1.0000001, maximum=1e300, jitter=0)
    attempt = 10_000_000_000  # 1.0000001**attempt overflows; the wait is ~1e134
    expected = math.exp(math.log(1e-300) + attempt * math.log(1.0000001))
    assert backoff.base(attempt) == pytest.approx(expected, rel=1e-6)
