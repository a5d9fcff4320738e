"""Whole runs: reproducibility, the run directory, the command line, the default experiment."""

from __future__ import annotations

import json
import math
import os

import numba
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from engraft import load_config, simulate
from engraft.cli import main
from engraft.results import RUN_FILES, read_run, write_run
from tests.conftest import CONFIGS, DATA, ROOT


def test_same_seed_gives_identical_tables(tiny):
    a, b = simulate(tiny), simulate(tiny)
    pd.testing.assert_frame_equal(a.timeseries, b.timeseries, check_exact=True)
    pd.testing.assert_frame_equal(a.clones, b.clones, check_exact=True)
    for key in a.snapshots:
        np.testing.assert_array_equal(a.snapshots[key], b.snapshots[key])


def test_other_seed_gives_other_tables(tiny):
    a, b = simulate(tiny, seed=1), simulate(tiny, seed=2)
    assert not a.timeseries.equals(b.timeseries)


def test_regression_against_stored_output(tiny):
    """The tiny experiment with its seed reproduces the stored table bit for bit (to 1e-12)."""
    assert_matches_stored(simulate(tiny).timeseries, "tiny_timeseries.csv")


def test_rejection_lodging_reproduces_the_earlier_stored_output(tiny_path):
    """circulation.lodging_search=rejection gives the table stored before the adaptive search became
    the default, bit for bit (the tiny marrow's few free niches make the adaptive search list them)."""
    exp = load_config(tiny_path, ["circulation.lodging_search=rejection"])
    assert_matches_stored(simulate(exp).timeseries, "tiny_timeseries_rejection.csv")


def assert_matches_stored(got: pd.DataFrame, name: str) -> None:
    """``got`` equals the stored table ``tests/data/regression/NAME`` column by column (to 1e-12)."""
    stored = pd.read_csv(DATA / "regression" / name)
    assert list(got.columns) == list(stored.columns)
    for col in stored.columns:
        if not pd.api.types.is_numeric_dtype(stored[col]):
            assert (got[col] == stored[col]).all(), col
        else:
            np.testing.assert_allclose(got[col].to_numpy(float), stored[col].to_numpy(float),
                                       rtol=1e-12, atol=0, equal_nan=True, err_msg=col)


#: the mouse amplifications calibrated under the earlier per-step rule (time.event_probability: first_event)
FIRST_EVENT_CALIBRATION = ["cell_types.GMP.amplification=103", "cell_types.MkP.amplification=2160",
                           "cell_types.EP.amplification=670", "cell_types.CLP.amplification=103"]


def test_first_event_rule_reproduces_the_earlier_stored_output(tiny_path):
    """time.event_probability=first_event, with the amplifications calibrated under it (and the
    rejection lodging search of that time), gives the table stored before rate_dt became the
    default, bit for bit: earlier results stay reproducible."""
    exp = load_config(tiny_path, ["time.event_probability=first_event", "circulation.lodging_search=rejection",
                                  *FIRST_EVENT_CALIBRATION])
    assert_matches_stored(simulate(exp).timeseries, "tiny_timeseries_first_event.csv")


def test_timeseries_records_every_interval(tiny):
    """Every record_interval_days; with blood counts, also daily to day 42 and while counts are low."""
    plain = simulate(tiny.model_copy(update={"blood_counts": None})).timeseries
    np.testing.assert_allclose(plain["day"], np.arange(0, 121, 5))
    ts = simulate(tiny).timeseries
    days = ts["day"].to_numpy()
    assert set(np.arange(0, 43)) | set(np.arange(0, 121, 5)) <= set(days)
    assert np.all(np.diff(days) > 0)
    for col in ("anc_1e9_per_L", "lymphocytes_1e9_per_L", "platelets_1e9_per_L", "hemoglobin_g_per_dL"):
        assert col in ts and (ts[col] >= 0).all()
    for col in ("HSC_host", "HSC_graft", "hsc_chimerism", "myeloid_chimerism", "hsc_transduced_fraction",
                "hsc_vcn", "clones_alive", "shannon_diversity", "top_clone_share", "myeloid_cells",
                "factor_iu_dl", "severity", "joint_bleeds_per_year"):
        assert col in ts
    assert set(ts["severity"]) <= {"severe", "moderate", "mild", "normal"}
    assert ((ts["hsc_chimerism"] >= 0) & (ts["hsc_chimerism"] <= 1)).all()


