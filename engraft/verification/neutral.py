"""Case ``neutral_competition``: a neutral graft's share of the HSCs is a martingale.

Graft and host with identical rates (no conditioning, no infusion): a random
30 % of the HSCs of a burned-in marrow are relabelled graft (with the vector,
so a fitness factor would act on them), and the marrow runs on. Lineages that
are exchangeable have E[share(t)] = share(0) at every t, in any placement
and geometry; the case checks the mean change of the share at the end in
``neighbour`` and ``pool`` placement, in 2D and 3D (z test of the mean
change against 0, Bonferroni over the four), and that the shares did drift
(so there was something to detect).
"""

from __future__ import annotations

import numpy as np

from engraft.verification import core, stats
from engraft.verification.core import Case, chunked, flatten

LABELLED = 0.3
VARIANTS = (("neighbour", 2, 40), ("pool", 2, 40), ("neighbour", 3, 12), ("pool", 3, 12))
TIERS = {"quick": {"seeds": 40, "days": 150}, "full": {"seeds": 150, "days": 300}}
OBS_DAYS = 10
FAULTS = {"graft_division": "labelled (graft) cells divide 1.2 times faster than host cells (a wrong rate)"}


def overrides(placement: str, dims: int, size: int, fault: str | None) -> list[str]:
    out = ["conditioning=null", "infusions=[]", "time.burn_in_days=100", f"circulation.placement={placement}",
           f"lattice.dims={dims}", f"lattice.size={size}"]
    if fault == "graft_division":
        out.append("transgene.fitness.division_factor=1.2")
    return out


def shares(params: dict, seeds: tuple[int, ...], fault: str | None) -> list[list[float]]:
    """Per seed: the graft share of HSCs every OBS_DAYS days from the relabelling (day 0) on."""
    from engraft.lattice import GRAFT
    from engraft.simulation import Simulation

    exp = core.load(("configs", "tiny.yaml"), overrides(params["placement"], params["dims"], params["size"],
                                                         fault))
    out = []
    steps = int(round(OBS_DAYS / exp.time.dt_days))
    for seed in seeds:
        sim = Simulation(exp, seed=seed)
        sim.burn_in()
        s = sim.state
        hsc_type = sim.rules.hsc_type
        hsc = np.flatnonzero(s.ctype == hsc_type)
        labelled = np.random.default_rng([seed, 11]).choice(hsc, size=int(LABELLED * hsc.size), replace=False)
        s.flags[labelled] |= GRAFT
        s.vcn[labelled] = 1
        row = [labelled.size / hsc.size]
        for _ in range(params["days"] // OBS_DAYS):
            sim.advance(steps)
            now = s.ctype == hsc_type
            row.append(float(((s.flags[now] & GRAFT) != 0).mean()) if now.any() else float("nan"))
        out.append(row)
    return out


class NeutralCompetition(Case):
    name = "neutral_competition"
    family = "neutral"
    title = "Neutral competition: the graft share of HSCs is a martingale"
    compared = ("A random 30 % of the HSCs of a burned-in marrow (configs/tiny.yaml without conditioning or "
                "infusion) are relabelled graft; graft and host have identical rates. The mean change of the "
                "graft share of HSCs at the end, in `neighbour` and `pool` placement, 2D (40 x 40) and 3D "
                "(12 x 12 x 12).")
    theory = ("Exchangeable lineages: E[share(t)] = share(0), so the mean change over seeds is 0; z test of "
              "the mean change (SE from the seeds), alpha = 1e-3 with Bonferroni over the four geometries.")
    faults = FAULTS

    def jobs(self, tier, fault):
        t = TIERS[tier]
        jobs = []
        for i, (placement, dims, size) in enumerate(VARIANTS):
            jobs += chunked(self.name, "engraft.verification.neutral:shares",
                            {"placement": placement, "dims": dims, "size": size, "days": t["days"]},
                            core.seeds(self.name, t["seeds"], i), 10, fault, f"v{i}")
        return jobs

    def evaluate(self, tier, values, fault):
        t = TIERS[tier]
        per = -(-t["seeds"] // 10)
        comparisons, rows, plot = [], [], {"variants": [], "days": t["days"]}
        for i, (placement, dims, _size) in enumerate(VARIANTS):
            data = np.array(flatten(values[i * per:(i + 1) * per]))
            change = data[:, -1] - data[:, 0]
            label = f"{placement}, {dims}D"
            comparisons.append(stats.mean(f"{label}: mean change of the graft share after {t['days']} d",
                                          change, 0.0))
            rows.append([label, f"{data[:, 0].mean():.4f}", f"{data[:, -1].mean():.4f}", f"{change.mean():+.4f}",
                         f"{change.std(ddof=1):.4f}", str(change.size)])
            plot["variants"].append({"label": label, "mean": np.nanmean(data, axis=0).tolist(),
                                     "se": (np.nanstd(data, axis=0, ddof=1) / np.sqrt(data.shape[0])).tolist(),
                                     "some": data[:8].tolist()})
        notes = ["The shares drift (sd of the change in the table), so a biased rule had room to show; "
                 "the power column gives the smallest mean change each test detects with 90 % probability."]
        tables = [("Graft share of HSCs", ["geometry", "share at day 0", f"share at day {t['days']}",
                                           "mean change", "sd of change", "seeds"], rows)]
        return self.result(tier, comparisons, fault, tables=tables, notes=notes,
                           replicates=len(VARIANTS) * t["seeds"], plot_data=plot)

    def figure(self, result, data, path):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(data["variants"]), figsize=(16, 3.6), sharey=True)
        for ax, v in zip(axes, data["variants"], strict=True):
            days = np.arange(len(v["mean"])) * OBS_DAYS
            for row in v["some"]:
                ax.plot(days, row, color="0.7", lw=0.7)
            m, se = np.array(v["mean"]), np.array(v["se"])
            ax.plot(days, m, color="C0", lw=2, label="mean over seeds")
            ax.fill_between(days, m - 3.29 * se, m + 3.29 * se, color="C0", alpha=0.3, label="+- 3.29 SE")
            ax.axhline(m[0], color="k", ls="--", lw=1, label="share at day 0")
            ax.set_title(v["label"])
            ax.set_xlabel("days after relabelling")
        axes[0].set_ylabel("graft share of HSCs")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
