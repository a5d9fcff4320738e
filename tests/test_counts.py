"""Maturation chains, the conditioning schedule, blood counts and the clinical read-outs.

Exact checks: the transit chain against its analytic (Erlang) delay and
steady state, the engraftment and duration definitions on constructed
series, the kill fractions of a busulfan schedule, the counts against hand
computation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from engraft import load_config, tally
from engraft.readouts import (
    CLINICAL_KEYS,
    ReadoutSpec,
    clinical_readouts,
    days_below,
    engraftment_day,
    nadir,
)
from engraft.simulation import Simulation, TallyTables, Timeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
N_Q = tally.N_QUANTITIES


def chain_tables(before: np.ndarray, tau: float, n_blood: int, dt: float, secretion: float = 0.0,
                 k: float = 1.0, volume_dl: float = 1.0):
    res = [tally.lineage_residences(before, tau, n_blood)]
    nb = np.array([n_blood], dtype=np.int64)
    phi, gamma = tally.step_matrices(res, nb, np.array([secretion / volume_dl]), k, dt)
    return res, nb, phi, gamma, math.exp(-k * dt)


def run_chain(res, nb, phi, gamma, ek, inflow, chain=None):
    n = res[0].size
    mature = np.zeros((1, N_Q))
    chain = np.zeros((1, n, N_Q)) if chain is None else chain
    conc = np.zeros(1)
    out = []
    for step in inflow:
        tally.advance(mature, chain, conc, np.full((1, 1, N_Q), float(step)), phi, gamma,
                      np.array([n]), nb, ek)
        out.append((mature[0, 0], chain[0, :, 0].copy(), conc[0]))
    return out


# ----------------------------------------------------------------------------------
# the transit chain
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("stages", "mtt"), [(1, 2.0), (3, 5.8), (6, 4.0)])
def test_pulse_through_the_chain_leaves_as_an_erlang_density(stages, mtt):
    """A pulse into n stages of mean mtt / n: the outflow of the chain is Erlang(n, n / mtt).

    The chain's content at time t is the probability of not having left yet,
    so the outflow density is -d/dt content; its mean is mtt and its
    variance mtt^2 / n. The flux into the blood compartment is read off the
    chain's last stage (outflow = last stage / its residence).
    """
    dt = 0.01
    before = tally.transit_times(stages, mtt, 0.0)
    res, nb, phi, gamma, ek = chain_tables(before, 1e6, 1, dt)
    chain = np.zeros((1, res[0].size, N_Q))
    chain[0, 0, :] = 1.0  # one unit in the first stage at t = 0
    steps = int(round(25 * mtt / dt))  # the tail beyond is below 1e-9
    out = run_chain(res, nb, phi, gamma, ek, np.zeros(steps), chain)
    t = dt * np.arange(1, steps + 1)
    last = np.array([c[1][stages - 1] for c in out])
    flux = last / before[-1]
    erlang = stats.gamma(a=stages, scale=mtt / stages).pdf(t)
    np.testing.assert_allclose(flux, erlang, rtol=1e-9, atol=1e-12)
    # content left in the chain = Erlang survival, exactly (no quadrature)
    content = np.array([c[1][:stages].sum() for c in out])
    np.testing.assert_allclose(content, stats.gamma(a=stages, scale=mtt / stages).sf(t), rtol=1e-9,
                               atol=1e-12)
    # moments from the survival curve (E T = int S, E T^2 = 2 int t S), trapezoid rule: O(dt^2)
    t0 = np.concatenate([[0.0], t])
    s0 = np.concatenate([[1.0], content])
    mean = np.trapezoid(s0, t0)
    var = 2 * np.trapezoid(t0 * s0, t0) - mean**2
    assert mean == pytest.approx(mtt, rel=1e-4)
    assert var == pytest.approx(mtt**2 / stages, rel=1e-4)


def test_constant_inflow_gives_its_steady_state_exactly():
    """From the steady state (I x residence in each compartment), constant I keeps it to rounding."""
    before = tally.transit_times(3, 3.7, 2.1)
    res, nb, phi, gamma, ek = chain_tables(before, 9.5, 4, 0.25)
    inflow = 1.7e11
    chain = tally.chain_steady_state(np.full((1, N_Q), inflow), res)
    out = run_chain(res, nb, phi, gamma, ek, np.full(400, inflow), chain)
    np.testing.assert_allclose(out[-1][1], inflow * res[0], rtol=1e-12)
    assert out[-1][0] == pytest.approx(inflow * 9.5, rel=1e-12)


def test_empty_chain_filled_by_constant_inflow_approaches_steady_state():
    before = tally.transit_times(3, 3.7, 2.1)
    res, nb, phi, gamma, ek = chain_tables(before, 1.0, 1, 0.25)
    out = run_chain(res, nb, phi, gamma, ek, np.full(400, 1.0))  # 100 days
    np.testing.assert_allclose(out[-1][1], res[0], rtol=1e-10)


def test_step_is_exact_whatever_the_step_length():
    """Ten steps of 0.1 day equal one step of 1 day (the matrices are exact, not an integrator)."""
    before = tally.transit_times(3, 5.8, 0.0)
    rng = np.random.default_rng(3)
    start = rng.uniform(0, 1e9, size=(1, 4, N_Q))
    a = run_chain(*chain_tables(before, 1.0, 1, 0.1, secretion=1e-8, k=1.4, volume_dl=31.5),
                  np.full(10, 2e9), start.copy())[-1]
    b = run_chain(*chain_tables(before, 1.0, 1, 1.0, secretion=1e-8, k=1.4, volume_dl=31.5),
                  np.full(1, 2e9), start.copy())[-1]
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12)
    assert a[2] == pytest.approx(b[2], rel=1e-12)


def test_plasma_level_through_a_chain_matches_a_numeric_ode():
    from scipy.integrate import solve_ivp

    before = tally.transit_times(2, 3.0, 1.0)
    tau, sec, k, vol, dt = 1.0, 1e-8, math.log(2) / 0.5, 31.5, 0.25
    res, nb, phi, gamma, ek = chain_tables(before, tau, 1, dt, secretion=sec, k=k, volume_dl=vol)
    inflows = np.random.default_rng(2).uniform(0, 2e11, size=40)
    out = run_chain(res, nb, phi, gamma, ek, inflows)
    rates = 1.0 / res[0]

    def rhs(t, y):
        i = min(int(t / dt), len(inflows) - 1)
        dy = np.empty_like(y)
        dy[0] = inflows[i] - rates[0] * y[0]
        for j in range(1, 4):
            dy[j] = rates[j - 1] * y[j - 1] - rates[j] * y[j]
        dy[4] = sec * y[3] / vol - k * y[4]
        return dy

    y = np.zeros(5)
    for i in range(len(inflows)):
        y = solve_ivp(rhs, (i * dt, (i + 1) * dt), y, rtol=1e-11, atol=1e-6, method="DOP853").y[:, -1]
    assert out[-1][0] == pytest.approx(y[3], rel=1e-8)
    assert out[-1][2] == pytest.approx(y[4], rel=1e-8)


def test_expm_matches_the_closed_form_of_one_compartment():
    a = np.array([[-1.0 / 8.5]])
    assert tally.expm(a * 17.0)[0, 0] == pytest.approx(math.exp(-2.0), rel=1e-14)
    big = np.array([[-40.0, 0.0], [40.0, -3.0]])  # scaled and squared
    e = tally.expm(big)
    assert e[0, 0] == pytest.approx(math.exp(-40.0), rel=1e-10)
    assert e[1, 0] == pytest.approx(40.0 / 37.0 * (math.exp(-3.0) - math.exp(-40.0)), rel=1e-10)


# ----------------------------------------------------------------------------------
# engraftment and durations on constructed series
# ----------------------------------------------------------------------------------
def test_engraftment_is_the_first_of_three_days_after_the_fall():
    days = np.arange(-6, 30, dtype=float)
    anc = np.full(days.size, 4.0)
    anc[(days >= 5) & (days <= 14)] = 0.2  # 10 days below
    anc[days == 16] = 0.4  # one more day below: 15, 16, 17 is not a run
    assert engraftment_day(days, anc, 0.5, 3, -6.0, 0.0) == (17.0, False)
    assert days_below(days, anc, 0.5, -6.0) == 11
    assert nadir(days, anc, -6.0) == (0.2, 5.0)


def test_a_count_exactly_at_the_level_counts_as_engrafted():
    days = np.arange(0, 10, dtype=float)
    anc = np.array([1, 0.4, 0.5, 0.5, 0.5, 1, 1, 1, 1, 1], dtype=float)
    assert engraftment_day(days, anc, 0.5, 3) == (2.0, False)
    assert days_below(days, anc, 0.5) == 1


def test_never_engrafting_is_censored_at_the_end_of_follow_up():
    days = np.arange(0, 40, dtype=float)
    anc = np.full(days.size, 0.1)
    anc[-2:] = 1.0  # two days up at the end: not three
    assert engraftment_day(days, anc, 0.5, 3) == (None, True)
    assert days_below(days, anc, 0.5) == 38


def test_a_count_that_never_falls_engrafts_on_the_infusion_day():
    days = np.arange(-6, 20, dtype=float)
    assert engraftment_day(days, np.full(days.size, 3.0), 0.5, 3, -6.0, 0.0) == (0.0, False)


def test_days_before_the_conditioning_and_gaps_in_the_records_do_not_count():
    days = np.array([-10, -6, 0, 5, 6, 7, 8, 20, 25, 30], dtype=float)
    plt = np.array([5, 250, 100, 15, 15, 30, 30, 30, 30, 30], dtype=float)
    # 7, 8 are daily but 20 is not the day after 8: the first run of three daily records is missing
    assert engraftment_day(days, plt, 20.0, 3, -6.0, 0.0) == (None, True)
    assert days_below(days, plt, 20.0, -6.0) == 2  # day -10 is before the conditioning
    assert nadir(days, plt, -6.0) == (15.0, 5.0)


def test_records_sooner_than_daily_count_once_a_day():
    days = np.arange(0, 20, 0.25)
    anc = np.where((days >= 5) & (days < 12), 0.1, 3.0)
    assert days_below(days, anc, 0.5) == 7
    assert engraftment_day(days, anc, 0.5, 3) == (12.0, False)


def test_clinical_readouts_name_every_key_and_are_none_without_counts():
    exp = load_config(CONFIGS / "tiny.yaml", ["blood_counts=null"])
    spec = ReadoutSpec.from_experiment(exp)
    ts = pd.DataFrame({"day": [0.0, 1.0]})
    assert clinical_readouts(ts, spec) == dict.fromkeys(CLINICAL_KEYS)


# ----------------------------------------------------------------------------------
# conditioning schedule
# ----------------------------------------------------------------------------------
def test_schedule_splits_the_kill_into_equal_fractional_doses():
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml")
    cond = exp.conditioning
    assert cond.dose_days == [-6.0, -5.0, -4.0, -3.0]
    for name, total in cond.myeloablation.items():
        per_dose = cond.kill_per_dose(name)
        assert (1 - per_dose) ** 4 == pytest.approx(1 - total, rel=1e-12)
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert tiny.conditioning.dose_days == [0.0]
    assert tiny.conditioning.kill_per_dose("HSC") == tiny.conditioning.myeloablation["HSC"]


def test_each_dose_kills_its_fraction_of_host_cells_and_spares_the_tally():
    """Four doses on a frozen marrow (no rates): survivors ~ Binomial(n, (1 - p)^(k/4)) after k doses."""
    exp = load_config(CONFIGS / "tiny.yaml", ["conditioning.day=null", "conditioning.days=[-4, -3, -2, -1]",
                                              "conditioning.myeloablation={HSC: 0.9}",
                                              "time.burn_in_days=10", "infusions=[]"])
    sim = Simulation(exp, seed=5)
    sim.burn_in()
    hsc = sim.rules.hsc_type
    n0 = int((sim.state.ctype == hsc).sum())
    mature = sim.mature.copy()
    chain = sim.chain.copy()
    counts = [n0]
    for _ in range(4):
        sim.condition()
        counts.append(int((sim.state.ctype == hsc).sum()))
    per_dose = 1 - 0.1 ** 0.25
    # alpha = 1e-3 over 4 doses (Bonferroni): each dose's survivors are binomial given the previous
    for before, after in zip(counts[:-1], counts[1:], strict=True):
        p = stats.binomtest(after, before, 1 - per_dose).pvalue
        assert p > 1e-3 / 4, (before, after)
    np.testing.assert_array_equal(sim.mature, mature)  # maturing and mature cells are spared
    np.testing.assert_array_equal(sim.chain, chain)


def test_regimen_starts_the_follow_up_on_its_first_day():
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml", ["time.duration_days=60"])
    tl = Timeline.from_experiment(exp)
    per_day = round(1 / exp.time.dt_days)
    assert tl.next_day_step(3) == per_day and tl.next_day_step(per_day) == 2 * per_day
    assert tl.start_step == -6 * per_day
    assert tl.conditioning_steps == tuple(d * per_day for d in (-6, -5, -4, -3))
    assert set(range(-6 * per_day, 43 * per_day, per_day)) <= set(tl.record_steps)


def test_records_are_daily_while_counts_are_low_whatever_the_interval():
    exp = load_config(CONFIGS / "tiny.yaml", ["time.record_interval_days=30",
                                              "blood_counts.daily_records_until_day=0",
                                              "blood_counts.daily_below_anc_1e9_per_L=100",
                                              "blood_counts.daily_below_platelets_1e9_per_L=1e9"])
    from engraft.engines import simulate

    days = simulate(exp).timeseries["day"].to_numpy()
    # every count is "low" at these levels: daily from day 0 on
    np.testing.assert_allclose(days, np.arange(0, 121))
    normal = simulate(load_config(CONFIGS / "tiny.yaml", ["time.record_interval_days=30",
                                                          "blood_counts.daily_records_until_day=0",
                                                          "blood_counts.daily_below_anc_1e9_per_L=1e-9",
                                                          "blood_counts.daily_below_platelets_1e9_per_L=1e-9",
                                                          "blood_counts.neutrophil_engraftment_1e9_per_L=1e-9",
                                                          "blood_counts.platelet_engraftment_1e9_per_L=1e-9"]))
    np.testing.assert_allclose(normal.timeseries["day"], [0, 30, 60, 90, 120])


# ----------------------------------------------------------------------------------
# counts in clinical units
# ----------------------------------------------------------------------------------
def test_counts_in_units_against_hand_computation():
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml")
    spec = ReadoutSpec.from_experiment(exp)
    bc = exp.blood_counts
    litres = bc.blood_volume_ml_per_kg * exp.patient.weight_kg / 1000  # 4.9 L
    assert litres == pytest.approx(4.9)
    factors = {col: (lin, per) for col, lin, per in spec.counts}
    lin, per = factors["anc_1e9_per_L"]
    assert exp.lineage_names[lin] == "myeloid"
    # 1e11 myeloid cells x 0.19 / 4.9 L = 3.878e9 per litre
    assert 1e11 * per == pytest.approx(1e11 * 0.19 / 4.9 / 1e9, rel=1e-12)
    lin, per = factors["hemoglobin_g_per_dL"]
    # 2.4e13 red cells x 30 pg = 720 g in 49 dL = 14.69 g/dL
    assert 2.4e13 * per == pytest.approx(720.0 / 49.0, rel=1e-12)
    lin, per = factors["platelets_1e9_per_L"]
    assert 1.5e12 * per == pytest.approx(1.5e12 * 0.67 / 4.9 / 1e9, rel=1e-12)


def test_steady_state_counts_are_normal():
    """The calibrated human set: host counts at the end of burn-in lie in the adult reference ranges."""
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml", ["time.duration_days=1"])
    sim = Simulation(exp, seed=3)
    sim.burn_in()
    row = sim.record()
    assert 2.3 <= row["anc_1e9_per_L"] <= 8.1
    assert 1.0 <= row["lymphocytes_1e9_per_L"] <= 4.0
    assert 150 <= row["platelets_1e9_per_L"] <= 400
    assert 13.5 <= row["hemoglobin_g_per_dL"] <= 17.5
    # the chains start at their steady state: the blood total is the sum of the blood stages
    tt = TallyTables.from_experiment(exp)
    for lin in range(len(exp.lineage_names)):
        m, nb = tt.n_chain[lin], tt.n_blood[lin]
        assert sim.chain[lin, m - nb: m, 0].sum() == pytest.approx(sim.mature[lin, 0], rel=1e-12)


def test_both_engines_share_the_counts_and_the_regimen():
    """The Mesa reference and the kernel write the same count columns and read-outs, from the first dose."""
    from engraft.engines import simulate

    exp = load_config(CONFIGS / "tiny.yaml", ["conditioning.day=null", "conditioning.days=[-2, -1]",
                                              "time.duration_days=30", "time.burn_in_days=20"])
    kernel = simulate(exp, engine="kernel")
    mesa = simulate(exp, engine="mesa")
    assert list(kernel.timeseries.columns) == list(mesa.timeseries.columns)
    assert set(kernel.summary) == set(mesa.summary) and set(CLINICAL_KEYS) <= set(mesa.summary)
    for result in (kernel, mesa):
        days = result.timeseries["day"].to_numpy()
        assert days[0] == -2.0 and set(np.arange(-2, 31)) <= set(days)


def test_production_feedback_raises_the_counts_while_low_and_leaves_the_marrow_alone():
    """maturation.myeloid.feedback_exponent: the lattice is the same run (the tally does not feed back
    into it), and while the ANC is below its baseline the feedback's ANC is above the plain one's."""
    plain = Simulation(load_config(CONFIGS / "tiny.yaml"), seed=4).run()
    fed = Simulation(load_config(CONFIGS / "tiny.yaml", ["maturation.myeloid.feedback_exponent=0.5"]), seed=4).run()
    a, b = plain.timeseries, fed.timeseries
    lattice = ["HSC_graft", "GMP_host", "GMP_graft", "occupancy", "hsc_chimerism", "clones_alive"]
    pd.testing.assert_frame_equal(a[lattice], b[lattice])
    assert (a["platelets_1e9_per_L"] == b["platelets_1e9_per_L"]).all()  # its lineage has no feedback
    baseline = a["anc_1e9_per_L"].iloc[0]
    # the first fall after conditioning, while both counts stay below the baseline (f > 1 throughout;
    # later, once the feedback's count has overshot its baseline, its factor is below 1)
    below = ((a["anc_1e9_per_L"] < baseline) & (b["anc_1e9_per_L"] < baseline)).to_numpy()
    first = int(np.argmax((a["day"] > 0).to_numpy() & below))
    end = first + int(np.argmin(below[first:])) if not below[first:].all() else len(below)
    stretch = slice(first + 1, end)  # from the record after the first low one
    assert end - first > 3
    assert (b["anc_1e9_per_L"].to_numpy()[stretch] > a["anc_1e9_per_L"].to_numpy()[stretch]).all()
    assert fed.summary["anc_nadir"] > plain.summary["anc_nadir"]
