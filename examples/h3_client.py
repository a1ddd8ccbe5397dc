"""An HTTP/3 client: aioquic's HTTP/3 layer (``H3Connection``) on trioudp.quic.

It makes one request (a GET, or a POST of ``--data``), prints the response's
status to standard error and writes its body to standard output.

Run:  python examples/h3_client.py --ca-certs ca.pem https://localhost:4433/
      python examples/h3_client.py --ca-certs ca.pem --data hello \\
          https://localhost:4433/echo
Without --ca-certs the system's certificate authorities are trusted.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

import trio
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

import trioudp.quic


class Response:
    """The response to one request, as it comes in."""

    def __init__(self) -> None:
        self.status = 0
        self.body = bytearray()
        self.complete = False


async def fetch(
    url: str, *, data: bytes | None = None, ca_certs: str | None = None
) -> Response:
    """GET ``url`` (or POST ``data`` to it) over HTTP/3.

    Example::

        response = await fetch("https://localhost:4433/", ca_certs="ca.pem")
        print(response.status, bytes(response.body))
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname is None:
        msg = f"an https URL is needed, not {url!r}"
        raise ValueError(msg)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    if ca_certs is not None:
        config.load_verify_locations(ca_certs)
    else:
        config.load_verify_locations()
    async with trioudp.quic.open_quic_connection(
        parts.hostname, parts.port or 443, configuration=config
    ) as connection:
        h3 = H3Connection(connection.engine)
        stream_id = connection.engine.get_next_available_stream_id()
        headers = [
            (b":method", b"GET" if data is None else b"POST"),
            (b":scheme", b"https"),
            (b":authority", parts.netloc.encode()),
            (b":path", (parts.path or "/").encode()),
            (b"user-agent", b"trioudp-h3-example"),
        ]
        h3.send_headers(stream_id, headers, end_stream=data is None)
        if data is not None:
            h3.send_data(stream_id, data, end_stream=True)
        connection.transmit()
        response = Response()
        while not response.complete:
            for event in h3.handle_event(await connection.receive_event()):
                if isinstance(event, HeadersReceived) and event.stream_id == stream_id:
                    response.status = int(dict(event.headers)[b":status"])
                elif isinstance(event, DataReceived) and event.stream_id == stream_id:
                    response.body += event.data
                else:
                    continue
                response.complete = event.stream_ended
            connection.transmit()
        return response


async def main(url: str, data: bytes | None, ca_certs: str | None) -> int:
    response = await fetch(url, data=data, ca_certs=ca_certs)
    print(f"HTTP/3 {response.status}", file=sys.stderr)
    sys.stdout.buffer.write(response.body)
    sys.stdout.flush()
    return 0 if response.status < 400 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--data", help="POST this text instead of a GET")
    parser.add_argument(
        "--ca-certs", help="PEM file of trusted certificate authorities"
    )
    args = parser.parse_args()
    body = None if args.data is None else args.data.encode()
    sys.exit(trio.run(main, args.url, body, args.ca_certs))
