"""Case ``fixation``: takeover by a fitter graft against the Moran process and an independent model.

HSC-only marrow, ``pool`` placement (every daughter enters the blood, as in
two-compartment models), a full marrow of N niches and k graft cells whose
division rate is f times the host's. Compared: the probability that the
graft takes over, and the first days at which its share of the marrow HSCs
reaches 1e-3, 1e-2, 1e-1 and 1, given takeover.

References:

- The Moran fixation probability (1 - r^-k) / (1 - r^-N). In the pool
  model a division's daughter lodges with probability L (the chance that a
  blood cell finds a free niche before it dies) and an egress is a loss with
  probability 1 - L; the host is at balance (beta_h L = eta (1 - L)), so the
  embedded birth-death chain of the graft count has births and deaths in the
  ratio r = beta_g / beta_h. This is an approximation (a quasi-steady
  blood, a constant free-niche fraction); its error is of order 1/N and of
  the free-niche fraction's fluctuations.
- The Ashcroft-Manz-Bonhoeffer model simulated exactly by
  :mod:`engraft.verification.gillespie`, with the mapping in
  :func:`ashcroft_parameters`.
"""

from __future__ import annotations

import math

import numpy as np

from engraft.verification import core, stats
from engraft.verification.core import Case, CaseResult, chunked, flatten

THRESHOLDS = (1e-3, 1e-2, 1e-1, 1.0)
#: observation grid (days): both models are looked at once a day
GRID_DAYS = 1.0
MAX_DAYS = 5000.0
#: host-only days before the graft cells are labelled, in both models: the marrow then holds
#: the model's steady state (a few % of the niches free), not a full marrow and an empty blood
BURN_IN_DAYS = 20.0
#: per tier: lattice edge (half the sites are niches), graft cells, replicates per model
SCENARIOS = {
    "quick": [{"size": 48, "k": 1, "factor": 4.0, "replicates": 120}],
    "full": [{"size": 64, "k": 1, "factor": 4.0, "replicates": 500},
             {"size": 45, "k": 3, "factor": 2.0, "replicates": 300}],
}
#: the marrow's rates (per day): a verification set, not biology. Activation is fast
#: so that a cycle is nearly one exponential stage, as the reference model assumes.
RATES = {"activation": 8.0, "division": 0.105, "egress": 0.1, "lodging": 5760.0, "blood_minutes": 5.0}
DT = 0.05

FAULTS = {
    "egress_rate": "the kernel's HSC egress rate is 1.5 x the configured one (the references keep it)",
    "graft_division": "the graft's division factor is half the configured one in the kernel",
}


def config(size: int, factor: float, dt: float = DT, fault: str | None = None) -> dict:
    """The experiment mapping of the kernel side (HSC-only, pool placement, half the sites niches)."""
    egress = RATES["egress"] * (1.5 if fault == "egress_rate" else 1.0)
    division_factor = factor * (0.5 if fault == "graft_division" else 1.0)
    return {
        "name": "verify_fixation", "seed": 0,
        "patient": {"weight_kg": 0.025, "disease": "hemophilia_a"},
        "lattice": {"dims": 2, "size": size, "niche_fraction": 0.5, "niche_placement": "random",
                    "neighbourhood": "moore", "boundary": "periodic"},
        "marrow": {"hsc_count": 1.1e4, "progenitor_count": 1.0e7},
        "time": {"dt_days": dt, "duration_days": MAX_DAYS, "record_interval_days": MAX_DAYS,
                 "burn_in_days": BURN_IN_DAYS},
        "cell_types": {
            "HSC": {"kind": "hsc", "activation_rate": RATES["activation"], "division_rate": RATES["division"],
                    "apoptosis_rate": 0.0, "self_renewal": 1.0, "differentiated_type": "MPP",
                    "affinity_loss_rate": 1.62, "affinity_min": 0.002},
            # never made (self-renewal 1): present because an HSC type names its differentiated type
            "MPP": {"kind": "progenitor", "division_rate": 1.0, "apoptosis_rate": 0.02, "max_divisions": 1,
                    "differentiation": {"MPP": 1.0}, "lineage": "myeloid", "amplification": 1.0},
        },
        "mature": {"myeloid": {"lifespan_days": 1.0}},
        "circulation": {"egress_rate": egress, "lodging_rate": RATES["lodging"],
                        "blood_lifetime_minutes": RATES["blood_minutes"], "placement": "pool"},
        "transgene": {"factor": "FVIII", "mode": "secreted", "lineages": ["myeloid"], "expression_per_vcn": 1.0,
                      "fitness": {"division_factor": division_factor}},
        "pk": {"half_life_days": 0.5, "volume_of_distribution_ml_per_kg": 45, "baseline_iu_dl": 0.0},
        "readouts": {"threshold_iu_dl": 15,
                     "bleeding": {"joint_bleeds_per_year_at_15": 1.4, "reduction_per_iu_dl": 0.06}},
    }