def test_run_directory_contents(tiny, tmp_path):
    result = simulate(tiny)
    out = write_run(result, tmp_path / "run", command=["engraft", "run", "tiny.yaml"])
    for name in (*RUN_FILES, "summary.png"):
        assert (out / name).is_file(), name
    run = read_run(out)
    prov = run.provenance
    assert prov["seed"] == tiny.seed and prov["engine"] == "kernel"
    assert prov["engraft_version"] and prov["environment"]["numba"] and prov["environment"]["numpy"]
    assert prov["command"] == ["engraft", "run", "tiny.yaml"]
    assert load_config(out / "config.yaml") == tiny  # the resolved config re-creates the run
    pd.testing.assert_frame_equal(run.timeseries, result.timeseries, check_dtype=False)
    assert run.snapshots["ctype"].shape == (len(run.snapshots["day"]), tiny.lattice.n_sites)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_rewriting_a_run_needs_force_and_replaces_it_atomically(tiny, tmp_path):
    from engraft.outputs import OutputError

    result = simulate(tiny)
    out = write_run(result, tmp_path / "run", figure=False)
    before = os.stat(out).st_ino
    with pytest.raises(OutputError, match="pass --force to replace it"):
        write_run(result, out, figure=False)
    assert os.stat(out).st_ino == before
    write_run(result, out, figure=False, force=True)
    assert os.stat(out).st_ino != before  # a new directory, renamed into place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_directory_holding_other_files_is_never_replaced(tiny, tmp_path):
    from engraft.outputs import OutputError

    result = simulate(tiny)
    out = write_run(result, tmp_path / "run", figure=False)
    (out / "notes.txt").write_text("the user's own notes")
    with pytest.raises(OutputError, match="also holds files engraft did not write"):
        write_run(result, out, figure=False, force=True)
    assert (out / "notes.txt").read_text() == "the user's own notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_cli_run_writes_and_summarises(tiny_path, tmp_path, capsys):
    out = tmp_path / "cli_run"
    assert main(["run", str(tiny_path), "--out", str(out), "--seed", "11", "--set", "lattice.size=24"]) == 0
    text = capsys.readouterr().out
    assert "factor level" in text and "chimerism" in text and str(out) in text
    run = read_run(out)
    assert run.config["seed"] == 11 and run.config["lattice"]["size"] == 24
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_day"] == 120


def test_hsc_scale_above_1_5_is_said_and_recorded(tiny_path, tmp_path, capsys):
    """The tiny lattice holds 82 niche sites for 1.1e4 mouse HSCs: its clone read-outs are the sample's."""
    out = tmp_path / "small"
    assert main(["run", str(tiny_path), "--out", str(out), "--no-figure"]) == 0
    text = capsys.readouterr().out
    assert "warning        HSC scale 134 body HSCs per lattice HSC (above 1.5)" in text
    assert "lattice.size >= 303 gives body-equivalent clones" in text and "(of the lattice sample)" in text
    prov = read_run(out).provenance
    assert prov["hsc_scale"] == 1.1e4 / 82 and prov["clone_readouts_body_equivalent"] is False
    assert "above 1.5" in prov["hsc_scale_warning"]


