"""Fixed-point encoding and slot packing: exact sums, headroom arithmetic, refusal beyond it."""

from __future__ import annotations

import numpy as np
import pytest

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.he import FixedPoint, Packing


def test_fixed_point_round_trip_is_within_half_a_step():
    fp = FixedPoint(10)
    x = np.array([0.0, 1.0, -1.0, 0.123456, -3.999])
    ints = fp.encode(x)
    assert ints[:3] == [0, 1024, -1024]
    assert np.abs(fp.decode(ints) - x).max() <= 2.0**-11


@pytest.mark.parametrize("bad", [0, 53, 1.5, True])
def test_fixed_point_rejects_bad_precision(bad):
    with pytest.raises(ConfigError, match="precision_bits"):
        FixedPoint(bad)


def test_encode_rejects_non_finite_and_2d():
    with pytest.raises(ProtocolError, match=r"vector\[1\]"):
        FixedPoint().encode([0.0, float("nan")])
    with pytest.raises(ProtocolError, match="1-D"):
        FixedPoint().encode(np.zeros((2, 2)))


def test_headroom_is_the_bit_length_of_the_largest_sum():
    # offset = 2^8, one value needs bits(2 * 2^8) = 10, the sum of 5 needs bits(5 * 512) = 12
    p = Packing(key_bits=512, precision_bits=8, bound=1.0, max_clients=5)
    assert (p.offset, p.value_bits, p.slot_bits, p.headroom_bits) == (256, 10, 12, 2)
    assert p.slots == 511 // 12
    assert Packing(512, 8, 1.0, 4).slot_bits == 12  # 4 * 512 = 2048: 12 bits
    assert Packing(512, 8, 1.0, 8).slot_bits == 13  # 8 * 512 = 4096: 13 bits


def _plain_sum(packed: list[list[int]]) -> list[int]:
    """Add packed plaintexts slot-wise, which is what adding their ciphertexts does."""
    return [sum(col) for col in zip(*packed)]


def test_packed_plaintext_sum_equals_fixed_point_sum_at_the_limit():
    # 7 * 2 * 2^8 = 3584 is the largest 12-bit sum: seven clients fill the slot exactly
    p = Packing(key_bits=512, precision_bits=8, bound=1.0, max_clients=7)
    assert (p.slot_bits, p.headroom_bits) == (12, 2)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, 100) for _ in range(5)] + [np.ones(100), -np.ones(100)]
    expected = np.sum([FixedPoint(8).encode(x) for x in xs], axis=0)
    assert p.unpack_ints(_plain_sum([p.pack(x) for x in xs]), 100, 7) == expected.tolist()
    assert p.unpack_ints(_plain_sum([p.pack(np.ones(100))] * 7), 100, 7) == [7 * 256] * 100
    assert p.unpack_ints(_plain_sum([p.pack(-np.ones(100))] * 7), 100, 7) == [-7 * 256] * 100


def test_one_client_beyond_the_headroom_carries_into_the_next_slot_and_is_refused():
    p = Packing(key_bits=512, precision_bits=8, bound=1.0, max_clients=7)
    eight = _plain_sum([p.pack(np.ones(100))] * 8)  # 8 * 512 = 4096 needs 13 bits
    mask = (1 << p.slot_bits) - 1
    assert (eight[0] & mask, (eight[0] >> p.slot_bits) & mask) == (0, 1)  # wrapped, and carried
    with pytest.raises(ConfigError, match="max_clients >= 8"):
        p.unpack_ints(eight, 100, 8)


def test_packing_that_cannot_fit_one_slot_is_a_config_error():
    with pytest.raises(ConfigError, match="does not fit in a 512-bit key"):
        Packing(key_bits=512, precision_bits=50, bound=1.0, max_clients=2**470)
    with pytest.raises(ConfigError, match="bound"):
        Packing(bound=-1.0)
    with pytest.raises(ConfigError, match="max_clients"):
        Packing(max_clients=0)


def test_pack_refuses_values_beyond_the_bound():
    with pytest.raises(ProtocolError, match=r"vector\[2\] = 1.5 exceeds the packing bound 1.0"):
        Packing(512, 8, 1.0, 2).pack([0.0, 1.0, 1.5])


def test_unpack_checks_the_number_of_plaintexts():
    p = Packing(512, 8, 1.0, 2)
    with pytest.raises(ProtocolError, match="expected 1 plaintexts"):
        p.unpack_ints([0, 0], 10, 1)
