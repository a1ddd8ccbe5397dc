"""What the supervisor and a worker agree on: settings through the
environment, and naming and loading a worker's function."""

import pytest

from trioudp._workers._protocol import WorkerSettings, load_target, target_spec
from trioudp._workers._worker import Worker


def test_worker_settings_survive_the_environment(monkeypatch):
    settings = WorkerSettings(
        target="m:f",
        index=1,
        count=2,
        port=53,
        args=("a",),
        grace=1.5,
        control_fd=5,
        report_fd=6,
        path=("/x",),
    )
    monkeypatch.setenv("TRIOUDP_WORKER", settings.to_environment())
    assert WorkerSettings.from_environment() == settings
    worker = Worker(settings)
    assert (worker.index, worker.count, worker.port, worker.args) == (1, 2, 53, ("a",))


def test_target_spec_names_module_functions_and_refuses_the_rest():
    assert target_spec("pkg.mod:main") == "pkg.mod:main"
    assert target_spec(load_target) == "trioudp._workers._protocol:load_target"

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
    assert load_target("trioudp._workers._protocol:target_spec") is target_spec
    with pytest.raises(AttributeError):
        load_target("trioudp._workers._protocol:nothing_here")
