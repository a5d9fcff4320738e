"""The factor-output tally: maturation transit, mature compartments, plasma kinetics.

Mature cells are not agents. Each lineage compartment holds, in whole-body
cells, five quantities that all turn over with the lineage's mean lifespan
tau (exponential loss): cells, graft cells, transduced cells, vector copies,
and *expression units* (vector copies of non-silenced cells after the VCN
response, see :func:`expression_weights`).

Between the lattice and the blood a lineage may pass through post-mitotic
maturation (``maturation`` in the config): a chain of n transit compartments
left at rate n / MTT each (Friberg et al., J Clin Oncol 2002), then an
optional storage pool left at rate 1 / reserve. Its lifespan in blood is one
exponential compartment, or an Erlang chain of ``blood_stages`` compartments
(senescence); the lineage's blood total (``mature``) is the sum of its blood
compartments. Every quantity flows through the same chain. With the plasma level C of a secreted transgene
(``dC/dt = s E(t) / V - k C``, k = ln2 / t_half, E the expression units in
blood, s the IU per day per unit), the whole tally is a linear system
``dz/dt = A z + b I`` per lineage with I the lineage's inflow from the
lattice. Within a step I is constant (the step's exits spread evenly over
it), so one step is exactly::

    z(t + dt) = Phi z(t) + Gamma I,   Phi = exp(A dt),   Gamma = int_0^dt exp(A s) b ds

:func:`step_matrices` computes Phi and Gamma once per run (a matrix
exponential of the augmented matrix [[A, b], [0, 0]]); :func:`advance`
applies them step by step, so records are exact whatever their interval.
Without maturation a lineage is one compartment and this is the closed form
``M(t + dt) = M(t) exp(-dt / tau) + I tau (1 - exp(-dt / tau))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from engraft.errors import NumericalFailure
from engraft.kernel import layout
from engraft.kernel.jit import JIT

if TYPE_CHECKING:
    from engraft.config.schema import Experiment

# quantities per compartment: the numbering of the kernels' exit counts
CELLS, GRAFT_CELLS, TRANSDUCED_CELLS = layout.X_CELLS, layout.X_GRAFT, layout.X_TRANSDUCED
VECTOR_COPIES, EXPRESSION_UNITS = layout.X_VCN, layout.X_EXPRESSION
N_QUANTITIES = layout.N_EXIT_QUANTITIES

SEVERITY_CLASSES = ("severe", "moderate", "mild", "normal")

#: days at the end of burn-in whose mean exit flux sets the mature compartments
EQUILIBRATION_WINDOW_DAYS = 100.0
#: the production feedback reads a blood count of at least this share of its baseline (a finite factor)
FEEDBACK_FLOOR = 1e-6


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


def expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring of a Taylor series.

    For the small, well-conditioned matrices of the tally (a few dozen rows,
    rates x dt of order one) the series to 30 terms after scaling the norm
    below 1/2 is exact to rounding.
    """
    a = np.asarray(a, dtype=np.float64)
    norm = float(np.abs(a).sum(axis=1).max()) if a.size else 0.0
    squarings = max(0, math.ceil(math.log2(norm)) + 1) if norm > 0.5 else 0
    scaled = a / 2.0**squarings
    out = np.eye(a.shape[0])
    term = np.eye(a.shape[0])
    for j in range(1, 31):
        term = term @ scaled / j
        out = out + term
    for _ in range(squarings):
        out = out @ out
    return out


def transit_times(stages: int, mean_transit_days: float, reserve_days: float) -> np.ndarray:
    """Mean residence (days) in each compartment before the blood: the chain's stages, then the reserve."""
    times = [mean_transit_days / stages] * stages if stages else []
    if reserve_days > 0:
        times.append(reserve_days)
    return np.array(times, dtype=np.float64)


