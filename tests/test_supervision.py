"""The supervisor's decisions, with no processes: restart delays, crash
loops, summed counters, naming and loading a worker's function."""

import pytest

import trioudp
from trioudp._supervision import CrashBudget, retired_report, sum_stats, target_spec
from trioudp._worker import load_target

FAST = trioudp.Backoff(initial=0.01, multiplier=2.0, maximum=0.05, jitter=0.0)


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


def test_target_spec_names_module_functions_and_refuses_the_rest():
    assert target_spec("pkg.mod:main") == "pkg.mod:main"
    assert target_spec(load_target) == "trioudp._worker:load_target"

    async def local(worker):
        pass

    for bad in ("no-colon", ":main", "mod:", local, lambda worker: None):
        with pytest.raises(ValueError, match="worker target"):
            target_spec(bad)


def test_load_target_loads_a_file_without_running_its_main_block(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "RAN = []\n"
        "async def main(worker):\n    return 7\n"
        "if __name__ == '__main__':\n    raise SystemExit('must not run')\n"
    )
    main = load_target(f"{script}:main")
    assert main.__name__ == "main"
    assert load_target("trioudp._workers:sum_stats") is sum_stats
    with pytest.raises(AttributeError):
        load_target("trioudp._workers:nothing_here")


def test_a_retired_report_keeps_counts_and_drops_levels():
    report = {"received": 3, "in_flight": 1, "queued": 2, "tasks": 4, "replied": 2}
    assert retired_report(report) == {"received": 3, "replied": 2}
    assert sum_stats([retired_report(report)]).in_flight == 0
