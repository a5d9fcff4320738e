"""The one place where engraft's Numba options are set.

``cache=True`` writes compiled code next to the sources (``__pycache__``), so
only the first run on a machine pays for compilation. ``fastmath`` stays off:
the kernel is stochastic and its tests compare against exact expectations.
Set ``NUMBA_DISABLE_JIT=1`` to run the same code as plain Python (slow; used
for coverage of compiled bodies).
"""

JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
PARALLEL_JIT = {**JIT, "parallel": True}
