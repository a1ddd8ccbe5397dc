"""pytest plugin: virtual-network fixtures for any project that installs trioudp.

Registered through the ``pytest11`` entry point, so it is active wherever
trioudp is installed. Tests that use it run on Trio under pytest-trio
(``trio_mode = true``, or tests marked ``@pytest.mark.trio``) or under
anyio's plugin on its Trio backend (``@pytest.mark.anyio`` with an
``anyio_backend`` fixture that returns ``"trio"``); a test that uses its
fixtures or marker otherwise errors at setup with a message naming what to
install or set, and nothing else in the session is affected.

Under anyio's plugin the clock is anyio's to choose: the autojump clock the
marker (or the fixture alone) asks for is given in ``anyio_backend``, as
``("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})`` (any
``MockClock`` there is kept, as a clock a pytest-trio test brings is), and a
test that asks for it on the real clock errors, saying so.

Fixtures:
    virtual_network: a :class:`~trioudp.testing.VirtualNetwork`, installed
        for the test, seeded from the test's id (or ``--trioudp-seed``); the
        test runs under ``MockClock(autojump_threshold=0)`` (as pytest-trio's
        ``autojump_clock``) unless it brings a clock of its own or its
        marker says ``autojump=False``.
    udp_echo_server: the ``(host, port)`` of an echo server on it.

Marker:
    ``@pytest.mark.virtual_network(latency=..., loss=..., seed=None,
    autojump=True)`` sets the link settings of the test's ``virtual_network``
    fixture (any keyword argument of ``VirtualNetwork``); ``seed=`` pins its
    seed; ``autojump=False`` runs the test on pytest-trio's usual clock.

Options:
    ``--trioudp-seed N`` seeds every network with ``N``; ``--trioudp-seeds
    N`` runs each virtual-network test under N seeds (its own and the N - 1
    after it: test ids ``[seed+0]`` ... ``[seed+N-1]``) and lists every
    failing seed with the command that reruns it.

Failures. A failing test's report names its seed and the shell-quoted
command that reruns it exactly, shows the last lines of the network's trace,
and says where the network's pcapng capture was written (pytest's temporary
directory).

Example::

    @pytest.mark.virtual_network(loss=0.2, latency=0.05)
    async def test_survives_loss(virtual_network, udp_echo_server):
        async with trioudp.open_udp_client(*udp_echo_server, attempts=8) as client:
            assert (await client.request(b"hi")).data == b"hi"
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import zlib
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from ._serve import serve_udp
from .testing import VirtualNetwork

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence

    from ._datagram import Datagram

_SEED_KEY = pytest.StashKey[int]()
_NETWORK_KEY = pytest.StashKey["_Run"]()
_FAILED_SEEDS_KEY = pytest.StashKey["list[str]"]()
_MARKER = "virtual_network"
#: The hidden fixture that --trioudp-seeds parametrizes: an offset from the
#: test's seed.
_OFFSET = "_trioudp_seed_offset"
#: How many of the trace's last events a failure report shows.
TRACE_LINES = 20
_FIXTURES = frozenset({"virtual_network", "udp_echo_server"})
_NO_PYTEST_TRIO = (
    "trioudp's virtual_network fixtures and marker need pytest-trio, which is"
    " not installed (or is disabled with -p no:trio): pip install pytest-trio,"
    " and set trio_mode = true under [tool.pytest.ini_options] (or mark the"
    " tests @pytest.mark.trio)"
)
_NOT_A_TRIO_TEST = (
    "{name} uses trioudp's virtual network but pytest-trio does not run it:"
    " make it an async def test and set trio_mode = true under"
    " [tool.pytest.ini_options] (or mark it @pytest.mark.trio, or"
    " @pytest.mark.anyio with an anyio_backend fixture that returns 'trio')"
)
_NOT_ON_TRIO = (
    "{name} uses trioudp's virtual network, which runs on Trio, but anyio runs"
    " it on {backend!r}: make its anyio_backend fixture return 'trio'"
)
_NO_AUTOJUMP_CLOCK = (
    "{name} runs on trioudp's virtual network under the autojump clock, but"
    " anyio's plugin chooses the clock: make its anyio_backend fixture return"
    " ('trio', {{'clock': trio.testing.MockClock(autojump_threshold=0)}}), or"
    " mark it @pytest.mark.virtual_network(autojump=False)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trioudp")
    group.addoption(
        "--trioudp-seed",
        type=int,
        default=None,
        metavar="N",
        help="seed every virtual_network fixture with N (to rerun a failure exactly)",
    )
    group.addoption(
        "--trioudp-seeds",
        type=int,
        default=1,
        metavar="N",
        help="run each virtual_network test under N seeds (its own, or"
        " --trioudp-seed's, and the N-1 after it) and list every failing seed",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**settings, seed=None, autojump=True): run on a trioudp"
        " VirtualNetwork with these link settings (and this seed, if given),"
        " under the autojump clock unless autojump=False",
    )
    if config.getoption("--trioudp-seeds") < 1:
        msg = "--trioudp-seeds takes a count of seeds >= 1"
        raise pytest.UsageError(msg)
    config.stash[_FAILED_SEEDS_KEY] = []


def _run_with_autojump(
    fn: Callable[[], Awaitable[object]],
    *,
    clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> object:
    """``trio.run`` on an autojumping MockClock, unless the test brings a clock."""
    return trio.run(
        fn,
        clock=clock or trio.testing.MockClock(autojump_threshold=0),
        instruments=instruments,
    )


def _has_pytest_trio(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("trio")


def _run_by_anyio(item: pytest.Item) -> bool:
    """Whether anyio's pytest plugin runs ``item`` (it does every test that
    asks for ``anyio_backend``, as ``@pytest.mark.anyio`` makes it)."""
    return "anyio_backend" in getattr(item, "fixturenames", ())


def _wants_autojump(item: pytest.Item) -> bool:
    """Whether ``item`` should run on the autojump clock: its marker says
    so (the default), or, without one, it asks for the network."""
    marker = item.get_closest_marker(_MARKER)
    if marker is not None:
        return bool(marker.kwargs.get("autojump", True))
    return "virtual_network" in getattr(item, "fixturenames", ())


def _pinned_seed(marker: pytest.Mark | None) -> int | None:
    """The seed the marker pins, if it does (checked: an int)."""
    if marker is None or marker.kwargs.get("seed") is None:
        return None
    seed = marker.kwargs["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"@pytest.mark.{_MARKER}(seed=...) takes an int, not {seed!r}"
        raise TypeError(msg)
    return seed


@pytest.hookimpl(trylast=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    count = metafunc.config.getoption("--trioudp-seeds")
    if count <= 1 or _OFFSET not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is not None and marker.kwargs.get("seed") is not None:
        return  # pinned (the fixture checks the seed): one seed, whatever the sweep
    metafunc.parametrize(_OFFSET, range(count), ids=[f"seed+{n}" for n in range(count)])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not _has_pytest_trio(config):
        return  # the "trio" marker is unknown: pytest_runtest_setup explains
    usual_run = config.getini("trio_run") == "trio"
    for item in items:
        if _run_by_anyio(item):
            continue  # anyio's plugin runs it, on the clock anyio_backend gives
        marker = item.get_closest_marker(_MARKER)
        if marker is not None:
            autojump = marker.kwargs.get("autojump", True)
        else:
            # The fixture alone: a Trio test (trio_mode, or marked) that asks
            # for the network, with Trio's own run function.
            autojump = (
                usual_run
                and "virtual_network" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("trio") is not None
            )
        if autojump:
            # pytest-trio takes the first "trio" marker's run function.
            item.add_marker(pytest.mark.trio(run=_run_with_autojump), append=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse, clearly and before any fixture runs, a test that uses the
    virtual network where pytest-trio will not run it."""
    uses = _FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if not uses and item.get_closest_marker(_MARKER) is None:
        return
    if _run_by_anyio(item):
        return  # the backend and the clock are checked in virtual_network
    if not _has_pytest_trio(item.config):
        pytest.fail(_NO_PYTEST_TRIO, pytrace=False)
    if item.get_closest_marker("trio") is None:
        pytest.fail(_NOT_A_TRIO_TEST.format(name=item.name), pytrace=False)


