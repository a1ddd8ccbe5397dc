"""The supervisor's decisions, with no processes: restart delays, crash
loops, summed counters."""

import attrs

import trioudp
from trioudp._workers._policy import CrashBudget, retired_report, sum_stats

from .helpers import FAST


def test_crash_budget_backs_off_then_gives_up_and_forgets_old_crashes():
    budget = CrashBudget(FAST, max_crashes=3, window=10.0)
    assert [budget.crashed(t) for t in (0.0, 1.0, 2.0)] == [0.01, 0.02, 0.04]
    assert budget.crashed(3.0) is None
    assert budget.recent == 4
    # Ten seconds later the first crashes no longer count.
    assert budget.crashed(12.5) == 0.02
    assert budget.recent == 2


def test_sum_stats_adds_counts_and_tables_and_skips_what_is_not_a_count():
    total = sum_stats(
        [
            {"received": 5, "replied": 4, "kernel_drops": None, "send_errors": {}},
            {"received": 7, "replied": "x", "kernel_drops": 2, "bogus": 1},
            {"received": True, "send_errors": {"EAGAIN": 2, "E": "many", 3: 1}},
            {},
        ]
    )
    assert total.received == 12
    assert total.replied == 4
    assert total.kernel_drops == 2
    assert total.send_errors == {"EAGAIN": 2}
    assert sum_stats([{}]).kernel_drops is None


def test_sum_stats_adds_every_counter_the_server_has():
    # Counters added to ServerStats later (dropped_loop, dropped_broadcast,
    # ...) are summed too: the workers' totals miss none.
    counts = [
        name
        for name, field in attrs.fields_dict(trioudp.ServerStats).items()
        if field.type in ("int", int)
    ]
    assert {"dropped_loop", "dropped_broadcast", "dropped_multicast"} <= set(counts)
    reports = [
        {name: n + 1 for n, name in enumerate(counts)},
        dict.fromkeys(counts, 100),
    ]
    total = sum_stats(reports)
    for n, name in enumerate(counts):
        assert getattr(total, name) == n + 101, name


def test_a_retired_report_keeps_counts_and_drops_levels():
    report = {"received": 3, "in_flight": 1, "queued": 2, "tasks": 4, "replied": 2}
    assert retired_report(report) == {"received": 3, "replied": 2}
    assert sum_stats([retired_report(report)]).in_flight == 0
