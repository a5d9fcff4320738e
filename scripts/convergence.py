"""Resolution study: the same patient at every lattice size (and time step).

The lattice is a sample of the marrow: ``scale`` turns lattice cells into body
cells, so the lattice size should change only the noise of a whole-body
result, never its value. This script runs the default experiment
(``configs/hemophilia_a_lentiviral.yaml``) and the reduced-intensity one
(``configs/reduced_intensity.yaml``) at several 2D and 3D sizes, several
seeds each, and tabulates per read-out the seed mean and its standard error:

- whole-body daily output per lineage before conditioning (body cells/day);
- the body HSC pool (lattice HSCs x HSC scale) before conditioning and at the end;
- the fraction of niches holding an HSC before conditioning;
- mean factor level in year 1 and in year 2 (IU/dL);
- engraftment: the fraction of runs whose ANC fell below 0.5e9/L and whose platelets fell below 20e9/L;
  neutrophil and platelet engraftment days, over the runs whose count fell below its level (a run that never
  fell below has no engraftment day: its summary's day 0 is a convention, not a recovery); days of ANC <
  0.5e9/L, in all and after engraftment; the ANC and platelet nadirs; day the threshold is reached and held;
  HSC and myeloid donor chimerism at the end;
- HSC VCN at the end.

Clone counts, Shannon diversity and the largest clone's share are listed too,
but they are read-outs of the lattice sample: they depend on the size unless
the HSC scale is <= 1.5 (docs/model.md, section 7), so they are not judged.

Each size is compared with the largest size of its dimension (the
reference; 3D is its own model, with 26 neighbours and a denser marrow, and
its amplifications are not calibrated): the seed mean must lie within 5 % of
the reference or within 2 standard errors of the difference, whichever is
larger; a trend is the slope of the 2D seed values against log2(size),
flagged when it is more than 3 standard errors from 0.
``--dt`` adds a time-step study at one size: dt halved twice, each compared
with the shipped dt by the same rule with 2 standard errors and no 5 %.

Writes ``convergence.csv`` (one row per run), ``convergence.md`` (the table)
and ``convergence.png`` (every read-out relative to the reference) to ``--out``::

    python scripts/convergence.py --dt                         # the stored study (about 10 minutes on 2 cores)
    python scripts/convergence.py --configs default --sizes 256,1024 --seeds 12,6 --sizes3d '' --first-seed 12
                                                               # a replicate with fresh seeds
    python scripts/convergence.py --sizes 64,128 --sizes3d 16 --seeds 3 --days 400   # a quick look
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engraft  # noqa: E402
from engraft import load_config  # noqa: E402
from engraft.readouts import ReadoutSpec, days_below, fell_below  # noqa: E402
from engraft.results import atomic_write_bytes, atomic_write_text  # noqa: E402
from engraft.simulation import Simulation, hsc_scale  # noqa: E402

CONFIGS = {"default": ROOT / "configs" / "hemophilia_a_lentiviral.yaml",
           "reduced_intensity": ROOT / "configs" / "reduced_intensity.yaml"}
#: read-outs judged by the convergence rule (column, label)
JUDGED = [
    ("output_myeloid", "myeloid output before conditioning (cells/day)"),
    ("output_platelets", "platelet output before conditioning (cells/day)"),
    ("output_erythroid", "red-cell output before conditioning (cells/day)"),
    ("output_lymphoid", "lymphoid output before conditioning (cells/day)"),
    ("body_hsc_pre", "body HSC pool before conditioning"),
    ("niche_fill_pre", "niches holding an HSC before conditioning"),
    ("body_hsc_end", "body HSC pool at the end"),
    ("factor_year1", "mean factor, year 1 (IU/dL)"),
    ("factor_year2", "mean factor, year 2 (IU/dL)"),
    ("neutropenic", "runs with ANC < 0.5e9/L (fraction)"),
    ("thrombocytopenic", "runs with platelets < 20e9/L (fraction)"),
    ("neutrophil_engraftment_day", "neutrophil engraftment day (runs with ANC < 0.5e9/L)"),
    ("platelet_engraftment_day", "platelet engraftment day (runs with platelets < 20e9/L)"),
    ("days_anc_below_500", "days of ANC < 0.5e9/L"),
    ("days_anc_below_500_after_engraftment", "days of ANC < 0.5e9/L after neutrophil engraftment"),
    ("days_platelets_below_20", "days of platelets < 20e9/L"),
    ("anc_nadir", "ANC nadir (1e9/L)"),
    ("platelet_nadir", "platelet nadir (1e9/L)"),
    ("threshold_day", "threshold reached and held (day)"),
    ("hsc_chimerism", "HSC donor chimerism at the end"),
    ("myeloid_chimerism", "myeloid donor chimerism at the end"),
    ("hsc_vcn", "HSC VCN at the end"),
]
#: read-outs of the lattice sample (not judged; body-equivalent only at HSC scale <= 1.5)
SAMPLE = [
    ("clones_alive", "graft clones alive at the end"),
    ("shannon", "Shannon diversity at the end"),
    ("top_clone", "largest clone's share at the end"),
]
REL_TOL = 0.05
Z_SIZE = 2.0
Z_TREND = 3.0


def nan_if_none(value):
    """A read-out a run does not have (an engraftment not reached: censored) is NaN in the table."""
    return float("nan") if value is None else value


def cytopenia(ts, summary: dict, spec: ReadoutSpec) -> dict:
    """The blood-count read-outs of one run; engraftment days only where the count fell below its level."""
    below_anc, below_plt = summary["days_anc_below_500"], summary["days_platelets_below_20"]
    if below_anc is None:  # a model without blood counts
        return dict.fromkeys(("neutropenic", "thrombocytopenic", "neutrophil_engraftment_day",
                              "platelet_engraftment_day", "days_anc_below_500",
                              "days_anc_below_500_after_engraftment", "days_platelets_below_20", "anc_nadir",
                              "platelet_nadir"), float("nan"))
    engrafted = summary["neutrophil_engraftment_day"]
    after = (days_below(ts["day"].to_numpy(), ts["anc_1e9_per_L"].to_numpy(), spec.neutrophil_level, engrafted)
             if below_anc > 0 and engrafted is not None else float("nan"))
    return {
        "neutropenic": float(fell_below(summary, "neutrophil_engraftment_day")),
        "thrombocytopenic": float(fell_below(summary, "platelet_engraftment_day")),
        "neutrophil_engraftment_day": nan_if_none(engrafted) if below_anc > 0 else float("nan"),
        "platelet_engraftment_day": nan_if_none(summary["platelet_engraftment_day"]) if below_plt > 0
        else float("nan"),
        "days_anc_below_500": below_anc,
        "days_anc_below_500_after_engraftment": after,
        "days_platelets_below_20": below_plt,
        "anc_nadir": nan_if_none(summary["anc_nadir"]),
        "platelet_nadir": nan_if_none(summary["platelet_nadir"]),
    }


def one_run(config: Path, dims: int, size: int, seed: int, days: float, dt: float | None) -> dict:
    over = [f"lattice.dims={dims}", f"lattice.size={size}", f"time.duration_days={days:g}",
            "time.snapshot_interval_days=null"]
    if dt is not None:
        over.append(f"time.dt_days={dt:g}")
    exp = load_config(config, over)
    sim = Simulation(exp, seed=seed)
    hsc = exp.type_names.index(exp.hsc_type)
    pre = {}
    condition = sim.condition

    def condition_and_count():
        # the HSC pool before the first dose of the regimen (condition() runs once per dose)
        pre.setdefault("hsc", int(np.count_nonzero(sim.state.ctype == hsc)))
        return condition()

    sim.condition = condition_and_count
    start = time.perf_counter()
    result = sim.run()
    wall = time.perf_counter() - start
    tau = sim.tally_tables.tau
    output = sim.baseline_mature[:, 0] / tau
    ts, s = result.timeseries, result.summary
    sc = hsc_scale(exp)
    year1 = ts[(ts["day"] > 0) & (ts["day"] <= 365)]["factor_iu_dl"].mean()
    year2 = ts[(ts["day"] > 365) & (ts["day"] <= 730)]["factor_iu_dl"].mean()
    last = ts.iloc[-1]
    row = {"dims": dims, "size": size, "seed": seed, "dt": exp.time.dt_days, "hsc_scale": sc, "wall_s": wall,
           "kernel": sim.kernel}
    for i, lin in enumerate(exp.lineage_names):
        row[f"output_{lin}"] = output[i]
    row.update({
        "body_hsc_pre": pre["hsc"] * sc,
        "niche_fill_pre": pre["hsc"] / len(sim.niche_sites),
        "body_hsc_end": (last["HSC_host"] + last["HSC_graft"]) * sc,
        "factor_year1": year1,
        "factor_year2": year2,
        **cytopenia(ts, s, ReadoutSpec.from_experiment(exp)),
        "threshold_day": s["threshold_day"],
        "hsc_chimerism": s["final_hsc_chimerism"],
        "myeloid_chimerism": s["final_myeloid_chimerism"],
        "hsc_vcn": s["final_hsc_vcn"],
        "clones_alive": s["final_clones_alive"],
        "shannon": s["final_shannon_diversity"],
        "top_clone": s["final_top_clone_share"],
    })
    return row


def upgrade(rows: list[dict]) -> list[dict]:
    """Rows of a table written before the cytopenia columns, read as the new ones.

    Those rows gave a run whose count never fell below its level the engraftment day of the summary's
    convention, day 0 (the infusion day of both studied configs); an engraftment after a fall is later
    than that. Such a day is now NaN, and the fraction of runs that fell below is its own read-out.
    """
    for r in rows:
        for day, flag in (("neutrophil_engraftment_day", "neutropenic"),
                          ("platelet_engraftment_day", "thrombocytopenic")):
            if flag not in r and day in r:
                fell = not (r[day] == 0.0)  # NaN (censored: still below at the end) fell below too
                r[flag] = float(fell)
                r[day] = r[day] if fell else float("nan")
    return rows


def kernels(rows_by_group: dict) -> str:
    """The kernels the runs used (tables written before the column existed: not recorded)."""
    names = {r.get("kernel") for rows in rows_by_group.values() for r in rows}
    names = sorted(n for n in names if isinstance(n, str))
    return ", ".join(names) or "not recorded"


def mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan


def trend(sizes, values) -> tuple[float, float]:
    """Slope of the values against log2(size), and its standard error."""
    x = np.log2(np.asarray(sizes, dtype=float))
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2 or len(x) < 3:
        return math.nan, math.nan
    if np.all(y == y[0]):  # the same value at every size (a fraction of 1): no slope, not a rounding residue
        return 0.0, 0.0
    a = np.vstack([x, np.ones_like(x)]).T
    coef, res, *_ = np.linalg.lstsq(a, y, rcond=None)
    dof = len(x) - 2
    sigma2 = float(res[0]) / dof if res.size and dof > 0 else 0.0
    cov = sigma2 * np.linalg.inv(a.T @ a)
    return float(coef[0]), float(math.sqrt(cov[0, 0]))


def judge(mean, se, ref_mean, ref_se, rel_tol=REL_TOL, z=Z_SIZE) -> tuple[bool, float]:
    diff = mean - ref_mean
    band = max(rel_tol * abs(ref_mean), z * math.sqrt(np.nan_to_num(se) ** 2 + np.nan_to_num(ref_se) ** 2))
    return (abs(diff) <= band) if np.isfinite(diff) else True, band


def fmt(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    if abs(x) >= 1e4 or (abs(x) < 1e-2 and x != 0):
        return f"{x:.3g}"
    return f"{x:.3g}"


def tabulate(rows: list[dict], group: str, key_cols: list[str]) -> tuple[list[str], list[str]]:
    """Markdown lines of one group (config), and the list of failed checks."""
    import pandas as pd

    df = pd.DataFrame(rows)
    lines, failures = [], []
    present = [(col, label) for col, label in JUDGED + SAMPLE if col in df]
    keys = sorted({tuple(r[c] for c in key_cols) for r in rows}, key=lambda k: (k[0], k[1], -k[2]))
    # the reference of each dimension: its largest size at the shipped dt (3D is its own model: 26
    # neighbours make a denser marrow, so 3D converges to its own values, not to 2D's)
    refs = {d: max((k for k in keys if k[0] == d), key=lambda k: (k[1], k[2])) for d in {k[0] for k in keys}}
    ref_key = refs[2]
    head = "| read-out | " + " | ".join(f"{k[0]}D {k[1]}^{k[0]}" + (f", dt {k[2]:g}" if len(
        {kk[2] for kk in keys}) > 1 else "") for k in keys) + " | trend / log2(size) (2D) |"
    lines += [head, "|" + "---|" * (len(keys) + 2)]

    def sel(k):
        return df[(df["dims"] == k[0]) & (df["size"] == k[1]) & (df["dt"] == k[2])]

    n_line = "| seeds (HSC scale) | " + " | ".join(f"{len(sel(k))} ({sel(k)['hsc_scale'].iloc[0]:.3g})"
                                                    for k in keys) + " | |"
    lines.append(n_line)
    for col, label in present:
        cells = []
        for k in keys:
            m, s = mean_se(sel(k)[col])
            ref = refs[k[0]]
            ref_m, ref_s = mean_se(sel(ref)[col])
            mark = ""
            if (col, label) in JUDGED and k != ref:
                rel = REL_TOL if k[2] == ref[2] else 0.0  # the dt rows: 2 SE only
                ok, band = judge(m, s, ref_m, ref_s, rel_tol=rel)
                if not ok:
                    mark = " **x**"
                    failures.append(f"{group}: {label} at {k}: {fmt(m)} +- {fmt(s)} vs {fmt(ref_m)} +- "
                                    f"{fmt(ref_s)} (band {fmt(band)})")
            cells.append(f"{fmt(m)} +- {fmt(s)}{mark}")
        two_d = df[(df["dims"] == 2) & (df["dt"] == ref_key[2])]
        slope, slope_se = trend(two_d["size"], two_d[col])
        tr = "-" if not np.isfinite(slope) else f"{fmt(slope)} +- {fmt(slope_se)}"
        if (col, label) in JUDGED and np.isfinite(slope) and slope_se > 0 and abs(slope) > Z_TREND * slope_se \
                and len(set(two_d["size"])) > 2:
            tr += " **trend**"
            failures.append(f"{group}: {label}: trend {fmt(slope)} +- {fmt(slope_se)} per doubling")
        name = label if (col, label) in JUDGED else f"{label} (lattice sample)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {tr} |")
    return lines, failures


def figure(rows_by_group: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    cols = [c for c, _ in JUDGED if any(c in r for rows in rows_by_group.values() for r in rows)]
    fig, axes = plt.subplots(1, len(rows_by_group), figsize=(6.5 * len(rows_by_group), 5.5), squeeze=False)
    for ax, (group, rows) in zip(axes[0], rows_by_group.items(), strict=True):
        df = pd.DataFrame(rows)
        df = df[df["dt"] == df["dt"].max()]
        keys = sorted({(d, s) for d, s in zip(df["dims"], df["size"], strict=True)})
        for j, col in enumerate(cols):
            for i, (d, s) in enumerate(keys):
                of_dims = df[df["dims"] == d]
                ref_m = of_dims[of_dims["size"] == of_dims["size"].max()][col].mean()
                if not np.isfinite(ref_m) or ref_m == 0:
                    continue
                v = df[(df["dims"] == d) & (df["size"] == s)][col].to_numpy(float) / ref_m
                m, se = mean_se(v)
                ax.errorbar(j + (i - len(keys) / 2) * 0.1, m, yerr=se if np.isfinite(se) else 0,
                            fmt="o" if d == 2 else "s", ms=3, color=plt.cm.viridis(i / max(1, len(keys) - 1)),
                            label=f"{d}D {s}^{d}" if j == 0 else None)
        ax.axhspan(1 - REL_TOL, 1 + REL_TOL, color="0.9")
        ax.axhline(1, color="0.5", lw=0.8)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([c.replace("_", " ") for c in cols], rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("seed mean / largest lattice of the same dimension (+- SE)")
        ax.set_title(group)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,reduced_intensity")
    parser.add_argument("--sizes", default="128,256,512,1024", help="2D lattice sizes")
    parser.add_argument("--sizes3d", default="32,64", help="3D lattice sizes (102^3 is about 1.06e6 sites; "
                        "'' for none)")
    parser.add_argument("--seeds", default="12,12,8,6", help="seeds per 2D size (one number: all), smallest first")
    parser.add_argument("--seeds3d", default="6,4", help="seeds per 3D size")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seed index to start from: a replicate with fresh seeds (run i of a size L has "
                        "seed 7919 L + first_seed + i)")
    parser.add_argument("--days", type=float, default=730.0, help="follow-up (2 years: year 1 and year 2)")
    parser.add_argument("--dt", action="store_true", help="also halve dt twice at --dt-size")
    parser.add_argument("--dt-size", type=int, default=256)
    parser.add_argument("--dt-seeds", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "convergence"))
    parser.add_argument("--from-csv", metavar="CSV", help="no runs: rebuild the table and figure from a "
                        "convergence.csv written before")
    args = parser.parse_args(argv)

    def ints(text):
        return [int(x) for x in text.split(",") if x]

    def seeds_for(sizes, text):
        s = ints(text)
        return dict(zip(sizes, s * len(sizes) if len(s) == 1 else s, strict=True))

    sizes, sizes3d = ints(args.sizes), ints(args.sizes3d)
    plan = [(2, L, n, None) for L, n in seeds_for(sizes, args.seeds).items()]
    plan += [(3, L, n, None) for L, n in seeds_for(sizes3d, args.seeds3d).items()] if sizes3d else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_by_group, lines, failures = {}, [], []
    saved = None
    if args.from_csv:
        import pandas as pd

        saved = upgrade(pd.read_csv(args.from_csv).to_dict("records"))
    for group in (list(dict.fromkeys(r["config"] for r in saved)) if saved else args.configs.split(",")):
        config = CONFIGS[group]
        group_plan = [] if saved else list(plan)
        if args.dt and group == "default" and not saved:
            dt0 = load_config(config).time.dt_days
            group_plan += [(2, args.dt_size, args.dt_seeds, dt0 / 2), (2, args.dt_size, args.dt_seeds, dt0 / 4)]
            if args.dt_size not in sizes:
                group_plan.append((2, args.dt_size, args.dt_seeds, None))
        rows = [r for r in saved if r["config"] == group] if saved else []
        for dims, size, n, dt in group_plan:
            for seed in range(args.first_seed, args.first_seed + n):
                row = one_run(config, dims, size, 7919 * size + seed, args.days, dt)
                row["config"] = group
                rows.append(row)
                print(f"{group} {dims}D {size} seed {seed} dt {row['dt']:g}: factor y1 {row['factor_year1']:.1f} "
                      f"y2 {row['factor_year2']:.1f}, myeloid {row['output_myeloid']:.3g}/day, "
                      f"{row['wall_s']:.0f} s", flush=True)
        rows_by_group[group] = rows
        # size table (shipped dt) and, for the default, the dt table
        dt0 = load_config(config).time.dt_days
        size_rows = [r for r in rows if r["dt"] == dt0]
        t, f = tabulate(size_rows, group, ["dims", "size", "dt"])
        lines += [f"### {group}: lattice size (dt {dt0:g} days, {args.days:g} days of follow-up)", "", *t, ""]
        failures += f
        dt_rows = [r for r in rows if r["dims"] == 2 and r["size"] == args.dt_size]
        if len({r["dt"] for r in dt_rows}) > 1:
            t, f = tabulate(dt_rows, f"{group} dt", ["dims", "size", "dt"])
            lines += [f"### {group}: time step at {args.dt_size}^2 (each against the shipped dt, 2 SE)", "", *t, ""]
            failures += f
    import pandas as pd

    # each file is written whole or not at all: a study stopped while writing leaves the last one in place
    atomic_write_text(out / "convergence.csv",
                      pd.DataFrame([r for rows in rows_by_group.values() for r in rows]).to_csv(index=False))
    text = ["# Resolution study", "",
            f"`python scripts/convergence.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
            "Seed mean +- standard error. **x**: outside 5 % of the largest lattice of the same dimension and "
            "outside 2 SE of the difference (dt rows: outside 2 SE of the shipped dt). **trend**: slope of the "
            "2D values against log2(size) beyond 3 SE.", "",
            f"Kernel: {kernels(rows_by_group)}; engraft {engraft.__version__}.", "",
            *lines, "## Checks", ""]
    text += [f"- FAILED {f}" for f in failures] or ["- every judged read-out within its band; no trend"]
    atomic_write_text(out / "convergence.md", "\n".join(text) + "\n")
    figure(rows_by_group, out / "convergence.png")
    print("\n".join(text))
    print(f"wrote {out / 'convergence.md'}, convergence.csv, convergence.png")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
