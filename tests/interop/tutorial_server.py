"""The classic socket tutorial's blocking UDP server (stdlib only), for interop tests.

Usage: tutorial_server.py PORT   (prints the bound port first, flushes each line)
"""

import socket
import sys

server_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server_socket.bind(("127.0.0.1", int(sys.argv[1])))
print(f"Server is listening on 127.0.0.1:{server_socket.getsockname()[1]}", flush=True)
server_socket.settimeout(30)  # a safety net for the test suite only
while True:
    data, addr = server_socket.recvfrom(4096)
    message = data.decode()
    print(f"Received {message} from {addr}", flush=True)
    if message.lower() == "exit":
        print("Server exiting...", flush=True)
        break
    server_socket.sendto(b"Hello, client!", addr)
server_socket.close()
