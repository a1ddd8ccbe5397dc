"""trioudp: UDP servers, clients and a deterministic virtual network for Trio.

Example::

    import trio, trioudp

    async def handler(datagram: trioudp.Datagram) -> None:
        await datagram.reply(b"Hello, client!")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trioudp.serve_udp, handler, 0)
            async with trioudp.open_udp_client("127.0.0.1", server.port) as client:
                print((await client.request(b"Hello, server!")).data)
            await server.shutdown()

    trio.run(main)
"""

from ._address import SocketAddress as SocketAddress
from ._backoff import Backoff as Backoff
from ._client import ClientStats as ClientStats
from ._client import OnUnreachable as OnUnreachable
from ._client import UDPClient as UDPClient
from ._client_open import open_udp_client as open_udp_client
from ._datagram import Datagram as Datagram
from ._errors import BindError as BindError
from ._errors import DatagramTooLarge as DatagramTooLarge
from ._errors import InvalidAddress as InvalidAddress
from ._errors import PeerUnreachable as PeerUnreachable
from ._errors import RequestTimeout as RequestTimeout
from ._errors import TrioUDPError as TrioUDPError
from ._errors import WorkerCrashLoop as WorkerCrashLoop
from ._errors import WorkerStartFailed as WorkerStartFailed
from ._handlers import Overflow as Overflow
from ._limits import AccessList as AccessList
from ._limits import AmplificationGuard as AmplificationGuard
from ._limits import LoopGuard as LoopGuard
from ._limits import RateLimit as RateLimit
from ._limits import RateLimiter as RateLimiter
from ._matching import Match as Match
from ._multicast import Multicast as Multicast
from ._open import open_udp_socket as open_udp_socket
from ._open import open_udp_sockets as open_udp_sockets
from ._responder import Responder as Responder
from ._serve import serve_udp as serve_udp
from ._serve import serve_udp_sockets as serve_udp_sockets
from ._server import ServerStats as ServerStats
from ._server import UDPServer as UDPServer
from ._socket import SocketStats as SocketStats
from ._socket import UDPSocket as UDPSocket
from ._workers import Worker as Worker
from ._workers import WorkerPool as WorkerPool
from ._workers import WorkerSockets as WorkerSockets
from ._workers import run_workers as run_workers

__version__ = "0.1.0"

__all__ = [
    "AccessList",
    "AmplificationGuard",
    "Backoff",
    "BindError",
    "ClientStats",
    "Datagram",
    "DatagramTooLarge",
    "InvalidAddress",
    "LoopGuard",
    "Match",
    "Multicast",
    "OnUnreachable",
    "Overflow",
    "PeerUnreachable",
    "RateLimit",
    "RateLimiter",
    "RequestTimeout",
    "Responder",
    "ServerStats",
    "SocketAddress",
    "SocketStats",
    "TrioUDPError",
    "UDPClient",
    "UDPServer",
    "UDPSocket",
    "Worker",
    "WorkerCrashLoop",
    "WorkerPool",
    "WorkerSockets",
    "WorkerStartFailed",
    "open_udp_client",
    "open_udp_socket",
    "open_udp_sockets",
    "run_workers",
    "serve_udp",
    "serve_udp_sockets",
]
