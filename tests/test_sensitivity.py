"""engraft sensitivity: an additive function with known indices through the same runner; the engraft case.

For Y = sum_i a_i x_i with x_i uniform on [l_i, h_i] and independent, the
Sobol indices are exact: S_i = ST_i = a_i^2 (h_i - l_i)^2 / sum_j a_j^2
(h_j - l_j)^2, and every Morris elementary effect of x_i is a_i (h_i - l_i)
(SALib's effects are per unit of the normalised range), so mu*_i = |a_i|
(h_i - l_i) and sigma_i = 0.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml
from scipy import stats

from engraft.cli import main
from tests.conftest import ROOT

#: key path -> (coefficient, low, high); the config fields are real, the response is analytic
ADDITIVE = {
    "infusions[0].transduction": (10.0, 0.2, 0.8),
    "infusions[0].homing": (-5.0, 0.1, 0.5),
    "pk.half_life_days": (2.0, 0.3, 0.9),
}


def exact_indices() -> dict[str, float]:
    var = {p: (a * (hi - lo)) ** 2 / 12 for p, (a, lo, hi) in ADDITIVE.items()}
    return {p: v / sum(var.values()) for p, v in var.items()}


def additive(exp) -> float:
    values = {"infusions[0].transduction": exp.infusions[0].transduction,
              "infusions[0].homing": exp.infusions[0].homing, "pk.half_life_days": exp.pk.half_life_days}
    return sum(a * values[p] for p, (a, _, _) in ADDITIVE.items())


@pytest.fixture
def analytic_model(monkeypatch):
    """engraft.engines.simulate replaced by the additive function (one real tiny run reused for the files)."""
    import engraft.engines
    from engraft import load_config

    template = engraft.engines.simulate(load_config(ROOT / "configs" / "tiny.yaml",
                                                    ["time.duration_days=10", "time.burn_in_days=2"]))

    def simulate(exp, seed=None, **kwargs):
        summary = {**template.summary, "final_factor_iu_dl": additive(exp)}
        return dataclasses.replace(template, config=exp, seed=seed, summary=summary)

    monkeypatch.setattr(engraft.engines, "simulate", simulate)


def write_design(tmp_path, kind: str, samples: int, **extra):
    data = {"base": str(ROOT / "configs" / "tiny.yaml"),
            "sensitivity": {"method": kind, "samples": samples, "root_seed": 3, "noise_replicates": 2,
                            "parameters": {p: {"low": lo, "high": hi} for p, (_, lo, hi) in ADDITIVE.items()},
                            "readouts": ["final_factor_iu_dl"], **extra}}
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sobol_indices_of_an_additive_function(tmp_path, analytic_model, capsys):
    path, out = write_design(tmp_path, "sobol", 128), tmp_path / "sobol"
    assert main(["sensitivity", str(path), "--out", str(out), "--workers", "1", "-q"]) == 0
    assert f"{128 * 5 + 2} runs (sobol, 3 parameters)" in capsys.readouterr().out
    result = json.loads((out / "sensitivity.json").read_text())
    entry = result["readouts"]["final_factor_iu_dl"]
    exact = exact_indices()
    assert entry["ranking"] == sorted(exact, key=lambda p: -exact[p])
    crit = stats.norm.isf(1e-3 / 12)  # 3 parameters x (S1, ST) x two-sided, Bonferroni
    for e in entry["indices"]:
        for key in ("S1", "ST"):  # SALib's bootstrap half-width at 95 % -> a standard error
            se = e[f"{key}_conf"] / stats.norm.isf(0.025)
            assert abs(e[key] - exact[e["parameter"]]) < crit * se + 1e-9, (e, exact)
    assert entry["noise_floor"] == 0.0 and entry["below_noise_floor"] == []  # a deterministic function
    assert (out / "figures" / "sensitivity_indices.png").stat().st_size > 5000
    assert "Sobol indices, Saltelli sampling" in (out / "sensitivity_report.md").read_text()


def test_morris_screening_of_an_additive_function(tmp_path, analytic_model):
    path, out = write_design(tmp_path, "morris", 6), tmp_path / "morris"
    assert main(["sensitivity", str(path), "--out", str(out), "--workers", "1", "-q"]) == 0
    entry = json.loads((out / "sensitivity.json").read_text())["readouts"]["final_factor_iu_dl"]
    for e in entry["indices"]:
        a, lo, hi = ADDITIVE[e["parameter"]]
        assert e["mu_star"] == pytest.approx(abs(a) * (hi - lo), rel=1e-9)
        assert e["sigma"] == pytest.approx(0.0, abs=1e-9)
    assert entry["ranking"] == ["infusions[0].transduction", "infusions[0].homing", "pk.half_life_days"]


def test_engraftment_days_of_runs_that_never_fell_below_are_counted(tmp_path, monkeypatch):
    """A run whose platelets never fell below 20e9/L reads platelet engraftment day 0 (the summary's
    convention); the report counts those design runs and names the read-out defined for every run."""
    import engraft.engines
    from engraft import load_config

    template = engraft.engines.simulate(load_config(ROOT / "configs" / "tiny.yaml",
                                                    ["time.duration_days=10", "time.burn_in_days=2"]))

    def simulate(exp, seed=None, **kwargs):  # platelets fall below the level only above a transduction of 0.5
        fell = exp.infusions[0].transduction > 0.5
        summary = {**template.summary, "days_platelets_below_20": 4 if fell else 0,
                   "platelet_engraftment_day": 20.0 + 10 * exp.pk.half_life_days if fell else 0.0}
        return dataclasses.replace(template, config=exp, seed=seed, summary=summary)

    monkeypatch.setattr(engraft.engines, "simulate", simulate)
    path = write_design(tmp_path, "morris", 4, readouts=["platelet_engraftment_day", "final_factor_iu_dl"])
    out = tmp_path / "morris"
    assert main(["sensitivity", str(path), "--out", str(out), "--workers", "1", "-q"]) == 0
    spec = json.loads((out / "sweep.json").read_text())
    design = [r for r in spec["runs"] if not r["params"].get("noise_run")]
    never = sum(r["params"]["infusions[0].transduction"] <= 0.5 for r in design)
    assert 0 < never < len(design)  # the case has both kinds of run
    result = json.loads((out / "sensitivity.json").read_text())
    assert result["readouts"]["platelet_engraftment_day"]["runs_never_below"] == never
    assert "runs_never_below" not in result["readouts"]["final_factor_iu_dl"]
    report = (out / "sensitivity_report.md").read_text()
    assert (f"Caution: in {never} of {len(design)} design runs the count never fell below its level" in report
            and "`days_platelets_below_20` is defined for every run" in report)


def test_sensitivity_of_the_engraft_model(tmp_path):
    """Morris screening on the tiny experiment: real runs, read-outs, the noise floor from replicates."""
    data = {"base": str(ROOT / "configs" / "tiny.yaml"),
            "sensitivity": {"method": "morris", "samples": 3, "root_seed": 1, "noise_replicates": 4,
                            "overrides": {"time.duration_days": 60, "time.burn_in_days": 30},
                            "parameters": {"infusions[0].transduction": {"low": 0.2, "high": 0.9},
                                           "infusions[0].vcn.mean": {"low": 0.8, "high": 3.0},
                                           "homing_factor": {"low": 0.5, "high": 1.5, "apply": "multiply",
                                                             "paths": ["infusions[0].homing"]}},
                            "readouts": ["year1_mean_factor_iu_dl", "engraftment_day", "largest_clone_share",
                                         "days_anc_below_500"]}}
    path, out = tmp_path / "engraft.yaml", tmp_path / "engraft"
    path.write_text(yaml.safe_dump(data))
    assert main(["sensitivity", str(path), "--out", str(out), "--workers", "2", "-q"]) == 0
    result = json.loads((out / "sensitivity.json").read_text())
    assert result["design_points"] == 3 * 4 and result["runs"] == 12 + 4
    level = result["readouts"]["year1_mean_factor_iu_dl"]
    assert level["noise_variance"] > 0 and 0 < level["noise_floor"] < 1 and level["mu_star_noise_floor"] > 0
    assert len(level["indices"]) == 3 and all(e["mu_star"] >= 0 for e in level["indices"])
    # the model writes clinical blood counts: the engraftment day is the neutrophil one
    assert result["readout_sources"]["engraftment_day"] == "neutrophil_engraftment_day"
    report = (out / "sensitivity_report.md").read_text()
    assert "Noise floor: seed noise is" in report and "Read from the runs' `neutrophil_engraftment_day`" in report
    # a summary key of the blood counts is a read-out too, and the count kinetics carry their caution
    assert "indices" in result["readouts"]["days_anc_below_500"]
    assert report.count("Caution: the shipped parameter sets have no cytokine feedback") == 2  # engraftment_day, days_anc_below_500
    config = yaml.safe_load((out / "runs" / "s00005" / "config.yaml").read_text())
    spec = json.loads((out / "sweep.json").read_text())
    run = next(r for r in spec["runs"] if r["run_id"] == "s00005")
    assert config["infusions"][0]["homing"] == pytest.approx(0.3 * run["params"]["homing_factor"])
    # the centre of the ranges, run with new seeds: the noise replicates
    centre = [r for r in spec["runs"] if r["run_id"].startswith("n")]
    assert len(centre) == 4 and len({r["seed"] for r in centre}) == 4
    assert all(r["params"]["infusions[0].transduction"] == pytest.approx(0.55) for r in centre)
    assert not math.isnan(level["variance"])


@pytest.mark.parametrize(("change", "message"), [
    ({"method": "fast"}, "sensitivity.method: must be one of sobol, morris, got 'fast'"),
    ({"readouts": ["final_factor"]}, "sensitivity.readouts[0]: unknown read-out 'final_factor'"),
    ({"parameters": {"infusions[0].homing": {"low": 0.5, "high": 0.2}, "pk.half_life_days": {"low": 0.3,
                                                                                              "high": 0.6}}},
     "sensitivity.parameters.infusions[0].homing: high must be > low"),
    ({"parameters": {"infusions[0].homing": {"low": 0.1, "high": 1.5}, "pk.half_life_days": {"low": 0.3,
                                                                                              "high": 0.6}}},
     "input should be less than or equal to 1"),
    ({"noise_replicates": 1}, "sensitivity.noise_replicates: must be 0 (no noise floor) or >= 2"),
    # sizes refused before SALib allocates anything (each of these once took tens of GiB)
    ({"samples": 10**9}, "sensitivity.samples: 1,000,000,000 base samples of 3 parameters make 5,000,000,002 "
                         "runs, more than one design may hold (1,000,000)"),
    ({"bootstrap": 10**10}, "sensitivity.bootstrap: 10,000,000,000 resamples of 8 samples need about 3576.3 GiB"),
    ({"levels": 10**15}, "sensitivity.levels: must be <= 1000"),
])
def test_bad_sensitivity_specs_fail_up_front(tmp_path, capsys, change, message):
    change = dict(change)
    path = write_design(tmp_path, "sobol", change.pop("samples", 8), **change)
    assert main(["sensitivity", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_shipped_sensitivity_design():
    from engraft.sensitivity import load_sensitivity

    design = load_sensitivity(ROOT / "configs" / "sensitivity_hemophilia_a.yaml")
    assert design.spec.method == "morris" and len(design.spec.parameters) == 7
    assert len(design.runs) == 8 * (7 + 1) + 8
    assert all(p.source for p in design.spec.parameters)
    first = design.run_experiment(design.runs[0])
    assert first.time.duration_days == 365
    assert 0.45 <= first.infusions[0].transduction <= 0.75
