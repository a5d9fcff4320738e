"""Compiled code only: arrays and scalars in, arrays out.

Nothing here imports the config or any module above it: layers point one way
(config -> :mod:`engraft.simulation` -> kernel), and the simulation builds
the arrays.
"""