def seed_for(nodeid: str, override: int | None = None) -> int:
    """The seed a test gets: ``override`` if given, else a hash of its id.

    Example:
        >>> seed_for("tests/test_x.py::test_y") == seed_for("tests/test_x.py::test_y")
        True
    """
    return override if override is not None else zlib.crc32(nodeid.encode())


def base_nodeid(item: pytest.Item) -> str:
    """The test's id without the ``[seed+N]`` that ``--trioudp-seeds`` adds:
    the id a rerun names.

    Example:
        >>> class Item:
        ...     nodeid = "t.py::test_y[1-seed+3]"
        ...     callspec = type("C", (), {"params": {_OFFSET: 3}})
        >>> base_nodeid(Item())
        't.py::test_y[1]'
    """
    nodeid = item.nodeid
    callspec = getattr(item, "callspec", None)
    if callspec is None or _OFFSET not in callspec.params:
        return nodeid
    token = re.escape(f"seed+{callspec.params[_OFFSET]}")
    nodeid = re.sub(rf"-{token}\]$", "]", nodeid)
    nodeid = re.sub(rf"\[{token}\]$", "", nodeid)
    return re.sub(rf"\[{token}-", "[", nodeid)


@pytest.fixture
def _trioudp_seed_offset() -> int:
    """Which of the test's seeds it runs under (``--trioudp-seeds``): 0 alone."""
    return 0


class _Run:
    """What a failure report needs of one test's network."""

    def __init__(
        self, net: VirtualNetwork, pinned: bool, temp: pytest.TempPathFactory
    ) -> None:
        self.net = net
        self.pinned = pinned
        self.temp = temp
        self.capture: str | None = None


