"""Random numbers inside compiled code, with explicit state.

Numba's own ``np.random`` keeps one hidden state per thread and process; a
run's stream would then depend on what else ran before it in that process.
engraft passes its state explicitly instead:

- ``xoshiro256**`` (Blackman & Vigna, 2018) for the sequential kernel: four
  uint64 words, seeded from :class:`numpy.random.SeedSequence`.
- a counter-based stream, ``splitmix64`` finaliser over (key, step, site,
  draw), for code whose draws must not depend on visiting order or thread
  count (the parallel kernel).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from engraft.kernel.jit import JIT

#: 2**-53: 53 random bits times U53 is a double uniform on [0, 1)
U53 = 1.0 / 9007199254740992.0


@njit(**JIT)
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(**JIT)
def xoshiro_step(s0, s1, s2, s3):
    """One xoshiro256** step on a state held in four variables: ``(bits, s0, s1, s2, s3)``.

    For loops that draw many numbers: the state stays in registers, where
    :func:`next_u64` must store it to its array (which the compiler cannot
    tell apart from the loop's other arrays) after every draw.
    """
    result = _rotl(s1 * uint64(5), 7) * uint64(9)
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return result, s0, s1, s2, s3


@njit(**JIT)
def next_u64(state):
    """Advance a xoshiro256** state (uint64[4]) and return 64 random bits."""
    result, state[0], state[1], state[2], state[3] = xoshiro_step(state[0], state[1], state[2], state[3])
    return result


@njit(**JIT)
def uniform(state):
    """A double uniform on [0, 1) with 53 random bits."""
    return float(next_u64(state) >> uint64(11)) * U53


@njit(**JIT)
def randbelow(state, n):
    """An integer uniform on 0..n-1 (n >= 1); bias below 2**-53 * n."""
    return int(uniform(state) * n)


@njit(**JIT)
def shuffle_prefix(values, n, state):
    """Fisher-Yates shuffle of ``values[:n]`` in place."""
    for i in range(n - 1, 0, -1):
        j = randbelow(state, i + 1)
        tmp = values[i]
        values[i] = values[j]
        values[j] = tmp


@njit(**JIT)
def splitmix64(x):
    """The splitmix64 finaliser: a bijective 64-bit mix (Steele et al., 2014)."""
    x = x + uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> uint64(27))) * uint64(0x94D049BB133111EB)
    return x ^ (x >> uint64(31))


@njit(**JIT)
def counter_uniform(key, step, site, draw):
    """Uniform on [0, 1) that depends only on (key, step, site, draw)."""
    h = splitmix64(key ^ splitmix64(uint64(step) * uint64(0x100000001B3) + uint64(draw)))
    h = splitmix64(h ^ uint64(site))
    return float(h >> uint64(11)) * U53


def seed_state(seed_sequence: np.random.SeedSequence) -> np.ndarray:
    """A xoshiro256** state from a SeedSequence (never all zero)."""
    state = seed_sequence.generate_state(4, dtype=np.uint64)
    if not state.any():  # pragma: no cover - probability 2**-256
        state[0] = 1
    return state