def test_a_run_off_its_calibrated_dimension_says_so(tiny_path, tmp_path, capsys):
    """The mouse set (tiny) is calibrated in 2D: a 3D run warns, in its printed summary and provenance;
    the 2D run, a set that states no dimension, and one stated as 3D do not. A set's calibration.note
    is printed and recorded."""
    from engraft.scaling import calibration_notes

    out = tmp_path / "cube"
    assert main(["run", str(tiny_path), "--set", "lattice.dims=3", "--set", "lattice.size=10", "--set",
                 "calibration.note=outputs only", "--out", str(out), "--no-figure"]) == 0
    text = capsys.readouterr().out
    assert "warning        the parameter set was calibrated on a 2D lattice (calibration.dims) and this run is 3D, " \
           "where a site has 26 neighbours instead of 8" in text
    assert "calibration    outputs only" in text
    prov = read_run(out).provenance
    assert prov["calibrated_dims"] == 2 and "not calibrated" in prov["calibration_warning"]
    assert prov["calibration_note"] == "outputs only"
    assert json.loads((out / "summary.json").read_text())["calibration_warning"] == prov["calibration_warning"]
    assert calibration_notes(load_config(tiny_path)) == {"calibrated_dims": 2, "calibration_warning": None,
                                                         "calibration_note": None}
    for over in (["calibration.dims=null"], ["calibration.dims=3"]):
        assert calibration_notes(load_config(tiny_path, ["lattice.dims=3", "lattice.size=10", *over]))[
            "calibration_warning"] is None
    for name in ("hemophilia_a_lentiviral", "hemophilia_b_lentiviral", "reduced_intensity", "mouse_transplant",
                 "cohort_hemophilia_a"):
        assert calibration_notes(load_config(CONFIGS / f"{name}.yaml")) == {
            "calibrated_dims": 2, "calibration_warning": None, "calibration_note": None}, name
    notes = calibration_notes(load_config(CONFIGS / "hemophilia_a_lentiviral_3d.yaml"))
    assert notes == {"calibrated_dims": 3, "calibration_warning": None, "calibration_note": None}
    noted = load_config(tiny_path, ["calibration.note=platelets untested"])
    assert calibration_notes(noted)["calibration_note"] == "platelets untested"


def test_human_experiments_hold_the_hsc_pool_at_its_real_size():
    """Each shipped human experiment has at most 1.5 body HSCs per lattice HSC, and says nothing."""
    from engraft.simulation import hsc_scale, lattice_size_for_hsc_scale, scale_notes

    for name in ("hemophilia_a_lentiviral", "hemophilia_b_lentiviral", "reduced_intensity",
                 "hemophilia_a_lentiviral_3d"):
        exp = load_config(CONFIGS / f"{name}.yaml")
        assert hsc_scale(exp) <= 1.5, name
        notes = scale_notes(exp)
        assert notes["clone_readouts_body_equivalent"] and notes["hsc_scale_warning"] is None
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml", ["lattice.size=256"])
    size = lattice_size_for_hsc_scale(exp)
    assert hsc_scale(load_config(CONFIGS / "hemophilia_a_lentiviral.yaml", [f"lattice.size={size}"])) <= 1.5
    assert hsc_scale(load_config(CONFIGS / "hemophilia_a_lentiviral.yaml", [f"lattice.size={size - 1}"])) > 1.5


def test_cli_run_reproduces_from_its_own_config(tiny_path, tmp_path):
    assert main(["run", str(tiny_path), "--out", str(tmp_path / "a"), "-q", "--no-figure"]) == 0
    assert main(["run", str(tmp_path / "a" / "config.yaml"), "--out", str(tmp_path / "b"), "-q",
                 "--no-figure"]) == 0
    a, b = read_run(tmp_path / "a"), read_run(tmp_path / "b")
    pd.testing.assert_frame_equal(a.timeseries, b.timeseries)


def test_cli_missing_file_is_exit_2(capsys):
    assert main(["run", "no/such/config.yaml"]) == 2
    assert "no such config file" in capsys.readouterr().err


