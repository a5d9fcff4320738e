"""Mature compartments and plasma kinetics against closed forms and a numeric ODE solution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from engraft import tally

N_Q = tally.N_QUANTITIES


def one_lineage(tau=1.0, secretion=1e-9):
    return np.array([tau]), np.array([secretion])


def advance_plain(mature, conc, inflow, dt, tau, secretion, k, volume_dl):
    """The tally without maturation: one blood compartment per lineage, exponential lifespan."""
    residences = [tally.lineage_residences(np.zeros(0), float(t), 1) for t in tau]
    n_blood = np.ones(len(tau), dtype=np.int64)
    phi, gamma = tally.step_matrices(residences, n_blood, np.asarray(secretion) / volume_dl, k, dt)
    chain = mature[:, None, :].copy()
    tally.advance(mature, chain, conc, inflow, phi, gamma, np.ones(len(tau), dtype=np.int64), n_blood,
                  math.exp(-k * dt))


def test_level_halves_in_one_half_life_without_production():
    half_life, volume = 0.5, 31.5
    k = math.log(2) / half_life
    mature = np.zeros((1, N_Q))
    conc = np.array([40.0])
    tau, sec = one_lineage()
    steps = 10
    dt = half_life / steps
    advance_plain(mature, conc, np.zeros((steps, 1, N_Q)), dt, tau, sec, k, volume)
    assert conc[0] == pytest.approx(20.0, rel=1e-12)


def test_constant_production_settles_at_p_over_v_k():
    half_life, volume, tau_days = 0.5, 31.5, 1.0
    k = math.log(2) / half_life
    units = 1.5e11  # expression units held at steady state
    secretion = 12.0 / 1e9  # IU/day per unit
    production = units * secretion
    mature = np.zeros((1, N_Q))
    mature[0, tally.EXPRESSION_UNITS] = units
    inflow = np.zeros((400, 1, N_Q))
    inflow[:, 0, tally.EXPRESSION_UNITS] = units / tau_days  # keeps the compartment at I tau
    conc = np.array([0.0])
    advance_plain(mature, conc, inflow, 0.05, np.array([tau_days]), np.array([secretion]), k, volume)
    expected = tally.plasma_steady_state(production, half_life, volume)
    assert expected == pytest.approx(production / (volume * k))
    # 20 days = 40 half-lives: the transient is gone
    assert conc[0] == pytest.approx(expected, rel=1e-10)
    assert mature[0, tally.EXPRESSION_UNITS] == pytest.approx(units, rel=1e-12)


def test_approach_has_time_constant_one_over_k():
    half_life, volume = 0.5, 31.5
    k = math.log(2) / half_life
    units, secretion = 1e11, 1e-8
    mature = np.zeros((1, N_Q))
    mature[0, tally.EXPRESSION_UNITS] = units
    inflow = np.zeros((1, 1, N_Q))
    inflow[:, 0, tally.EXPRESSION_UNITS] = units  # tau = 1: steady
    conc = np.array([0.0])
    t = 1.0 / k
    advance_plain(mature, conc, inflow, t, np.array([1.0]), np.array([secretion]), k, volume)
    c_inf = units * secretion / (volume * k)
    assert conc[0] == pytest.approx(c_inf * (1 - math.exp(-1)), rel=1e-12)


@pytest.mark.parametrize("tau", [0.3, 0.5 / math.log(2), 4.0])  # includes tau = 1/k exactly
def test_exact_solution_matches_numeric_ode(tau):
    half_life, volume, secretion = 0.5, 31.5, 1e-8
    k = math.log(2) / half_life
    rng = np.random.default_rng(1)
    steps, dt = 40, 0.25
    inflows = rng.uniform(0, 2e11, size=steps)
    inflow = np.zeros((steps, 1, N_Q))
    inflow[:, 0, :] = inflows[:, None]
    mature = np.full((1, N_Q), 5e10)
    conc = np.array([3.0])
    advance_plain(mature, conc, inflow, dt, np.array([tau]), np.array([secretion]), k, volume)

    def rhs(t, y):
        i = min(int(t / dt), steps - 1)
        e, c = y
        return [inflows[i] - e / tau, secretion * e / volume - k * c]

    y = np.array([5e10, 3.0])
    for i in range(steps):
        y = solve_ivp(rhs, (i * dt, (i + 1) * dt), y, rtol=1e-11, atol=1e-9, method="DOP853").y[:, -1]
    assert mature[0, tally.EXPRESSION_UNITS] == pytest.approx(y[0], rel=1e-8)
    assert conc[0] == pytest.approx(y[1], rel=1e-8)


def test_compartment_turnover_is_exponential():
    mature = np.full((1, N_Q), 1000.0)
    conc = np.zeros(1)
    tau = 8.5
    advance_plain(mature, conc, np.zeros((17, 1, N_Q)), 0.5, np.array([tau]), np.zeros(1), 1.0, 1.0)
    assert mature[0, 0] == pytest.approx(1000.0 * math.exp(-8.5 / tau), rel=1e-12)


@pytest.mark.parametrize(("level", "klass"), [(0.0, "severe"), (0.99, "severe"), (1.0, "moderate"),
                                              (4.99, "moderate"), (5.0, "mild"), (39.9, "mild"),
                                              (40.0, "normal"), (150.0, "normal")])
def test_severity_classes(level, klass):
    assert tally.severity(level) == klass


def test_bleeding_relation_anchors():
    assert tally.joint_bleeds_per_year(15.0, 1.4, 0.06) == pytest.approx(1.4)
    assert tally.joint_bleeds_per_year(16.0, 1.4, 0.06) == pytest.approx(1.4 * 0.94)
    assert tally.joint_bleeds_per_year(5.0, 0.6, 0.06) > 0.6


def test_expression_weights():
    lin = tally.expression_weights("linear", None)
    sat = tally.expression_weights("saturating", 2.0)
    assert lin[0] == 0 and lin[3] == 3
    assert sat[1] == pytest.approx(1.0) and sat[0] == 0
    assert sat[2] == pytest.approx(2 * 3 / 4)  # half of the maximum (1 + K) = 3 at vcn = K
    assert np.all(np.diff(sat) > 0) and sat[255] < 3.0


# -- the production feedback (maturation.<lineage>.feedback_exponent) ---------------------------
def feedback_run(inflow_per_day, baseline, exponent, tau, dt, steps, start):
    """One lineage, no maturation: the blood count under (baseline / M)^exponent times the inflow."""
    residences = [tally.lineage_residences(np.zeros(0), tau, 1)]
    n_blood = np.ones(1, dtype=np.int64)
    phi, gamma = tally.step_matrices(residences, n_blood, np.zeros(1), 0.0, dt)
    mature = np.zeros((1, N_Q))
    mature[0, tally.CELLS] = start
    chain = mature[:, None, :].copy()
    conc = np.zeros(1)
    inflow = np.zeros((steps, 1, N_Q))
    inflow[:, 0, tally.CELLS] = inflow_per_day
    tally.advance_with_feedback(mature, chain, conc, inflow, phi, gamma, np.ones(1, dtype=np.int64), n_blood, 1.0,
                                np.array([baseline]), np.array([exponent]))
    return mature[0, tally.CELLS]


@pytest.mark.parametrize("exponent", [0.163, 0.5, 1.0])
def test_feedback_steady_state_is_the_closed_form(exponent):
    """Inflow k times the baseline's: M = I tau (M0 / M)^g at steady state, so M / M0 = k^(1 / (1 + g))."""
    tau, base_inflow, k = 2.0, 1e9, 0.1
    m0 = base_inflow * tau
    m = feedback_run(k * base_inflow, m0, exponent, tau, dt=0.25, steps=4 * 400, start=m0)
    assert m / m0 == pytest.approx(k ** (1 / (1 + exponent)), rel=1e-9)
    # no feedback: the linear tally's k
    assert feedback_run(k * base_inflow, m0, 0.0, tau, 0.25, 1600, m0) / m0 == pytest.approx(k, rel=1e-9)


def test_feedback_course_converges_to_the_ode():
    """dM/dt = I (M0 / M)^g - M / tau: the factor is held over a step, so the tally's course is the ODE's
    to first order in dt (error halves with dt)."""
    tau, base_inflow, k, g, days = 2.0, 1e9, 0.1, 0.5, 3.0
    m0 = base_inflow * tau
    ode = solve_ivp(lambda t, y: [k * base_inflow * (m0 / y[0]) ** g - y[0] / tau], (0, days), [m0],
                    rtol=1e-12, atol=1.0).y[0, -1]
    errors = [abs(feedback_run(k * base_inflow, m0, g, tau, dt, int(round(days / dt)), m0) - ode) / ode
              for dt in (0.1, 0.05, 0.025)]
    assert errors[0] < 0.02
    assert errors[1] / errors[0] == pytest.approx(0.5, abs=0.08) and errors[2] / errors[1] == pytest.approx(0.5, abs=0.08)