def lineage_residences(before_blood: np.ndarray, lifespan_days: float, blood_stages: int) -> np.ndarray:
    """Mean residence of every compartment of a lineage's chain: maturation, reserve, then blood.

    The blood lifespan is one exponential compartment (``blood_stages`` 1:
    random removal) or an Erlang chain of ``blood_stages`` compartments of
    ``lifespan_days / blood_stages`` each (senescence: a lifespan with mean
    ``lifespan_days`` and variance ``lifespan_days**2 / blood_stages``).
    """
    return np.concatenate([before_blood, np.full(blood_stages, lifespan_days / blood_stages)])


def lineage_matrix(residence: np.ndarray, n_blood: int, secretion_per_dl: float, k: float) -> np.ndarray:
    """The rate matrix A of one lineage: [chain compartments..., plasma share].

    Compartment j is left at 1 / residence[j] into compartment j + 1; the
    last one at 1 / residence[-1] (death in blood). The last ``n_blood``
    compartments are the blood; the last row is the lineage's share of the
    plasma level, fed at ``secretion_per_dl`` per expression unit in blood and
    eliminated at k (per day).
    """
    m = residence.size
    a = np.zeros((m + 1, m + 1))
    for j in range(m):
        a[j, j] = -1.0 / residence[j]
        if j > 0:
            a[j, j - 1] = 1.0 / residence[j - 1]
    a[m, m - n_blood: m] = secretion_per_dl
    a[m, m] = -k
    return a


