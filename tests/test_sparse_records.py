"""Sparse lattice read-outs (time.lattice_record_interval_days): the same run, fewer lattice censuses."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from engraft import ConfigError, load_config
from engraft.cli import main
from engraft.engines import simulate
from engraft.results import write_run
from engraft.simulation import Timeline
from tests.conftest import CONFIGS

SPARSE = ["time.lattice_record_interval_days=20", "time.lattice_record_after_days=30"]


def same_summary(a: dict, b: dict) -> bool:
    """The same keys and values, a NaN (a read-out never reached, such as the threshold day) equal to a NaN."""
    def same(x, y):
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def test_sparse_lattice_records_leave_the_run_unchanged(tmp_path, capsys):
    dense = simulate(load_config(CONFIGS / "tiny.yaml"), seed=4)
    sparse = simulate(load_config(CONFIGS / "tiny.yaml", SPARSE), seed=4)
    a, b = dense.timeseries, sparse.timeseries
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    census = b["occupancy"].notna()
    # every record to day 30 (daily while the blood counts are watched), then every 20 days
    to_30 = sorted(d for d in a["day"] if d <= 30)
    assert b.loc[census, "day"].tolist() == [*to_30, 40, 60, 80, 100, 120]
    # the tally read-outs of every record, bit for bit: the same trajectory
    tally = [c for c in a.columns if b[c].notna().all()]
    assert {"factor_iu_dl", "joint_bleeds_per_year", "myeloid_cells", "myeloid_relative", "severity"} <= set(tally)
    pd.testing.assert_frame_equal(a[tally], b[tally], check_exact=True)
    # and every column where the lattice was read
    pd.testing.assert_frame_equal(a[census].reset_index(drop=True), b[census].reset_index(drop=True),
                                  check_exact=True, check_dtype=False)
    assert b.loc[~census, "HSC_host"].isna().all() and b.loc[~census, "clones_alive"].isna().all()
    assert same_summary(dense.summary, sparse.summary)
    run = write_run(sparse, tmp_path / "run", figure=True)  # the figures draw through the gaps
    assert main(["plot", str(run), "--format", "png"]) == 0
    assert "figures (png)" in capsys.readouterr().out


def test_sparse_lattice_records_on_the_mesa_engine():
    """The Mesa engine takes the same sparse records: its own run, with the lattice columns
    empty between lattice reads and every tally read-out as in its dense run (same seed)."""
    over = ["time.duration_days=60", "time.lattice_record_interval_days=10", "time.lattice_record_after_days=20"]
    dense = simulate(load_config(CONFIGS / "tiny.yaml", over[:1]), seed=3, engine="mesa")
    sparse = simulate(load_config(CONFIGS / "tiny.yaml", over), seed=3, engine="mesa")
    a, b = dense.timeseries, sparse.timeseries
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    census = b["occupancy"].notna()
    assert b.loc[census, "day"].tolist() == [*sorted(d for d in a["day"] if d <= 20), 30, 40, 50, 60]
    tally = [c for c in a.columns if b[c].notna().all()]
    assert {"factor_iu_dl", "myeloid_cells", "severity"} <= set(tally)
    pd.testing.assert_frame_equal(a[tally], b[tally], check_exact=True)
    pd.testing.assert_frame_equal(a[census].reset_index(drop=True), b[census].reset_index(drop=True),
                                  check_exact=True, check_dtype=False)
    assert b.loc[~census, "hsc_chimerism"].isna().all()
    assert same_summary(dense.summary, sparse.summary)


def test_timeline_census_steps():
    tl = Timeline.from_experiment(load_config(CONFIGS / "tiny.yaml", SPARSE))
    assert set(tl.census_steps) <= set(tl.record_steps) and tl.total_steps in tl.census_steps
    assert Timeline.from_experiment(load_config(CONFIGS / "tiny.yaml")).census_steps is None


@pytest.mark.parametrize(("config", "interval", "after"), [
    ("tiny.yaml", 20, 30), ("tiny.yaml", 10, 0), ("tiny.yaml", 5, 42),
    ("hemophilia_a_lentiviral.yaml", 7, 365), ("hemophilia_a_lentiviral.yaml", 30, 100)])
def test_census_steps_of_a_multiple_are_the_grid(config, interval, after):
    """Where the interval is a multiple of record_interval_days, the records that read the lattice
    are those on its grid of multiples (and every one to lattice_record_after_days, and the last)."""
    exp = load_config(CONFIGS / config, [f"time.lattice_record_interval_days={interval}",
                                         f"time.lattice_record_after_days={after}"])
    tl = Timeline.from_experiment(exp)
    grid = {round(j * interval / tl.dt) for j in range(int(exp.time.duration_days // interval) + 1)}
    end = round(after / tl.dt)
    assert tl.census_steps == tuple(s for s in tl.record_steps if s <= end or s in grid or s == tl.total_steps)


@pytest.mark.parametrize("interval", ["1e-300", "0.001", "1e300"])
def test_extreme_lattice_intervals_cost_one_pass(interval):
    """A tiny interval reads the lattice at every record, a huge one only at the last (and
    before lattice_record_after_days); neither costs more than one pass over the records."""
    exp = load_config(CONFIGS / "tiny.yaml", [f"time.lattice_record_interval_days={interval}",
                                              "time.lattice_record_after_days=30"])
    tl = Timeline.from_experiment(exp)
    if float(interval) < 1:
        assert tl.census_steps == tl.record_steps
    else:
        assert tl.census_steps == tuple(s for s in tl.record_steps if s * tl.dt <= 30 or s == tl.total_steps)


def test_lattice_interval_that_is_not_a_multiple_of_the_record_interval():
    """An interval that the records do not divide reads the lattice at the first record at or
    after each of its multiples: records every 5 days, lattice every 12 after day 30, so a user
    who changes record_interval_days of a human experiment (weekly lattice reads) gets no error."""
    exp = load_config(CONFIGS / "tiny.yaml", ["time.lattice_record_interval_days=12", "time.lattice_record_after_days=30"])
    tl = Timeline.from_experiment(exp)
    day = {s: s * tl.dt for s in tl.record_steps}
    after = [round(day[s]) for s in tl.census_steps if day[s] > 30]
    # multiples of 12 after day 30: 36 48 60 72 84 96 108 120; the records are daily to day 42
    # (blood counts), then every 5 days -> 36 50 60 75 85 100 110 120
    assert after == [36, 50, 60, 75, 85, 100, 110, 120]
    assert [round(day[s]) for s in tl.census_steps if day[s] <= 30] == [round(day[s]) for s in tl.record_steps
                                                                         if day[s] <= 30]


def test_bad_sparse_records():
    with pytest.raises(ConfigError, match="time.lattice_record_interval_days"):
        load_config(CONFIGS / "tiny.yaml", ["time.lattice_record_interval_days=0"])
