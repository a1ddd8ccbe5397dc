"""A small replicated protocol to test under faults: gossip heartbeats and a leader.

Every node sends its peers, each round, the heartbeats it knows of: its own,
which it counts up, and the latest it heard of every other node. A node is
alive while its heartbeat keeps growing; the leader is the live node with
the smallest number. Because heartbeats travel through any node, a link that
works in one direction only does not make a live node look dead. Each
heartbeat starts with the time its node started, so a node that restarts
counting from 0 is newer, not older, than the one that crashed.
"""

from __future__ import annotations

import json

import trio

import trioudp

PORT = 7000
ROUND = 0.1  # seconds between two gossip rounds
SUSPECT_AFTER = 0.5  # seconds without a newer heartbeat: that node is dead


class Node:
    """One node: ``number``, and its peers' addresses by number.

    Example::

        node = Node(1, {2: "10.0.0.2", 3: "10.0.0.3"})
        await nursery.start(node.run)
        print(node.leader)
    """

    def __init__(self, number: int, peers: dict[int, str]) -> None:
        self.number = number
        self.peers = peers
        #: The latest heartbeat known of each node: (start time, count).
        self.heartbeats: dict[int, tuple[float, int]] = {}
        #: When each node's heartbeat last grew, on this node's clock.
        self.grew_at: dict[int, float] = {}

    @property
    def alive(self) -> set[int]:
        """The nodes this node believes alive, itself included."""
        now = trio.current_time()
        recent = {n for n, t in self.grew_at.items() if now - t < SUSPECT_AFTER}
        return recent | {self.number}

    @property
    def leader(self) -> int:
        """The live node with the smallest number, as this node sees it."""
        return min(self.alive)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Gossip until cancelled (a crash cancels it)."""
        self.heartbeats[self.number] = (trio.current_time(), 0)
        async with (
            trioudp.open_udp_socket(None, PORT) as sock,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._listen, sock)
            task_status.started()
            while True:
                started, count = self.heartbeats[self.number]
                self.heartbeats[self.number] = (started, count + 1)
                message = json.dumps(list(self.heartbeats.items())).encode()
                for address in self.peers.values():
                    await sock.send_to(message, (address, PORT))
                await trio.sleep(ROUND)

    async def _listen(self, sock: trioudp.UDPSocket) -> None:
        async for datagram in sock:
            for number, heartbeat in json.loads(datagram.data):
                heard = (heartbeat[0], heartbeat[1])
                if number != self.number and heard > self.heartbeats.get(
                    number, (-1.0, -1)
                ):
                    self.heartbeats[number] = heard
                    self.grew_at[number] = trio.current_time()
