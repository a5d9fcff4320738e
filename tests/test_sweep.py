"""Sweeps: specs and seeds, the same runs on every executor (a real Dask LocalCluster), kill -9, resume."""

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
from engraft.engines import simulate
from engraft.results import write_run
from engraft.sweep import load_sweep, parse_sweep, run_seeds, run_sweep
from tests.conftest import DATA, ROOT

SWEEP = DATA / "configs" / "sweep_tiny.yaml"
N_RUNS = 12  # 2 doses x 2 zipped (transduction, VCN) pairs x 3 replicates


def sweep_data() -> dict:
    return resolve_bases(load_yaml(SWEEP), SWEEP.resolve())


def write_sweep(tmp_path: Path, name: str = "sweep.yaml", **changes) -> Path:
    """The tiny sweep with some keys of its ``sweep:`` section replaced, as a file."""
    data = sweep_data()
    if "parameters" in changes:  # the file's zip names its own parameters
        data["sweep"].pop("zip")
    data["sweep"].update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def run_names(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "runs").iterdir())


def timeseries_of(out: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p / "timeseries.csv") for p in sorted((out / "runs").iterdir()) if p.is_dir()}


def file_identity(path: Path) -> tuple[int, int]:
    """Inode and modification time: both change if a run directory is written again."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


# ----------------------------------------------------------------------------------
# the spec: product, zip, replicates, seeds, validation up front
# ----------------------------------------------------------------------------------
def test_product_zip_replicates_and_seeds():
    sweep = load_sweep(SWEEP)
    assert len(sweep.runs) == N_RUNS
    assert [r.run_id for r in sweep.runs] == [f"r{i:05d}" for i in range(N_RUNS)]
    combos = [tuple(r.params.values()) for r in sweep.runs]
    assert combos[::3] == [(1.5e8, 0.3, 1.0), (1.5e8, 0.8, 2.5), (3e8, 0.3, 1.0), (3e8, 0.8, 2.5)]
    assert [r.replicate for r in sweep.runs] == [0, 1, 2] * 4
    assert all(isinstance(v, float) for v in combos[0])  # "1.5e8" is a YAML 1.1 string: recorded as validated
    seeds = [r.seed for r in sweep.runs]
    assert seeds == run_seeds(99, N_RUNS) and len(set(seeds)) == N_RUNS
    assert all(0 <= s < 2**63 for s in seeds)
    assert run_seeds(99, 3) == seeds[:3]  # run i's seed does not depend on the number of runs
    exp = sweep.run_experiment(sweep.runs[5])
    assert exp.seed == seeds[5] and exp.time.duration_days == 60
    assert exp.infusions[0].transduction == 0.8 and exp.infusions[0].vcn.mean == 2.5


def test_group_names_zip_like_zip_lists():
    data = sweep_data()
    parameters = data["sweep"]["parameters"]
    parameters["infusions[0].transduction"]["group"] = "product"
    parameters["infusions[0].vcn.mean"]["group"] = "product"
    del data["sweep"]["zip"]
    by_group = parse_sweep(data)
    assert [r.params for r in by_group.runs] == [r.params for r in load_sweep(SWEEP).runs]
    del parameters["infusions[0].transduction"]["group"], parameters["infusions[0].vcn.mean"]["group"]
    assert len(parse_sweep(data).runs) == 2 * 2 * 2 * 3  # no zip: the full product


def test_linear_and_log_ranges():
    data = sweep_data()
    data["sweep"] = {"parameters": {
        "infusions[0].dose_per_kg": {"range": {"start": 1e8, "stop": 1e10, "num": 3, "scale": "log"}},
        "conditioning.myeloablation.HSC": {"range": {"start": 0.5, "stop": 0.9, "num": 5}},
    }}
    sweep = parse_sweep(data)
    assert len(sweep.runs) == 15
    np.testing.assert_allclose(sweep.parameters[0].values, [1e8, 1e9, 1e10])
    np.testing.assert_allclose(sweep.parameters[1].values, [0.5, 0.6, 0.7, 0.8, 0.9])
    assert sweep.root_seed == data["seed"]  # default root seed: the experiment's


@pytest.mark.parametrize(("change", "message"), [
    ({"parameters": {"infusions[0].dose_per_kgg": {"values": [1e8]}}},
     "sweep.parameters.infusions[0].dose_per_kgg: unknown key (did you mean 'dose_per_kg'?)"),
    ({"parameters": {"lattice.sizes.x": {"values": [1]}}},
     "sweep.parameters.lattice.sizes.x: lattice.sizes: unknown key (did you mean 'size'?)"),
    ({"parameters": {"infusions[3].dose_per_kg": {"values": [1e8]}}},
     "sweep.parameters.infusions[3].dose_per_kg: infusions[3]: no such list item"),
    ({"parameters": {"lattice.size": {"values": []}}},
     "sweep.parameters.lattice.size.values: must be a non-empty list"),
    ({"parameters": {"lattice.size": {"range": {"start": 20, "stop": 40, "num": 0}}}},
     "sweep.parameters.lattice.size.range.num: must be an integer >= 1 (an empty range runs nothing), got 0"),
    ({"parameters": {"lattice.size": {"range": {"start": 20, "stop": 40, "num": 10**12}}}},
     "sweep.parameters.lattice.size.range.num: must be <= 1,000,000 (the most runs one sweep may hold)"),
    ({"parameters": {"lattice.size": {"range": {"start": 20, "num": 2}}}},
     "sweep.parameters.lattice.size.range.stop: required key is missing"),
    ({"replicates": 0}, "sweep.replicates: must be an integer >= 1, got 0"),
    ({"replicate": 2}, "sweep.replicate: unknown key; allowed keys: parameters, zip, replicates"),
    ({"parameters": {"infusions[0].transduction": {"values": [0.5, 1.5]}}},
     "sweep.parameters.infusions[0].transduction: input should be less than or equal to 1, got 1.5"),
    ({"parameters": {"conditioning.myeloablation.HSCC": {"values": [0.5]}}},
     "sweep.parameters.conditioning.myeloablation.HSCC: must be a cell type"),
    ({"overrides": {"time.duration_dayz": 10}}, "sweep.overrides.time.duration_dayz: unknown key"),
    ({"zip": [["infusions[0].transduction", "infusions[0].dose_per_kg"]],
      "parameters": {"infusions[0].transduction": {"values": [0.5, 0.6]},
                     "infusions[0].dose_per_kg": {"values": [1e8]}}},
     "sweep.zip[0]: parameters zipped together need equal numbers of values"),
    ({"zip": [["infusions[0].transduction", "lattice.size"]]},
     "sweep.zip[0][1]: 'lattice.size' is not a key of sweep.parameters"),
])
def test_bad_sweeps_fail_up_front(tmp_path, capsys, change, message):
    path = write_sweep(tmp_path, **change)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists(), "a bad sweep must not start"


def test_sweep_file_pointing_at_an_experiment(tmp_path):
    path = tmp_path / "points.yaml"
    relative = os.path.relpath(ROOT / "configs" / "tiny.yaml", tmp_path)  # relative to the sweep file
    path.write_text(yaml.safe_dump({"experiment": relative,
                                    "sweep": {"parameters": {"lattice.size": {"values": [24, 28]}},
                                              "overrides": {"time.duration_days": 20}}}))
    sweep = load_sweep(path)
    assert [r.params["lattice.size"] for r in sweep.runs] == [24, 28]
    assert sweep.base["time"]["duration_days"] == 20 and sweep.root_seed == 1  # tiny.yaml's seed
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiment": "tiny.yaml", "sweeps": {}}))
    with pytest.raises(ConfigError, match="^sweeps: unknown key"):
        load_sweep(bad)


@pytest.mark.parametrize(("name", "n_runs"), [("sweep_dose_conditioning", 4 * 3 * 5),
                                              ("sweep_vcn_transduction", 3 * 3 * 4)])
def test_shipped_sweeps_are_valid(name, n_runs):
    sweep = load_sweep(ROOT / "configs" / f"{name}.yaml")
    assert len(sweep.runs) == n_runs
    assert sweep.base["time"]["duration_days"] == 730


# ----------------------------------------------------------------------------------
# running: every executor gives the same runs; a run is re-created alone
# ----------------------------------------------------------------------------------
def test_same_results_in_process_local_processes_and_dask(tmp_path):
    sweep = load_sweep(SWEEP)
    serial = run_sweep(sweep, tmp_path / "serial", workers=1)
    pool = run_sweep(sweep, tmp_path / "pool", workers=2)
    dask = run_sweep(sweep, tmp_path / "dask", workers=2, dask_local=True)  # a real LocalCluster on 127.0.0.1
    assert (serial.executor, pool.executor) == ("this process", "2 local processes")
    assert "LocalCluster" in dask.executor
    assert serial.failed == pool.failed == dask.failed == 0
    assert serial.ran == pool.ran == dask.ran == N_RUNS
    a, b, c = (timeseries_of(tmp_path / name) for name in ("serial", "pool", "dask"))
    assert list(a) == [r.run_id for r in sweep.runs] == list(b) == list(c)
    for run_id in a:
        pd.testing.assert_frame_equal(a[run_id], b[run_id], check_exact=True)
        pd.testing.assert_frame_equal(a[run_id], c[run_id], check_exact=True)
    assert not a["r00000"].equals(a["r00001"])  # replicates differ (their seeds do)
    tables = [pd.read_parquet(tmp_path / name / "aggregate.parquet") for name in ("serial", "pool", "dask")]
    volatile = ["wall_seconds"]
    pd.testing.assert_frame_equal(tables[0].drop(columns=volatile), tables[2].drop(columns=volatile))
    agg = tables[2]
    assert len(agg) == N_RUNS and (agg["status"] == "done").all()
    expected = {"run_id", "infusions[0].dose_per_kg", "infusions[0].transduction", "infusions[0].vcn.mean",
                "replicate", "seed", "status", "final_factor_iu_dl", "threshold_day", "neutrophil_engraftment_day",
                "neutrophil_engraftment_censored", "platelet_engraftment_day", "days_anc_below_500",
                "days_platelets_below_20", "anc_nadir", "platelet_nadir_day",
                "final_hsc_chimerism", "final_clones_alive", "final_severity", "final_joint_bleeds_per_year"}
    assert expected <= set(agg.columns)
    assert agg["infusions[0].dose_per_kg"].dtype == np.float64
    assert list(agg["seed"]) == [r.seed for r in sweep.runs]
    spec = json.loads((tmp_path / "dask" / "sweep.json").read_text())
    assert [r["seed"] for r in spec["runs"]] == [r.seed for r in sweep.runs]
    assert len(spec["base_config_sha256"]) == 64


def test_a_run_is_re_created_alone_from_its_config(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(load_sweep(SWEEP), out, workers=1)
    again = tmp_path / "again"
    run = out / "runs" / "r00007"
    assert main(["run", str(run / "config.yaml"), "--out", str(again), "-q", "--no-figure"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again / "timeseries.csv"), pd.read_csv(run / "timeseries.csv"),
                                  check_exact=True)
    assert json.loads((again / "summary.json").read_text()) == json.loads((run / "summary.json").read_text())


def test_parallel_kernel_sweep_is_the_same_in_process_and_in_workers(tmp_path, capsys):
    """--kernel parallel: all cores in this process or one thread per worker, the same runs."""
    serial, pool = tmp_path / "serial", tmp_path / "pool"
    assert main(["sweep", str(SWEEP), "--kernel", "parallel", "--out", str(serial), "-q", "--workers", "1"]) == 0
    assert main(["sweep", str(SWEEP), "--kernel", "parallel", "--out", str(pool), "-q", "--workers", "2"]) == 0
    a, b = timeseries_of(serial), timeseries_of(pool)
    assert len(a) == N_RUNS and list(a) == list(b)
    for run_id in a:
        pd.testing.assert_frame_equal(a[run_id], b[run_id], check_exact=True)
    run = pool / "runs" / "r00003"
    assert yaml.safe_load((run / "config.yaml").read_text())["kernel"] == "parallel"
    assert json.loads((run / "provenance.json").read_text())["kernel"] == "parallel"
    sequential = tmp_path / "sequential"
    run_sweep(load_sweep(SWEEP), sequential, workers=1)
    assert not timeseries_of(sequential)["r00003"].equals(a["r00003"])  # another kernel, other numbers
    # resuming with the other kernel would mix kernels in one table: refused
    capsys.readouterr()
    assert main(["sweep", str(SWEEP), "--out", str(pool), "-q", "--workers", "1"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err


# ----------------------------------------------------------------------------------
# the sweep directory: resume, refusal, failures, collect
# ----------------------------------------------------------------------------------
def test_changed_config_is_refused_and_the_same_reused(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q", "--workers", "1"]) == 0
    before = {name: file_identity(out / "runs" / name / "summary.json") for name in run_names(out)}
    spec_before = (out / "sweep.json").read_bytes()
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q", "--set", "lattice.size=28"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "holds a different sweep (the base config changed (lattice.size 32 -> 28))" in err, err
    changed = write_sweep(tmp_path, replicates=4)
    assert main(["sweep", str(changed), "--out", str(out), "-q"]) == 2
    assert "sweep.replicates changed" in capsys.readouterr().err
    assert (out / "sweep.json").read_bytes() == spec_before
    # the same sweep again reuses everything
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q", "--workers", "1"]) == 0
    assert f"0 ran now, {N_RUNS} reused" in capsys.readouterr().out
    assert {name: file_identity(out / "runs" / name / "summary.json") for name in run_names(out)} == before


def test_failing_run_is_recorded_counted_and_retried(tmp_path, capsys, monkeypatch):
    import engraft.engines

    sweep = load_sweep(SWEEP)
    doomed = {sweep.runs[1].seed, sweep.runs[6].seed}
    real_simulate = engraft.engines.simulate

    def simulate(exp, seed=None, **kwargs):
        if seed in doomed:
            raise FloatingPointError("the pool overflowed (a stand-in for a run that raises)")
        return real_simulate(exp, seed=seed, **kwargs)

    monkeypatch.setattr(engraft.engines, "simulate", simulate)
    out = tmp_path / "out"
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q", "--workers", "1"]) == 1
    text = capsys.readouterr().out
    assert f"2 of {N_RUNS} runs failed (r00001, r00006;" in text, text
    error = json.loads((out / "runs" / "r00001.error.json").read_text())
    assert error["error"] == "FloatingPointError: the pool overflowed (a stand-in for a run that raises)"
    assert error["seed"] == sweep.runs[1].seed and "Traceback" in error["traceback"]
    agg = pd.read_parquet(out / "aggregate.parquet").set_index("run_id")
    assert list(agg["status"]).count("done") == N_RUNS - 2
    assert agg.loc["r00001", "status"] == "failed" and "FloatingPointError" in agg.loc["r00001", "error"]
    assert np.isnan(agg.loc["r00001", "final_factor_iu_dl"])

    monkeypatch.setattr(engraft.engines, "simulate", real_simulate)  # fixed: a rerun retries only those
    assert main(["sweep", str(SWEEP), "--out", str(out), "-q", "--workers", "1"]) == 0
    assert f"2 ran now, {N_RUNS - 2} reused" in capsys.readouterr().out
    assert run_names(out) == [f"r{i:05d}" for i in range(N_RUNS)]  # the error records are gone
    assert (pd.read_parquet(out / "aggregate.parquet")["status"] == "done").all()


def test_collect_rebuilds_the_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    run_sweep(load_sweep(SWEEP), out, workers=1)
    table = pd.read_parquet(out / "aggregate.parquet")
    (out / "aggregate.parquet").unlink()
    assert main(["collect", str(out)]) == 0
    assert f"{N_RUNS} runs ({N_RUNS} done)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out / "aggregate.parquet"), table)
    assert main(["collect", str(tmp_path)]) == 2
    assert "not a sweep directory (no sweep.json)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------
# interruptions: kill -9 of the whole sweep, and of one pool worker
# ----------------------------------------------------------------------------------
def long_sweep(tmp_path: Path) -> Path:
    """24 runs of 300 days (~0.2 s each): long enough to be killed part-way."""
    return write_sweep(tmp_path, "long.yaml", replicates=6,
                       overrides={"time.duration_days": 300, "time.burn_in_days": 30})


def start_sweep(path: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "engraft", "sweep", str(path), "--out", str(out), "--workers", "2", "-q"]
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished_runs(out: Path) -> list[Path]:
    runs = out / "runs"
    if not runs.is_dir():
        return []
    return [p for p in runs.glob("r*") if p.is_dir() and (p / "summary.json").exists()]


def wait_for_runs(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and len(finished_runs(out)) < n:
        time.sleep(0.01)


def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    path, out = long_sweep(tmp_path), tmp_path / "sweep"
    n_runs = len(load_sweep(path).runs)
    proc = start_sweep(path, out)
    try:
        wait_for_runs(proc, out, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers, mid-run
        proc.communicate()
    before = {p.name: file_identity(p / "provenance.json") for p in finished_runs(out)}
    assert 0 < len(before) < n_runs, f"the kill should land mid-sweep ({len(before)} runs done)"

    assert main(["sweep", str(path), "--out", str(out), "-q", "--workers", "2"]) == 0
    assert run_names(out) == [f"r{i:05d}" for i in range(n_runs)]  # each run once, no leftovers
    for name, identity in before.items():  # finished runs were reused, not recomputed
        assert file_identity(out / "runs" / name / "provenance.json") == identity
    agg = pd.read_parquet(out / "aggregate.parquet")
    assert list(agg["run_id"]) == run_names(out) and (agg["status"] == "done").all()
    # runs made after the kill are the runs an uninterrupted sweep makes
    sweep = load_sweep(path)
    for run in [r for r in sweep.runs if r.run_id not in before][:3]:
        alone = write_run(simulate(sweep.run_experiment(run)), tmp_path / "alone" / run.run_id, figure=False)
        pd.testing.assert_frame_equal(pd.read_csv(out / "runs" / run.run_id / "timeseries.csv"),
                                      pd.read_csv(alone / "timeseries.csv"), check_exact=True)


def pool_workers(pid: int) -> list[int]:
    """Worker processes of a sweep's process pool (spawned children running spawn_main)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except FileNotFoundError:
            pass
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_lost_worker_is_replaced_and_its_run_retried(tmp_path):
    path, out = long_sweep(tmp_path), tmp_path / "sweep"
    n_runs = len(load_sweep(path).runs)
    proc = start_sweep(path, out)
    try:
        wait_for_runs(proc, out, 2)
        workers = pool_workers(proc.pid)
        assert workers and len(finished_runs(out)) < n_runs - 4
        os.kill(workers[0], signal.SIGKILL)  # a worker lost mid-run: the pool breaks
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    assert f"{n_runs} runs in" in stdout
    assert "a worker process died (killed, out of memory or crashed); started new workers, retrying r" \
        in stderr
    assert run_names(out) == [f"r{i:05d}" for i in range(n_runs)]
    assert (pd.read_parquet(out / "aggregate.parquet")["status"] == "done").all()


def test_two_sweeps_never_share_a_directory(tmp_path):
    from engraft.sweep.runner import SweepLock

    out = tmp_path / "sweep"
    out.mkdir()
    with SweepLock(out), pytest.raises(ConfigError, match="another engraft sweep is running"):
        run_sweep(load_sweep(SWEEP), out, workers=1)


def test_dask_missing_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if engraft[dask] were not installed
    assert main(["sweep", str(SWEEP), "--out", str(tmp_path / "out"), "-q", "--dask-local"]) == 2
    assert "Dask is not installed; install it with: pip install 'engraft[dask]'" in capsys.readouterr().err
