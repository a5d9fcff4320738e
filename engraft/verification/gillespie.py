"""An independent model: the two-compartment HSC model of Ashcroft, Manz & Bonhoeffer.

Ashcroft P, Manz MG, Bonhoeffer S (2017). Clonal dominance and
transplantation dynamics in hematopoietic stem cell compartments. PLoS
Comput Biol 13(10): e1005803. https://doi.org/10.1371/journal.pcbi.1005803

Their model has N niches in the bone marrow (BM), each holding at most one
HSC, and a peripheral blood (PB) compartment. With x_i cells of type i in the
BM and y_i in the PB, the reactions are:

====================  =============================  ===========================
reaction              rate                           meaning
====================  =============================  ===========================
x_i -> x_i + y_i      beta_i x_i                     division in a niche; the
                                                     daughter enters the blood
x_i -> y_i            eta x_i                        egress (detachment) into PB
y_i -> x_i            kappa (1 - sum_j x_j / N) y_i  lodging into a free niche
y_i -> 0              delta y_i                      death in the blood
====================  =============================  ===========================

This module simulates them exactly (Gillespie's direct method) for two types,
host (h) and graft (g), with plain NumPy random numbers. It shares no code
with engraft's kernel, its rate tables or its random streams, on purpose:
it is the reference that ``engraft verify`` compares the kernel with
(case ``fixation``).

Observation is on a grid of times, as the kernel is observed: the state at
grid time T is the state after the last event before T. First-passage times
of the BM graft fraction (chimerism) are the first grid times at which it
reaches each threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AshcroftParameters:
    """Rates per day and the niche count (names as in Ashcroft et al. 2017)."""

    niches: int  # N
    beta_host: float  # division rate of a host HSC in a niche
    beta_graft: float  # ... of a graft HSC
    eta: float  # egress (detachment) rate from a niche
    kappa: float  # lodging rate of a blood HSC into a fully free marrow
    delta: float  # death rate in the blood


@dataclass
class Trajectory:
    """The outcome of one run: who took over, when, and the first passages."""

    fixed: bool  # the graft took over (no host cell left in BM or PB)
    extinct: bool  # the graft was lost (no graft cell left)
    end_day: float
    events: int
    first_passage: dict[float, float]  # threshold -> first grid day with BM chimerism >= threshold


def burn_in(p: AshcroftParameters, days: float, rng: np.random.Generator) -> tuple[int, int]:
    """Host cells only, from a full marrow and an empty blood, for ``days``: (marrow, blood) counts.

    A full marrow is not this model's steady state: egress and lodging
    balance with a fraction of the niches free (lodging needs free niches).
    """
    x, y = p.niches, 0
    n = float(p.niches)
    t = 0.0
    while True:
        free = 1.0 - x / n
        r_div, r_egr, r_lod, r_die = p.beta_host * x, p.eta * x, p.kappa * free * y, p.delta * y
        total = r_div + r_egr + r_lod + r_die
        t += rng.standard_exponential() / total
        if t > days:
            return x, y
        u = rng.random() * total
        if u < r_div:
            y += 1
        elif u < r_div + r_egr:
            x -= 1
            y += 1
        elif u < r_div + r_egr + r_lod:
            x += 1
            y -= 1
        else:
            y -= 1


def simulate(p: AshcroftParameters, x_host: int, x_graft: int, thresholds: tuple[float, ...],
             grid_days: float, max_days: float, rng: np.random.Generator, y_host: int = 0) -> Trajectory:
    """One exact run from ``x_host`` host and ``x_graft`` graft cells in the marrow and ``y_host``
    host cells in the blood (see :func:`burn_in`).

    Runs until one type has no cell left anywhere, or ``max_days``.
    """
    xh, xg, yh, yg = int(x_host), int(x_graft), int(y_host), 0
    n = float(p.niches)
    bh, bg, eta, kappa, delta = p.beta_host, p.beta_graft, p.eta, p.kappa, p.delta
    thresholds = tuple(sorted(thresholds))
    passage: dict[float, float] = {}
    pending = list(thresholds)
    t = 0.0
    next_obs = 0.0
    events = 0
    block = 1 << 16
    expo = rng.standard_exponential(block)
    unif = rng.random(block)
    k = 0
    while True:
        # observe the state at every grid time up to the next event
        if xg + yg == 0 or xh + yh == 0:
            break
        free = 1.0 - (xh + xg) / n
        lodge = kappa * free if free > 0.0 else 0.0
        r_div_h = bh * xh
        r_div_g = bg * xg
        r_egr_h = eta * xh
        r_egr_g = eta * xg
        r_lod_h = lodge * yh
        r_lod_g = lodge * yg
        r_die_h = delta * yh
        r_die_g = delta * yg
        total = r_div_h + r_div_g + r_egr_h + r_egr_g + r_lod_h + r_lod_g + r_die_h + r_die_g
        if k == block:
            expo = rng.standard_exponential(block)
            unif = rng.random(block)
            k = 0
        t_next = t + expo[k] / total
        u = unif[k] * total
        k += 1
        while pending and next_obs <= t_next and next_obs <= max_days:
            chim = xg / (xh + xg) if xh + xg else 0.0
            while pending and chim >= pending[0]:
                passage[pending.pop(0)] = next_obs
            next_obs += grid_days
        if t_next > max_days:
            t = max_days
            break
        t = t_next
        events += 1
        # which reaction (cumulative sums, in the table's order)
        if u < r_div_h:
            yh += 1
        elif u < r_div_h + r_div_g:
            yg += 1
        elif u < r_div_h + r_div_g + r_egr_h:
            xh -= 1
            yh += 1
        elif u < r_div_h + r_div_g + r_egr_h + r_egr_g:
            xg -= 1
            yg += 1
        else:
            u -= r_div_h + r_div_g + r_egr_h + r_egr_g
            if u < r_lod_h:
                yh -= 1
                xh += 1
            elif u < r_lod_h + r_lod_g:
                yg -= 1
                xg += 1
            elif u < r_lod_h + r_lod_g + r_die_h:
                yh -= 1
            else:
                yg -= 1
    fixed = xh + yh == 0
    if fixed:  # all graft from now on: the thresholds left are reached at the next observation
        for threshold in pending:
            passage[threshold] = next_obs
    return Trajectory(fixed=fixed, extinct=xg + yg == 0, end_day=t, events=events, first_passage=passage)


def moran_fixation(r: float, k: int, n: int) -> float:
    """Fixation probability of k mutants of relative fitness r among n in a Moran process:
    (1 - r^-k) / (1 - r^-n) (neutral: k / n)."""
    if abs(r - 1.0) < 1e-12:
        return k / n
    return (1.0 - r ** (-k)) / (1.0 - r ** (-n))
