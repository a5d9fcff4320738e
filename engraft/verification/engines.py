"""Cases ``kernel_vs_mesa`` and ``sequential_vs_parallel``: the same read-out distributions.

Two implementations of one model can agree only in distribution (they use
their random streams differently). For each config, many seeds per
implementation; at several recorded days, the distributions of the read-outs
are compared by a two-sample KS test and a difference of means (SE from the
seeds), alpha = 1e-3 with Bonferroni over every comparison of the case. Counts
are discrete with ties, for which KS is conservative; the mean test has no
such weakness. A read-out that is constant in both samples agrees only if
the constants are equal.
"""

from __future__ import annotations

import numpy as np

from engraft.verification import core, stats
from engraft.verification.core import Case, chunked, flatten

TRANSPLANT = ("hsc_count", "hsc_chimerism", "hsc_vcn", "clones_alive", "factor_iu_dl", "occupancy")
STEADY = ("hsc_count", "MPP_host", "GMP_host", "MkP_host", "occupancy", "myeloid_cells", "platelets_cells")


def quantity(ts, name: str):
    if name == "hsc_count":
        return ts["HSC_host"] + ts["HSC_graft"]
    return ts[name]


def readout_rows(params: dict, seeds: tuple[int, ...], fault: str | None) -> list[list[float]]:
    """Per seed: the read-outs at the days (flattened quantity-major) of one config, engine and kernel."""
    from engraft.engines import simulate

    extra = list(params.get("overrides", ()))
    if fault and params.get("faultable"):
        extra += list(params["fault_overrides"][fault])
    exp = core.load(tuple(params["config"]), extra)
    rows = []
    for seed in seeds:
        ts = simulate(exp, seed=seed, engine=params["engine"], kernel=params.get("kernel")).timeseries
        ts = ts.set_index("day")
        rows.append([float(quantity(ts, q).loc[d]) for q in params["quantities"] for d in params["days"]])
    return rows


