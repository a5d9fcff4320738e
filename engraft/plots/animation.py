"""The lattice over time: one frame per snapshot, with the day and the factor level.

GIF is written with matplotlib's PillowWriter (Pillow ships with
matplotlib); MP4 needs ffmpeg on the PATH.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter, writers

from engraft.outputs import check_new_file, make_parents, share_like_umask
from engraft.plots import data
from engraft.plots.lattice_image import LEGEND_CLONES, clone_ranks, lattice_legend, lattice_rgba
from engraft.plots.run_figures import draw_factor_level
from engraft.plots.style import (
    DAY_LABEL,
    FACTOR_COLOUR,
    LATTICE_X_LABEL,
    LATTICE_Y_LABEL,
    figure_style,
)

ANIMATION_FORMATS = (".gif", ".mp4")


class MissingWriterError(RuntimeError):
    """The tool that writes this animation format is not installed."""


def check_output(path: str | os.PathLike) -> str:
    """The animation format of ``path`` ('.gif' or '.mp4'); errors name the fix."""
    suffix = Path(path).suffix.lower()
    if suffix not in ANIMATION_FORMATS:
        raise ValueError(f"{path}: the animation must be a .gif or .mp4 file")
    if suffix == ".mp4" and not writers.is_available("ffmpeg"):
        raise MissingWriterError(f"{path}: writing MP4 needs ffmpeg on the PATH (e.g. apt-get install "
                                 "ffmpeg); or write a .gif, which needs nothing else")
    return suffix


def lattice_animation(run, by: str = "type", interval_ms: int = 600) -> tuple[plt.Figure, FuncAnimation]:
    """A figure and its animation: the lattice at every snapshot above the factor-level trace.

    Each frame's title gives the day and the factor level (IU/dL) recorded
    on it; a marker on the trace below follows the day.
    """
    geometry = data.LatticeGeometry.of(run)
    types = data.type_names(run.timeseries)
    days = data.snapshot_days(run)
    top = data.top_clones(data.clone_size_matrix(run), LEGEND_CLONES) if by == "clone" else np.zeros(0, int)
    ranks = clone_ranks(top) if by == "clone" else None
    ts = run.timeseries
    ts_days = ts["day"].to_numpy(float)
    level = ts["factor_iu_dl"].to_numpy(float)

    def frame_image(i: int) -> np.ndarray:
        return lattice_rgba(data.snapshot(run, i), geometry, by, len(types), ranks)

    def frame_title(i: int) -> str:
        return f"day {days[i]:g}: factor level {data.level_at(run, days[i]):.1f} IU/dL"

    with figure_style():
        fig = plt.figure(figsize=(6.4, 7.4), layout="constrained")
        grid = fig.add_gridspec(2, 1, height_ratios=[4, 1.25])
        ax = fig.add_subplot(grid[0])
        image = ax.imshow(frame_image(0), origin="lower", extent=(0, geometry.size, 0, geometry.size),
                          interpolation="nearest")
        title = ax.set_title(frame_title(0))
        ax.set_xlabel(LATTICE_X_LABEL)
        ax.set_ylabel(LATTICE_Y_LABEL)
        ax.legend(handles=lattice_legend(by, types, top), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, fontsize=7)
        trace = fig.add_subplot(grid[1])
        draw_factor_level(trace, ts_days, level, data.threshold_iu_dl(run))
        trace.set_ylabel("factor (IU/dL)")
        trace.set_xlabel(DAY_LABEL)
        cursor = trace.axvline(days[0], color=FACTOR_COLOUR, lw=1.0)
        (marker,) = trace.plot([days[0]], [data.level_at(run, days[0])], "o", color=FACTOR_COLOUR, ms=5)
        name = run.config.get("name") or Path(run.path).name
        note = f", {geometry.slice_note}" if geometry.slice_note else ""
        fig.suptitle(f"{name}: marrow lattice by {by}{note}")

    def update(i: int):
        image.set_data(frame_image(i))
        title.set_text(frame_title(i))
        cursor.set_xdata([days[i], days[i]])
        marker.set_data([days[i]], [data.level_at(run, days[i])])
        return image, title, cursor, marker

    animation = FuncAnimation(fig, update, frames=len(days), interval=interval_ms, blit=False)
    return fig, animation


def animate_run(path: str | os.PathLike, out: str | os.PathLike, by: str = "type", fps: float = 2.0,
                dpi: int = 100, force: bool = False) -> Path:
    """Write the lattice animation of the run directory ``path`` to ``out`` (.gif or .mp4).

    An existing file at ``out`` is overwritten only with ``force``.

    Raises
    ------
    ValueError
        ``out`` is neither .gif nor .mp4, or ``by`` is unknown.
    MissingWriterError
        ``out`` is .mp4 and ffmpeg is not installed.
    OutputError
        ``out`` exists (without ``force``) or cannot be created.
    """
    from engraft.results import read_run

    suffix = check_output(out)
    check_new_file(out, force=force, what="animation file")
    run = read_run(path)
    out = Path(out)
    make_parents(out)
    fig, animation = lattice_animation(run, by, interval_ms=int(1000 / fps))
    writer = PillowWriter(fps=fps) if suffix == ".gif" else FFMpegWriter(fps=fps)
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".tmp{suffix}", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with figure_style():
            animation.save(tmp, writer=writer, dpi=dpi)
        share_like_umask(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return out