@pytest.mark.slow
def test_default_experiment_is_clinically_plausible():
    """Srivastava et al., NEJM 2025: 7-11 days of ANC < 0.5e9/L, FVIII 19-40 IU/dL; neutrophil
    engraftment within the days of myeloablative busulfan and lentiviral CD34+ gene therapy
    (ZYNTEGLO SmPC: day 13-38).

    Wide bands: one patient-sized sample of the marrow, one seed. Only read-outs whose spread
    between seeds is narrow are checked here (ANC < 0.5e9/L: 8-9 days over 20 seeds). The
    platelet nadir lies close to 20e9/L, so the days below it range over 0-7 between seeds
    (20 seeds): the trial's 1-7 days and platelet engraftment are checked on the 20-seed
    cohort below; one seed is checked only for severe thrombocytopenia (CTCAE v5.0 grade 3 or
    worse, platelets < 50e9/L), which all five trial patients passed (each fell below 20e9/L).
    """
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml")
    result = simulate(exp)
    s, ts = result.summary, result.timeseries
    assert 7 <= s["days_anc_below_500"] <= 11
    assert not s["neutrophil_engraftment_censored"] and 13 <= s["neutrophil_engraftment_day"] <= 38
    assert not s["platelet_engraftment_censored"]
    assert s["anc_nadir"] < 0.5 and s["platelet_nadir"] < 50
    before = ts[ts["day"] == -6].iloc[0]  # the first busulfan day: normal counts
    assert 2.3 <= before["anc_1e9_per_L"] <= 8.1 and 150 <= before["platelets_1e9_per_L"] <= 400
    year_one = ts[(ts["day"] > 180) & (ts["day"] <= 365)]["factor_iu_dl"].mean()
    assert 10 <= year_one <= 60
    assert 10 <= s["mean_factor_last_year_iu_dl"] <= 60
    assert s["final_hsc_chimerism"] > 0.9
    assert not math.isnan(s["threshold_day"]) and s["threshold_day"] < 365
    assert s["final_clones_alive"] > 100 and s["final_top_clone_share"] < 0.2


def test_default_experiment_on_a_quarter_lattice_is_clinically_plausible():
    """The same patient at 256^2 (whole-body read-outs do not depend on the size; the clone
    read-outs there are the sample's, so they are not checked)."""
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml", ["lattice.size=256", "time.duration_days=730"])
    result = simulate(exp)
    s, ts = result.summary, result.timeseries
    # neutrophils engraft before engraftment failure is judged (day 43, ZYNTEGLO SmPC)
    assert not s["neutrophil_engraftment_censored"] and s["neutrophil_engraftment_day"] <= 42
    year_one = ts[(ts["day"] > 180) & (ts["day"] <= 365)]["factor_iu_dl"].mean()
    assert 10 <= year_one <= 60
    assert 10 <= s["mean_factor_last_year_iu_dl"] <= 60
    assert s["final_hsc_chimerism"] > 0.9
    assert not math.isnan(s["threshold_day"]) and s["threshold_day"] < 365
    assert not s["clone_readouts_body_equivalent"]


DEFAULT_SEEDS = 20


@pytest.fixture(scope="module")
def default_cohort():
    """The default experiment over 20 seeds (parallel kernel), the first 120 days."""
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml", ["time.duration_days=120"])
    seeds = np.random.SeedSequence(2025).generate_state(DEFAULT_SEEDS).tolist()
    return [simulate(exp, seed=s, kernel="parallel").summary for s in seeds]


@pytest.mark.slow
def test_default_cohort_neutrophils_lie_in_the_clinical_ranges(default_cohort):
    """The median over 20 patients: 7-11 days of severe neutropenia (Srivastava et al. 2025),
    neutrophil engraftment within days 13-38 (ZYNTEGLO SmPC) and every patient engrafted."""
    below = np.median([s["days_anc_below_500"] for s in default_cohort])
    assert 7 <= below <= 11
    days = [s["neutrophil_engraftment_day"] for s in default_cohort]
    assert None not in days and 13 <= np.median(days) <= 38


@pytest.mark.slow
def test_default_cohort_platelets_lie_in_the_clinical_ranges(default_cohort):
    """The median over 20 patients: 1-7 days with platelets < 20e9/L (Srivastava et al. 2025),
    platelet engraftment within days 19-191 (ZYNTEGLO SmPC). All five trial patients had some
    days below 20e9/L: a share of patients without any that lies above 0.52, the upper end of
    the exact 95 % Clopper-Pearson interval of 0 in 5, would contradict the trial."""
    below = [s["days_platelets_below_20"] for s in default_cohort]
    days = [s["platelet_engraftment_day"] for s in default_cohort]
    assert None not in days and 19 <= np.median(days) <= 191
    assert 1 <= np.median(below) <= 7
    upper = stats.beta.ppf(0.975, 1, 5)  # Clopper-Pearson upper bound for 0 of 5
    assert np.mean(np.array(below) == 0) <= upper


