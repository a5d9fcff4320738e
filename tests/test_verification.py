"""``engraft verify``: the statistics, the independent model, the command, and that every case can fail.

The quick tier itself runs here (``test_quick_tier_passes``, marked slow: it
is part of the default ``pytest`` run in CI). Each case family is also run
with one deliberate fault injected into the simulated model and must then
FAIL: a case that cannot fail checks nothing.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engraft.cli import main
from engraft.verification import gillespie, run_verification, stats
from engraft.verification.registry import CASES


# ----------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------
def test_finalize_splits_alpha_over_the_statistical_comparisons():
    rng = np.random.default_rng(1)
    comps = [stats.mean(f"m{i}", rng.normal(0, 1, 200), 0.0) for i in range(4)]
    comps.append(stats.exact("exact", 1.0, 1.0, 0.01))
    stats.finalize(comps)
    assert all(c.level == pytest.approx(stats.ALPHA / 4) for c in comps[:4])
    assert comps[4].level is None and comps[4].passed
    z = stats.z_critical(stats.ALPHA / 4)
    assert comps[0].detectable == pytest.approx((z + stats.Z_POWER) * comps[0].se)


def test_tests_reject_a_shift_they_are_powered_for_and_accept_none():
    rng = np.random.default_rng(2)
    same = [stats.mean("same", rng.normal(0, 1, 400), 0.0), stats.ks("ks", rng.normal(0, 1, 300),
                                                                       rng.normal(0, 1, 300))]
    stats.finalize(same)
    assert all(c.passed for c in same)
    se = 1 / math.sqrt(400)
    shifted = [stats.mean("shifted", rng.normal(0, 1, 400) + 2 * (stats.z_critical(stats.ALPHA) + 1.28) * se, 0.0)]
    stats.finalize(shifted)
    assert not shifted[0].passed


def test_chi_square_pools_the_tail_and_detects_a_wrong_distribution():
    p = np.array([0.5, 0.3, 0.15, 0.04, 0.01])
    rng = np.random.default_rng(3)
    ok = stats.chi2("ok", np.bincount(rng.choice(5, 5000, p=p), minlength=5), p)
    bad = stats.chi2("bad", np.bincount(rng.choice(5, 5000, p=[0.45, 0.33, 0.16, 0.05, 0.01]), minlength=5), p)
    stats.finalize([ok])
    stats.finalize([bad])
    assert ok.passed and not bad.passed


# ----------------------------------------------------------------------------------
# the independent model
# ----------------------------------------------------------------------------------
def test_moran_formula():
    assert gillespie.moran_fixation(1.0, 3, 10) == pytest.approx(0.3)
    assert gillespie.moran_fixation(2.0, 1, 1000) == pytest.approx(0.5)
    assert gillespie.moran_fixation(1.5, 2, 5) == pytest.approx((1 - 1.5**-2) / (1 - 1.5**-5))


def test_reference_model_neutral_fixation_is_k_over_n():
    """Identical types: P(fixation) = k / N (a martingale), whatever the blood does."""
    p = gillespie.AshcroftParameters(niches=20, beta_host=0.5, beta_graft=0.5, eta=0.5, kappa=200.0,
                                     delta=50.0)
    runs = 600
    fixed = sum(gillespie.simulate(p, 15, 5, (1.0,), 1.0, 1e5, np.random.default_rng([5, i])).fixed
                for i in range(runs))
    c = stats.binomial("neutral", fixed, runs, 5 / 20)
    stats.finalize([c])
    assert c.passed, (fixed, runs)


def test_reference_model_conserves_cells_and_observes_on_the_grid():
    p = gillespie.AshcroftParameters(niches=50, beta_host=0.1, beta_graft=0.4, eta=0.1, kappa=5760.0,
                                     delta=288.0)
    tr = gillespie.simulate(p, 49, 1, (0.01, 0.1, 1.0), 1.0, 5000.0, np.random.default_rng(4))
    assert tr.fixed != tr.extinct
    if tr.fixed:
        days = [tr.first_passage[t] for t in (0.01, 0.1, 1.0)]
        assert days == sorted(days) and all(float(d).is_integer() for d in days)


# ----------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------
def test_list_names_every_case_and_fault(capsys):
    assert main(["verify", "--list"]) == 0
    out = capsys.readouterr().out
    for name, case in CASES.items():
        assert name in out
        assert all(f"--fault {f}" in out for f in case.faults)


@pytest.mark.parametrize("argv, text", [
    (["--only", "nonesuch"], "--only nonesuch: no such case"),
    (["--only", "plasma_kinetics", "--fault", "self_renewal"], "--fault self_renewal: no selected case"),
    (["--workers", "0"], "--workers"),
])
def test_bad_options_are_one_line_and_exit_2(argv, text, capsys, tmp_path):
    assert main(["verify", *argv, "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


def test_out_refuses_a_foreign_directory_and_replaces_its_own(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["verify", "--only", "plasma_kinetics", "--workers", "1", "--out", str(foreign)]) == 2
    assert "not an engraft verification directory" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "v"
    for _ in range(2):  # the second run replaces the first's directory
        assert main(["verify", "--only", "plasma_kinetics", "--workers", "1", "--out", str(out)]) == 0
    data = json.loads((out / "verification.json").read_text())
    assert data["written_by"] == "engraft verify" and data["passed"]
    assert (out / "figures" / "plasma_kinetics.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## plasma_kinetics" in report and "PASS" in report
    assert "| [plasma_kinetics](#plasma_kinetics) |" in report  # the heading's anchor (underscores kept)
    (out / "extra.txt").write_text("added by hand")
    assert main(["verify", "--only", "plasma_kinetics", "--workers", "1", "--out", str(out)]) == 2


def test_a_failing_case_exits_1_and_prints_its_command(tmp_path, capsys):
    status = main(["verify", "--only", "plasma_kinetics", "--fault", "half_life", "--workers", "1",
                   "--out", str(tmp_path / "v")])
    out = capsys.readouterr().out
    assert status == 1
    assert "plasma_kinetics  FAIL" in out
    assert "reproduce: engraft verify --quick --only plasma_kinetics --fault half_life" in out


# ----------------------------------------------------------------------------------
# every case family fails under a deliberate fault
# ----------------------------------------------------------------------------------
FAST_FAULTS = [("plasma_kinetics", "half_life"), ("setup", "kill_fraction"), ("setup", "rounding"),
               ("setup", "vcn_mean"), ("maturation", "transit_stages")]
#: the tier a fault is run at: the quick tier of neutral_competition does not resolve a 1.2x graft
#: division rate since events happen with probability R dt (p 0.058 in neighbour placement); its full
#: tier does (p 4e-14), in about 45 s on 2 workers. The others: quick
FAULT_TIER = {("neutral_competition", "graft_division"): "full"}
SLOW_FAULTS = [("neutral_competition", "graft_division"), ("steady_state", "mpp_apoptosis"),
               ("time_step", "fixed_dt"), ("time_step", "first_event"), ("resolution", "fixed_scale"),
               ("sequential_vs_parallel", "self_renewal"),
               ("kernel_vs_mesa", "self_renewal"), ("fixation", "egress_rate")]


def _fails(case: str, fault: str, workers: int = 1) -> None:
    v = run_verification([case], FAULT_TIER.get((case, fault), "quick"), workers=workers, fault=fault)
    (result,) = v.results
    assert result.error is None, result.error
    assert result.fault == fault
    assert not result.passed, [(c.name, c.p_value) for c in result.comparisons]


@pytest.mark.parametrize("case, fault", FAST_FAULTS)
def test_fault_makes_the_case_fail(case, fault):
    _fails(case, fault)


@pytest.mark.slow
@pytest.mark.parametrize("case, fault", SLOW_FAULTS)
def test_fault_makes_the_slow_case_fail(case, fault):
    _fails(case, fault, workers=2)


@pytest.mark.slow
def test_quick_tier_passes(tmp_path, capsys):
    """``engraft verify --quick``: every case passes, the report has a section and a figure per case."""
    out = tmp_path / "verification"
    status = main(["verify", "--quick", "--out", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    data = json.loads((out / "verification.json").read_text())
    assert [c["name"] for c in data["cases"]] == list(CASES)
    report = (out / "report.md").read_text()
    for name in CASES:
        assert f"## {name}" in report
        assert (out / "figures" / f"{name}.png").exists()
