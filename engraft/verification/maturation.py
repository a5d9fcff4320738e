"""Case ``maturation``: a pulse through the maturation transit chain against its gamma density.

A cohort of cells leaving the lattice passes ``stages`` transit compartments,
each left at rate stages / MTT (Friberg et al., J Clin Oncol 2002), then an
optional storage pool left at rate 1 / reserve, before it reaches the blood
(docs/model.md; :mod:`engraft.tally`). Its arrival time in blood is then
Gamma(shape = stages, scale = MTT / stages), convolved with an Exponential
of mean ``reserve_days`` where there is a storage pool. The case drives
engraft's tally (its exact step matrices) with a unit pulse of inflow in the
first step, for every lineage of the human hemophilia A config that has a
maturation chain, with the blood lifespan made so long that the blood holds
every arrival; the cumulative arrivals must follow the theoretical
distribution function to within 0.01 of the pulse at every step, and their
mean and variance must match MTT + reserve and MTT^2 / stages + reserve^2 to
1 %. Deterministic: the power is the tolerance.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate
from scipy import stats as sps

from engraft.verification import core, stats
from engraft.verification.core import Case, Job

CONFIG = ("configs", "hemophilia_a_lentiviral.yaml")
DT = 0.01
TOLERANCE = 0.01
FAULTS = {"transit_stages": "the tally's chains have one transit stage more than the config says"}


def arrival_cdf(t: np.ndarray, stages: int, mtt: float, reserve: float) -> np.ndarray:
    """P(arrival in blood <= t) for Gamma(stages, mtt / stages) plus Exponential(mean reserve)."""
    g = sps.gamma(a=stages, scale=mtt / stages)
    if reserve <= 0:
        return g.cdf(t)
    out = []
    for x in t:
        val, _ = integrate.quad(lambda s, x=x: g.pdf(s) * -math.expm1(-(x - s) / reserve), 0.0, x, limit=200)
        out.append(val)
    return np.array(out)


def pulse(params: dict, seeds: tuple[int, ...], fault: str | None) -> dict:
    """Cumulative arrivals in blood of a unit pulse, per lineage with a maturation chain."""
    from engraft import tally
    from engraft.tally import TallyTables

    exp = core.load(CONFIG)
    out = {}
    for lin, m in exp.maturation.items():
        over = [f"time.dt_days={DT}", f"mature.{lin}.lifespan_days=1e7"]
        if fault == "transit_stages":
            over.append(f"maturation.{lin}.stages={m.stages + 1}")
        e = core.load(CONFIG, over)
        tt = TallyTables.from_experiment(e)
        li = e.lineage_names.index(lin)
        horizon = 4 * (m.mean_transit_days + m.reserve_days) + 10 * m.reserve_days + 5
        n_steps = int(round(horizon / DT))
        inflow = np.zeros((n_steps, len(e.lineage_names), tally.N_QUANTITIES))
        inflow[0, li, tally.CELLS] = 1.0 / DT  # one cell, spread over the first step
        mature = np.zeros((len(e.lineage_names), tally.N_QUANTITIES))
        chain = tt.empty_chain()
        conc = np.zeros(1)
        blood = np.empty(n_steps)
        for s in range(n_steps):
            tally.advance(mature, chain, conc, inflow[s:s + 1], tt.phi, tt.gamma, tt.n_chain, tt.n_blood, tt.ek)
            blood[s] = mature[li, tally.CELLS]
        out[lin] = {"stages": m.stages, "mtt": m.mean_transit_days, "reserve": m.reserve_days,
                    "blood": blood[::10].tolist(), "every": 10 * DT}
    return out


class Maturation(Case):
    name = "maturation"
    family = "maturation"
    title = "Maturation delay: a pulse through the transit chain against its gamma density"
    compared = ("engraft's tally driven by a unit pulse of lattice output, for each lineage with a maturation "
                "chain in the human hemophilia A config (blood lifespan made very long, so that the blood holds "
                "every arrival), dt = 0.01 d.")
    theory = ("Arrival in blood ~ Gamma(stages, MTT / stages) (+ Exponential(reserve) where there is a storage "
              "pool): the cumulative arrivals must follow its distribution function within 0.01 of the pulse at "
              "every step, and their mean and variance match MTT + reserve and MTT^2/stages + reserve^2 within "
              "1 % (deterministic: the power is the tolerance).")
    faults = FAULTS

    def jobs(self, tier, fault):
        return [Job(f"{self.name}-pulse", "engraft.verification.maturation:pulse", {}, (), fault)]

    def evaluate(self, tier, values, fault):
        comparisons, rows, plot = [], [], {"lineages": {}}
        exp = core.load(CONFIG)
        for lin, v in values[0].items():
            m = exp.maturation[lin]  # the theory: the config as written (the fault changes the tally only)
            blood = np.array(v["blood"])
            t = (np.arange(blood.size) * 10 + 1) * DT  # end of each recorded step (steps 0, 10, 20, ...)
            expected = arrival_cdf(t - DT / 2, m.stages, m.mean_transit_days, m.reserve_days)
            worst = float(np.max(np.abs(blood - expected)))
            comparisons.append(stats.exact(f"{lin}: largest |arrivals - distribution function| (fraction of "
                                           "the pulse)", worst, 0.0, TOLERANCE))
            # moments of the arrival time from the cumulative arrivals
            step = v["every"]
            dens = np.diff(np.concatenate([[0.0], blood])) / blood[-1]
            mid = t - step / 2
            mean = float(np.sum(dens * mid))
            var = float(np.sum(dens * mid**2) - mean**2)
            mean_th = m.mean_transit_days + m.reserve_days
            var_th = m.mean_transit_days**2 / m.stages + m.reserve_days**2
            comparisons.append(stats.exact(f"{lin}: mean arrival time vs MTT + reserve", mean, mean_th, TOLERANCE))
            comparisons.append(stats.exact(f"{lin}: variance of arrival time vs MTT^2/stages + reserve^2", var,
                                           var_th, TOLERANCE))
            rows.append([lin, str(m.stages), f"{m.mean_transit_days:g}", f"{m.reserve_days:g}",
                         f"{mean:.4f}", f"{mean_th:.4f}", f"{var:.4f}", f"{var_th:.4f}", f"{worst:.2e}"])
            plot["lineages"][lin] = {"t": t.tolist(), "blood": blood.tolist(), "expected": expected.tolist()}
        tables = [("Arrival in blood of a unit pulse", ["lineage", "stages", "MTT (d)", "reserve (d)", "mean",
                                                        "theory", "variance", "theory", "largest CDF error"],
                   rows)]
        return self.result(tier, comparisons, fault, tables=tables, replicates=len(rows), plot_data=plot)

    def figure(self, result, data, path):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for lin, d in data["lineages"].items():
            t, b, e = np.array(d["t"]), np.array(d["blood"]), np.array(d["expected"])
            axes[0].plot(t, b, lw=3, alpha=0.5, label=f"{lin} (engraft)")
            axes[0].plot(t, e, "k--", lw=1)
            dens = np.diff(np.concatenate([[0.0], b])) / (t[1] - t[0])
            dens_e = np.diff(np.concatenate([[0.0], e])) / (t[1] - t[0])
            axes[1].plot(t, dens, lw=3, alpha=0.5, label=lin)
            axes[1].plot(t, dens_e, "k--", lw=1)
        axes[0].set_ylabel("cumulative arrivals in blood (fraction of the pulse)")
        axes[1].set_ylabel("arrival density (per day)")
        for ax in axes:
            ax.set_xlabel("days after the pulse")
            ax.legend(fontsize=8)
        axes[0].set_title("dashed: gamma (+ reserve) distribution function")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
