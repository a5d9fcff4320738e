"""Sweeps: specs, identical results on any executor (a real Dask LocalCluster), kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from engraft.cli import main
from engraft.config.load import ConfigError, load_yaml, resolve_bases
from engraft.sweep import load_sweep, parse_sweep, run_seeds, run_sweep
from tests.conftest import DATA, ROOT

SWEEP = DATA / "configs" / "sweep_tiny.yaml"


def sweep_data() -> dict:
    return resolve_bases(load_yaml(SWEEP), SWEEP.resolve())


def write_sweep(tmp_path: Path, **changes) -> Path:
    data = sweep_data()
    for key, value in changes.items():
        data["sweep"][key] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_product_zip_replicates_and_seeds():
    sweep = load_sweep(SWEEP)
    assert len(sweep.runs) == 2 * 2 * 3
    combos = {tuple(sorted(r.params.items())) for r in sweep.runs}
    assert len(combos) == 4
    for run in sweep.runs:  # zipped: transduction and VCN move together
        pair = (run.params["infusions[0].transduction"], run.params["infusions[0].vcn.mean"])
        assert pair in {(0.3, 1.0), (0.8, 2.5)}
    seeds = [r.seed for r in sweep.runs]
    assert len(set(seeds)) == len(seeds)
    assert seeds == run_seeds(99, 12)
    exp = sweep.run_experiment(sweep.runs[5])
    assert exp.seed == sweep.runs[5].seed and exp.time.duration_days == 60


def test_log_range():
    data = sweep_data()
    data["sweep"]["parameters"] = {"infusions[0].dose_per_kg": {"range": {"start": 1e8, "stop": 1e10,
                                                                         "num": 3, "scale": "log"}}}
    sweep = parse_sweep(data)
    values = sorted({r.params["infusions[0].dose_per_kg"] for r in sweep.runs})
    np.testing.assert_allclose(values, [1e8, 1e9, 1e10])


@pytest.mark.parametrize(("change", "message"), [
    ({"parameters": {"infusions[0].dose_per_kgg": {"values": [1e8]}}},
     "sweep.parameters.infusions[0].dose_per_kgg: unknown key (did you mean 'dose_per_kg'?)"),
    ({"parameters": {"lattice.sizes.x": {"values": [1]}}}, "sweep.parameters.lattice.sizes.x: unknown key path"),
    ({"parameters": {"lattice.size": {"values": []}}}, "sweep.parameters.lattice.size.values: must be a non-empty list"),
    ({"parameters": {"lattice.size": {"range": {"start": 20, "stop": 40, "num": 0}}}},
     "sweep.parameters.lattice.size.range.num: must be an integer >= 1"),
    ({"replicates": 0}, "sweep.replicates: must be an integer >= 1, got 0"),
    ({"parameters": {"infusions[0].transduction": {"values": [0.5, 1.5]}}},
     "sweep.parameters.infusions[0].transduction: input should be less than or equal to 1, got 1.5"),
    ({"parameters": {"infusions[0].transduction": {"values": [0.5, 0.6], "group": "g"},
                     "infusions[0].vcn.mean": {"values": [1.0], "group": "g"}}}, "need equal lengths"),
])
def test_bad_sweeps_fail_up_front(tmp_path, capsys, change, message):
    path = write_sweep(tmp_path, **change)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists(), "a bad sweep must not start"


def timeseries_of(out: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p / "timeseries.csv") for p in sorted((out / "runs").iterdir()) if p.is_dir()}


def test_same_results_serial_processes_and_dask(tmp_path):
    sweep = load_sweep(SWEEP)
    serial = run_sweep(sweep, tmp_path / "serial", workers=1)
    pool = run_sweep(sweep, tmp_path / "pool", workers=2)
    dask = run_sweep(sweep, tmp_path / "dask", workers=2, dask_local=True)
    assert serial.failed == pool.failed == dask.failed == 0
    a, b, c = (timeseries_of(tmp_path / name) for name in ("serial", "pool", "dask"))
    assert list(a) == [r.run_id for r in sweep.runs] == list(b) == list(c)
    for run_id in a:
        pd.testing.assert_frame_equal(a[run_id], b[run_id], check_exact=True)
        pd.testing.assert_frame_equal(a[run_id], c[run_id], check_exact=True)
    agg = pd.read_parquet(tmp_path / "dask" / "aggregate.parquet")
    assert len(agg) == 12 and (agg["status"] == "done").all()
    assert {"infusions[0].dose_per_kg", "seed", "final_factor_iu_dl", "threshold_day"} <= set(agg.columns)


def test_a_run_is_re_created_alone_from_its_config(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(load_sweep(SWEEP), out)
    again = tmp_path / "again"
    assert main(["run", str(out / "runs" / "r00007" / "config.yaml"), "--out", str(again), "-q",
                 "--no-figure"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again / "timeseries.csv"),
                                  pd.read_csv(out / "runs" / "r00007" / "timeseries.csv"))


def test_changed_config_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q"]) == 0
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q", "--set", "lattice.size=28"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err
    # the same sweep again reuses everything
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q"]) == 0
    assert "0 ran now, 12 reused" in capsys.readouterr().out


def test_failing_run_is_recorded_and_counted(tmp_path, capsys):
    data = sweep_data()
    data["engine"] = "mesa"
    data["lattice"]["size"] = 20
    data["sweep"] = {"parameters": {"time.duration_days": {"values": [20, 400000]}},
                     "overrides": {"time.burn_in_days": 10, "time.snapshot_interval_days": 100000}}
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "-q"]) == 1
    text = capsys.readouterr().out
    assert "1 of 2 runs failed" in text
    error = json.loads((out / "runs" / "r00001.error.json").read_text())
    assert "lattice.size" in error["error"]
    agg = pd.read_parquet(out / "aggregate.parquet").set_index("run_id")
    assert agg.loc["r00000", "status"] == "done" and agg.loc["r00001", "status"] == "failed"


def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "engraft", "sweep", str(SWEEP), "--out", str(out), "--workers", "2", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done = [p for p in (out / "runs").glob("r*") if p.is_dir() and (p / "summary.json").exists()]
            if len(done) >= 3 or proc.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers
        proc.wait()
    before = {p.name: json.loads((p / "provenance.json").read_text())["finished_utc"]
              for p in (out / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert 0 < len(before) < 12, f"the kill should land mid-sweep ({len(before)} runs done)"

    assert main(["sweep", str(SWEEP), "--out", str(out), "-q"]) == 0
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == [f"r{i:05d}" for i in range(12)], names  # each run once, no leftovers
    for name, finished in before.items():  # finished runs were reused, not recomputed
        assert json.loads((out / "runs" / name / "provenance.json").read_text())["finished_utc"] == finished
    agg = pd.read_parquet(out / "aggregate.parquet")
    assert sorted(agg["run_id"]) == names and (agg["status"] == "done").all()
    reference = run_sweep(load_sweep(SWEEP), tmp_path / "uninterrupted")
    assert reference.failed == 0
    for name in names:
        pd.testing.assert_frame_equal(pd.read_csv(out / "runs" / name / "timeseries.csv"),
                                      pd.read_csv(tmp_path / "uninterrupted" / "runs" / name / "timeseries.csv"))


def test_collect_rebuilds_the_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    run_sweep(load_sweep(SWEEP), out)
    (out / "aggregate.parquet").unlink()
    assert main(["collect", str(out)]) == 0
    assert "12 runs (12 done)" in capsys.readouterr().out
    assert main(["collect", str(tmp_path)]) == 2


def test_sweep_file_pointing_at_an_experiment(tmp_path):
    path = tmp_path / "points.yaml"
    path.write_text(yaml.safe_dump({"experiment": str(ROOT / "configs" / "tiny.yaml"),
                                    "sweep": {"parameters": {"lattice.size": {"values": [24, 28]}},
                                              "overrides": {"time.duration_days": 20}}}))
    sweep = load_sweep(path)
    assert [r.params["lattice.size"] for r in sweep.runs] == [24, 28]
    with pytest.raises(ConfigError, match="unknown key"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"experiment": "x.yaml", "sweeps": {}}))
        load_sweep(bad)
