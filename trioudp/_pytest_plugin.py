"""pytest plugin: virtual-network fixtures for any project that installs trioudp.

Registered through the ``pytest11`` entry point, so it is active wherever
trioudp is installed. It needs pytest-trio (``trio_mode = true``, or tests
marked ``@pytest.mark.trio``); a test that uses its fixtures or marker
without that errors at setup with a message naming what to install or set,
and nothing else in the session is affected.

Fixtures:
    virtual_network: a :class:`~trioudp.testing.VirtualNetwork`, installed
        for the test, seeded from the test's id (or ``--trioudp-seed``).
    udp_echo_server: the ``(host, port)`` of an echo server on it.

Marker:
    ``@pytest.mark.virtual_network(latency=..., loss=..., autojump=True)``
    sets the link settings of the test's ``virtual_network`` fixture and,
    unless ``autojump=False``, runs the test under
    ``MockClock(autojump_threshold=0)`` (as pytest-trio's ``autojump_clock``).

Example::

    @pytest.mark.virtual_network(loss=0.2, latency=0.05)
    async def test_survives_loss(virtual_network, udp_echo_server):
        async with trioudp.open_udp_client(*udp_echo_server, attempts=8) as client:
            assert (await client.request(b"hi")).data == b"hi"
"""

from __future__ import annotations

import functools
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
_MARKER = "virtual_network"
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
    " [tool.pytest.ini_options] (or mark it @pytest.mark.trio)"
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**settings, autojump=True): run on a trioudp VirtualNetwork with"
        " these link settings, under the autojump clock unless autojump=False",
    )


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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not _has_pytest_trio(config):
        return  # the "trio" marker is unknown: pytest_runtest_setup explains
    for item in items:
        marker = item.get_closest_marker(_MARKER)
        if marker is not None and marker.kwargs.get("autojump", True):
            # pytest-trio takes the first "trio" marker's run function.
            item.add_marker(pytest.mark.trio(run=_run_with_autojump), append=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse, clearly and before any fixture runs, a test that uses the
    virtual network where pytest-trio will not run it."""
    uses = _FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if not uses and item.get_closest_marker(_MARKER) is None:
        return
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


@pytest.fixture
async def virtual_network(
    request: pytest.FixtureRequest,
) -> AsyncIterator[VirtualNetwork]:
    """A VirtualNetwork installed for this test; its seed is reported on failure."""
    seed = seed_for(request.node.nodeid, request.config.getoption("--trioudp-seed"))
    request.node.stash[_SEED_KEY] = seed
    marker = request.node.get_closest_marker(_MARKER)
    settings: dict[str, Any] = dict(marker.kwargs) if marker else {}
    settings.pop("autojump", None)
    net = VirtualNetwork(seed, **settings)
    with net.install():
        yield net


async def _echo(datagram: Datagram) -> None:
    await datagram.reply(datagram.data)


@pytest.fixture
async def udp_echo_server(
    virtual_network: VirtualNetwork, nursery: trio.Nursery
) -> tuple[str, int]:
    """``(host, port)`` of an echo server running on the virtual network."""
    server = await nursery.start(
        functools.partial(serve_udp, _echo, 0, host="127.0.0.1")
    )
    return ("127.0.0.1", server.port)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(_SEED_KEY, None)
    if seed is not None and report.failed:
        report.sections.append(
            (
                "trioudp",
                f"virtual network seed: {seed}; rerun exactly with:"
                f" pytest {item.nodeid!r} --trioudp-seed {seed}",
            )
        )
    return report