def niche_count(size: int) -> int:
    return int(round(0.5 * size * size))


def ashcroft_parameters(size: int, factor: float):
    """The mapping from engraft's rates to the reference model's.

    - N = the niche sites;
    - beta = a d / (a + d + eta): an HSC in a niche rests (activation rate a),
      then divides (rate d) and rests again; an egress (rate eta) ends either
      phase and the cell lodges again at rest, so it is active a fraction
      a / (a + d + eta) of the time; the graft has d' = f d;
    - eta = egress rate; kappa = lodging rate (engraft multiplies it by the
      free fraction of the niche sites, as the model does); delta = 1 / blood
      lifetime.
    """
    from engraft.verification.gillespie import AshcroftParameters

    a, d, eta = RATES["activation"], RATES["division"], RATES["egress"]
    beta = lambda div: a * div / (a + div + eta)  # noqa: E731
    return AshcroftParameters(niches=niche_count(size), beta_host=beta(d), beta_graft=beta(factor * d),
                              eta=eta, kappa=RATES["lodging"], delta=24 * 60 / RATES["blood_minutes"])


# ------------------------------------------------------------------------------------
# jobs (run in workers)
# ------------------------------------------------------------------------------------
def kernel_runs(params: dict, seeds: tuple[int, ...], fault: str | None) -> list[dict]:
    """engraft's kernel: after burn-in, k random marrow HSCs made graft (with the vector, so the
    fitness factor applies)."""
    from engraft.config.load import validate
    from engraft.lattice import EMPTY, GRAFT
    from engraft.simulation import Simulation

    exp = validate(config(params["size"], params["factor"], params.get("dt", DT), fault))
    out = []
    for seed in seeds:
        sim = Simulation(exp, seed=seed)
        sim.burn_in()
        rng = np.random.default_rng([seed, 7])
        hsc_type = sim.rules.hsc_type
        s = sim.state
        labelled = rng.choice(np.flatnonzero(s.ctype == hsc_type), size=params["k"], replace=False)
        s.flags[labelled] |= GRAFT
        s.vcn[labelled] = 1
        s.clone[labelled] = 1
        steps = int(round(GRID_DAYS / exp.time.dt_days))
        pending = list(THRESHOLDS)
        passage = {}
        day = 0.0
        fixed = extinct = False
        while True:  # observed at day 0 (just after the relabelling), then once a GRID_DAYS
            hsc = s.ctype == hsc_type
            graft = (s.flags & GRAFT) != 0
            xg = int(np.count_nonzero(hsc & graft))
            xh = int(np.count_nonzero(hsc & ~graft))
            p = sim.pool
            pg = int(np.count_nonzero(p.flags[: p.size] & GRAFT))
            ph = p.size - pg
            chim = xg / (xg + xh) if xg + xh else 0.0
            while pending and chim >= pending[0]:
                passage[pending.pop(0)] = day
            if xg + pg == 0:
                extinct = True
                break
            if xh + ph == 0:
                fixed = True
                break
            assert int(np.count_nonzero(s.ctype != EMPTY)) == xg + xh
            if day >= MAX_DAYS:
                break
            sim.advance(steps)
            day += GRID_DAYS
        out.append({"fixed": fixed, "extinct": extinct, "end_day": day,
                    "passage": {str(t): d for t, d in passage.items()}})
    return out


def reference_runs(params: dict, seeds: tuple[int, ...], fault: str | None) -> list[dict]:
    """The Ashcroft-Manz-Bonhoeffer model, exactly (faults are never applied to it)."""
    from engraft.verification import gillespie

    p = ashcroft_parameters(params["size"], params["factor"])
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        x, y = gillespie.burn_in(p, BURN_IN_DAYS, rng)
        tr = gillespie.simulate(p, x - params["k"], params["k"], THRESHOLDS, GRID_DAYS, MAX_DAYS, rng, y_host=y)
        out.append({"fixed": tr.fixed, "extinct": tr.extinct, "end_day": tr.end_day, "events": tr.events,
                    "passage": {str(t): d for t, d in tr.first_passage.items()}})
    return out