def test_cli_parallel_kernel_is_recorded_and_reproduced(tiny_path, tmp_path):
    """--kernel sets the config's kernel: the run's config.yaml alone reruns the same kernel."""
    out = tmp_path / "parallel"
    assert main(["run", str(tiny_path), "--kernel", "parallel", "--threads", "1", "--out", str(out), "-q",
                 "--no-figure"]) == 0
    run = read_run(out)
    assert run.provenance["kernel"] == "parallel" and run.config["kernel"] == "parallel"
    again = tmp_path / "again"
    assert main(["run", str(out / "config.yaml"), "--out", str(again), "-q", "--no-figure"]) == 0
    rerun = read_run(again)
    assert rerun.provenance["kernel"] == "parallel"
    pd.testing.assert_frame_equal(run.timeseries, rerun.timeseries)
    # the sequential kernel gives other numbers from the same seed (another update order and stream)
    seq = tmp_path / "sequential"
    assert main(["run", str(out / "config.yaml"), "--kernel", "sequential", "--out", str(seq), "-q",
                 "--no-figure"]) == 0
    assert read_run(seq).config["kernel"] == "sequential"
    assert not read_run(seq).timeseries.equals(run.timeseries)


def test_config_kernel_selects_the_kernel(tiny):
    """``kernel: parallel`` in the experiment is what simulate() runs; the default is sequential."""
    assert tiny.kernel == "sequential"
    short = tiny.model_copy(update={"kernel": "parallel"})
    result = simulate(short)
    assert result.extra["kernel"] == "parallel" and result.config.kernel == "parallel"
    assert simulate(short, kernel="sequential").config.kernel == "sequential"


def test_cli_engine_mesa_is_written_to_the_config(tiny_path, tmp_path):
    out = tmp_path / "mesa"
    assert main(["run", str(tiny_path), "--engine", "mesa", "--set", "time.duration_days=2",
                 "--set", "time.burn_in_days=0", "--out", str(out), "-q", "--no-figure"]) == 0
    run = read_run(out)
    assert run.provenance["engine"] == "mesa" and run.config["engine"] == "mesa"
    assert run.config["kernel"] == "sequential"


