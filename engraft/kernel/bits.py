"""Bit sets of sites in compiled code: packing flag bytes into words, and walking the set bits.

The parallel kernel screens a whole stripe of the lattice at once into bit
sets, one 64-bit word per 64 sites of a row (site ``x`` of a row is bit ``x %
64`` of word ``x // 64``), and then visits the set bits of each line in
increasing ``x``. Two helpers:

- :func:`pack_bytes`: eight bytes that are each 0 or 1 (one uint64 read of
  a flag array) to the eight low bits of a word, with one multiplication.
- :func:`trailing_zeros`: the index of the lowest set bit, LLVM's
  ``llvm.cttz`` (one instruction on current CPUs, on any architecture LLVM
  targets). As plain Python (``NUMBA_DISABLE_JIT=1``) it is computed with
  Python integers.
"""

from __future__ import annotations

from numba import config, njit, types, uint64

from engraft.kernel.jit import JIT

#: the lowest bit of each byte of a word
BYTE_LSB = 0x0101010101010101
#: byte k's lowest bit goes to bit 56 + k of the product (no two partial products meet, so there
#: is no carry): ((v & BYTE_LSB) * BYTE_GATHER) >> 56 holds byte k's flag in bit k
BYTE_GATHER = 0x0102040810204080


@njit(**JIT)
def pack_bytes(v):
    """The lowest bit of each byte of ``v`` (uint64; byte 0 the lowest) as bits 0-7 of the result."""
    return ((v & uint64(BYTE_LSB)) * uint64(BYTE_GATHER)) >> uint64(56)


if config.DISABLE_JIT:

    def trailing_zeros(x):
        """Index of the lowest set bit of ``x`` (x != 0)."""
        x = int(x)
        return (x & -x).bit_length() - 1

else:
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def trailing_zeros(typingctx, x):
        """Index of the lowest set bit of ``x`` (uint64, x != 0), as int64."""
        if x != types.uint64:
            return None
        sig = types.int64(types.uint64)

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            fnty = ir.FunctionType(i64, [i64, ir.IntType(1)])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.cttz.i64")
            # is_zero_poison = true: callers never pass 0
            return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

        return sig, codegen
