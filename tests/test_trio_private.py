"""The private Trio names trioudp reads still exist; each has a working fallback."""

from __future__ import annotations

import trio

from trioudp import _trio_private


def test_every_private_name_exists_on_this_trio() -> None:
    # Fails loudly when a Trio upgrade moves a name: the fast path would
    # otherwise fall back silently.
    assert _trio_private.cancel_requested_probe is _trio_private._probe_cancel_status
    fields = {field.name for field in trio.lowlevel.Task.__attrs_attrs__}
    assert "_cancel_status" in fields


async def test_cancel_probe_tells_cancelled_from_calm() -> None:
    assert _trio_private.cancel_requested_probe() is False
    with trio.CancelScope() as scope:
        scope.cancel()
        assert _trio_private.cancel_requested_probe() is True
        await trio.lowlevel.checkpoint()
    assert _trio_private._unknown() is None


async def test_reply_stays_a_cancel_point_on_the_public_fallback(monkeypatch):
    """Where Trio's cancel status cannot be read, a reply takes the full
    checkpoint_if_cancelled() instead: still a cancel point."""
    import trioudp
    from trioudp import _socket

    monkeypatch.setattr(_socket, "cancel_requested_probe", _trio_private._unknown)
    async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
        await sock.send_to(b"y", sock.local_address)
        datagram = await sock.receive()
        with trio.CancelScope() as scope:
            scope.cancel()
            await datagram.reply(b"never sent")
        assert scope.cancelled_caught
        assert sock.stats.replied == 0
