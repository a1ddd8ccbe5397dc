"""The examples of docs/howto/faults.rst: a replicated protocol (gossip.py)
tested under crashes, restarts and a one-way partition, on any seed.

They need pytest-trio with ``trio_mode = true``; trioudp's pytest plugin
provides the ``virtual_network`` fixture. Sweep seeds with
``pytest --trioudp-seeds 20 test_howto_faults.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from gossip import Node

if TYPE_CHECKING:
    from trioudp.testing import VirtualNetwork

ADDRESSES = {1: "10.0.0.1", 2: "10.0.0.2", 3: "10.0.0.3"}


async def start_node(net: VirtualNetwork, nursery: trio.Nursery, number: int) -> Node:
    """Run node ``number`` on its own host: a crash of the host ends it."""
    peers = {n: address for n, address in ADDRESSES.items() if n != number}
    node = Node(number, peers)
    with net.on_host(ADDRESSES[number]):
        await nursery.start(node.run)
    return node


async def start_cluster(net: VirtualNetwork, nursery: trio.Nursery) -> dict[int, Node]:
    for number, address in ADDRESSES.items():
        net.add_host(address, names=[f"node{number}"])
    return {n: await start_node(net, nursery, n) for n in ADDRESSES}


def leaders(nodes: dict[int, Node]) -> dict[int, int]:
    """Whom each node sees as the leader."""
    return {number: node.leader for number, node in nodes.items()}


@pytest.mark.virtual_network(latency=0.01, jitter=0.01, loss=0.05)
async def test_a_crashed_leader_is_replaced_and_leads_again_after_a_restart(
    virtual_network: VirtualNetwork, nursery: trio.Nursery
) -> None:
    nodes = await start_cluster(virtual_network, nursery)
    await trio.sleep(2)
    assert leaders(nodes) == {1: 1, 2: 1, 3: 1}

    virtual_network.crash("node1")  # its task is cancelled, its socket closed
    await trio.sleep(1)
    del nodes[1]
    assert leaders(nodes) == {2: 2, 3: 2}

    virtual_network.restart("node1")  # back, empty: start its program again
    nodes[1] = await start_node(virtual_network, nursery, 1)
    await trio.sleep(1)
    assert leaders(nodes) == {1: 1, 2: 1, 3: 1}
    assert virtual_network.stats.dropped["host_down"] > 0


@pytest.mark.virtual_network(latency=0.01, jitter=0.01, loss=0.05)
async def test_a_one_way_partition_does_not_split_the_cluster(
    virtual_network: VirtualNetwork, nursery: trio.Nursery
) -> None:
    nodes = await start_cluster(virtual_network, nursery)
    await trio.sleep(2)
    # node1 -> node2 is cut; node2 -> node1 still flows.
    virtual_network.partition("node1", "node2", one_way=True)
    await trio.sleep(3)
    # node2 hears node1's heartbeats through node3.
    assert leaders(nodes) == {1: 1, 2: 1, 3: 1}
    assert virtual_network.stats.dropped["partition"] > 0


@pytest.mark.virtual_network(latency=0.01, jitter=0.02, loss=0.1)
async def test_loss_never_makes_the_leader_look_dead(
    virtual_network: VirtualNetwork, nursery: trio.Nursery
) -> None:
    nodes = await start_cluster(virtual_network, nursery)
    await trio.sleep(1)
    for _ in range(200):  # 10 seconds, looked at every 50 ms
        assert leaders(nodes) == {1: 1, 2: 1, 3: 1}
        await trio.sleep(0.05)
