"""The classic socket tutorial's blocking UDP client (stdlib only), for interop tests.

Usage: tutorial_client.py PORT
"""

import socket
import sys

client_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client_socket.settimeout(30)  # a safety net for the test suite only
server_address = ("127.0.0.1", int(sys.argv[1]))
client_socket.sendto(b"Hello, server!", server_address)
data, addr = client_socket.recvfrom(4096)
print(f"Received {data.decode()} from server", flush=True)
client_socket.sendto(b"exit", server_address)
client_socket.close()
