"""The QUIC commands: ``quic-echo`` (a QUIC echo server, ``--workers N``
too) and ``quic-send`` (its client), and the self-signed certificate
``quic-echo`` makes when it is given none.

They need the ``quic`` extra; without it they say what to install (the rest
of the command line does not need it, so :mod:`trioudp.quic` is imported
only when one of them runs).
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import logging
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .._open import open_udp_sockets
from ._console import close_stdout, dropped_note, say, warn
from ._output import EXIT_FAILURE, EXIT_OK, plural, served_addresses
from ._serve import rate_limit_from, watch_server_signals
from ._supervise import supervise
from ._terminal import printable

if TYPE_CHECKING:
    import argparse

    from .._workers import Worker
    from ..quic import QUICConnection, QUICServer, QUICServerStats, QUICStream

__all__ = [
    "DEFAULT_ALPN",
    "DEFAULT_QUIC_PORT",
    "check_quic_files",
    "quic_echo_command",
    "quic_send_command",
    "quic_stats_line",
    "self_signed_certificate",
    "self_signed_warning",
]

#: QUIC's customary port for trying things out (443 is HTTP/3's).
DEFAULT_QUIC_PORT = 4433
#: The application protocol (ALPN) both commands speak by default.
DEFAULT_ALPN = "echo"
#: Seconds a stopping server gives its connections.
GRACE = 2.0
#: Days the self-signed certificate is valid for.
CERTIFICATE_DAYS = 7
#: What a QUIC command says without the quic extra.
NEEDS_EXTRA = "needs the quic extra (aioquic): pip install 'trioudp[quic]'"


def _quic_missing(args: argparse.Namespace) -> bool:
    """Print why the command cannot run, if aioquic is not installed."""
    try:
        import aioquic  # noqa: F401
    except ImportError:
        warn(f"trioudp {args.command}: error: {NEEDS_EXTRA}")
        return True
    if not args.verbose:
        # aioquic logs each failed handshake at WARNING, which the command's
        # own error line says already.
        logging.getLogger("quic").setLevel(logging.ERROR)
    return False


def check_quic_files(args: argparse.Namespace) -> None:
    """Raise ValueError, saying what to give, where ``quic-echo``'s
    ``--certificate`` and ``--key`` or ``quic-send``'s ``--ca`` cannot be
    loaded (a usage error: exit 2). Nothing to check without aioquic: the
    command says then that it needs the quic extra."""
    if args.command not in ("quic-echo", "quic-send"):
        return
    try:
        from aioquic.quic.configuration import QuicConfiguration
    except ImportError:
        return
    if args.command == "quic-send":
        if args.ca is not None:
            # aioquic reads the file only at the handshake: read it here.
            from cryptography import x509

            try:
                x509.load_pem_x509_certificates(Path(args.ca).read_bytes())
            except (OSError, ValueError) as exc:
                msg = (
                    f"cannot load --ca {args.ca} ({_reason(exc)}): give a file of"
                    " PEM certificates, such as the one quic-echo prints"
                )
                raise ValueError(msg) from None
        return
    if (args.certificate is None) != (args.key is None):
        msg = "give --certificate and --key together"
        raise ValueError(msg)
    if args.certificate is not None:
        try:
            QuicConfiguration(is_client=False).load_cert_chain(
                args.certificate, args.key
            )
        except (OSError, ValueError, TypeError, ssl.SSLError) as exc:
            msg = (
                f"cannot load --certificate {args.certificate} with --key"
                f" {args.key} ({_reason(exc)}): give a PEM certificate chain and its"
                " private key (without both, quic-echo makes a self-signed one)"
            )
            raise ValueError(msg) from None


def _reason(exc: BaseException) -> str:
    """Why a file did not load, in a few words (an OSError's strerror, the
    first sentence of cryptography's message)."""
    strerror = getattr(exc, "strerror", None)
    return strerror if isinstance(strerror, str) else str(exc).split(". ")[0]


def self_signed_certificate(directory: Path, host: str | None) -> tuple[Path, Path]:
    """Write a new self-signed certificate and its key to ``directory``
    (``cert.pem``, ``key.pem``), for ``localhost``, ``127.0.0.1``, ``::1``
    and ``host`` where it is a specific address or name. An EC P-256 key,
    valid for :data:`CERTIFICATE_DAYS` days.

    Example::

        cert, key = self_signed_certificate(Path("/tmp/quic"), "127.0.0.1")
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    addresses = {"127.0.0.1", "::1"}
    if host is not None and host not in ("0.0.0.0", "::"):
        try:
            addresses.add(str(ipaddress.ip_address(host)))
        except ValueError:
            if host != "localhost":
                names.append(x509.DNSName(host))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "trioudp quic-echo (self-signed)")]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def self_signed_warning(cert: Path, host: str, port: int) -> str:
    """What ``quic-echo`` prints (on stderr, after its banner) when it made
    its own certificate: loudly, with the client command that trusts it."""
    rule = "!" * 72
    return "\n".join(
        [
            rule,
            "!! WARNING: no --certificate given: serving with a SELF-SIGNED",
            "!! certificate made just now for localhost, 127.0.0.1 and ::1.",
            "!! No client trusts it unless told to. It is here, for this run:",
            f"!!   {cert}",
            f"!! Try: trioudp quic-send --ca {cert} --host {host} --port {port}",
            "!! For anything but a test, give --certificate FILE --key FILE.",
            rule,
        ]
    )


def quic_stats_line(stats: QUICServerStats) -> str:
    """One line of a QUIC server's counters.

    Example:
        >>> from trioudp.quic import QUICServerStats
        >>> quic_stats_line(QUICServerStats(accepted=2, established=2, retries=2))
        'totals: connections 2, established 2, handshakes failed 0, retries 2, handler errors 0, dropped 0'
    """
    return (
        f"totals: connections {stats.accepted}, established {stats.established},"
        f" handshakes failed {stats.handshakes_failed}, retries {stats.retries},"
        f" handler errors {stats.handler_errors},"
        f" dropped {sum(stats.dropped.values())}"
    )


async def _echo_stream(stream: QUICStream) -> None:
    async with stream:
        async for data in stream:
            await stream.send_all(data)


async def _echo(connection: QUICConnection) -> None:
    """Echo every stream the client opens, each in a task of its own."""
    import trioudp.quic

    async with trio.open_nursery() as nursery:
        try:
            while True:
                nursery.start_soon(_echo_stream, await connection.accept_stream())
        except (trioudp.quic.ConnectionClosed, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()


async def quic_echo_command(
    args: argparse.Namespace, worker: Worker | None = None
) -> int:
    """``trioudp quic-echo``: echo each stream of each QUIC connection (in
    ``worker``, one of its ``--workers``)."""
    if _quic_missing(args):
        return EXIT_FAILURE
    if args.certificate is not None:
        return await _serve_echo(args, worker, None)
    directory = Path(tempfile.mkdtemp(prefix="trioudp-quic-"))
    try:
        cert, key = self_signed_certificate(directory, args.host)
        args.certificate, args.key = cert, key
        # Workers are given the files made here, as if on the command line.
        args.argv = [*args.argv, "--certificate", str(cert), "--key", str(key)]
        return await _serve_echo(args, worker, cert)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _serve_echo(
    args: argparse.Namespace, worker: Worker | None, self_signed: Path | None
) -> int:
    import trioudp.quic

    def warn_self_signed(port: int) -> None:
        if self_signed is not None:
            warn(self_signed_warning(self_signed, args.host, port))

    banner = f"QUIC echo server (ALPN {args.alpn}) is listening on {{address}}"
    if worker is None and args.workers != 1:
        return await supervise(
            args,
            banner,
            GRACE,
            sockets=trioudp.quic.worker_sockets(args.host),
            after_banner=warn_self_signed,
        )
    from aioquic.quic.configuration import QuicConfiguration

    configuration = QuicConfiguration(is_client=False, alpn_protocols=[args.alpn])
    configuration.load_cert_chain(args.certificate, args.key)
    if worker is not None:
        sockets = worker.sockets
    else:
        sockets = await open_udp_sockets(args.port, args.host)
    received: list[int] = []
    async with trio.open_nursery() as nursery:
        server: QUICServer = await nursery.start(
            functools.partial(
                trioudp.quic.serve_quic_sockets,
                _echo,
                sockets,
                configuration=configuration,
                rate_limit=rate_limit_from(args),
                worker=worker,
            )
        )
        if worker is not None:
            worker.serving(server)
        else:
            # Before the banner: a signal sent once it is out is handled.
            await nursery.start(
                watch_server_signals,
                lambda: quic_stats_line(server.stats),
                functools.partial(server.begin_shutdown, GRACE),
                received,
            )
            address = served_addresses(server.addresses)
            say(banner.format(address=address))
            warn_self_signed(server.port)
    if worker is None:
        await close_stdout()
        warn(quic_stats_line(server.stats) + dropped_note())
    return 128 + received[0] if received else EXIT_OK


async def quic_send_command(args: argparse.Namespace) -> int:
    """``trioudp quic-send``: send MESSAGE on one stream of a new QUIC
    connection and print what comes back."""
    if _quic_missing(args):
        return EXIT_FAILURE
    from aioquic.quic.configuration import QuicConfiguration

    import trioudp.quic

    configuration = QuicConfiguration(is_client=True, alpn_protocols=[args.alpn])
    if args.insecure:
        configuration.verify_mode = ssl.CERT_NONE
    elif args.ca is not None:
        configuration.load_verify_locations(str(args.ca))
    message = args.message.encode()
    try:
        with trio.fail_after(args.timeout):
            async with (
                trioudp.quic.open_quic_connection(
                    args.host, args.port, configuration=configuration
                ) as connection,
                await connection.open_stream() as stream,
            ):
                await stream.send_all(message)
                await stream.send_eof()
                reply = b"".join([data async for data in stream])
    except trio.TooSlowError:
        warn(f"trioudp quic-send: no answer within {args.timeout:g} s")
        return EXIT_FAILURE
    say(
        f"Received {printable(reply)} from server"
        f" ({plural(len(reply), 'byte')}, ALPN {connection.alpn_protocol})"
    )
    return EXIT_OK