# ------------------------------------------------------------------------------------
# the case
# ------------------------------------------------------------------------------------
class Fixation(Case):
    name = "fixation"
    family = "fixation"
    title = "Fixation of a fitter graft: Moran theory and the Ashcroft-Manz-Bonhoeffer model"
    compared = ("HSC-only marrow, `pool` placement, N niches at the model's steady state (a 20-day host-only "
                "burn-in from a full marrow; egress and lodging then balance with a few % of the niches free) "
                "and k of its HSCs relabelled graft, dividing f times faster than the host's. P(graft takes over) from engraft's kernel against the Moran "
                "fixation probability and against an exact Gillespie simulation of the two-compartment model "
                "of Ashcroft, Manz & Bonhoeffer (PLoS Comput Biol 2017); the first days at which the graft's "
                "share of marrow HSCs reaches 1e-3, 1e-2, 1e-1 and 1 (given takeover), kernel against the "
                "Gillespie model. Both are observed once a day.")
    theory = ("Moran: (1 - r^-k) / (1 - r^-N) with r = beta_g / beta_h (see the mapping). Takeover "
              "probabilities: exact binomial tests against Moran, a two-proportion z test kernel against "
              "Gillespie. Passage days: two-sample KS and a difference of means, per threshold. All at "
              "alpha = 1e-3, Bonferroni over the case's comparisons.")
    faults = FAULTS

    def jobs(self, tier, fault):
        jobs = []
        for i, sc in enumerate(SCENARIOS[tier]):
            params = {key: sc[key] for key in ("size", "k", "factor")}
            n = sc["replicates"]
            jobs += chunked(self.name, "engraft.verification.fixation:kernel_runs", params,
                            core.seeds(self.name, n, 2 * i), 10, fault, f"s{i}k")
            jobs += chunked(self.name, "engraft.verification.fixation:reference_runs", params,
                            core.seeds(self.name, n, 2 * i + 1), 10, fault, f"s{i}g")
        return jobs

    def evaluate(self, tier, values, fault):
        from engraft.verification.gillespie import moran_fixation

        comparisons, tables, plot = [], [], {"scenarios": []}
        mapping_rows = []
        pos = 0
        njobs = lambda n: math.ceil(n / 10)  # noqa: E731
        total = 0
        for _i, sc in enumerate(SCENARIOS[tier]):
            n = sc["replicates"]
            kern = flatten(values[pos: pos + njobs(n)])
            pos += njobs(n)
            ref = flatten(values[pos: pos + njobs(n)])
            pos += njobs(n)
            total += len(kern) + len(ref)
            p = ashcroft_parameters(sc["size"], sc["factor"])
            r = p.beta_graft / p.beta_host
            moran = moran_fixation(r, sc["k"], p.niches)
            label = f"N={p.niches}, k={sc['k']}, f={sc['factor']:g}"
            kf = sum(x["fixed"] for x in kern)
            gf = sum(x["fixed"] for x in ref)
            unresolved = sum(not (x["fixed"] or x["extinct"]) for x in kern + ref)
            if unresolved:
                raise RuntimeError(f"{unresolved} runs neither fixed nor lost within {MAX_DAYS:g} days")
            comparisons.append(stats.binomial(f"{label}: P(takeover), kernel vs Moran", kf, n, moran))
            comparisons.append(stats.binomial(f"{label}: P(takeover), Gillespie vs Moran", gf, n, moran))
            comparisons.append(stats.proportions(f"{label}: P(takeover), kernel vs Gillespie", kf, n, gf, n))
            passage_rows = []
            curves = {}
            for t in THRESHOLDS:
                a = [x["passage"][str(t)] for x in kern if x["fixed"]]
                b = [x["passage"][str(t)] for x in ref if x["fixed"]]
                comparisons.append(stats.difference(f"{label}: mean day to {t:g}, kernel vs Gillespie", a, b))
                comparisons.append(stats.ks(f"{label}: days to {t:g}, kernel vs Gillespie (KS)", a, b))
                passage_rows.append([f"{t:g}", f"{np.mean(a):.1f}", f"{np.mean(b):.1f}",
                                     f"{np.median(a):.0f}", f"{np.median(b):.0f}"])
                curves[str(t)] = (sorted(a), sorted(b))
            tables.append((f"{label}: days to reach each marrow graft share, given takeover "
                           f"(kernel {kf} of {n} took over, Gillespie {gf} of {n}; Moran {moran:.4f})",
                           ["share", "kernel mean", "Gillespie mean", "kernel median", "Gillespie median"],
                           passage_rows))
            mapping_rows.append([label, str(p.niches), f"{p.beta_host:.5f}", f"{p.beta_graft:.5f}",
                                 f"{p.eta:g}", f"{p.kappa:g}", f"{p.delta:g}", f"{r:.4f}"])
            plot["scenarios"].append({"label": label, "curves": curves, "k": kf / n, "g": gf / n,
                                      "moran": moran, "n": n})
        tables.insert(0, ("Parameter mapping, engraft -> Ashcroft et al. (rates per day)",
                          ["scenario", "N (niche sites)", "beta_h", "beta_g", "eta", "kappa", "delta",
                           "r = beta_g/beta_h"], mapping_rows))
        notes = [
            "engraft side: 2D lattice, half the sites niches, `pool` placement, dt = "
            f"{DT:g} d, HSC activation a = {RATES['activation']:g}/d, division d = {RATES['division']:g}/d "
            f"(graft f d, carried by the vector's fitness factor), apoptosis 0, self-renewal 1, egress "
            f"{RATES['egress']:g}/d, lodging {RATES['lodging']:g}/d x free niche fraction, blood lifetime "
            f"{RATES['blood_minutes']:g} min; after a {BURN_IN_DAYS:g}-day host-only burn-in from a full marrow, "
            "k random marrow HSCs are relabelled graft at day 0 (the same in the Gillespie model). Starting "
            "from a full marrow and an empty blood instead lowers P(takeover) by a few %: the marrow first "
            "empties to its balance, and an egress in that time is nearly always a loss.",
            "Mapping: N = niche sites; beta = a d / (a + d + eta) (an HSC rests, activates at rate a, divides "
            "at rate d and rests again; an egress ends either phase and the cell lodges at rest); eta = egress; "
            "kappa = lodging rate (both models multiply it by the free-niche fraction); delta = 1 / blood "
            "lifetime. engraft's cycle has a short resting stage (mean 1/a) that the reference model does not; "
            "with a = 8/d it shifts the division intervals by about 1/a = 0.125 d against about 10 d.",
            "Reference reactions (Ashcroft, Manz & Bonhoeffer 2017): x -> x + y (beta x), x -> y (eta x), "
            "y -> x (kappa (1 - x/N) y), y -> 0 (delta y).",
        ]
        return self.result(tier, comparisons, fault, tables=tables, notes=notes, replicates=total,
                           plot_data=plot)

    def figure(self, result: CaseResult, data: dict, path: str) -> None:
        import matplotlib.pyplot as plt

        scen = data["scenarios"]
        fig, axes = plt.subplots(1, len(scen) + 1, figsize=(5 * (len(scen) + 1), 4))
        colors = plt.cm.viridis(np.linspace(0, 0.85, len(THRESHOLDS)))
        for ax, sc in zip(axes[:-1], scen, strict=True):
            for c, t in zip(colors, THRESHOLDS, strict=True):
                a, b = sc["curves"][str(t)]
                if a:
                    ax.step(a, np.arange(1, len(a) + 1) / len(a), where="post", color=c, label=f"kernel {t:g}")
                if b:
                    ax.step(b, np.arange(1, len(b) + 1) / len(b), where="post", color=c, ls="--",
                            label=f"Gillespie {t:g}")
            ax.set_xscale("symlog", linthresh=1.0)  # day 0 is a possible value
            ax.set_xlabel("day the share is first reached")
            ax.set_ylabel("fraction of takeovers")
            ax.set_title(sc["label"], fontsize=9)
            ax.legend(fontsize=6, ncol=2)
        ax = axes[-1]
        for j, sc in enumerate(scen):
            se = math.sqrt(sc["moran"] * (1 - sc["moran"]) / sc["n"])
            ax.errorbar([j - 0.1], [sc["k"]], yerr=[3.29 * se], fmt="o", color="C0",
                        label="kernel" if j == 0 else None)
            ax.errorbar([j + 0.1], [sc["g"]], yerr=[3.29 * se], fmt="s", color="C1",
                        label="Gillespie" if j == 0 else None)
            ax.hlines(sc["moran"], j - 0.3, j + 0.3, color="k", label="Moran" if j == 0 else None)
        ax.set_xticks(range(len(scen)), [s["label"] for s in scen], fontsize=7)
        ax.set_ylabel("P(graft takes over)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
