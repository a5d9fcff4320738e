"""The factor-output tally: mature compartments, plasma kinetics, clinical read-outs.

Mature cells are not agents. Each lineage compartment holds, in whole-body
cells, five quantities that all turn over with the lineage's mean lifespan
tau (exponential loss): cells, graft cells, transduced cells, vector copies,
and *expression units* (vector copies of non-silenced cells after the VCN
response, see :func:`expression_weights`).

Within a step the inflow I of each quantity is constant (the step's exits,
spread evenly over it), so each compartment follows
``dM/dt = I - M / tau`` exactly::

    M(t + dt) = M(t) exp(-dt / tau) + I tau (1 - exp(-dt / tau))

Plasma factor (secreted transgene) follows one-compartment kinetics
``dC/dt = s E(t) / V - k C`` with k = ln2 / t_half, E the expression units of
the expressing lineages and s the IU per day per expression unit. With E
itself relaxing exponentially within the step, C has a closed form too
(:func:`advance`), so records are exact whatever their interval.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engraft.errors import NumericalFailure
from engraft.kernel import layout
from engraft.kernel.jit import JIT

# quantities per compartment: the numbering of the kernels' exit counts
CELLS, GRAFT_CELLS, TRANSDUCED_CELLS = layout.X_CELLS, layout.X_GRAFT, layout.X_TRANSDUCED
VECTOR_COPIES, EXPRESSION_UNITS = layout.X_VCN, layout.X_EXPRESSION
N_QUANTITIES = layout.N_EXIT_QUANTITIES

SEVERITY_CLASSES = ("severe", "moderate", "mild", "normal")


def severity(level_iu_dl: float) -> str:
    """ISTH class of a factor level (White et al., Thromb Haemost 2001).

    < 1 IU/dL severe, 1-5 moderate, 5-40 mild, >= 40 within the normal range.
    A level that is not a finite number has no class: it is an error, never "normal".
    """
    if not math.isfinite(level_iu_dl) or level_iu_dl < 0:
        raise NumericalFailure(f"factor level {level_iu_dl!r} IU/dL is not a finite, non-negative number: "
                               "the tally broke down, so no class or read-out is given (report it with the "
                               "run's config)")
    if level_iu_dl < 1.0:
        return "severe"
    if level_iu_dl < 5.0:
        return "moderate"
    if level_iu_dl < 40.0:
        return "mild"
    return "normal"


def joint_bleeds_per_year(level_iu_dl: float, at_15: float, reduction_per_iu_dl: float) -> float:
    """Expected joint bleeds per year at a steady factor level.

    Log-linear in the level, anchored at 15 IU/dL:
    ``at_15 * (1 - reduction_per_iu_dl) ** (level - 15)``. Soucie et al.
    (Blood Adv 2018;2:2136) predict 1.4 (hemophilia A) and 0.6 (hemophilia B)
    joint bleeds per year at 15 IU/dL; Peyvandi et al. (Blood Adv 2023;7:7209)
    report a 6 % lower joint-bleeding rate per IU/dL of FVIII. Both were
    fitted on non-severe patients (about 1-50 IU/dL): below 1 IU/dL the value
    is an extrapolation and underestimates severe disease.
    """
    return at_15 * (1.0 - reduction_per_iu_dl) ** (level_iu_dl - 15.0)


def expression_weights(response: str, half_saturation: float | None) -> np.ndarray:
    """Expression units of one non-silenced cell for VCN 0..255.

    ``linear``: proportional to the copies. ``saturating``:
    ``vcn * (1 + K) / (vcn + K)``, Michaelis-Menten in the copy number,
    scaled so that one copy gives one unit in both responses.
    """
    vcn = np.arange(256, dtype=np.float64)
    if response == "linear":
        return vcn
    k = float(half_saturation)
    return vcn * (1.0 + k) / (vcn + k)


@njit(**JIT)
def _relax(m0, inflow, tau, dt):
    decay = math.exp(-dt / tau)
    return m0 * decay + inflow * tau * (1.0 - decay)


@njit(**JIT)
def advance(mature, conc, inflow, dt, tau, secretion, k, volume_dl):
    """Advance compartments and plasma over consecutive steps, exactly.

    Parameters
    ----------
    mature : float64 (n_lineages, N_QUANTITIES), whole-body; updated in place.
    conc : float64[1], transgene plasma level in IU/dL; updated in place.
    inflow : float64 (n_steps, n_lineages, N_QUANTITIES), per day, each step.
    dt : step in days.
    tau : float64 (n_lineages,), mean lifespans in days.
    secretion : float64 (n_lineages,), IU/day per expression unit (0 if not secreting).
    k : plasma elimination rate, per day.
    volume_dl : volume of distribution in dL.
    """
    n_steps, n_lin, n_q = inflow.shape
    ek = math.exp(-k * dt)
    for s in range(n_steps):
        c = conc[0] * ek
        for lin in range(n_lin):
            e0 = mature[lin, EXPRESSION_UNITS]
            for q in range(n_q):
                mature[lin, q] = _relax(mature[lin, q], inflow[s, lin, q], tau[lin], dt)
            if secretion[lin] > 0.0:
                e_inf = inflow[s, lin, EXPRESSION_UNITS] * tau[lin]
                r = 1.0 / tau[lin]
                if abs(k - r) > 1e-12 * max(k, r):
                    transient = (math.exp(-r * dt) - ek) / (k - r)
                else:
                    transient = dt * ek
                c += secretion[lin] / volume_dl * (e_inf * (1.0 - ek) / k + (e0 - e_inf) * transient)
        conc[0] = c


def steady_state(inflow_per_day: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Compartment contents at steady state for a constant inflow: I tau."""
    return inflow_per_day * tau[:, None]


def plasma_steady_state(production_iu_per_day: float, half_life_days: float, volume_dl: float) -> float:
    """P / (V k): the level that constant production settles at (IU/dL)."""
    return production_iu_per_day / (volume_dl * math.log(2) / half_life_days)
