"""Case ``plasma_kinetics``: the factor tally against the closed form of one-compartment kinetics.

dC/dt = P / V_d - k C with k = ln 2 / t_half (docs/model.md, section 6). With
constant production P from C = 0, C(t) = P / (V_d k) (1 - exp(-k t)); with
production switched off at level C0, C(t) = C0 2^(-t / t_half). engraft's
tally (:func:`engraft.tally.advance`) is driven with the constants of real
configs (FVIII in the human hemophilia A set, FIX in the hemophilia B set),
production held constant by starting the expressing compartment at its
steady state, at several time steps. Deterministic: each number must match
within 1 % (relative).
"""

from __future__ import annotations

import math

import numpy as np

from engraft.verification import stats
from engraft.verification.core import Case, Job

CONFIGS = ("hemophilia_a_lentiviral.yaml", "hemophilia_b_lentiviral.yaml")
DTS = (0.01, 0.2, 1.0)
TOLERANCE = 0.01
FAULTS = {"half_life": "the tally clears the factor with a half-life 5 % longer than the config's"}


def curves(params: dict, seeds: tuple[int, ...], fault: str | None) -> dict:
    """Levels over time from the tally: production on (from 0), then off (from the plateau)."""
    from engraft import tally
    from engraft.tally import TallyTables
    from engraft.verification.core import load

    exp = load(("configs", params["config"]))
    tt = TallyTables.from_experiment(exp)
    lin = int(np.flatnonzero(tt.secretion > 0)[0])
    half_life = exp.pk.half_life_days * (1.05 if fault == "half_life" else 1.0)
    k = math.log(2) / half_life
    dt = params["dt"]
    # the tally's own step matrices at this dt (its maturation chains and blood stages included)
    phi, gamma = tally.step_matrices(tt.residences, tt.n_blood, tt.secretion / tt.volume_dl, k, dt)
    ek = math.exp(-k * dt)
    n_lin = tt.tau.size
    # production: 1e9 expression units in blood, held there by the steady state of a constant inflow
    units = 1e9
    inflow = np.zeros((1, n_lin, tally.N_QUANTITIES))
    inflow[0, lin, tally.EXPRESSION_UNITS] = units / tt.tau[lin]
    chain = tally.chain_steady_state(inflow[0], tt.residences)
    mature = tally.steady_state(inflow[0], tt.tau)
    conc = np.zeros(1)
    t_half = exp.pk.half_life_days
    n_steps = int(round(20 * t_half / dt))
    on = [0.0]
    for _ in range(n_steps):
        tally.advance(mature, chain, conc, inflow, phi, gamma, tt.n_chain, tt.n_blood, ek)
        on.append(float(conc[0]))
    plateau = on[-1]
    # switched off: no expressing cells anywhere, no inflow
    mature[:] = 0.0
    chain[:] = 0.0
    off = [plateau]
    zero = np.zeros_like(inflow)
    for _ in range(int(round(4 * t_half / dt))):
        tally.advance(mature, chain, conc, zero, phi, gamma, tt.n_chain, tt.n_blood, ek)
        off.append(float(conc[0]))
    return {"config": params["config"], "dt": dt, "on": on, "off": off, "t_half": t_half,
            "production_iu_per_day": float(tt.secretion[lin] * units), "volume_dl": float(tt.volume_dl),
            "factor": exp.transgene.factor}


