"""The kernels' random streams against a plain-Python reference.

- xoshiro256** (Blackman & Vigna 2018, the reference C code's ``next``): the
  array form the kernels call (``next_u64``, ``uniform``) and the form with the
  state in variables (``xoshiro_step``, used by the sequential kernel's
  screening loop) give the reference's numbers, draw for draw.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engraft.kernel.rng import U53, next_u64, uniform, xoshiro_step

MASK = (1 << 64) - 1


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & MASK


def reference_xoshiro(state: list[int], n: int) -> list[int]:
    """xoshiro256** as in the reference C code, on Python integers."""
    s = list(state)
    out = []
    for _ in range(n):
        out.append((_rotl((s[1] * 5) & MASK, 7) * 9) & MASK)
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
    return out


@njit
def _draw_array(state, n):
    out = np.empty(n, dtype=np.uint64)
    for k in range(n):
        out[k] = next_u64(state)
    return out


@njit
def _draw_variables(state, n):
    out = np.empty(n, dtype=np.uint64)
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    for k in range(n):
        bits, s0, s1, s2, s3 = xoshiro_step(s0, s1, s2, s3)
        out[k] = bits
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return out


def test_first_draw_of_a_small_state():
    """rotl(5 s1, 7) x 9 with s1 = 2: 1280 x 9."""
    assert int(_draw_array(np.array([1, 2, 3, 4], dtype=np.uint64), 1)[0]) == 11520


def test_both_forms_give_the_reference_stream():
    seed = [0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x2545F4914F6CDD1D]
    n = 1000
    expected = reference_xoshiro(seed, n)
    for draw in (_draw_array, _draw_variables):
        state = np.array(seed, dtype=np.uint64)
        got = draw(state, n)
        assert [int(v) for v in got] == expected, draw.__name__
        # the state after n draws continues the same stream
        assert int(draw(state, 1)[0]) == reference_xoshiro(seed, n + 1)[-1], draw.__name__


def test_uniform_is_the_top_53_bits():
    seed = [1, 2, 3, 4]
    state = np.array(seed, dtype=np.uint64)
    bits = reference_xoshiro(seed, 5)
    for b in bits:
        assert uniform(state) == (b >> 11) * U53
    assert U53 == 2.0**-53