def step_matrices(residences: list[np.ndarray], n_blood: np.ndarray, secretion_per_dl: np.ndarray, k: float,
                  dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Phi and Gamma of every lineage for one step of dt days (see the module docstring).

    ``residences[l]`` lists the mean residence of each compartment of lineage
    l's chain (:func:`lineage_residences`), the last ``n_blood[l]`` of them in
    blood. Returns ``phi`` (n_lineages, M, M) and ``gamma`` (n_lineages, M),
    with M = the longest chain + 1: lineage l's state is
    ``[chain[l, :m], plasma share]`` in rows ``0..m``; unused rows are zero.
    """
    n_lin = len(residences)
    size = max((r.size for r in residences), default=0) + 1
    phi = np.zeros((n_lin, size, size))
    gamma = np.zeros((n_lin, size))
    for lin, res in enumerate(residences):
        a = lineage_matrix(res, int(n_blood[lin]), float(secretion_per_dl[lin]), k)
        m = a.shape[0]
        aug = np.zeros((m + 1, m + 1))
        aug[:m, :m] = a
        aug[0, m] = 1.0  # inflow from the lattice enters the first compartment
        e = expm(aug * dt)
        phi[lin, :m, :m] = e[:m, :m]
        gamma[lin, :m] = e[:m, m]
    return phi, gamma


@njit(**JIT)
def advance(mature, chain, conc, inflow, phi, gamma, n_chain, n_blood, ek):
    """Advance every lineage's chain, its blood total and the plasma level over consecutive steps, exactly.

    Parameters
    ----------
    mature : float64 (n_lineages, N_QUANTITIES), whole-body cells in blood (the
        sum of the chain's blood compartments); updated in place.
    chain : float64 (n_lineages, max_chain, N_QUANTITIES), the contents of each
        compartment (maturation, storage, blood); updated in place.
    conc : float64[1], transgene plasma level in IU/dL; updated in place.
    inflow : float64 (n_steps, n_lineages, N_QUANTITIES), per day, each step.
    phi, gamma : from :func:`step_matrices`.
    n_chain, n_blood : int64 (n_lineages,), compartments in each chain and how many are blood.
    ek : exp(-k dt), the plasma level's decay over one step.
    """
    none = np.zeros(inflow.shape[1])
    advance_with_feedback(mature, chain, conc, inflow, phi, gamma, n_chain, n_blood, ek, none, none)


@njit(**JIT)
def advance_with_feedback(mature, chain, conc, inflow, phi, gamma, n_chain, n_blood, ek, baseline, exponent):
    """:func:`advance`, each lineage's inflow of a step multiplied by ``(baseline / M) ** exponent``.

    ``M`` is the lineage's cells in blood at the step's start, ``baseline``
    its value at the end of burn-in (float64 per lineage). The feedback of
    Friberg et al. (J Clin Oncol 2002) on production, here on the off-lattice
    amplification: the cells made per lattice exit, with their transgene
    quantities, rise while the count is low. A lineage with ``exponent`` 0 or
    ``baseline`` 0 has none (its inflow is used as it is). ``M`` is floored at
    :data:`FEEDBACK_FLOOR` of the baseline, so the factor stays finite.
    """
    n_steps, n_lin, n_q = inflow.shape
    size = phi.shape[1]
    x = np.empty(size)
    for s in range(n_steps):
        c = conc[0] * ek
        for lin in range(n_lin):
            m = n_chain[lin]
            factor = 1.0
            if exponent[lin] > 0.0 and baseline[lin] > 0.0:
                factor = (baseline[lin] / max(mature[lin, CELLS], FEEDBACK_FLOOR * baseline[lin])) ** exponent[lin]
            for q in range(n_q):
                for j in range(m):
                    x[j] = chain[lin, j, q]
                b = inflow[s, lin, q]
                if factor != 1.0:
                    b *= factor
                total = 0.0
                for i in range(m):  # the chain is lower triangular: row i reads 0..i
                    v = gamma[lin, i] * b
                    for j in range(i + 1):
                        v += phi[lin, i, j] * x[j]
                    chain[lin, i, q] = v
                    if i >= m - n_blood[lin]:
                        total += v
                mature[lin, q] = total
                if q == EXPRESSION_UNITS:
                    v = gamma[lin, m] * b
                    for j in range(m):
                        v += phi[lin, m, j] * x[j]
                    c += v
        conc[0] = c


def steady_state(inflow_per_day: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Compartment contents at steady state for a constant inflow: I tau."""
    return inflow_per_day * tau[:, None]


def chain_steady_state(inflow_per_day: np.ndarray, residences: list[np.ndarray]) -> np.ndarray:
    """Every chain compartment at steady state for a constant inflow: I x its residence time.

    Returns (n_lineages, max_chain, N_QUANTITIES), zero beyond each lineage's chain.
    """
    size = max((r.size for r in residences), default=0)
    out = np.zeros((len(residences), size, inflow_per_day.shape[1]))
    for lin, res in enumerate(residences):
        out[lin, : res.size] = res[:, None] * inflow_per_day[lin][None, :]
    return out


def plasma_steady_state(production_iu_per_day: float, half_life_days: float, volume_dl: float) -> float:
    """P / (V k): the level that constant production settles at (IU/dL)."""
    return production_iu_per_day / (volume_dl * math.log(2) / half_life_days)


# ----------------------------------------------------------------------------------
# one experiment's tally
# ----------------------------------------------------------------------------------
@dataclass
class TallyTables:
    """Maps per-type exit counts to whole-body lineage inflow; the tally's step matrices.

    One experiment's tally, built once per run; both engines feed it their exit counts.
    """

    exit_to_lineage: np.ndarray  # (n_types, n_lineages): body cells per exit
    tau: np.ndarray
    secretion: np.ndarray  # IU/day per expression unit, per lineage
    k: float
    volume_dl: float
    residences: list  # per lineage: mean days in each chain compartment (maturation, storage, blood)
    n_blood: np.ndarray  # per lineage: how many of them are in blood
    phi: np.ndarray
    gamma: np.ndarray
    ek: float
    #: per lineage: the exponent of its production feedback (maturation.<lineage>.feedback_exponent; 0: none)
    feedback: np.ndarray | None = None

    @classmethod
    def from_experiment(cls, exp: Experiment) -> TallyTables:
        from engraft import scaling  # (here, not at the top: the tally's numerics need no config)

        sc = scaling.scales(exp)  # looked up at call time: the resolution case's fault replaces it
        lineages = exp.lineage_names
        exit_to_lineage = np.zeros((len(exp.type_names), len(lineages)))
        for t, name in enumerate(exp.type_names):
            ct = exp.cell_types[name]
            # a lattice with no site of this type's kind (every site a niche) never holds one: it
            # adds nothing, rather than 0 exits x an infinite scale = NaN
            if ct.kind == "progenitor" and ct.lineage is not None and math.isfinite(sc[name]):
                exit_to_lineage[t, lineages.index(ct.lineage)] = ct.amplification * sc[name]
        tg = exp.transgene
        secretion = np.array([tg.expression_per_vcn / 1e9 if (tg.mode == "secreted" and lin in tg.lineages)
                              else 0.0 for lin in lineages])
        tau = np.array([exp.mature[lin].lifespan_days for lin in lineages])
        k = math.log(2) / exp.pk.half_life_days
        volume_dl = exp.pk.volume_of_distribution_ml_per_kg * exp.patient.weight_kg / 100.0
        residences = []
        n_blood = np.ones(len(lineages), dtype=np.int64)
        feedback = np.array([exp.maturation[lin].feedback_exponent if lin in exp.maturation else 0.0
                             for lin in lineages])
        for i, lin in enumerate(lineages):
            m = exp.maturation.get(lin)
            before = (transit_times(m.stages, m.mean_transit_days, m.reserve_days)
                      if m is not None else np.zeros(0))
            n_blood[i] = 1 if m is None else m.blood_stages
            residences.append(lineage_residences(before, float(tau[i]), int(n_blood[i])))
        dt = exp.time.dt_days
        phi, gamma = step_matrices(residences, n_blood, secretion / volume_dl, k, dt)
        return cls(
            exit_to_lineage=exit_to_lineage, tau=tau, secretion=secretion, k=k, volume_dl=volume_dl,
            residences=residences, n_blood=n_blood, phi=phi, gamma=gamma, ek=math.exp(-k * dt),
            feedback=feedback,
        )

    @property
    def n_chain(self) -> np.ndarray:
        return np.array([r.size for r in self.residences], dtype=np.int64)

    def empty_chain(self) -> np.ndarray:
        """Chain compartments (n_lineages, max_chain, quantities), all zero."""
        return np.zeros((len(self.residences), int(self.n_chain.max(initial=0)), N_QUANTITIES))

    def equilibrium(self, burn_in_exits: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Mature compartments (blood totals) and chain compartments at the steady state of the mean exit flux over the
        last EQUILIBRATION_WINDOW_DAYS of burn-in (both engines end burn-in with this)."""
        n = burn_in_exits.shape[0]
        window = max(1, min(n, int(round(EQUILIBRATION_WINDOW_DAYS / dt))))
        mean_inflow = self.inflow(burn_in_exits[-window:], dt).mean(axis=0)
        return (steady_state(mean_inflow, self.tau),
                chain_steady_state(mean_inflow, self.residences))

    def inflow(self, exits: np.ndarray, dt: float) -> np.ndarray:
        """(steps, types, q) exit counts -> (steps, lineages, q) body cells per day."""
        return np.einsum("stq,tl->slq", exits, self.exit_to_lineage) / dt

    def advance(self, mature: np.ndarray, chain: np.ndarray, conc: np.ndarray, exits: np.ndarray,
                dt: float, baseline: np.ndarray | None = None) -> None:
        """Advance the tally (in place) over the steps whose exit counts are ``exits``.

        ``baseline``: the blood compartments at the end of burn-in (the engine's
        ``baseline_mature``), against which a lineage with a production feedback
        reads its count (:func:`advance_with_feedback`); None (burn-in) or no
        feedback in the experiment: none.
        """
        # (the module's compiled advance: a method's name is not in scope in its body)
        inflow = self.inflow(exits, dt)
        if baseline is not None and self.feedback is not None and (self.feedback > 0).any():
            advance_with_feedback(mature, chain, conc, inflow, self.phi, self.gamma, self.n_chain, self.n_blood,
                                  self.ek, np.ascontiguousarray(baseline[:, CELLS]), self.feedback)
        else:
            advance(mature, chain, conc, inflow, self.phi, self.gamma, self.n_chain, self.n_blood, self.ek)
