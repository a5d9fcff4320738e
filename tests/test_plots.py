"""Figures, sweep figures and the lattice animation: content, not only files.

Runs are small real simulations of ``configs/tiny.yaml``; the sweep is a
real grid of tiny runs whose aggregate table has the columns the sweep
module writes (one row per run, one column per swept key path, the
summary read-outs).
"""

from __future__ import annotations

import json
import math

import matplotlib
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from engraft import load_config, simulate
from engraft.cli import main
from engraft.lattice import EMPTY, GRAFT
from engraft.plots import data
from engraft.plots.animation import lattice_animation
from engraft.plots.run_figures import (
    RUN_FIGURES,
    chimerism_figure,
    clonal_figure,
    factor_level_figure,
    lattice_figure,
    lineage_origin_figure,
    vcn_figure,
)
from engraft.plots.style import (
    HSC_COLOUR,
    ORIGIN_COLOURS,
    SEVERITY_BANDS,
    THRESHOLD_COLOUR,
    lineage_colour,
    parse_formats,
)
from engraft.plots.sweep_figures import (
    SWEEP_FIGURES,
    dose_response_figure,
    threshold_probability_figure,
    time_to_threshold_figure,
)
from engraft.results import read_run, write_run
from tests.conftest import CONFIGS

TINY = CONFIGS / "tiny.yaml"
# a figure whose animation a test inspects frame by frame is never rendered to a file
pytestmark = pytest.mark.filterwarnings("ignore:Animation was deleted without rendering")
DOSE = "infusions[0].dose_per_kg"
TRANSDUCTION = "infusions[0].transduction"


