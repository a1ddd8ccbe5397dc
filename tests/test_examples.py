import re
import signal
import socket
import subprocess
import sys

from .conftest import ROOT

EXAMPLES = ROOT / "examples"


def spawn(name, *args):
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def port_of(process):
    line = process.stdout.readline()
    match = re.search(r":(\d+)$", line.strip())
    assert match, line
    return int(match.group(1))


def test_hello_server_and_client_examples_talk():
    server = spawn("hello_server.py", "--host", "127.0.0.1", "--port", "0")
    port = port_of(server)
    client = subprocess.run(
        [sys.executable, str(EXAMPLES / "hello_client.py"), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert client.returncode == 0, client.stderr
    assert client.stdout == "Received Hello, client! from server\n"
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert out.splitlines()[-1] == "Server exiting..."
    assert "Received Hello, server! from ('127.0.0.1'," in out


def test_hello_client_example_gives_up_instead_of_hanging():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = subprocess.run(
        [sys.executable, str(EXAMPLES / "hello_client.py"), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert client.returncode == 1
    assert "unreachable" in client.stderr


def test_echo_server_example_echoes_and_stops_on_ctrl_c():
    server = spawn("echo_server.py", "--port", "0")
    port = port_of(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(10)
        probe.sendto(b"echo me", ("127.0.0.1", port))
        assert probe.recv(100) == b"echo me"
    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert out == "Stopped after 1 datagram\n"


def test_workers_example_serves_from_two_processes_and_stops_on_sigterm():
    server = spawn("workers.py", "--port", "0", "--workers", "2")
    port = port_of(server)
    served = set()
    for i in range(32):  # a new source port each time: both workers get some
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(10)
            probe.sendto(b"up %d" % i, ("127.0.0.1", port))
            worker, _, text = probe.recv(100).partition(b": ")
            assert text == b"UP %d" % i
            served.add(worker)
    assert served == {b"worker 0", b"worker 1"}
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert out.splitlines()[-1] == "served 32 replies to 32 datagrams"


def test_every_example_is_exercised():
    tested = {"hello_server.py", "hello_client.py", "echo_server.py"}
    # Each in its own test module, with its real client.
    tested |= {"syslog_server.py", "statsd_server.py", "dns_server.py"}
    tested.add("workers.py")
    # HTTP/3, with aioquic's and ngtcp2's clients and servers: test_quic_h3.py.
    tested |= {"h3_server.py", "h3_client.py"}
    helpers = {"_syslog.py", "_statsd.py", "_dns.py", "_output.py"}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested | helpers
