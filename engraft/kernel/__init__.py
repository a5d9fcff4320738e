"""Compiled code only: arrays and scalars in, arrays out.

Nothing here imports the config or any module above it (model page, style
guide: one-way layers). :mod:`engraft.simulation` builds the arrays.
"""