# ----------------------------------------------------------------------------------
# fixtures: small real runs and a real sweep
# ----------------------------------------------------------------------------------
def _run(tmp_path_factory, name: str, overrides: list[str]):
    result = simulate(load_config(TINY, overrides))
    path = write_run(result, tmp_path_factory.mktemp(name) / "run", figure=False)
    return read_run(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _run(tmp_path_factory, "run2d", ["time.snapshot_interval_days=20"])


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    return _run(tmp_path_factory, "run3d", ["lattice.dims=3", "lattice.size=12",
                                            "time.duration_days=60"])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A 3 x 2 grid (dose x transduction) x 4 replicates of tiny runs, plus one failed run."""
    root = tmp_path_factory.mktemp("sweep")
    rows = []
    for i, (dose, transduction, replicate) in enumerate(
            (d, t, r) for d in (1e8, 3e8, 1e9) for t in (0.2, 0.8) for r in range(4)):
        seed = 100 + i
        exp = load_config(TINY, [f"{DOSE}={dose}", f"{TRANSDUCTION}={transduction}",
                                 "time.duration_days=90"], seed=seed)
        summary = simulate(exp).summary
        rows.append({"run_id": f"r{i:04d}", DOSE: dose, TRANSDUCTION: transduction,
                     "replicate": replicate, "seed": seed, "status": "ok", **summary})
    failed = dict(rows[0], run_id="r9999", status="failed", final_factor_iu_dl=float("nan"),
                  threshold_day=float("nan"))
    frame = pd.DataFrame(rows + [failed])
    frame.to_parquet(root / "aggregate.parquet")
    (root / "sweep.json").write_text(json.dumps({"base": str(TINY), "replicates": 4, "grid": {
        DOSE: [1e8, 3e8, 1e9], TRANSDUCTION: [0.2, 0.8]}}))
    return root


@pytest.fixture(scope="module")
def sweep(sweep_dir):
    return data.read_sweep(sweep_dir)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def not_blank(path) -> None:
    """A PNG that is neither empty nor a flat colour: some ink, some variation."""
    image = mpimg.imread(path)[..., :3]
    non_white = np.mean(image.min(axis=-1) < 0.95)
    assert image.std() > 0.05, f"{path}: flat image"
    assert non_white > 0.03, f"{path}: nearly blank ({non_white:.1%} ink)"


def lines(ax, label_part: str = ""):
    return [ln for ln in ax.get_lines() if label_part in str(ln.get_label())]


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


# ----------------------------------------------------------------------------------
# run figures
# ----------------------------------------------------------------------------------
def test_factor_level_figure_has_severity_bands_threshold_and_units(run):
    fig = factor_level_figure(run)
    (ax,) = fig.axes
    assert "IU/dL" in ax.get_ylabel() and "days" in ax.get_xlabel()
    band_labels = [p.get_label() for p in ax.patches]
    ymax = ax.get_ylim()[1]
    assert band_labels == [label for lo, _, label, _ in SEVERITY_BANDS if lo < ymax]
    assert len(band_labels) == 4  # the axis always reaches into the normal range (>= 40)
    level = lines(ax, "factor level")
    assert len(level) == 1
    np.testing.assert_allclose(level[0].get_ydata(), run.timeseries["factor_iu_dl"])
    assert len(lines(ax, "28-day mean")) == 1
    (threshold,) = lines(ax, "threshold")
    assert threshold.get_color() == THRESHOLD_COLOUR
    assert np.allclose(threshold.get_ydata(), run.summary["threshold_iu_dl"])
    held = not math.isnan(run.summary["threshold_day"] or math.nan)
    assert len(lines(ax, "held from day")) == int(held)
    assert len(ax.get_lines()) == 3 + int(held)


def test_platelet_stored_factor_gets_its_own_panel(tmp_path_factory):
    platelet_run = _run(tmp_path_factory, "platelet", ["transgene.mode=platelet_stored",
                                                       "transgene.lineages=[platelets]"])
    fig = factor_level_figure(platelet_run)
    assert len(fig.axes) == 2
    assert "10^8 platelets" in fig.axes[1].get_ylabel()
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(),
                               platelet_run.timeseries["platelet_factor_iu_per_1e8"])


def test_chimerism_figure_one_line_per_lineage_in_the_scheme_colours(run):
    lineages = data.lineage_names(run.timeseries)
    assert lineages == ["myeloid", "platelets", "erythroid", "lymphoid"]
    fig = chimerism_figure(run)
    assert len(fig.axes) == 2
    for ax, suffix in zip(fig.axes, ("chimerism", "transduced_fraction"), strict=True):
        assert "fraction" in ax.get_ylabel() and "days" in ax.get_xlabel()
        assert len(ax.get_lines()) == 1 + len(lineages)
        assert ax.get_lines()[0].get_color() == HSC_COLOUR
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), run.timeseries[f"hsc_{suffix}"])
        for line, lin in zip(ax.get_lines()[1:], lineages, strict=True):
            assert line.get_color() == lineage_colour(lin)
            np.testing.assert_allclose(line.get_ydata(), run.timeseries[f"{lin}_{suffix}"])


def test_lineage_origin_figure_stacks_host_and_graft(run):
    ts = run.timeseries
    fig = lineage_origin_figure(run)
    axes = visible_axes(fig)
    lineages = data.lineage_names(ts)
    assert len(axes) == 2 + len(lineages)
    assert [len(ax.collections) for ax in axes] == [3, 2] + [3] * len(lineages)
    facecolours = [tuple(c.get_facecolor()[0]) for c in axes[0].collections]
    assert facecolours == [to_rgba(ORIGIN_COLOURS[k]) for k in
                           ("host", "graft_untransduced", "graft_transduced")]
    assert "lattice cells" in axes[0].get_ylabel() and "lattice cells" in axes[1].get_ylabel()
    for ax in axes[2:]:
        assert "cells, whole body" in ax.get_ylabel()
    # the top of the HSC stack is the HSC count on the lattice
    top = axes[0].collections[-1].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx((ts["HSC_host"] + ts["HSC_graft"]).max())
    # the top of a lineage stack is the whole-body count, in the unit on the axis
    ax = axes[2]
    exponent = int(ax.get_ylabel().split("10^")[1].rstrip(")")) if "10^" in ax.get_ylabel() else 0
    top = ax.collections[-1].get_paths()[0].vertices[:, 1].max() * 10.0**exponent
    assert top == pytest.approx(ts[f"{lineages[0]}_cells"].max(), rel=1e-9)


def test_vcn_figure_bulk_and_per_transduced_cell(run):
    ts = run.timeseries
    fig = vcn_figure(run)
    assert len(fig.axes) == 2
    n = 1 + len(data.lineage_names(ts))
    for ax in fig.axes:
        assert "cop" in ax.get_ylabel() and "days" in ax.get_xlabel()
        assert len(ax.get_lines()) == n
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), ts["hsc_vcn"])
    per_marked = fig.axes[1].get_lines()[0].get_ydata()
    frac = ts["hsc_transduced_fraction"].to_numpy()
    ok = frac > 0
    np.testing.assert_allclose(per_marked[ok], ts["hsc_vcn"].to_numpy()[ok] / frac[ok])
    assert (per_marked[ok] >= 1).all()  # a transduced cell carries at least one copy


def test_clone_shares_from_snapshots(run):
    s = run.snapshots
    sizes = data.clone_size_matrix(run)
    last = -1
    graft = (s["ctype"][last] != EMPTY) & ((s["flags"][last] & GRAFT) != 0)
    ids, counts = np.unique(s["clone"][last][graft], return_counts=True)
    np.testing.assert_array_equal(sizes[last][ids], counts)
    assert sizes[last].sum() == graft.sum()
    top = data.top_clones(sizes, 3)
    peak = (sizes / np.maximum(sizes.sum(axis=1, keepdims=True), 1)).max(axis=0)
    assert 0 not in top
    assert list(peak[top]) == sorted(peak[top], reverse=True)
    assert peak[top[0]] == peak[1:].max()


def test_clonal_figure_muller_plot_and_diversity(run):
    ts = run.timeseries
    sizes = data.clone_size_matrix(run)
    fig = clonal_figure(run, n_clones=5)
    muller, counts, shannon = fig.axes
    top = data.top_clones(sizes, 5)
    assert len(muller.collections) == len(top) + 1  # largest clones + the rest pooled
    assert "fraction" in muller.get_ylabel()
    # the bottom band is the largest clone's share at each snapshot
    bottom = muller.collections[0].get_paths()[0].vertices
    days = data.snapshot_days(run)
    share = sizes[:, top[0]] / np.maximum(sizes.sum(axis=1), 1)
    upper = {round(x, 6): y for x, y in bottom if y > 0}
    for d, sh in zip(days, share, strict=True):
        if sh > 0:
            assert upper[round(d, 6)] == pytest.approx(sh)
    assert "count" in counts.get_ylabel() and counts.get_yscale() == "log"
    alive = ts["clones_alive"].to_numpy(float)
    np.testing.assert_allclose(counts.get_lines()[0].get_ydata(), np.where(alive > 0, alive, np.nan))
    assert "nats" in shannon.get_ylabel() and "days" in shannon.get_xlabel()
    np.testing.assert_allclose(shannon.get_lines()[0].get_ydata(), ts["shannon_diversity"])


@pytest.mark.parametrize("by", ["type", "origin", "clone"])
def test_lattice_figure_colours_every_site(run, by):
    fig = lattice_figure(run, by)
    axes = visible_axes(fig)
    days = data.snapshot_days(run)
    assert len(axes) == min(len(days), 6)
    for ax in axes:
        assert ax.get_xlabel() == "x (lattice sites)" and ax.get_ylabel() == "y (lattice sites)"
        assert len(ax.images) == 1
        assert "IU/dL" in ax.get_title()
    image = axes[-1].images[0].get_array()
    assert image.shape == (32, 32, 4)
    snap = data.snapshot(run, len(days) - 1)
    plane = {k: v.reshape(32, 32) for k, v in snap.items()}
    rgb = image[..., :3]
    if by == "origin":
        marked = np.all(np.isclose(rgb, to_rgba(ORIGIN_COLOURS["graft_transduced"])[:3]), axis=-1)
        expected = (plane["ctype"] != EMPTY) & ((plane["flags"] & GRAFT) != 0) & (plane["vcn"] > 0)
        np.testing.assert_array_equal(marked, expected)
    elif by == "type":
        hsc = np.all(np.isclose(rgb, to_rgba(HSC_COLOUR)[:3]), axis=-1)
        np.testing.assert_array_equal(hsc, plane["ctype"] == 0)
    else:
        empty = np.all(np.isclose(rgb, 1.0), axis=-1)
        np.testing.assert_array_equal(empty, (plane["ctype"] == EMPTY) & (plane["niche"] == 0))
    legend = fig.legends[0]
    assert any("empty niche" in t.get_text() for t in legend.get_texts())


def test_lattice_figure_of_3d_run_is_the_mid_plane(run_3d):
    fig = lattice_figure(run_3d, "type")
    assert "mid-plane slice z = 6 of 12" in fig.get_suptitle()
    image = visible_axes(fig)[-1].images[0].get_array()
    assert image.shape == (12, 12, 4)
    last = data.snapshot(run_3d, len(data.snapshot_days(run_3d)) - 1)
    mid = last["ctype"].reshape(12, 12, 12)[6]
    occupied = ~np.all(np.isclose(image[..., :3], 1.0), axis=-1) & ~np.all(
        np.isclose(image[..., :3], to_rgba("#efe3c8")[:3]), axis=-1)
    np.testing.assert_array_equal(occupied, mid != EMPTY)


def test_plot_command_writes_every_run_figure_in_every_format(run, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["plot", str(run.path), "--out", str(out), "--format", "png,svg,pdf"]) == 0
    assert f"{len(RUN_FIGURES)} figures" in capsys.readouterr().out
    for name in RUN_FIGURES:
        not_blank(out / f"{name}.png")
        svg = (out / f"{name}.svg").read_text()
        assert "<svg" in svg
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert "days after infusion" in (out / "factor_level.svg").read_text()  # text kept as text
    from engraft.outputs import FIGURES_MANIFEST

    # no temporary files left behind; the manifest lists what engraft wrote
    assert [p.name for p in out.glob(".*")] == [FIGURES_MANIFEST]


def test_plot_command_defaults_to_run_dir_figures(run, capsys):
    assert main(["plot", str(run.path), "--format", "png"]) == 0
    assert sorted(p.stem for p in (run.path / "figures").glob("*.png")) == sorted(RUN_FIGURES)
    assert matplotlib.get_backend().lower() == "agg"


def test_plot_command_errors_are_one_line_and_exit_2(tmp_path, sweep_dir, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    assert main(["plot", str(sweep_dir), "--format", "png,bmp"]) == 2
    assert "--format" in capsys.readouterr().err
    pending = tmp_path / "pending_sweep"
    pending.mkdir()
    (pending / "sweep.json").write_text("{}")
    assert main(["plot", str(pending)]) == 2
    assert "no aggregate.parquet" in capsys.readouterr().err


def test_parse_formats():
    assert parse_formats("PNG, svg,png") == ("png", "svg")
    with pytest.raises(ValueError, match="png, svg, pdf"):
        parse_formats("jpg")


# ----------------------------------------------------------------------------------
# sweep figures
# ----------------------------------------------------------------------------------
def test_read_sweep_finds_swept_parameters_and_drops_unfinished_runs(sweep, sweep_dir):
    assert sweep.parameters == [DOSE, TRANSDUCTION]
    assert sweep.numeric_parameters == [DOSE, TRANSDUCTION]
    assert len(sweep.frame) == 24 and sweep.n_unfinished == 1
    assert sweep.threshold_iu_dl == 15.0
    (sweep_dir / "sweep.json").rename(sweep_dir / "sweep.json.bak")
    try:  # without sweep.json the key-path columns are the parameters
        assert data.read_sweep(sweep_dir).parameters == [DOSE, TRANSDUCTION]
    finally:
        (sweep_dir / "sweep.json.bak").rename(sweep_dir / "sweep.json")


def test_read_sweep_names_missing_columns(tmp_path):
    pd.DataFrame({"run_id": ["a"], DOSE: [1e8], "final_factor_iu_dl": [3.0]}).to_parquet(
        tmp_path / "aggregate.parquet")
    with pytest.raises(data.PlotInputError, match="missing column.*threshold_day"):
        data.read_sweep(tmp_path)
    pd.DataFrame({"run_id": ["a"], "final_factor_iu_dl": [3.0], "threshold_day": [np.nan]}).to_parquet(
        tmp_path / "aggregate.parquet")
    with pytest.raises(data.PlotInputError, match="no swept parameter"):
        data.read_sweep(tmp_path)


def test_dose_response_median_and_replicate_band(sweep):
    fig = dose_response_figure(sweep)
    assert len(fig.axes) == 2
    frame = sweep.frame
    for ax, parameter, other in zip(fig.axes, (DOSE, TRANSDUCTION), (TRANSDUCTION, DOSE), strict=True):
        n_series = frame[other].nunique()
        assert len(ax.collections) == n_series  # one 10-90 % band per curve
        assert len(ax.get_lines()) == n_series + 1  # medians + threshold
        assert [p.get_label() for p in ax.patches][:3] == [b[2] for b in SEVERITY_BANDS[:3]]
        assert parameter in ax.get_xlabel() and "IU/dL" in ax.get_ylabel()
        first = frame[frame[other] == sorted(frame[other].unique())[0]]
        expected = first.groupby(parameter)["final_factor_iu_dl"].median()
        np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), expected.index)
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), expected.to_numpy())
    assert "CD34+ cells/kg" in fig.axes[0].get_xlabel()
    assert fig.axes[0].get_xscale() == "log"  # doses span a decade
    assert fig.axes[1].get_xscale() == "linear"


def test_threshold_probability_heatmap(sweep):
    fig = threshold_probability_figure(sweep)
    ax = fig.axes[0]
    (image,) = ax.images
    frame = sweep.frame
    expected = (frame.assign(reached=frame["threshold_day"].notna())
                .pivot_table(index=TRANSDUCTION, columns=DOSE, values="reached", aggfunc="mean"))
    np.testing.assert_allclose(np.asarray(image.get_array()), expected.to_numpy())
    assert image.get_clim() == (0.0, 1.0)
    assert DOSE in ax.get_xlabel() and TRANSDUCTION in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1e+08", "3e+08", "1e+09"]
    assert sum("(n=4)" in t.get_text() for t in ax.texts) == 6
    colorbar = [a for a in fig.axes if a is not ax][0]
    assert "probability" in colorbar.get_ylabel()


def test_time_to_threshold_boxes(sweep):
    fig = time_to_threshold_figure(sweep)
    assert len(fig.axes) == 2
    frame = sweep.frame
    for ax, parameter in zip(fig.axes, (DOSE, TRANSDUCTION), strict=True):
        assert "days" in ax.get_ylabel() and parameter in ax.get_xlabel()
        levels = sweep.levels(parameter)
        reached = [frame.loc[frame[parameter] == v, "threshold_day"].notna().sum() for v in levels]
        assert len(ax.patches) == sum(r > 0 for r in reached)  # one box per level with runs that got there
        labels = [t.get_text() for t in ax.texts]
        assert labels == [f"{r}/{(frame[parameter] == v).sum()}" for r, v in zip(reached, levels, strict=True)]


def test_plot_command_on_a_sweep_directory(sweep_dir, capsys):
    assert main(["plot", str(sweep_dir), "--format", "png"]) == 0
    assert "3 figures" in capsys.readouterr().out
    for name in SWEEP_FIGURES:
        not_blank(sweep_dir / "figures" / f"{name}.png")


# ----------------------------------------------------------------------------------
# animation
# ----------------------------------------------------------------------------------
def test_animate_gif_has_one_frame_per_snapshot_and_frames_differ(run, tmp_path, capsys):
    out = tmp_path / "lattice.gif"
    assert main(["animate", str(run.path), "--by", "origin", "--out", str(out), "--fps", "4"]) == 0
    n_snapshots = len(data.snapshot_days(run))
    with Image.open(out) as gif:
        assert gif.n_frames == n_snapshots
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(frames, frames[1:], strict=False))
    assert frames[0].std() > 10  # not blank


def test_animation_frames_show_day_and_factor_level(run):
    fig, animation = lattice_animation(run, "clone")
    lattice_ax = fig.axes[0]
    days = data.snapshot_days(run)
    for i in (0, len(days) - 1):
        animation._func(i)
        title = lattice_ax.get_title()
        assert f"day {days[i]:g}" in title
        assert f"{data.level_at(run, days[i]):.1f} IU/dL" in title
    assert "IU/dL" in fig.axes[1].get_ylabel() and "days" in fig.axes[1].get_xlabel()


def test_animation_of_3d_run_says_mid_plane(run_3d):
    fig, _ = lattice_animation(run_3d, "type")
    assert "mid-plane slice" in fig.get_suptitle()


def test_animate_mp4_without_ffmpeg_is_a_usage_error(run, tmp_path, monkeypatch, capsys):
    from matplotlib.animation import writers

    monkeypatch.setattr(writers, "is_available", lambda name: False)
    assert main(["animate", str(run.path), "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert "ffmpeg" in err and ".gif" in err and "Traceback" not in err
    assert main(["animate", str(run.path), "--out", str(tmp_path / "a.avi")]) == 2
    assert ".gif or .mp4" in capsys.readouterr().err
