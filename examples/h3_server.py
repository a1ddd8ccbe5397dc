"""An HTTP/3 server: aioquic's HTTP/3 layer (``H3Connection``) on trioudp.quic.

Each QUIC connection is handed to ``serve_h3``, which takes the connection's
events (``connection.receive_event()``) and gives them to aioquic's
``H3Connection``; what that writes to the connection's engine is sent with
``connection.transmit()``. Requests:

- ``GET /``: ``Hello, HTTP/3!``
- ``GET /N`` (N a number of bytes, at most 10 MB): that many bytes ``x``
- ``POST /echo``: the request's body back
- anything else: 404

Ctrl-C (SIGINT) or SIGTERM stops it, giving requests in progress a second.
Run:  python examples/h3_server.py --certificate cert.pem --private-key key.pem
          [--host 127.0.0.1] [--port 4433]
Try:  python examples/h3_client.py --ca-certs ca.pem https://localhost:4433/
"""

from __future__ import annotations

import argparse
import functools
import signal

import trio
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

import trioudp.quic

#: The most a GET /N may ask for.
MAX_GENERATED = 10 * 1024 * 1024
#: The largest request body taken (POST /echo); a larger one gets a 413.
MAX_BODY = 10 * 1024 * 1024


def respond(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    """The status and body of the answer to one request.

    Example:
        >>> respond(b"GET", b"/", b"")
        (200, b'Hello, HTTP/3!')
        >>> respond(b"GET", b"/3", b""), respond(b"POST", b"/echo", b"hi")
        ((200, b'xxx'), (200, b'hi'))
    """
    if method == b"GET" and path == b"/":
        return 200, b"Hello, HTTP/3!"
    if method == b"GET" and path[1:].isdigit() and int(path[1:]) <= MAX_GENERATED:
        return 200, b"x" * int(path[1:])
    if method == b"POST" and path == b"/echo":
        return 200, body
    return 404, b"not found"


class Request:
    """One request on its way in: its headers and its body so far."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        fields = dict(headers)
        self.method = fields.get(b":method", b"")
        self.path = fields.get(b":path", b"")
        self.body = bytearray()


def answer(h3: H3Connection, stream_id: int, request: Request) -> None:
    if len(request.body) > MAX_BODY:
        status, body = 413, b"too large"
    else:
        status, body = respond(request.method, request.path, bytes(request.body))
    h3.send_headers(
        stream_id,
        [
            (b":status", str(status).encode()),
            (b"server", b"trioudp-h3-example"),
            (b"content-length", str(len(body)).encode()),
        ],
    )
    h3.send_data(stream_id, body, end_stream=True)


def handle(h3: H3Connection, requests: dict[int, Request], event: H3Event) -> None:
    """Follow one HTTP/3 event; answer a request once it is complete."""
    if isinstance(event, HeadersReceived):
        request = requests.setdefault(event.stream_id, Request(event.headers))
    elif isinstance(event, DataReceived) and event.stream_id in requests:
        request = requests[event.stream_id]
        if len(request.body) <= MAX_BODY:
            request.body += event.data
    else:
        return
    if event.stream_ended:
        answer(h3, event.stream_id, requests.pop(event.stream_id))


async def serve_h3(connection: trioudp.quic.QUICConnection) -> None:
    """Serve HTTP/3 on one connection until the client closes it."""
    h3 = H3Connection(connection.engine)
    connection.transmit()  # the control stream and its SETTINGS
    requests: dict[int, Request] = {}
    try:
        while True:
            event = await connection.receive_event()
            for h3_event in h3.handle_event(event):
                handle(h3, requests, h3_event)
            connection.transmit()
    except trioudp.quic.ConnectionClosed:
        return  # the client is done


def configuration(certificate: str, private_key: str) -> QuicConfiguration:
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(certificate, private_key)
    return config


async def main(host: str, port: int, config: QuicConfiguration) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    trioudp.quic.serve_quic,
                    serve_h3,
                    port,
                    host=host,
                    configuration=config,
                )
            )
            print(f"HTTP/3 server is listening on {host}:{server.port}", flush=True)
            async for _ in signals:
                await server.shutdown(grace=1.0)
                established = server.stats.established
                noun = "connection" if established == 1 else "connections"
                print(f"Stopped after {established} {noun}", flush=True)
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--certificate", required=True, help="PEM certificate chain")
    parser.add_argument("--private-key", required=True, help="PEM private key")
    args = parser.parse_args()
    trio.run(
        main, args.host, args.port, configuration(args.certificate, args.private_key)
    )
