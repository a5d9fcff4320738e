"""Case ``setup``: conditioning, stochastic rounding of the dose, and the product's VCN.

- Conditioning kills each host cell with its type's probability: the number
  killed of each type is Binomial(n, p) (exact binomial test per type; a
  type with p = 0 must lose none, exactly).
- The infused dose becomes lattice cells by stochastic rounding: floor(x) or
  floor(x) + 1, the latter with probability frac(x), so the mean is x
  (binomial test on the fraction rounded up, over seeds; values outside
  {floor, floor + 1} fail exactly).
- Transduction: each graft cell carries the vector with probability
  ``transduction`` (binomial test), and the VCN of a transduced cell follows
  the zero-truncated Poisson of the config's mean (chi-square, tail pooled
  to expected counts >= 5).

Bonferroni over all the statistical comparisons of the case.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from engraft.verification import core, stats
from engraft.verification.core import Case, Job

KILL = {"HSC": 0.7, "MPP": 0.5, "GMP": 0.9, "MkP": 0.9, "EP": 0.2, "CLP": 0.0}
TIERS = {"quick": {"lattice": 128, "rounding_seeds": 300, "product": 20000},
         "full": {"lattice": 256, "rounding_seeds": 3000, "product": 200000}}
FAULTS = {
    "kill_fraction": "conditioning kills 1.08 times the configured fraction of each type",
    "rounding": "the dose is rounded half up (floor(x + 1/2)) instead of stochastically",
    "vcn_mean": "the product's VCN follows a zero-truncated Poisson of mean 1.6 instead of 1.5",
}


def conditioning(params: dict, seeds: tuple[int, ...], fault: str | None) -> dict:
    from engraft.lattice import EMPTY
    from engraft.simulation import Simulation

    kill = dict(KILL)
    if fault == "kill_fraction":
        kill = {k: min(1.0, 1.08 * v) for k, v in kill.items()}
    exp = core.load(("configs", "tiny.yaml"), ["infusions=[]", f"lattice.size={params['lattice']}",
                                                "time.burn_in_days=100", f"conditioning.myeloablation={kill}"])
    sim = Simulation(exp, seed=seeds[0])
    sim.burn_in()
    n = len(exp.type_names)
    before = np.bincount(sim.state.ctype[sim.state.ctype != EMPTY], minlength=n)
    sim.condition()
    after = np.bincount(sim.state.ctype[sim.state.ctype != EMPTY], minlength=n)
    return {"types": list(exp.type_names), "before": before.tolist(), "after": after.tolist()}


def rounding(params: dict, seeds: tuple[int, ...], fault: str | None) -> dict:
    from engraft import scaling
    from engraft.scaling import expected_infused_lattice_cells
    from engraft.simulation import Simulation

    exp = core.load(("configs", "tiny.yaml"), ["conditioning=null"])
    mean = expected_infused_lattice_cells(exp, exp.infusions[0])["HSC"]
    original = scaling.stochastic_round  # draw_infusion's, for both engines
    if fault == "rounding":
        scaling.stochastic_round = lambda x, rng: int(math.floor(x + 0.5))
    try:
        counts = [Simulation(exp, seed=s).infuse(0)["HSC"] for s in seeds]
    finally:
        scaling.stochastic_round = original
    return {"mean": mean, "counts": counts}


def product(params: dict, seeds: tuple[int, ...], fault: str | None) -> dict:
    from engraft.simulation import Simulation, expected_infused_lattice_cells

    vcn_mean = 1.6 if fault == "vcn_mean" else 1.5
    # a product of GMPs only (no niche competition), large enough for the test
    base = ["conditioning=null", "infusions[0].composition={HSC: 0.0, GMP: 1.0}",
            f"infusions[0].vcn={{distribution: zero_truncated_poisson, mean: {vcn_mean}}}"]
    unit = core.load(("configs", "tiny.yaml"), [*base, "infusions[0].dose_per_kg=1"])
    dose = params["cells"] / expected_infused_lattice_cells(unit, unit.infusions[0])["GMP"]
    exp = core.load(("configs", "tiny.yaml"), [*base, f"infusions[0].dose_per_kg={dose:.6g}"])
    sim = Simulation(exp, seed=seeds[0])
    sim.infuse(0)
    vcn = sim.pool.vcn[: sim.pool.size]
    return {"n": int(vcn.size), "transduced": int((vcn > 0).sum()),
            "counts": np.bincount(vcn[vcn > 0], minlength=12).tolist()}


def ztp(mean: float, kmax: int) -> np.ndarray:
    """Zero-truncated Poisson probabilities of 1..kmax-1 and the tail (>= kmax) last."""
    k = np.arange(1, kmax)
    p = sps.poisson.pmf(k, mean) / (1 - math.exp(-mean))
    return np.append(p, 1 - p.sum())


class SetUp(Case):
    name = "setup"
    family = "setup"
    title = "Set-up: conditioning kill fractions, rounding of the dose, the product's VCN"
    compared = ("The conditioning of a burned-in marrow (configs/tiny.yaml on a larger lattice, kill "
                "probabilities " + ", ".join(f"{k} {v:g}" for k, v in KILL.items()) + "); the lattice HSCs of "
                "the tiny infusion over many seeds (stochastic rounding of its expected count); the transduced "
                "fraction and VCN distribution of a large infused product (transduction 0.5, zero-truncated "
                "Poisson VCN of mean 1.5).")
    theory = ("Killed ~ Binomial(n, p) per type; rounded count in {floor(x), floor(x) + 1} with "
              "P(floor(x) + 1) = frac(x); transduced ~ Binomial(n, 0.5); VCN ~ zero-truncated Poisson(1.5) "
              "(chi-square). Exact binomial tests and chi-square at alpha = 1e-3, Bonferroni over the case.")
    faults = FAULTS

    def jobs(self, tier, fault):
        t = TIERS[tier]
        s = core.seeds(self.name, t["rounding_seeds"], 1)
        per = 100
        jobs = [Job(f"{self.name}-conditioning", "engraft.verification.setup:conditioning",
                    {"lattice": t["lattice"]}, core.seeds(self.name, 1, 0), fault)]
        jobs += [Job(f"{self.name}-rounding-{i // per:04d}", "engraft.verification.setup:rounding", {},
                     s[i:i + per], fault) for i in range(0, len(s), per)]
        jobs.append(Job(f"{self.name}-product", "engraft.verification.setup:product", {"cells": t["product"]},
                        core.seeds(self.name, 1, 2), fault))
        return jobs

    def evaluate(self, tier, values, fault):
        cond, prod = values[0], values[-1]
        rnd = values[1:-1]
        comparisons, rows = [], []
        for name, b, a in zip(cond["types"], cond["before"], cond["after"], strict=True):
            p = KILL.get(name, 0.0)
            if b == 0:
                continue
            if p == 0.0:
                comparisons.append(stats.exact(f"conditioning: {name} with kill 0 keeps all {b}", a, b, 0.0))
            else:
                comparisons.append(stats.binomial(f"conditioning: {name} killed of {b} (p = {p:g})", b - a, b, p))
            rows.append([name, str(b), str(b - a), f"{(b - a) / b:.4f}", f"{p:g}"])
        mean = rnd[0]["mean"]
        counts = np.array([c for r in rnd for c in r["counts"]])
        lo = math.floor(mean)
        outside = int(np.sum((counts != lo) & (counts != lo + 1)))
        comparisons.append(stats.exact(f"rounding: counts outside {{{lo}, {lo + 1}}}", outside, 0.0, 0.0))
        comparisons.append(stats.binomial(f"rounding: fraction rounded up to {lo + 1} (x = {mean:.4f})",
                                          int(np.sum(counts == lo + 1)), counts.size, mean - lo))
        comparisons.append(stats.binomial("transduced fraction of the product", prod["transduced"], prod["n"], 0.5))
        obs = np.array(prod["counts"], dtype=float)[1:]
        probs = ztp(1.5, obs.size)  # the last category: VCN >= the largest counted
        comparisons.append(stats.chi2("VCN of transduced cells vs zero-truncated Poisson(1.5)", obs, probs))
        vcn_rows = [[str(k), str(int(o)), f"{probs[k - 1] * obs.sum():.1f}"] for k, o in enumerate(obs[:8], 1)]
        tables = [("Conditioning", ["type", "before", "killed", "fraction", "configured"], rows),
                  (f"Rounding of x = {mean:.4f} lattice HSCs over {counts.size} seeds",
                   ["value", "seeds"], [[str(v), str(int(np.sum(counts == v)))] for v in np.unique(counts)]),
                  (f"VCN of {int(obs.sum())} transduced cells (of {prod['n']})", ["VCN", "observed", "expected"],
                   vcn_rows)]
        plot = {"vcn_obs": obs.tolist(), "vcn_exp": (probs[: obs.size] * obs.sum()).tolist(),
                "kill": rows, "rounding": [[int(v), int(np.sum(counts == v))] for v in np.unique(counts)],
                "mean": mean}
        return self.result(tier, comparisons, fault, tables=tables, replicates=counts.size + 2, plot_data=plot)

    def figure(self, result, data, path):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        names = [r[0] for r in data["kill"]]
        axes[0].bar(names, [float(r[3]) for r in data["kill"]], color="C0", label="killed fraction")
        axes[0].scatter(names, [float(r[4]) for r in data["kill"]], color="k", zorder=3, label="configured")
        axes[0].set_title("conditioning")
        axes[0].legend(fontsize=7)
        vals = [v for v, _ in data["rounding"]]
        axes[1].bar([str(v) for v in vals], [n for _, n in data["rounding"]])
        axes[1].set_title(f"lattice HSCs infused (x = {data['mean']:.3f})")
        k = np.arange(1, len(data["vcn_obs"]) + 1)
        axes[2].bar(k, data["vcn_obs"], label="observed")
        axes[2].plot(k, data["vcn_exp"], "ko", label="zero-truncated Poisson(1.5)")
        axes[2].set_yscale("log")
        axes[2].set_xlabel("VCN")
        axes[2].set_title("VCN of transduced cells")
        axes[2].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
