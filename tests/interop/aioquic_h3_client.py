"""aioquic's own HTTP/3 client, as its example (examples/http3_client.py in
aioquic's source) writes it: a QuicConnectionProtocol on asyncio whose
H3Connection turns QUIC events into HTTP events; the other end of the
HTTP/3 interop tests.

python tests/interop/aioquic_h3_client.py CA_PEM PORT PATH [BODY_SIZE]
    makes the request (a POST of BODY_SIZE bytes if given, else a GET) to
    localhost:PORT and prints one JSON line: status, body size and sha256
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections import deque
from typing import TYPE_CHECKING

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

if TYPE_CHECKING:
    from aioquic.quic.events import QuicEvent


class HttpClient(QuicConnectionProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._http = H3Connection(self._quic)
        self._request_events: dict[int, deque[H3Event]] = {}
        self._request_waiter: dict[int, asyncio.Future[deque[H3Event]]] = {}

    async def request(self, method: bytes, path: bytes, body: bytes) -> deque[H3Event]:
        stream_id = self._quic.get_next_available_stream_id()
        self._http.send_headers(
            stream_id=stream_id,
            headers=[
                (b":method", method),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path),
            ],
            end_stream=not body,
        )
        if body:
            self._http.send_data(stream_id=stream_id, data=body, end_stream=True)
        waiter = self._loop.create_future()
        self._request_events[stream_id] = deque()
        self._request_waiter[stream_id] = waiter
        self.transmit()
        return await asyncio.shield(waiter)

    def http_event_received(self, event: H3Event) -> None:
        if isinstance(event, (HeadersReceived, DataReceived)):
            stream_id = event.stream_id
            if stream_id in self._request_events:
                self._request_events[stream_id].append(event)
                if event.stream_ended:
                    waiter = self._request_waiter.pop(stream_id)
                    waiter.set_result(self._request_events.pop(stream_id))

    def quic_event_received(self, event: QuicEvent) -> None:
        for http_event in self._http.handle_event(event):
            self.http_event_received(http_event)


async def main(ca: str, port: int, path: str, body_size: int | None) -> None:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name="localhost"
    )
    configuration.load_verify_locations(ca)
    body = bytes(i % 251 for i in range(body_size)) if body_size else b""
    async with connect(
        "127.0.0.1", port, configuration=configuration, create_protocol=HttpClient
    ) as client:
        assert isinstance(client, HttpClient)
        events = await client.request(
            b"POST" if body_size else b"GET", path.encode(), body
        )
    status = 0
    received = bytearray()
    for event in events:
        if isinstance(event, HeadersReceived):
            status = int(dict(event.headers)[b":status"])
        elif isinstance(event, DataReceived):
            received += event.data
    print(
        json.dumps(
            {
                "status": status,
                "size": len(received),
                "sha256": hashlib.sha256(received).hexdigest(),
                "echoed": bytes(received) == body if body_size else None,
            }
        )
    )


if __name__ == "__main__":
    ca_pem, port_text, request_path, *size = sys.argv[1:]
    asyncio.run(
        main(ca_pem, int(port_text), request_path, int(size[0]) if size else None)
    )
