import random

import pytest

from trioudp._rng import lend_randomness, new_rng


def test_outside_trio_each_generator_is_unseeded():
    assert new_rng().getrandbits(64) != new_rng().getrandbits(64)


async def test_a_lent_source_seeds_every_new_generator_in_turn():
    with lend_randomness(random.Random(7)):
        first = [new_rng().random() for _ in range(3)]
    with lend_randomness(random.Random(7)):
        again = [new_rng().random() for _ in range(3)]
    assert first == again
    assert len(set(first)) == 3
    # Lending ends with the block.
    assert new_rng().random() not in first


async def test_lending_ends_even_on_error():
    source = random.Random(1)
    with pytest.raises(KeyError), lend_randomness(source):
        raise KeyError
    state = source.getstate()
    new_rng()
    assert source.getstate() == state