class PlasmaKinetics(Case):
    name = "plasma_kinetics"
    family = "plasma"
    title = "Plasma kinetics: plateau P / (V_d k) and decay with the half-life"
    compared = ("The plasma level from engraft's factor tally under constant production and after production "
                "stops, for FVIII (human hemophilia A config) and FIX (hemophilia B config), at dt = "
                + ", ".join(f"{d:g}" for d in DTS) + " d.")
    theory = ("C(t) = P / (V_d k) (1 - exp(-k t)) with k = ln 2 / t_half; after production stops, "
              "C(t) = C0 2^(-t / t_half). The tally's solution is exact, so every number must match within "
              "1 % (a deterministic check: no noise, its power is the 1 % tolerance).")
    faults = FAULTS

    def jobs(self, tier, fault):
        return [Job(f"{self.name}-{c.split('_')[1]}-{i}", "engraft.verification.plasma:curves",
                    {"config": c, "dt": dt}, (), fault)
                for c in CONFIGS for i, dt in enumerate(DTS)]

    def evaluate(self, tier, values, fault):
        comparisons, rows = [], []
        for v in values:
            th, dt, p, vol = v["t_half"], v["dt"], v["production_iu_per_day"], v["volume_dl"]
            k = math.log(2) / th
            plateau = p / (vol * k)
            tag = f"{v['factor']} dt={dt:g}"
            on = np.array(v["on"])
            t_on = np.arange(on.size) * dt
            expected_on = plateau * -np.expm1(-k * t_on)
            comparisons.append(stats.exact(f"{tag}: plateau after 20 half-lives vs P/(V_d k)", on[-1],
                                           plateau, TOLERANCE))
            j = max(1, int(round(th / dt)))  # the record nearest one half-life (dt need not divide it)
            comparisons.append(stats.exact(f"{tag}: level at day {j * dt:g} (about one half-life) after "
                                           "switch-on vs P/(V_d k) (1 - exp(-k t))", on[j], expected_on[j],
                                           TOLERANCE))
            off = np.array(v["off"])
            for n_half in (1, 2, 4):
                jj = max(1, int(round(n_half * th / dt)))
                comparisons.append(stats.exact(f"{tag}: level at day {jj * dt:g} (about {n_half} half-li"
                                               f"{'fe' if n_half == 1 else 'ves'}) after switch-off vs "
                                               "C0 2^(-t/t_half)", off[jj], off[0] * 2.0 ** (-jj * dt / th),
                                               TOLERANCE))
            worst = float(np.max(np.abs(on[1:] - expected_on[1:]) / expected_on[1:]))
            comparisons.append(stats.exact(f"{tag}: largest relative error of the rise over all steps",
                                           worst, 0.0, TOLERANCE))
            rows.append([v["factor"], f"{dt:g}", f"{th:g}", f"{vol:g}", f"{p:.4g}", f"{plateau:.4g}",
                         f"{on[-1]:.4g}", f"{off[max(1, int(round(th / dt)))] / off[0]:.4f}"])
        tables = [("Plateau and half-life", ["factor", "dt (d)", "t_half (d)", "V_d (dL)", "P (IU/d)",
                                             "P/(V_d k) (IU/dL)", "engraft plateau", "C/C0 one record after t_half"], rows)]
        plot = {"series": [{"factor": v["factor"], "dt": v["dt"], "on": v["on"], "off": v["off"],
                            "t_half": v["t_half"], "plateau": v["production_iu_per_day"] / (
                                v["volume_dl"] * math.log(2) / v["t_half"])} for v in values]}
        return self.result(tier, comparisons, fault, tables=tables, replicates=len(values), plot_data=plot)

    def figure(self, result, data, path):
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for s in data["series"]:
            if s["dt"] != DTS[0]:
                continue
            th, dt = s["t_half"], s["dt"]
            k = math.log(2) / th
            on = np.array(s["on"])
            t = np.arange(on.size) * dt
            axes[0].plot(t / th, on / s["plateau"], lw=3, alpha=0.5, label=f"{s['factor']} engraft")
            axes[0].plot(t / th, -np.expm1(-k * t), "k--", lw=1)
            off = np.array(s["off"])
            t2 = np.arange(off.size) * dt
            axes[1].semilogy(t2 / th, off / off[0], lw=3, alpha=0.5, label=f"{s['factor']} engraft")
            axes[1].semilogy(t2 / th, 2.0 ** (-t2 / th), "k--", lw=1)
        axes[0].set_xlabel("time (half-lives)")
        axes[0].set_ylabel("C / (P / (V_d k))")
        axes[0].set_title("constant production (dashed: theory)")
        axes[1].set_xlabel("time after switch-off (half-lives)")
        axes[1].set_ylabel("C / C0")
        axes[1].set_title("production off (dashed: 2^(-t/t_half))")
        for ax in axes:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
