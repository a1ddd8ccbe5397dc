"""The settings trioudp.quic takes: their defaults, and checks that fail where
each is given, naming the setting. No I/O."""

from __future__ import annotations

import math

__all__ = [
    "DEFAULT_DATAGRAM_QUEUE",
    "DEFAULT_GRACE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HANDSHAKES",
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_SEND_BUFFER",
    "check_configuration",
    "check_connection_settings",
    "check_int",
    "check_seconds",
]

DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_HANDSHAKES = 1_000
DEFAULT_MAX_STREAMS = 100
DEFAULT_SEND_BUFFER = 1 << 20
DEFAULT_DATAGRAM_QUEUE = 128
DEFAULT_GRACE = 5.0


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """``value`` if it is an int in ``low..high``, else TypeError/ValueError.

    Example:
        >>> check_int("max_streams", 100, low=1)
        100
    """
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int, not {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        msg = f"{name} must be {bounds}, not {value!r}"
        raise ValueError(msg)
    return value


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` as a finite number of seconds, > 0 (or >= 0 with ``zero``).

    Example:
        >>> check_seconds("grace", 0, zero=True)
        0.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number of seconds, not {value!r}"
        raise TypeError(msg)
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        least = ">= 0" if zero else "> 0"
        msg = f"{name} must be a finite number of seconds {least}, not {value!r}"
        raise ValueError(msg)
    return seconds


def check_configuration(configuration: object, *, is_client: bool) -> None:
    from aioquic.quic.configuration import QuicConfiguration

    if not isinstance(configuration, QuicConfiguration):
        msg = (
            "configuration must be an aioquic QuicConfiguration, not"
            f" {type(configuration).__name__}"
        )
        raise TypeError(msg)
    if configuration.is_client != is_client:
        role = "client" if is_client else "server"
        msg = f"a QUIC {role} needs QuicConfiguration(is_client={is_client})"
        raise ValueError(msg)
    if not is_client and (
        configuration.certificate is None or configuration.private_key is None
    ):
        msg = (
            "a QUIC server needs a certificate and its key:"
            " configuration.load_cert_chain(certfile, keyfile)"
        )
        raise ValueError(msg)


def check_connection_settings(
    max_streams: int, send_buffer: int, datagram_queue: int, reset_code: int
) -> None:
    """Refuse out-of-range per-connection settings, naming them."""
    check_int("max_streams", max_streams, low=1, high=1 << 60)
    check_int("send_buffer", send_buffer, low=1)
    check_int("datagram_queue", datagram_queue, low=1)
    check_int("reset_code", reset_code, low=0, high=(1 << 62) - 1)