def test_cli_mesa_with_parallel_kernel_is_exit_2(tiny_path, capsys):
    assert main(["run", str(tiny_path), "--engine", "mesa", "--kernel", "parallel", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kernel: must be 'sequential' with engine 'mesa'" in err


def test_cli_bad_thread_count_is_exit_2(tiny_path, capsys):
    assert main(["run", str(tiny_path), "--threads", "0", "-q"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_compiled_census_matches_numpy_expressions(tiny):
    """record_row's compiled counts equal the NumPy expressions they stand for."""
    from engraft.lattice import EMPTY, GRAFT
    from engraft.readouts import ReadoutSpec, clone_sizes, record_row

    spec = ReadoutSpec.from_experiment(tiny)
    rng = np.random.default_rng(11)
    n, n_types = 5000, len(spec.type_names)
    ctype = rng.integers(-1, n_types, n).astype(np.int8)
    flags = rng.integers(0, 8, n).astype(np.uint8)
    vcn = (rng.integers(0, 4, n) * (rng.random(n) < 0.5)).astype(np.uint8)
    clone = np.where(flags & GRAFT, rng.integers(1, 300, n), 0).astype(np.int32)
    mature = np.ones((len(spec.lineage_names), 5))
    row = record_row(spec, 0.0, ctype, flags, vcn, clone, 0, mature, 1.0)

    occupied = ctype != EMPTY
    graft = occupied & ((flags & GRAFT) != 0)
    hsc = ctype == spec.hsc_index
    for t, name in enumerate(spec.type_names):
        assert row[f"{name}_host"] == np.count_nonzero(occupied & ~graft & (ctype == t))
        assert row[f"{name}_graft"] == np.count_nonzero(graft & (ctype == t))
    assert row["occupancy"] == occupied.mean()
    assert row["hsc_transduced_fraction"] == np.count_nonzero(vcn[hsc]) / hsc.sum()
    assert row["hsc_vcn"] == vcn[hsc].sum(dtype=np.int64) / hsc.sum()
    assert row["hsc_clones_alive"] == np.unique(clone[hsc & graft]).size
    sizes = np.bincount(clone[graft])
    assert np.array_equal(clone_sizes(ctype, flags, clone), sizes)
    assert row["clones_alive"] == np.count_nonzero(sizes)
    p = sizes[sizes > 0] / sizes.sum()
    assert row["shannon_diversity"] == float(-(p * np.log(p)).sum())


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="threads exist only in compiled code")
def test_census_over_threads_matches_numpy_expressions():
    """On a lattice large enough to be split over the threads, the census gives the NumPy counts,
    on one thread and on two; the largest clone id on a host site does not lengthen the clone counts."""
    from engraft.kernel.census import CENSUS_MIN_CHUNK, lattice_census
    from engraft.lattice import EMPTY, GRAFT

    rng = np.random.default_rng(5)
    n, n_types, hsc_index = 4 * CENSUS_MIN_CHUNK + 17, 6, 0
    ctype = rng.integers(-1, n_types, n).astype(np.int8)
    flags = rng.integers(0, 8, n).astype(np.uint8)
    vcn = (rng.integers(0, 4, n) * (rng.random(n) < 0.5)).astype(np.uint8)
    clone = np.where(flags & GRAFT, rng.integers(0, 5000, n), 0).astype(np.int32)
    host = np.flatnonzero((flags & GRAFT) == 0)[:3]
    clone[host] = 9000  # a stale id on host sites: not a graft clone
    occupied = ctype != EMPTY
    graft = occupied & ((flags & GRAFT) != 0)
    hsc = ctype == hsc_index
    expected_counts = np.array([[np.count_nonzero(occupied & (g == graft) & (ctype == t)) for t in range(n_types)]
                                for g in (False, True)])
    expected_clones = np.bincount(clone[graft])
    expected_hsc_clones = np.bincount(clone[graft & hsc], minlength=expected_clones.size)
    threads = numba.get_num_threads()
    try:
        for k in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(k)
            counts, transduced, copies, clones, hsc_clones = lattice_census(ctype, flags, vcn, clone, n_types,
                                                                             hsc_index)
            assert np.array_equal(counts, expected_counts)
            assert transduced == np.count_nonzero(vcn[hsc]) and copies == vcn[hsc].sum(dtype=np.int64)
            assert np.array_equal(clones, expected_clones) and np.array_equal(hsc_clones, expected_hsc_clones)
    finally:
        numba.set_num_threads(threads)
    none = lattice_census(ctype, np.zeros_like(flags), vcn, clone, n_types, hsc_index)
    assert np.array_equal(none[3], [0]) and np.array_equal(none[4], [0])


def test_cli_bench_passes_its_options_to_the_benchmark_script(capsys):
    """``engraft bench --help`` is benchmarks/run.py's help; a wrong option is a usage error."""
    import pytest

    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: engraft bench" in out and "--quick" in out and "--human-sequential" in out
    with pytest.raises(SystemExit) as done:
        main(["bench", "--no-such-option"])
    assert done.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_cli_bench_refuses_a_wrong_override_before_it_starts(capsys):
    """``engraft bench --set`` overrides the human-scale run's config; a wrong key is one line and
    exit status 2 at once, before any section runs."""
    assert main(["bench", "--only", "human", "--set", "time.lattice_record_every=7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "time.lattice_record_every" in err and "unknown key" in err


def test_every_site_a_niche_gives_finite_read_outs(tiny_path):
    """No progenitor site: progenitors add nothing (never 0 exits x an infinite scale = NaN, classed 'normal')."""
    exp = load_config(tiny_path, ["lattice.niche_fraction=1", "time.duration_days=20",
                                  "infusions[0].composition={HSC: 0.001}"])
    result = simulate(exp)
    levels = result.timeseries["factor_iu_dl"].to_numpy(float)
    assert np.isfinite(levels).all()
    assert np.allclose(levels, exp.pk.baseline_iu_dl)  # nothing expresses: the endogenous level
    assert result.summary["final_severity"] == "severe"


def test_a_level_that_is_not_a_number_gets_no_class():
    from engraft.errors import NumericalFailure
    from engraft.tally import severity

    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(NumericalFailure, match="no class or read-out is given"):
            severity(bad)
    assert severity(0.5) == "severe" and severity(40.0) == "normal"


def _benchmark_script():
    """benchmarks/run.py as a module (it is a script, not part of the package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_states_are_valid_configs():
    """The benchmark's dense lattice is a valid experiment on the shipped defaults (it once stopped
    validating when the human set gained niche_cluster_size), and it is fully occupied."""
    from engraft.lattice import EMPTY

    bench = _benchmark_script()
    sim = bench.dense_simulation(32, 2, "sequential")
    assert (sim.state.ctype != EMPTY).all()


def test_benchmark_human_run_times_the_whole_burn_in():
    """The human-scale benchmark's burn-in ends when all its steps are done, not at the first
    progress report (after the first chunk of steps): it once counted most of the burn-in as
    follow-up. A small lattice with a burn-in of several chunks."""
    import dataclasses

    from engraft.timeline import BURN_IN_CHUNK_STEPS

    bench = _benchmark_script()
    tier = dataclasses.replace(bench.TIERS["quick"], human_years=10 / 365.0)
    burn_in_days = 2.5 * BURN_IN_CHUNK_STEPS * 0.25  # dt 0.25: 2.5 chunks of steps
    (row,) = bench.bench_human(tier, size=128, overrides=(f"time.burn_in_days={burn_in_days:g}",))
    assert row["burn_in_steps"] == round(burn_in_days / 0.25)
    assert 0 < row["kernel_and_tally_burn_in_s"] <= row["burn_in_s"]
    assert 0 < row["kernel_and_tally_follow_up_s"] <= row["follow_up_s"]
    assert row["burn_in_s"] + row["follow_up_s"] <= row["total_s"]
    # the 5-year target is judged on the shipped experiment only, never on a run with overrides
    five_years = {**row, "follow_up_days": 1825.0}
    assert bench.compare_targets({"human": [five_years]})["human_5y_follow_up_s"]["met"] is not None
    judged = bench.compare_targets({"human": [five_years], "human_overrides": ["lattice.size=128"]})
    assert judged["human_5y_follow_up_s"]["met"] is None
    assert bench.compare_targets({"human": [row]})["human_5y_follow_up_s"]["met"] is None  # 10 days


def test_printed_summary_says_never_below_when_a_count_never_fell():
    """Engraftment day 0 is the tables' convention for a count that never fell below its level;
    the printed summary says so in words, and keeps the day of a real recovery."""
    from engraft.commands.run import blood_count_lines

    base = {"anc_nadir": 0.22, "anc_nadir_day": 8.0, "days_anc_below_500": 9, "neutrophil_engraftment_day": 14.0,
            "platelet_nadir": 20.4, "platelet_nadir_day": 16.0, "final_day": 1825.0}
    never = blood_count_lines({**base, "days_platelets_below_20": 0, "platelet_engraftment_day": 0.0})
    assert "never below 20e9/L" in never[1] and "nadir 20.4e9/L" in never[1]
    assert "engrafted day 14" in never[0]
    fell = blood_count_lines({**base, "days_platelets_below_20": 4, "platelet_engraftment_day": 20.0})
    assert "engrafted day 20" in fell[1] and "never" not in fell[1]
    censored = blood_count_lines({**base, "days_platelets_below_20": 30, "platelet_engraftment_day": None})
    assert "not engrafted by day 1825 (censored)" in censored[1]
