"""Write the intersphinx inventories of Python and Trio that the docs link to.

CI builds the documentation without a network, so the inventories live in
the repository. They are not the projects' published ``objects.inv`` files
(those cannot be downloaded here): each is a small inventory, written by this
script, of the names trioudp's documentation refers to, with the URLs of
their entries in the published documentation. To link to another name, add
it below and run::

    python docs/_inventories/make_inventories.py

``tests/test_docs.py`` checks that the committed files are what this script
writes.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, role, page); the anchor is the name itself, as Sphinx writes it.
PYTHON = [
    ("object", "class", "library/functions.html"),
    ("int", "class", "library/functions.html"),
    ("float", "class", "library/functions.html"),
    ("bool", "class", "library/functions.html"),
    ("help", "function", "library/functions.html"),
    ("str", "class", "library/stdtypes.html"),
    ("bytes", "class", "library/stdtypes.html"),
    ("bytearray", "class", "library/stdtypes.html"),
    ("memoryview", "class", "library/stdtypes.html"),
    ("tuple", "class", "library/stdtypes.html"),
    ("list", "class", "library/stdtypes.html"),
    ("dict", "class", "library/stdtypes.html"),
    ("None", "data", "library/constants.html"),
    ("BaseException", "exception", "library/exceptions.html"),
    ("Exception", "exception", "library/exceptions.html"),
    ("KeyboardInterrupt", "exception", "library/exceptions.html"),
    ("OSError", "exception", "library/exceptions.html"),
    ("ConnectionRefusedError", "exception", "library/exceptions.html"),
    ("TypeError", "exception", "library/exceptions.html"),
    ("ValueError", "exception", "library/exceptions.html"),
    ("collections.abc.AsyncIterator", "class", "library/collections.abc.html"),
    ("collections.abc.Awaitable", "class", "library/collections.abc.html"),
    ("collections.abc.Callable", "class", "library/collections.abc.html"),
    ("collections.abc.Coroutine", "class", "library/collections.abc.html"),
    ("collections.abc.Hashable", "class", "library/collections.abc.html"),
    ("collections.abc.Iterable", "class", "library/collections.abc.html"),
    ("collections.abc.Iterator", "class", "library/collections.abc.html"),
    ("collections.abc.Sequence", "class", "library/collections.abc.html"),
    ("contextlib.AsyncExitStack", "class", "library/contextlib.html"),
    ("enum.Enum", "class", "library/enum.html"),
    ("ipaddress.IPv4Network", "class", "library/ipaddress.html"),
    ("ipaddress.IPv6Network", "class", "library/ipaddress.html"),
    ("logging.getLogger", "function", "library/logging.html"),
    ("os.PathLike", "class", "library/os.html"),
    ("random.Random", "class", "library/random.html"),
    ("signal.Signals", "class", "library/signal.html"),
    ("socket.AddressFamily", "class", "library/socket.html"),
    ("socket.SocketKind", "class", "library/socket.html"),
    ("socket.gaierror", "exception", "library/socket.html"),
    ("socket.getaddrinfo", "function", "library/socket.html"),
    ("socket.getnameinfo", "function", "library/socket.html"),
    ("socket.socket", "class", "library/socket.html"),
    ("socket.socket.recvfrom", "method", "library/socket.html"),
    ("socket.socket.sendto", "method", "library/socket.html"),
    ("socket.AF_INET", "data", "library/socket.html"),
    ("socket.AF_INET6", "data", "library/socket.html"),
    ("socket.SOCK_DGRAM", "data", "library/socket.html"),
    ("typing.Protocol", "class", "library/typing.html"),
    ("typing.Union", "data", "library/typing.html"),
    ("argparse.ArgumentParser", "class", "library/argparse.html"),
]
PYTHON_MODULES = ["socket", "errno", "logging", "argparse", "asyncio", "typing"]

TRIO = [
    ("trio.run", "function", "reference-core.html"),
    ("trio.open_nursery", "function", "reference-core.html"),
    ("trio.Nursery", "class", "reference-core.html"),
    ("trio.Nursery.start", "method", "reference-core.html"),
    ("trio.Nursery.start_soon", "method", "reference-core.html"),
    ("trio.Nursery.cancel_scope", "attribute", "reference-core.html"),
    ("trio.TaskStatus", "class", "reference-core.html"),
    ("trio.TaskStatus.started", "method", "reference-core.html"),
    ("trio.TASK_STATUS_IGNORED", "data", "reference-core.html"),
    ("trio.CancelScope", "class", "reference-core.html"),
    ("trio.CancelScope.cancel", "method", "reference-core.html"),
    ("trio.Cancelled", "exception", "reference-core.html"),
    ("trio.move_on_after", "function", "reference-core.html"),
    ("trio.fail_after", "function", "reference-core.html"),
    ("trio.TooSlowError", "exception", "reference-core.html"),
    ("trio.sleep", "function", "reference-core.html"),
    ("trio.sleep_forever", "function", "reference-core.html"),
    ("trio.current_time", "function", "reference-core.html"),
    ("trio.Event", "class", "reference-core.html"),
    ("trio.ClosedResourceError", "exception", "reference-core.html"),
    ("trio.BusyResourceError", "exception", "reference-core.html"),
    ("trio.BrokenResourceError", "exception", "reference-core.html"),
    ("trio.abc.Clock", "class", "reference-core.html"),
    ("trio.abc.AsyncResource", "class", "reference-io.html"),
    ("trio.abc.AsyncResource.aclose", "method", "reference-io.html"),
    ("trio.aclose_forcefully", "function", "reference-io.html"),
    ("trio.abc.HalfCloseableStream", "class", "reference-io.html"),
    ("trio.serve_tcp", "function", "reference-io.html"),
    ("trio.open_tcp_listeners", "function", "reference-io.html"),
    ("trio.serve_listeners", "function", "reference-io.html"),
    ("trio.open_signal_receiver", "function", "reference-io.html"),
    ("trio.socket.socket", "function", "reference-io.html"),
    ("trio.socket.SocketType", "class", "reference-io.html"),
    ("trio.socket.getaddrinfo", "function", "reference-io.html"),
    ("trio.socket.set_custom_socket_factory", "function", "reference-io.html"),
    ("trio.socket.set_custom_hostname_resolver", "function", "reference-io.html"),
    ("trio.abc.SocketFactory", "class", "reference-io.html"),
    ("trio.abc.HostnameResolver", "class", "reference-io.html"),
    ("trio.abc.Instrument", "class", "reference-lowlevel.html"),
    ("trio.lowlevel.checkpoint", "function", "reference-lowlevel.html"),
    ("trio.lowlevel.checkpoint_if_cancelled", "function", "reference-lowlevel.html"),
    ("trio.lowlevel.current_task", "function", "reference-lowlevel.html"),
    ("trio.lowlevel.Task", "class", "reference-lowlevel.html"),
    ("trio.testing.MockClock", "class", "reference-testing.html"),
    (
        "trio.testing.MockClock.autojump_threshold",
        "attribute",
        "reference-testing.html",
    ),
    ("trio.testing.wait_all_tasks_blocked", "function", "reference-testing.html"),
    ("trio.testing.assert_checkpoints", "function", "reference-testing.html"),
    ("trio.testing.assert_no_checkpoints", "function", "reference-testing.html"),
]
TRIO_MODULES = ["trio", "trio.socket", "trio.testing", "trio.lowlevel", "trio.abc"]


def inventory(
    project: str,
    version: str,
    names: list[tuple[str, str, str]],
    modules: list[str],
    module_page: dict[str, str],
) -> bytes:
    """A Sphinx inventory (version 2) of ``names`` and ``modules``.

    Example:
        >>> data = inventory("P", "1", [("f", "function", "p.html")], [], {})
        >>> data.splitlines()[1]
        b'# Project: P'
        >>> zlib.decompress(data.split(b"zlib.\\n", 1)[1])
        b'f py:function 1 p.html#$ -\\n'
    """
    lines = [
        f"{name} py:{role} 1 {page}#$ -"
        for name, role, page in sorted(names, key=lambda entry: (entry[0], entry[1]))
    ]
    lines += [f"{module} py:module 0 {module_page[module]} -" for module in modules]
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(line + "\n" for line in lines)
    return header.encode() + zlib.compress(body.encode(), 9)


def python_inventory() -> bytes:
    """The inventory of Python's documentation (docs.python.org/3)."""
    pages = {
        module: f"library/{module}.html#module-{module}" for module in PYTHON_MODULES
    }
    return inventory("Python", "3", PYTHON, PYTHON_MODULES, pages)


def trio_inventory() -> bytes:
    """The inventory of Trio's documentation (trio.readthedocs.io/en/stable)."""
    pages = {
        "trio": "reference-core.html#module-trio",
        "trio.socket": "reference-io.html#module-trio.socket",
        "trio.testing": "reference-testing.html#module-trio.testing",
        "trio.lowlevel": "reference-lowlevel.html#module-trio.lowlevel",
        "trio.abc": "reference-io.html#module-trio.abc",
    }
    return inventory("Trio", "stable", TRIO, TRIO_MODULES, pages)


FILES = {"python.inv": python_inventory, "trio.inv": trio_inventory}


def main() -> None:
    for name, make in FILES.items():
        (HERE / name).write_bytes(make())


if __name__ == "__main__":
    main()
