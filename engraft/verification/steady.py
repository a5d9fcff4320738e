"""Case ``steady_state``: without a transplant the host marrow stays where burn-in left it.

configs/tiny.yaml without conditioning or infusion on a 40 x 40 lattice,
burned in for 300 days, then followed: the change from day 0 of the HSC and
progenitor counts, the occupancy, and the mature compartments relative to
their burn-in baseline. Each mean change must be 0 within its noise (z test,
SE from the seeds; Bonferroni over the read-outs).
"""

from __future__ import annotations

import numpy as np

from engraft.verification import core, stats
from engraft.verification.core import Case, chunked, flatten

TIERS = {"quick": {"seeds": 40, "days": 200}, "full": {"seeds": 150, "days": 600}}
READOUTS = ("HSC count", "progenitor count", "occupancy", "myeloid cells", "platelets", "erythroid cells",
            "lymphoid cells")
LINEAGES = ("myeloid", "platelets", "erythroid", "lymphoid")
PROGENITORS = ("MPP", "GMP", "MkP", "EP", "CLP")
FAULTS = {"mpp_apoptosis": "MPP apoptosis 0.1/d instead of the 0.02/d of burn-in, from day 0 on"}


def drift(params: dict, seeds: tuple[int, ...], fault: str | None) -> list[list[list[float]]]:
    """Per seed and record (day 0, ..., end): the READOUTS (whole-body mature compartments)."""
    from engraft.simulation import Simulation

    days = params["days"]
    overrides = ["conditioning=null", "infusions=[]", "lattice.size=40", "time.burn_in_days=300",
                 f"time.duration_days={days}", f"time.record_interval_days={days // 10}"]
    exp = core.load(("configs", "tiny.yaml"), overrides)
    faulty = core.load(("configs", "tiny.yaml"), [*overrides, "cell_types.MPP.apoptosis_rate=0.1"])
    out = []
    for seed in seeds:
        sim = Simulation(exp, seed=seed)
        if fault == "mpp_apoptosis":  # the fault starts after burn-in: the marrow leaves its steady state
            import pandas as pd

            from engraft import rates
            from engraft.timeline import TimelineRun

            sim.burn_in()
            sim.rules.p_any[:], sim.rules.cum[:] = rates.step_tables(faulty)
            run = TimelineRun(sim)  # the follow-up alone (run() would burn in again, with the fault)
            for _ in run:
                pass
            ts = pd.DataFrame(run.records)
        else:
            ts = sim.run().timeseries
        # the record grid only: daily records added while a count is low (blood_counts) differ by seed
        ts = ts[np.isin(ts["day"].to_numpy(), np.arange(0, days + 1, days // 10))]
        rows = []
        for _, r in ts.iterrows():
            rows.append([r["HSC_host"] + r["HSC_graft"], sum(r[f"{t}_host"] for t in PROGENITORS), r["occupancy"],
                         *[r[f"{lin}_cells"] for lin in LINEAGES]])
        out.append(rows)
    return out


class SteadyState(Case):
    name = "steady_state"
    family = "steady"
    title = "Steady state without a transplant"
    compared = ("The host marrow of configs/tiny.yaml (40 x 40, no conditioning, no infusion) after a "
                "300-day burn-in: the change over the follow-up of HSC and progenitor counts, occupancy and the "
                "whole-body mature compartments (which start at the steady state of burn-in's mean output).")
    theory = ("At steady state every expected change is 0: z test of the mean change over seeds (SE from the "
              "seeds), alpha = 1e-3 with Bonferroni over the read-outs.")
    faults = FAULTS

    def jobs(self, tier, fault):
        t = TIERS[tier]
        return chunked(self.name, "engraft.verification.steady:drift", {"days": t["days"]},
                       core.seeds(self.name, t["seeds"]), 10, fault, "s")

    def evaluate(self, tier, values, fault):
        t = TIERS[tier]
        data = np.array(flatten(values))  # seeds x records x readouts
        comparisons, rows = [], []
        for j, name in enumerate(READOUTS):
            # relative to the mean at day 0 (a constant: the z test is that of the change itself)
            change = (data[:, -1, j] - data[:, 0, j]) / np.mean(data[:, 0, j])
            comparisons.append(stats.mean(f"{name}: mean relative change from day 0 to day {t['days']}",
                                          change, 0.0))
            rows.append([name, f"{np.mean(data[:, 0, j]):.4g}", f"{np.mean(data[:, -1, j]):.4g}",
                         f"{change.mean():+.4f}", f"{change.std(ddof=1):.4f}"])
        tables = [("Read-outs at the start and end of the follow-up (mature compartments: whole-body cells; "
                   "changes relative to the day-0 mean)",
                   ["read-out", "mean at day 0", f"mean at day {t['days']}", "mean relative change",
                    "sd of relative change"], rows)]
        plot = {"mean": data.mean(axis=0).tolist(), "se": (data.std(axis=0, ddof=1) / np.sqrt(data.shape[0])).tolist(),
                "days": t["days"]}
        return self.result(tier, comparisons, fault, tables=tables, replicates=data.shape[0], plot_data=plot)

    def figure(self, result, data, path):
        import matplotlib.pyplot as plt

        mean, se = np.array(data["mean"]), np.array(data["se"])
        days = np.linspace(0, data["days"], mean.shape[0])
        fig, axes = plt.subplots(1, len(READOUTS), figsize=(2.6 * len(READOUTS), 3))
        for j, (ax, name) in enumerate(zip(axes, READOUTS, strict=True)):
            ax.plot(days, mean[:, j], color="C0")
            ax.fill_between(days, mean[:, j] - 3.29 * se[:, j], mean[:, j] + 3.29 * se[:, j], alpha=0.3)
            ax.axhline(mean[0, j], color="k", ls="--", lw=1)
            ax.set_title(name, fontsize=8)
            ax.set_xlabel("day", fontsize=7)
            ax.tick_params(labelsize=6)
        fig.suptitle("mean over seeds +- 3.29 SE; dashed: day-0 value", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
