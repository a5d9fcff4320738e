"""A cache prefetch hint usable from compiled code.

The random sequential update visits sites in a random order, so the data of
each visit is far from the previous one in memory. The kernel knows the next
sites to visit (the shuffled order) and asks the CPU to start loading their
data a few visits ahead: ``prefetch(array, index)`` emits LLVM's
``llvm.prefetch`` (read, high locality). It is a hint only: it never changes
a value or a result, and with ``NUMBA_DISABLE_JIT=1`` it is a no-op.
"""

from __future__ import annotations

from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

if config.DISABLE_JIT:

    def prefetch(array, index):  # noqa: ARG001 - a hint; nothing to do as plain Python
        """No-op when Numba's JIT is disabled."""
        return None

else:
    from llvmlite import ir

    @intrinsic
    def prefetch(typingctx, array, index):
        """Hint the CPU to load ``array[index]`` into the cache (no bounds check)."""
        sig = types.void(array, index)

        def codegen(context, builder, signature, args):
            arraytype = signature.args[0]
            arr = context.make_array(arraytype)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, arraytype, arr, [args[1]])
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            # (address, rw = 0 read, locality = 3 keep in all levels, cache type = 1 data)
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                              ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen
