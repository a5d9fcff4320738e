"""The shipped calibrations hold: whole-body outputs and the group-2 factor levels, in 2D and in 3D.

``scripts/recalibrate.py`` fits the human amplifications to whole-body daily
outputs (Catlin et al., Blood 2011; Harker, Clin Haematol 1977) and the
transgene to Srivastava et al., N Engl J Med 2025, group 2 (product VCN 0.6,
1.5, 2.2 -> median FVIII 19.3, 37.1, 39.9 IU/dL from day 28). These tests run
its own functions on the shipped configs at a smaller lattice (the
whole-body results do not depend on the size: docs/model.md sec. 2):

- each lineage's steady-state output within 10 % of its reference (the fit
  makes it exact; 10 % is the accuracy of the cited figures, and many
  seed SEs at these sizes);
- the mean over 5 seeds at each group-2 VCN within 25 % of its median (the
  acceptance band of the calibration).

A config that lost its fit fails: the 2D numbers on the 3D lattice give
2.4x the myeloid output and about 100 IU/dL. The 3D set's first weeks,
fitted by its GMP lattice divisions and platelet lifespan stages, are
checked against the trial's cytopenias as well.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import CONFIGS, ROOT

CASES = [("hemophilia_a_lentiviral", 256), ("hemophilia_a_lentiviral_3d", 48)]


def _recalibrate():
    spec = importlib.util.spec_from_file_location("recalibrate", ROOT / "scripts" / "recalibrate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), CASES, ids=[c[0] for c in CASES])
def test_the_shipped_calibration_holds(name, size):
    rc = _recalibrate()
    config = str(CONFIGS / f"{name}.yaml")
    out, _ = rc.mature_output(config, size, seeds=3, days=100.0)
    for lineage, (mean, _se) in out.items():
        assert abs(mean / rc.REFERENCE_OUTPUT[lineage] - 1) <= 0.10, (lineage, mean)
    common = [f"lattice.size={size}", f"time.duration_days={rc.WINDOW_DAYS[1]:g}", "time.snapshot_interval_days=null"]
    means, _ses = rc.factor_levels(config, common, seeds=5)
    for (vcn, target), mean in zip(rc.GROUP_2, means, strict=True):
        assert abs(mean / target - 1) <= rc.TOLERANCE, (vcn, mean, target)


@pytest.mark.slow
def test_the_3d_set_gives_the_trial_cytopenias():
    """Srivastava et al. 2025: 7-11 days of ANC < 0.5e9/L and 1-7 days with platelets < 20e9/L, in
    every patient. The 3D set's GMP lattice divisions and platelet lifespan stages were chosen for
    them (the 2D set's 7 and 5 gave about 14 days of neutropenia and, in most seeds, no platelet
    count below 20e9/L). Medians over 6 seeds at 64^3; neutrophil engraftment within days 13-38
    (ZYNTEGLO SmPC) in every seed; the share of seeds never below 20e9/L at most 0.52, the upper
    end of the exact 95 % Clopper-Pearson interval of 0 in 5 patients."""
    import numpy as np
    from scipy import stats

    from engraft import load_config, simulate

    exp = load_config(CONFIGS / "hemophilia_a_lentiviral_3d.yaml",
                      ["lattice.size=64", "time.duration_days=120", "time.snapshot_interval_days=null"])
    summaries = [simulate(exp, seed=300 + s).summary for s in range(6)]
    assert 7 <= np.median([s["days_anc_below_500"] for s in summaries]) <= 11
    assert all(not s["neutrophil_engraftment_censored"] and 13 <= s["neutrophil_engraftment_day"] <= 38
               for s in summaries)
    below = np.array([s["days_platelets_below_20"] for s in summaries])
    assert 1 <= np.median(below) <= 7
    assert np.mean(below == 0) <= stats.beta.ppf(0.975, 1, 5)
