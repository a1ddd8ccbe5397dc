"""The counters line a server prints on SIGUSR1 and at exit names every
counter of :class:`ServerStats` that is not 0."""

import attrs
import pytest

import trioudp
from trioudp._cli._output import (
    DROPPED_REASONS,
    RARE_COUNTS,
    WITHHELD_REASONS,
    stats_line,
)

#: Always on the line, 0 or not.
ALWAYS = ("received", "handled", "replied", "handler_errors")
#: Levels, not counts: how much is in the server now.
LEVELS = ("in_flight", "queued", "tasks")


def counters():
    return [
        name
        for name, field in attrs.fields_dict(trioudp.ServerStats).items()
        if field.type in ("int", int) and name not in LEVELS
    ]


def test_every_counter_has_a_place_on_the_line():
    placed = [*ALWAYS, *DROPPED_REASONS, *WITHHELD_REASONS, *RARE_COUNTS]
    assert sorted(placed) == sorted(counters())
    # The line's "dropped" is the library's: the same reasons, no other.
    stats = trioudp.ServerStats(**dict.fromkeys(DROPPED_REASONS, 1))
    assert stats.dropped == len(DROPPED_REASONS)


@pytest.mark.parametrize("name", [*DROPPED_REASONS, *WITHHELD_REASONS, *RARE_COUNTS])
def test_a_counter_that_is_not_0_is_shown_with_its_name(name):
    line = stats_line(trioudp.ServerStats(**{name: 7}))
    label = {**DROPPED_REASONS, **WITHHELD_REASONS, **RARE_COUNTS}[name]
    if name in DROPPED_REASONS:
        assert f"dropped 7 ({label} 7)," in line
    elif name in WITHHELD_REASONS:
        assert f"replies withheld 7 ({label} 7)," in line
    else:
        assert line.endswith(f", {label} 7")
    assert line.count(" 7") == (2 if name not in RARE_COUNTS else 1)


def test_zero_counters_show_no_reasons_and_several_are_listed_in_order():
    quiet = stats_line(trioudp.ServerStats(kernel_drops=0))
    assert quiet == (
        "totals: received 0, handled 0, replied 0, dropped 0, replies withheld 0,"
        " handler errors 0, kernel drops 0"
    )
    busy = trioudp.ServerStats(
        received=9,
        handled=3,
        replied=1,
        dropped_forged=2,
        dropped_broadcast=1,
        dropped_multicast=3,
        dropped_amplification=1,
        dropped_loop=4,
        send_errors={"EPERM": 1, "ENETUNREACH": 2},
        receive_errors={"ECONNREFUSED": 1},
    )
    assert stats_line(busy, 2) == (
        "totals of 2 workers: received 9, handled 3, replied 1, dropped 6 (forged"
        " source 2, broadcast 1, multicast 3), replies withheld 5 (amplification"
        " guard 1, loop guard 4), handler errors 0, receive errors 1 (ECONNREFUSED"
        " 1), send errors 3 (ENETUNREACH 2, EPERM 1)"
    )
