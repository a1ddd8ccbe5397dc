"""Deterministic UDP testing: a virtual network for unmodified Trio code.

Example::

    from trioudp.testing import VirtualNetwork

    async def test_retries(autojump_clock):
        net = VirtualNetwork(seed=7, latency=0.05, loss=0.2)
        with net.install():
            ...  # any trio.socket UDP code, trioudp's or not
        assert net.stats.dropped["loss"] > 0
"""

from ._links import Fate as Fate
from ._links import LinkPolicy as LinkPolicy
from ._links import plan_fate as plan_fate
from ._model import Host as Host
from ._network import VirtualNetwork as VirtualNetwork
from ._pcap import ip_udp_packet as ip_udp_packet
from ._pcap import write_pcap as write_pcap
from ._rules import UDPPacket as UDPPacket
from ._rules import Verdict as Verdict
from ._trace import NetworkStats as NetworkStats
from ._trace import TraceEvent as TraceEvent
from ._vsocket import VIRTUAL_FILENO as VIRTUAL_FILENO
from ._vsocket import VirtualSocket as VirtualSocket

# VIRTUAL_FILENO (a plain int, so without a docstring of its own) is
# importable from here and documented in VirtualSocket.fileno.
__all__ = [
    "Fate",
    "Host",
    "LinkPolicy",
    "NetworkStats",
    "TraceEvent",
    "UDPPacket",
    "Verdict",
    "VirtualNetwork",
    "VirtualSocket",
    "ip_udp_packet",
    "plan_fate",
    "write_pcap",
]
