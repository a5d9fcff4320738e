"""Rates per day -> per-step event probabilities (competing risks).

Both engines use this module and only this module to turn a config's rates
into what happens in one step, so the Numba kernel and the Mesa reference
cannot drift apart here.

A cell in a given *state class* has competing events with rates r_i (per
day). Over a step of length dt, with R = sum r_i, some event happens with
probability ``R dt`` (``time.event_probability: rate_dt``, the default) or
``1 - exp(-R dt)`` (``first_event``), and it is event i with probability
r_i / R (docs/model.md, section 4). A cell has at most one event per step,
so with ``R dt`` a cell that keeps acting does so at exactly its rates; with
``1 - exp(-R dt)`` every event is in effect moved to the end of its step and
such a cell acts at ``(1 - exp(-R dt)) / dt``, slower by up to ``R dt / 2``.

A state class is (cell type, HSC state, transgene state):

- HSC state: ``HSC_RESTING`` (in a niche, resting), ``HSC_ACTIVE`` (in a niche,
  cycling) or ``HSC_OFF_NICHE`` (cycling, losing niche affinity). Progenitors are
  always class ``HSC_RESTING`` here; the value is unused for them.
- transgene state: ``TG_NONE`` (no vector), ``TG_EXPRESSING``, ``TG_SILENCED``.

The numbering of states and events is :mod:`engraft.kernel.layout`'s (the
kernels index these tables with it). The cell flag bits there
(``FLAG_QUIESCENT``, ``FLAG_SILENCED``) are marks on a site, not state classes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engraft.config.schema import Experiment

from engraft.kernel.layout import E_ACTIVATE as ACTIVATE
from engraft.kernel.layout import E_DIE as DIE
from engraft.kernel.layout import E_DIVIDE as DIVIDE
from engraft.kernel.layout import E_EGRESS as EGRESS
from engraft.kernel.layout import E_SILENCE as SILENCE
from engraft.kernel.layout import (  # noqa: F401 (the state and event numbering, re-exported)
    EVENT_NAMES,
    HSC_ACTIVE,
    HSC_OFF_NICHE,
    HSC_RESTING,
    N_EVENTS,
    N_HSC_STATES,
    N_TG_STATES,
    TG_EXPRESSING,
    TG_NONE,
    TG_SILENCED,
)


def rate_table(exp: Experiment) -> np.ndarray:
    """Rates per day, shape (n_types, N_HSC_STATES, N_TG_STATES, N_EVENTS)."""
    names = exp.type_names
    fit = exp.transgene.fitness
    table = np.zeros((len(names), N_HSC_STATES, N_TG_STATES, N_EVENTS))
    for t, name in enumerate(names):
        ct = exp.cell_types[name]
        for h in range(N_HSC_STATES):
            if ct.kind != "hsc" and h != HSC_RESTING:
                continue
            for g in range(N_TG_STATES):
                div_f = fit.division_factor if g != TG_NONE else 1.0
                die_f = fit.apoptosis_factor if g != TG_NONE else 1.0
                r = table[t, h, g]
                r[DIE] = ct.apoptosis_rate * die_f
                if g == TG_EXPRESSING:
                    r[SILENCE] = exp.transgene.silencing_rate
                if ct.kind == "hsc":
                    r[EGRESS] = exp.circulation.egress_rate
                    if h == HSC_RESTING:
                        r[ACTIVATE] = ct.activation_rate
                    else:
                        r[DIVIDE] = ct.division_rate * div_f
                else:
                    r[DIVIDE] = ct.division_rate * div_f
    return table


def event_probabilities(rates: np.ndarray, dt: float, rule: str = "rate_dt"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Competing-risks probabilities for one step.

    Parameters
    ----------
    rates : array (..., n_events)
        Rates per day of each competing event.
    dt : float
        Step length in days.
    rule : ``"rate_dt"`` or ``"first_event"`` (``time.event_probability``).

    Returns
    -------
    p_any : array (...)
        Probability that some event happens in the step: ``R dt`` (rate_dt;
        :func:`check_time_step` keeps it at most ``time.max_event_probability``)
        or ``1 - exp(-R dt)`` (first_event).
    cumulative : array (..., n_events)
        Cumulative probability of each event given that one happens
        (``cumsum(r_i) / R``; the last entry is 1, or 0 where R = 0).
    """
    rates = np.asarray(rates, dtype=np.float64)
    total = rates.sum(axis=-1)
    if rule == "rate_dt":
        p_any = np.minimum(total * dt, 1.0)
    elif rule == "first_event":
        p_any = -np.expm1(-total * dt)
    else:
        raise ValueError(f"time.event_probability: must be 'rate_dt' or 'first_event', got {rule!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        cumulative = np.where(total[..., None] > 0, np.cumsum(rates, axis=-1) / total[..., None], 0.0)
    cumulative[..., -1] = np.where(total > 0, 1.0, 0.0)
    return p_any, cumulative


def step_tables(exp: Experiment) -> tuple[np.ndarray, np.ndarray]:
    """:func:`event_probabilities` of :func:`rate_table` at the config's dt."""
    return event_probabilities(rate_table(exp), exp.time.dt_days, exp.time.event_probability)


def max_total_rates(exp: Experiment) -> dict[str, float]:
    """Largest total event rate (per day) over the state classes of each type."""
    table = rate_table(exp)
    return {name: float(table[t].sum(axis=-1).max()) for t, name in enumerate(exp.type_names)}


def check_time_step(exp: Experiment) -> None:
    """Refuse a dt too coarse for the config's rates (:class:`engraft.config.schema.ScopedError`).

    Competing risks are exact per step only while R dt stays small: the
    error names the worst type and the largest dt that fits.
    """
    from engraft.config.schema import ScopedError

    t = exp.time
    for name, rate in max_total_rates(exp).items():
        if rate * t.dt_days > t.max_event_probability:
            largest = t.max_event_probability / rate
            raise ScopedError(
                "time.dt_days", t.dt_days,
                f"too coarse for cell type {name} (total rate {rate:g}/day x dt exceeds "
                f"time.max_event_probability={t.max_event_probability:g}); largest dt that fits is "
                f"{math.floor(largest * 1e4) / 1e4:g}",
            )


def blood_outcome_probabilities(lodging_rate: float, death_rate: float, dt: float
                                ) -> tuple[float, float]:
    """Exact outcome of a step in the blood: (P(lodge), P(die)).

    A circulating cell lodges at rate ``lodging_rate`` (already multiplied by
    the free-site fraction) and dies at ``death_rate``; both are exponential
    and compete, so over dt it lodges with probability
    ``a / (a + b) * (1 - exp(-(a + b) dt))`` and likewise dies; otherwise it is
    still circulating.
    """
    total = lodging_rate + death_rate
    if total <= 0.0:
        return 0.0, 0.0
    happened = -math.expm1(-total * dt)
    return lodging_rate / total * happened, death_rate / total * happened


def affinity_decay_per_step(affinity_loss_rate: float, dt: float) -> float:
    """Factor by which an off-niche HSC's niche affinity falls in one step."""
    return math.exp(-affinity_loss_rate * dt)