class TwoSampleCase(Case):
    """Two implementations on the same configs; subclasses give the configs and the two sides."""

    family = "engines"
    #: per tier: [(label, config path parts, overrides, quantities, days, seeds_a, seeds_b)]
    setups: dict = {}
    side_a: dict = {}
    side_b: dict = {}
    fault_overrides: dict = {}
    per_job: int = 10

    def _params(self, side, setup, faultable):
        label, config, overrides, quantities, days, _, _ = setup
        return {"config": list(config), "overrides": list(overrides), "quantities": list(quantities),
                "days": list(days), "faultable": faultable, "fault_overrides": self.fault_overrides, **side}

    def jobs(self, tier, fault):
        jobs = []
        for i, setup in enumerate(self.setups[tier]):
            jobs += chunked(self.name, "engraft.verification.engines:readout_rows",
                            self._params(self.side_a, setup, False), core.seeds(self.name, setup[5], 2 * i),
                            self.per_job, fault, f"c{i}a")
            jobs += chunked(self.name, "engraft.verification.engines:readout_rows",
                            self._params(self.side_b, setup, True), core.seeds(self.name, setup[6], 2 * i + 1),
                            self.per_job, fault, f"c{i}b")
        return jobs

    def evaluate(self, tier, values, fault):
        comparisons, plot, tables, pos, total = [], {"setups": []}, [], 0, 0
        for setup in self.setups[tier]:
            label, _, _, quantities, days, na, nb = setup
            ja, jb = -(-na // self.per_job), -(-nb // self.per_job)
            a = np.array(flatten(values[pos:pos + ja]))
            pos += ja
            b = np.array(flatten(values[pos:pos + jb]))
            pos += jb
            total += na + nb
            rows = []
            cols = [(q, d) for q in quantities for d in days]
            for j, (q, d) in enumerate(cols):
                x, y = a[:, j], b[:, j]
                x, y = x[~np.isnan(x)], y[~np.isnan(y)]
                if x.size < 10 or y.size < 10:
                    continue
                c1 = stats.difference(f"{label}: mean {q} at day {d:g}", x, y)
                c2 = stats.ks(f"{label}: {q} at day {d:g} (KS)", x, y)
                comparisons += [c1, c2]
                rows.append([q, f"{d:g}", f"{x.mean():.4g}", f"{y.mean():.4g}", f"{c1.statistic:+.2f}",
                             f"{c2.p_value:.3g}"])
            tables.append((f"{label} ({self.side_a['label']} {na} seeds, {self.side_b['label']} {nb} seeds)",
                           ["read-out", "day", self.side_a["label"], self.side_b["label"], "z", "KS p"], rows))
            plot["setups"].append({"label": label, "quantities": list(quantities), "days": list(days),
                                   "a": a.tolist(), "b": b.tolist()})
        return self.result(tier, comparisons, fault, tables=tables, replicates=total, plot_data=plot)

    def figure(self, result, data, path):
        import matplotlib.pyplot as plt

        setups = data["setups"]
        nq = max(len(s["quantities"]) for s in setups)
        fig, axes = plt.subplots(len(setups), nq, figsize=(2.6 * nq, 2.4 * len(setups)), squeeze=False)
        for r, s in enumerate(setups):
            a, b = np.array(s["a"]), np.array(s["b"])
            nd = len(s["days"])
            for qi, q in enumerate(s["quantities"]):
                ax = axes[r, qi]
                j = qi * nd + nd - 1  # the last day
                for vals, lab, st in ((a[:, j], self.side_a["label"], "-"), (b[:, j], self.side_b["label"], "--")):
                    v = np.sort(vals[~np.isnan(vals)])
                    if v.size:
                        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", ls=st, label=lab)
                ax.set_title(f"{s['label']}: {q}, day {s['days'][-1]:g}", fontsize=7)
                ax.tick_params(labelsize=6)
            for qi in range(len(s["quantities"]), nq):
                axes[r, qi].axis("off")
        axes[0, 0].legend(fontsize=6)
        fig.suptitle("empirical distribution functions at the last compared day", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


EQ = ("tests", "data", "configs")
DAYS = (10.0, 20.0, 30.0, 60.0)


class KernelVsMesa(TwoSampleCase):
    name = "kernel_vs_mesa"
    title = "Kernel against the Mesa reference model"
    compared = ("engraft's compiled kernel against its Mesa reference model (an agent-based implementation "
                "of the same rules written separately) on the equivalence configs of tests/data/configs: HSC "
                "count, chimerism, VCN, clones, factor level and occupancy at several days (host counts and "
                "mature compartments for the steady state).")
    theory = ("Same model, so the same distributions: difference of means (z) and two-sample KS per read-out "
              "and day, alpha = 1e-3 with Bonferroni over all of them.")
    side_a = {"engine": "mesa", "kernel": "sequential", "label": "Mesa"}
    side_b = {"engine": "kernel", "kernel": "sequential", "label": "kernel"}
    fault_overrides = {"self_renewal": ["cell_types.HSC.self_renewal=0.6"]}
    faults = {"self_renewal": "HSC self-renewal 0.6 instead of 0.5 in the kernel only"}
    setups = {
        "quick": [("myeloablative", EQ + ("equivalence_myeloablative.yaml",), (), TRANSPLANT, (10.0, 30.0), 30,
                   100)],
        "full": [("steady_state", EQ + ("equivalence_steady_state.yaml",), (), STEADY, (0.0, 20.0, 40.0, 60.0),
                  60, 200),
                 ("myeloablative", EQ + ("equivalence_myeloablative.yaml",), (), TRANSPLANT, DAYS, 60, 200),
                 ("reduced_intensity", EQ + ("equivalence_reduced_intensity.yaml",), (), TRANSPLANT, DAYS, 60,
                  200),
                 ("pool_3d", EQ + ("equivalence_pool_3d.yaml",), (), TRANSPLANT, DAYS, 60, 200)],
    }


TINY = ("configs", "tiny.yaml")


class SequentialVsParallel(TwoSampleCase):
    name = "sequential_vs_parallel"
    title = "Sequential against parallel kernel"
    compared = ("The sequential kernel (random sequential update) against the parallel kernel (sublattice "
                "updates) on configs/tiny.yaml: a host marrow alone (30 x 30) and a myeloablative transplant "
                "(32 x 32), read-outs at several days.")
    theory = ("Statistically equivalent update schemes: difference of means (z) and two-sample KS per "
              "read-out and day, alpha = 1e-3 with Bonferroni over all of them.")
    side_a = {"engine": "kernel", "kernel": "sequential", "label": "sequential"}
    side_b = {"engine": "kernel", "kernel": "parallel", "label": "parallel"}
    fault_overrides = {"self_renewal": ["cell_types.HSC.self_renewal=0.65"]}
    faults = {"self_renewal": "HSC self-renewal 0.65 instead of 0.5 in the parallel kernel only"}
    _steady = ("conditioning=null", "infusions=[]", "lattice.size=30")
    setups = {
        "quick": [("transplant", TINY, ("lattice.size=32",), TRANSPLANT, (10.0, 60.0, 120.0), 80, 80)],
        "full": [("steady_state", TINY, _steady, ("hsc_count", "MPP_host", "GMP_host", "EP_host", "occupancy",
                                                  "myeloid_cells", "platelets_cells"), (0.0, 40.0, 80.0, 120.0),
                  200, 200),
                 ("transplant", TINY, ("lattice.size=32",), TRANSPLANT, (10.0, 30.0, 60.0, 120.0), 200, 200)],
    }
