import errno
import pickle

import pytest

from trioudp import (
    BindError,
    DatagramTooLarge,
    InvalidAddress,
    PeerUnreachable,
    RequestTimeout,
    TrioUDPError,
)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (DatagramTooLarge(2, 1), ValueError),
        (InvalidAddress("x", "bad"), ValueError),
        (
            BindError("h", 1, OSError(errno.EADDRINUSE, "Address already in use")),
            OSError,
        ),
        (RequestTimeout(("h", 1), 3, 7.0), TimeoutError),
        (
            PeerUnreachable(
                ("h", 1), ConnectionRefusedError(errno.ECONNREFUSED, "refused")
            ),
            ConnectionError,
        ),
    ],
)
def test_every_error_is_a_trioudp_error_and_a_builtin(error, builtin):
    assert isinstance(error, TrioUDPError)
    assert isinstance(error, builtin)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)


def test_bind_error_message_names_host_port_cause_and_fix():
    error = BindError("127.0.0.1", 53, OSError(errno.EACCES, "Permission denied"))
    assert error.errno == errno.EACCES
    message = str(error)
    assert "'127.0.0.1'" in message
    assert "port 53" in message
    assert "Permission denied" in message
    assert "1024" in message


def test_request_timeout_fields():
    error = RequestTimeout(("127.0.0.1", 9), 3, 7.25)
    assert (error.peer, error.attempts, error.elapsed) == (("127.0.0.1", 9), 3, 7.25)
    assert "3 attempts" in str(error)
    assert "7.250 s" in str(error)


def test_peer_unreachable_keeps_errno():
    cause = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    error = PeerUnreachable(("127.0.0.1", 9), cause)
    assert error.errno == errno.ECONNREFUSED
    assert error.cause is cause


def test_request_timeout_after_one_attempt_is_singular():
    assert "after 1 attempt in 0.500 s" in str(RequestTimeout(("127.0.0.1", 9), 1, 0.5))
