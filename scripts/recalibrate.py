"""Recalibrate the human defaults from scratch and print each fitted value beside its target.

Two steps, each from simulations of ``configs/hemophilia_a_lentiviral.yaml``
(or the config given):

1. **Mature output.** The host marrow alone runs to steady state; daily output
   per lineage is exits x amplification x scale, linear in the amplification,
   so ``amplification x reference / simulated output`` is the fitted value
   (references: Catlin et al., Blood 2011; ``scripts/calibrate.py``).
2. **The transgene** against Srivastava et al., N Engl J Med 2025, group 2
   (``../shared/data/trial_targets.md``): drug-product VCN 0.6, 1.5 and 2.2
   copies per cell gave median FVIII 19.3, 37.1 and 39.9 IU/dL from day 28 to
   the last visit (median follow-up 14 months). A product VCN is the
   transduced fraction x the mean copies per transduced cell; the transduced
   fraction is held at the config's value and the zero-truncated Poisson mean
   is solved for each VCN. Both VCN responses are fitted: ``linear`` and
   ``saturating`` (``vcn (1 + K) / (vcn + K)`` per cell). The level above the
   baseline is proportional to ``transgene.expression_per_vcn``, so one set of
   runs per response gives the best scale exactly (the geometric mean of
   target / simulated excess over the VCNs); K is chosen on a grid by the
   simulated levels. The score is the largest relative error over the three.

The whole-body results do not depend on the lattice size (docs/model.md,
section 2; ``scripts/convergence.py``), so the fit runs at 256^2 by default
(``--size``), with ``--seeds`` seeds per point (at least 5). ``--check``
instead runs the config as shipped at the three VCNs and prints mean +- SE
against the targets (the acceptance band is 25 %)::

    python scripts/recalibrate.py                       # fit (a few minutes on 2 cores)
    python scripts/recalibrate.py --check --size 1024   # the shipped defaults at full size
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engraft import load_config, simulate  # noqa: E402
from engraft.simulation import Simulation  # noqa: E402

#: daily output per lineage, human (Catlin et al., Blood 2011; platelets 35e9 per litre of blood a
#: day x 4.9 L, Harker, Clin Haematol 1977; as scripts/calibrate.py)
REFERENCE_OUTPUT = {"myeloid": 1e11, "platelets": 1.7e11, "erythroid": 2e11, "lymphoid": 1e10}
#: Srivastava et al. 2025, group 2: drug-product VCN -> median FVIII, day 28 to last visit (IU/dL)
GROUP_2 = ((0.6, 19.3), (1.5, 37.1), (2.2, 39.9))
#: the trial's window: from day 28 to the last visit (median follow-up 14 months)
WINDOW_DAYS = (28.0, 425.0)
TOLERANCE = 0.25
K_GRID = (1.0, 2.0, 4.0, 8.0)


def ztp_lambda(product_vcn: float, transduction: float) -> float:
    """Poisson parameter whose zero-truncated mean x transduction is ``product_vcn``."""
    mean_copies = product_vcn / transduction
    if mean_copies <= 1.0:
        raise SystemExit(f"product VCN {product_vcn:g} needs more than {transduction:g} x 1 copy: lower the "
                         "transduced fraction (infusions[0].transduction)")
    return brentq(lambda lam: lam / -math.expm1(-lam) - mean_copies, 1e-9, 200.0)


def window_mean(result) -> float:
    ts = result.timeseries
    sel = (ts["day"] >= WINDOW_DAYS[0]) & (ts["day"] <= WINDOW_DAYS[1])
    return float(ts.loc[sel, "factor_iu_dl"].mean())


def mature_output(config: str, size: int, seeds: int, days: float = 200.0) -> tuple[dict, dict]:
    """Seed mean and SE of steady-state daily output per lineage; and the amplifications used."""
    exp = load_config(config, ["conditioning=null", "infusions=[]", f"lattice.size={size}"])
    rows = []
    for seed in range(seeds):
        sim = Simulation(exp, seed=seed)
        sim.burn_in()
        exits = sim.advance(int(round(days / exp.time.dt_days)))
        rows.append(sim.tally_tables.inflow(exits, exp.time.dt_days).mean(axis=0)[:, 0])
    rows = np.array(rows)
    amp = {ct.lineage: (name, ct.amplification) for name, ct in exp.cell_types.items() if ct.lineage}
    out = {lin: (rows[:, i].mean(), rows[:, i].std(ddof=1) / math.sqrt(seeds))
           for i, lin in enumerate(exp.lineage_names)}
    return out, amp


def factor_levels(config: str, overrides: list[str], seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed mean and SE of the trial-window FVIII at each group-2 VCN."""
    base = load_config(config, overrides)
    t = base.infusions[0].transduction
    means, ses = [], []
    for vcn, _ in GROUP_2:
        lam = ztp_lambda(vcn, t)
        exp = load_config(config, [*overrides, f"infusions[0].vcn.mean={lam:.6g}"])
        vals = [window_mean(simulate(exp, seed=1000 + s)) for s in range(seeds)]
        means.append(np.mean(vals))
        ses.append(np.std(vals, ddof=1) / math.sqrt(seeds))
    return np.array(means), np.array(ses)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "hemophilia_a_lentiviral.yaml"))
    parser.add_argument("--size", type=int, default=256, help="lattice size of the fit (default 256)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per point (default 5, at least 5)")
    parser.add_argument("--check", action="store_true", help="only run the shipped config at the three VCNs")
    args = parser.parse_args(argv)
    if args.seeds < 5:
        raise SystemExit("--seeds: at least 5 (the calibration target is a mean over >= 5 seeds)")
    dur = f"time.duration_days={WINDOW_DAYS[1]:g}"
    common = [f"lattice.size={args.size}", dur, "time.snapshot_interval_days=null"]
    base = load_config(args.config, common)
    tg = base.transgene
    baseline = base.pk.baseline_iu_dl
    targets = np.array([level for _, level in GROUP_2])
    t = base.infusions[0].transduction
    print(f"{base.name} at {args.size}^{base.lattice.dims}, {args.seeds} seeds per point; transduced fraction "
          f"{t:g}; FVIII averaged over days {WINDOW_DAYS[0]:g}-{WINDOW_DAYS[1]:g}")
    print("product VCN -> copies per transduced cell (zero-truncated Poisson lambda): "
          + ", ".join(f"{v:g} -> {ztp_lambda(v, t):.3f}" for v, _ in GROUP_2))

    if args.check:
        means, ses = factor_levels(args.config, common, args.seeds)
        print(f"\nshipped: vcn_response {tg.vcn_response}, K {tg.vcn_half_saturation}, expression_per_vcn "
              f"{tg.expression_per_vcn:g}")
        report(means, ses, targets)
        return

    print("\n1. mature output at steady state (host marrow alone)")
    out, amp = mature_output(args.config, args.size, args.seeds)
    print(f"  {'lineage':<10} {'type':<5} {'amplification':>13} {'output/day':>11} {'+- SE':>9} "
          f"{'target':>9} {'fitted':>8}")
    fitted_amp = {}
    for lin, (mean, se) in out.items():
        name, a = amp[lin]
        fitted_amp[name] = a * REFERENCE_OUTPUT[lin] / mean
        print(f"  {lin:<10} {name:<5} {a:>13g} {mean:>11.3g} {se:>9.2g} {REFERENCE_OUTPUT[lin]:>9.3g} "
              f"{fitted_amp[name]:>8.0f}")
    amp_over = [f"cell_types.{name}.amplification={round(a)}" for name, a in fitted_amp.items()]

    print("\n2. transgene against Srivastava et al. 2025, group 2")
    best = None
    for response, ks in (("linear", (None,)), ("saturating", K_GRID)):
        for k in ks:
            over = [*common, *amp_over, f"transgene.vcn_response={response}", "transgene.expression_per_vcn=10"]
            if k is not None:
                over.append(f"transgene.vcn_half_saturation={k:g}")
            means, ses = factor_levels(args.config, over, args.seeds)
            excess = means - baseline
            scale = math.exp(np.mean(np.log((targets - baseline) / excess)))
            pred, pred_se = baseline + excess * scale, ses * scale
            worst = float(np.max(np.abs(pred / targets - 1)))
            label = response if k is None else f"{response} K={k:g}"
            print(f"  {label:<16} expression_per_vcn {10 * scale:7.3g}: "
                  + ", ".join(f"{p:.1f} +- {s:.1f}" for p, s in zip(pred, pred_se, strict=True))
                  + f"  (largest error {worst:.0%})")
            if best is None or worst < best[0]:
                best = (worst, label, 10 * scale, pred, pred_se)
    worst, label, expr, pred, pred_se = best
    print(f"\nfitted: {label}, expression_per_vcn {expr:.3g}")
    report(pred, pred_se, targets)
    print("amplifications: " + ", ".join(f"{name} {a:.0f}" for name, a in fitted_amp.items()))


def report(means, ses, targets) -> None:
    print(f"  {'product VCN':>11} {'simulated':>10} {'+- SE':>7} {'target':>7} {'error':>7}")
    ok = True
    for (vcn, _), m, s, target in zip(GROUP_2, means, ses, targets, strict=True):
        err = m / target - 1
        ok &= abs(err) <= TOLERANCE
        print(f"  {vcn:>11g} {m:>10.1f} {s:>7.1f} {target:>7.1f} {err:>+7.0%}")
    print(f"  within {TOLERANCE:.0%} of every median: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