@pytest.fixture
async def virtual_network(
    request: pytest.FixtureRequest,
    _trioudp_seed_offset: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[VirtualNetwork]:
    """A VirtualNetwork installed for this test; its seed is reported on failure."""
    if _run_by_anyio(request.node):
        _check_anyio_run(request)
    marker = request.node.get_closest_marker(_MARKER)
    pinned = _pinned_seed(marker)
    if pinned is not None:
        seed = pinned
    else:
        base = seed_for(
            base_nodeid(request.node), request.config.getoption("--trioudp-seed")
        )
        seed = base + _trioudp_seed_offset
    request.node.stash[_SEED_KEY] = seed
    settings: dict[str, Any] = dict(marker.kwargs) if marker else {}
    settings.pop("autojump", None)
    settings.pop("seed", None)
    net = VirtualNetwork(seed, **settings)
    request.node.stash[_NETWORK_KEY] = _Run(net, pinned is not None, tmp_path_factory)
    with net.install():
        yield net


def _check_anyio_run(request: pytest.FixtureRequest) -> None:
    """Fail a test that anyio runs on another backend than Trio, or on the
    real clock where it asks for the autojump clock."""
    item = request.node
    backend = request.getfixturevalue("anyio_backend")
    name = backend if isinstance(backend, str) else backend[0]
    if name != "trio":
        pytest.fail(_NOT_ON_TRIO.format(name=item.name, backend=name), pytrace=False)
    # A MockClock is one the test chose, as a clock a pytest-trio test
    # brings is kept (see _run_with_autojump).
    own_clock = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    if _wants_autojump(item) and not own_clock:
        pytest.fail(_NO_AUTOJUMP_CLOCK.format(name=item.name), pytrace=False)


async def _echo(datagram: Datagram) -> None:
    await datagram.reply(datagram.data)


@pytest.fixture
async def udp_echo_server(
    virtual_network: VirtualNetwork,
) -> AsyncIterator[tuple[str, int]]:
    """``(host, port)`` of an echo server running on the virtual network."""
    # A nursery of its own, not pytest-trio's fixture: anyio has none.
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_udp, _echo, 0, host="127.0.0.1")
        )
        yield ("127.0.0.1", server.port)
        nursery.cancel_scope.cancel()


def rerun_command(item: pytest.Item, seed: int, *, pinned: bool = False) -> str:
    """The shell command that reruns ``item`` under ``seed``, from the
    directory pytest was started in, quoted for a POSIX shell.

    Example:
        >>> class Item:
        ...     nodeid = "t.py::test_y[a b]"
        ...     config = None
        >>> rerun_command(Item(), 7)
        "pytest 't.py::test_y[a b]' --trioudp-seed 7"
    """
    nodeid = base_nodeid(item)
    config = item.config
    if config is not None:
        path, separator, rest = nodeid.partition("::")
        here = config.invocation_params.dir
        if here != config.rootpath:
            path = os.path.relpath(config.rootpath / path, here)
        nodeid = f"{path}{separator}{rest}"
    command = f"pytest {shlex.quote(nodeid)}"
    return command if pinned else f"{command} --trioudp-seed {seed}"


def _failure_section(item: pytest.Item, seed: int, run: _Run | None) -> str:
    pinned = run is not None and run.pinned
    how = " (pinned by the marker)" if pinned else ""
    lines = [
        f"virtual network seed: {seed}{how}; rerun exactly with:"
        f" {rerun_command(item, seed, pinned=pinned)}"
    ]
    if run is None:
        return lines[0]
    net = run.net
    if run.capture is None:
        directory = run.temp.mktemp(re.sub(r"\W", "_", item.name)[:30])
        path = directory / "virtual_network.pcapng"
        try:
            net.write_pcap(path)
        except RuntimeError:  # record=False: nothing was kept
            run.capture = ""
        else:
            run.capture = str(path)
    if not run.capture:
        lines.append("no trace and no capture: the network was made with record=False")
        return "\n".join(lines)
    tail = net.trace_text(last=TRACE_LINES).rstrip("\n")
    if tail:
        lines.append(f"the trace's last {TRACE_LINES} events (at most):")
        lines.append(tail)
    else:
        lines.append("the trace is empty: nothing happened on the network")
    lines.append(
        f"pcapng capture: {run.capture} (each packet's fate is its comment:"
        " tshark -V -r)"
    )
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(_SEED_KEY, None)
    if seed is not None and report.failed:
        run = item.stash.get(_NETWORK_KEY, None)
        report.sections.append(("trioudp", _failure_section(item, seed, run)))
        command = rerun_command(item, seed, pinned=run is not None and run.pinned)
        failed = item.config.stash[_FAILED_SEEDS_KEY]
        if command not in failed:
            failed.append(command)
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """After a sweep (``--trioudp-seeds``), every failing seed's rerun command."""
    failed = config.stash.get(_FAILED_SEEDS_KEY, [])
    if config.getoption("--trioudp-seeds") <= 1 or not failed:
        return
    terminalreporter.section("trioudp: failing seeds")
    for command in failed:
        terminalreporter.write_line(command)
