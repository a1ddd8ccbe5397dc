"""Admission: which received datagrams a server lets through to its handler, and the count of those it refuses.

Pure: no I/O and no Trio. The time a rate limit is judged at is the
datagram's ``received_at``, so the same datagrams always get the same verdicts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._address import UNSPECIFIED_HOSTS
from ._limits import RateLimiter
from ._screening import BROADCAST_DESTINATION, FORGED_SOURCE, MULTICAST_DESTINATION

if TYPE_CHECKING:
    from ._datagram import Datagram
    from ._limits import AccessList, RateLimit

__all__ = ["Admission"]

logger = logging.getLogger("trioudp")


class Admission:
    """A server's screening of datagrams before any handler sees them.

    Always refused: forged sources (:data:`~trioudp._screening.FORGED_SOURCE`
    or an unspecified address), source port 0, and the broadcast and
    multicast datagrams screening refused
    (:data:`~trioudp._screening.BROADCAST_DESTINATION`,
    :data:`~trioudp._screening.MULTICAST_DESTINATION`). With settings: sources the
    ``access`` list refuses, and sources over their ``rate_limit``. A datagram
    let through is counted by the amplification guard of the socket it
    arrived on, if any.

    Example:
        >>> from trioudp import Datagram
        >>> admission = Admission(rate_limit=None, access=None, guarded=False)
        >>> admission.admit(Datagram(data=b"", peer=("192.0.2.1", 0),
        ...     local=("192.0.2.2", 53), received_at=0.0))
        False
        >>> admission.dropped_port_zero
        1
    """

    def __init__(
        self,
        *,
        rate_limit: RateLimit | None,
        access: AccessList | None,
        guarded: bool,
    ) -> None:
        self._limiter = None if rate_limit is None else RateLimiter(rate_limit)
        self._access = access
        #: Whether every datagram must be admitted (some protection is on).
        #: Without it, only datagrams from port 0 need to be: forged sources
        #: among them (see FORGED_SOURCE's invariant).
        self.active = self._limiter is not None or access is not None or guarded
        self.dropped_forged = 0
        self.dropped_port_zero = 0
        self.dropped_broadcast = 0
        self.dropped_multicast = 0
        self.dropped_denied = 0
        self.dropped_rate_limited = 0
        self.rate_limited_logged = 0

    def admit(self, datagram: Datagram) -> bool:
        """Screen a datagram before any handler sees it; count what is refused."""
        peer = datagram.peer
        ip, port = peer[0], peer[1]
        if not port or ip in UNSPECIFIED_HOSTS:
            # Screening's stand-ins all have port 0 (_screening's invariant).
            if peer is BROADCAST_DESTINATION:
                self.dropped_broadcast += 1
            elif peer is MULTICAST_DESTINATION:
                self.dropped_multicast += 1
            elif peer is FORGED_SOURCE or ip in UNSPECIFIED_HOSTS:
                self.dropped_forged += 1
            else:
                self.dropped_port_zero += 1
            return False
        if self._access is not None and not self._access.admits(ip):
            self.dropped_denied += 1
            return False
        limiter = self._limiter
        if limiter is not None and not limiter.allow(ip, datagram.received_at):
            if not limiter.policy.log_only:
                self.dropped_rate_limited += 1
                return False
            self.rate_limited_logged += 1
            if self.rate_limited_logged & (self.rate_limited_logged - 1) == 0:
                logger.warning(
                    "rate limit exceeded by %s (log_only: handled anyway), %d times",
                    ip,
                    self.rate_limited_logged,
                )
        origin = datagram._origin
        guard = origin.guard if origin is not None else None
        if guard is not None:
            guard.on_receive((ip, port), len(datagram.data))
        return True
