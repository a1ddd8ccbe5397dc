"""QUIC across :func:`trioudp.run_workers` processes: the sockets the
supervisor binds and steers (:func:`worker_sockets`), and what a worker's
server takes from its pool (connection IDs that name it, shared keys).

Why the supervisor binds the sockets and how the steering works:
``_steering`` and :doc:`/explanation/quic-workers`.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

import attrs

from .. import WorkerSockets
from ._steering import steering_program, worker_connection_ids

if TYPE_CHECKING:
    from collections.abc import Callable

    from .. import Worker

__all__ = ["PoolRouting", "pool_routing", "worker_sockets"]


def worker_sockets(
    host: str | None = None, *, receive_buffer: int | None = None
) -> WorkerSockets:
    """The sockets of a :func:`trioudp.run_workers` pool that serves QUIC:
    bound and held by the supervisor, steered by connection ID, so that every
    packet of a connection reaches the worker that owns it, also after the
    client's address changes (NAT rebinding, migration).

    Each worker serves them with :func:`serve_quic_sockets` and
    ``worker=worker``. Linux; at most 256 workers.

    Args:
        host: the address to bind; None binds every address.
        receive_buffer: ``SO_RCVBUF`` to ask for, for each socket.

    Example::

        pool = await nursery.start(functools.partial(
            trioudp.run_workers, serve, 4, port=4433,
            sockets=trioudp.quic.worker_sockets("0.0.0.0")))
    """
    return WorkerSockets(
        host=host, steering=steering_program, receive_buffer=receive_buffer
    )


@attrs.frozen
class PoolRouting:
    """What a worker's QUIC server takes from its pool: connection IDs that
    route to it, and the keys every worker of the pool shares."""

    connection_ids: Callable[[], bytes]
    reset_key: bytes
    token_key: bytes


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"trioudp.quic " + purpose, hashlib.sha256).digest()


def pool_routing(worker: Worker, cid_length: int) -> PoolRouting:
    """The routing of ``worker``'s server: its connection IDs name it; its
    stateless reset key and Retry token key come from the pool's secret, so
    that any worker (and the worker that replaces one) can reset the
    connections of another and check its tokens.

    Raises:
        ValueError: the pool does not bind and steer its workers' sockets
            (run it with ``sockets=worker_sockets(...)``), or it has more
            than 256 workers.
    """
    if not worker.sockets or not worker.secret:
        msg = (
            "serve_quic_sockets(worker=...) needs a pool whose supervisor binds"
            " and steers the sockets: run_workers(..., sockets="
            "trioudp.quic.worker_sockets(host)), and serve worker.sockets"
        )
        raise ValueError(msg)
    return PoolRouting(
        worker_connection_ids(worker.index, worker.count, cid_length),
        reset_key=_derive(worker.secret, b"stateless reset"),
        token_key=_derive(worker.secret, b"retry token")[:16],
    )
