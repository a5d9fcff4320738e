"""The resolution study's statistics (``scripts/convergence.py``), on hand-made runs.

A run whose count never fell below its level has no engraftment day (its summary's day 0 is a
convention): the study averages engraftment days over the runs that fell below, and judges the
fraction that fell below as a read-out of its own. Days of ANC < 0.5e9/L after engraftment are
counted from the engraftment day on. A read-out with the same value at every size has no trend.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest

from engraft import load_config
from engraft.readouts import ReadoutSpec, clinical_readouts
from tests.conftest import CONFIGS, ROOT


@pytest.fixture(scope="module")
def conv():
    spec = importlib.util.spec_from_file_location("convergence", ROOT / "scripts" / "convergence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spec():
    return ReadoutSpec.from_experiment(load_config(CONFIGS / "hemophilia_a_lentiviral.yaml"))


def course(anc_low_days, anc_dip_days=(), platelets_low_days=()):
    """Daily counts from day -6 to 60: ANC 4, below 0.5 on the given days; platelets 250 or 10."""
    days = np.arange(-6, 61, dtype=float)
    anc = np.where(np.isin(days, anc_low_days) | np.isin(days, anc_dip_days), 0.2, 4.0)
    platelets = np.where(np.isin(days, platelets_low_days), 10.0, 250.0)
    return pd.DataFrame({"day": days, "anc_1e9_per_L": anc, "platelets_1e9_per_L": platelets})


def read(conv, spec, ts):
    return conv.cytopenia(ts, clinical_readouts(ts, spec), spec)


def test_a_count_that_never_fell_has_no_engraftment_day(conv, spec):
    ts = course(anc_low_days=range(4, 13))  # platelets never below 20
    summary = clinical_readouts(ts, spec)
    assert summary["platelet_engraftment_day"] == 0.0  # the summary's convention
    row = conv.cytopenia(ts, summary, spec)
    assert row["thrombocytopenic"] == 0.0 and math.isnan(row["platelet_engraftment_day"])
    assert row["neutropenic"] == 1.0 and row["neutrophil_engraftment_day"] == 13.0
    assert row["days_anc_below_500"] == 9 and row["days_anc_below_500_after_engraftment"] == 0


def test_days_below_after_engraftment_are_the_later_dip(conv, spec):
    ts = course(anc_low_days=range(4, 13), anc_dip_days=range(20, 25), platelets_low_days=range(8, 12))
    row = read(conv, spec, ts)
    assert row["neutrophil_engraftment_day"] == 13.0
    assert row["days_anc_below_500"] == 14 and row["days_anc_below_500_after_engraftment"] == 5
    assert row["thrombocytopenic"] == 1.0 and row["platelet_engraftment_day"] == 12.0
    assert row["days_platelets_below_20"] == 4
    assert row["anc_nadir"] == pytest.approx(0.2) and row["platelet_nadir"] == pytest.approx(10.0)


def test_a_count_still_low_at_the_end_is_censored_not_dropped(conv, spec):
    ts = course(anc_low_days=range(4, 61))
    row = read(conv, spec, ts)
    assert row["neutropenic"] == 1.0
    assert math.isnan(row["neutrophil_engraftment_day"])  # not reached
    assert math.isnan(row["days_anc_below_500_after_engraftment"])


def test_tables_written_before_the_cytopenia_columns_are_read_as_the_new_ones(conv):
    old = [{"neutrophil_engraftment_day": 14.0, "platelet_engraftment_day": 0.0},
           {"neutrophil_engraftment_day": float("nan"), "platelet_engraftment_day": 20.0}]
    rows = conv.upgrade([dict(r) for r in old])
    assert rows[0]["thrombocytopenic"] == 0.0 and math.isnan(rows[0]["platelet_engraftment_day"])
    assert rows[0]["neutropenic"] == 1.0 and rows[0]["neutrophil_engraftment_day"] == 14.0
    assert rows[1]["neutropenic"] == 1.0 and math.isnan(rows[1]["neutrophil_engraftment_day"])
    assert rows[1]["thrombocytopenic"] == 1.0 and rows[1]["platelet_engraftment_day"] == 20.0
    new = conv.upgrade([{"neutropenic": 0.0, "neutrophil_engraftment_day": float("nan")}])
    assert new[0]["neutropenic"] == 0.0  # a new row is left as it is


def _rows(values_by_size, col):
    return [{"dims": 2, "size": size, "dt": 0.25, "seed": i, "hsc_scale": 1.0, col: v}
            for size, values in values_by_size.items() for i, v in enumerate(values)]


def test_a_read_out_equal_at_every_size_has_no_trend(conv):
    assert conv.trend([64, 64, 128, 128, 256, 256], [1.0] * 6) == (0.0, 0.0)
    lines, failures = conv.tabulate(_rows({64: [1.0] * 4, 128: [1.0] * 4, 256: [1.0] * 4}, "neutropenic"),
                                    "case", ["dims", "size", "dt"])
    assert failures == []
    assert any(line.startswith("| runs with ANC < 0.5e9/L (fraction) |") for line in lines)


def test_the_fraction_that_fell_below_is_judged(conv):
    rows = _rows({64: [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], 128: [1.0] * 8, 256: [1.0] * 8},
                 "thrombocytopenic")
    _, failures = conv.tabulate(rows, "case", ["dims", "size", "dt"])
    assert any("runs with platelets < 20e9/L (fraction) at (2, 64, 0.25)" in f for f in failures)


def test_read_outs_a_table_lacks_are_left_out(conv):
    lines, failures = conv.tabulate(_rows({64: [1.0, 2.0], 256: [1.5, 1.5]}, "factor_year1"), "case",
                                    ["dims", "size", "dt"])
    assert not any("platelet" in line for line in lines) and failures == []


def test_a_stored_study_rebuilds_to_its_stored_table(conv, tmp_path):
    """``--from-csv`` of a stored study gives the stored table (its command line aside) and the exit status
    of its checks; the files are written whole."""
    stored = ROOT / "benchmarks" / "results" / "convergence" / "replicate"
    status = conv.main(["--from-csv", str(stored / "convergence.csv"), "--out", str(tmp_path)])
    table = (tmp_path / "convergence.md").read_text().splitlines()
    expected = (stored / "convergence.md").read_text().splitlines()
    assert table[3:] == expected[3:]
    assert status == (1 if any(line.startswith("- FAILED") for line in expected) else 0)
    assert (tmp_path / "convergence.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convergence.csv", "convergence.md", "convergence.png"]
