"""``engraft run FILE``: one simulation, written to a run directory."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from engraft.config.load import load_config
from engraft.results import write_run

HELP = "run one experiment and write its run directory (tables, snapshots, figure)"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment file")
    parser.add_argument("--out", help="run directory (default: results/<config name>); a new path, an "
                                      "empty directory, or an earlier engraft run with --force")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier engraft run directory at --out (nothing else is ever replaced)")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's seed)")
    parser.add_argument("--engine", choices=("kernel", "mesa"),
                        help="kernel (compiled, default) or mesa (the reference model); sets the config's "
                             "engine (mesa also sets kernel: sequential)")
    parser.add_argument("--kernel", choices=("sequential", "parallel"),
                        help="kernel engine: random sequential update (the default) or the parallel "
                             "sublattice kernel (all Numba threads; same results for any thread count); "
                             "sets the config's kernel")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="Numba threads for the parallel kernel (default: all cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field, e.g. --set infusions[0].dose_per_kg=6e6 (repeatable)")
    parser.add_argument("--no-figure", action="store_true", help="skip the summary figure")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")


def progress_bar(enabled: bool):
    """A tqdm progress callback on a terminal, else None."""
    if not enabled or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=1, unit="step", unit_scale=True, desc="simulating", leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar


def blood_count_lines(summary: dict) -> list[str]:
    """The engraftment days, cytopenia durations and nadirs, one line per lineage (none without counts)."""
    if summary.get("anc_nadir") is None:
        return []

    def engrafted(prefix: str, level: str, days_below: int, low: str) -> str:
        day = summary[f"{prefix}_engraftment_day"]
        if day is None:
            return f"not engrafted by day {summary['final_day']:g} (censored)"
        if day == 0 and days_below == 0:  # summary.json keeps day 0, the convention of the tables
            return f"never {low} (engraftment day 0 by convention)"
        return f"engrafted day {day:g} (3 days {level})"

    anc_days, plt_days = summary["days_anc_below_500"], summary["days_platelets_below_20"]
    return [
        f"neutrophils    {engrafted('neutrophil', 'ANC >= 0.5e9/L', anc_days, 'below 0.5e9/L')}; "
        f"ANC < 0.5e9/L for {anc_days} days, nadir {summary['anc_nadir']:.2g}e9/L on day "
        f"{summary['anc_nadir_day']:g}",
        f"platelets      {engrafted('platelet', '>= 20e9/L', plt_days, 'below 20e9/L')}; < 20e9/L for "
        f"{plt_days} days, nadir {summary['platelet_nadir']:.3g}e9/L on day "
        f"{summary['platelet_nadir_day']:g} (no transfusions modelled)",
    ]


def format_summary(summary: dict, out: Path) -> str:
    def never(value) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    threshold = summary["threshold_iu_dl"]
    held = summary["threshold_day"]
    lines = [
        f"factor level   {summary['final_factor_iu_dl']:.1f} IU/dL at day {summary['final_day']:g} "
        f"({summary['final_severity']}); {summary['mean_factor_last_year_iu_dl']:.1f} mean over the last year",
        f"threshold      {threshold:g} IU/dL " + ("not reached and held" if never(held)
                                                  else f"reached and held from day {held:g}"),
        f"chimerism      HSC {summary['final_hsc_chimerism']:.1%}, VCN {summary['final_hsc_vcn']:.2f} per HSC",
        f"clones         {summary['final_clones_alive']} alive, Shannon {summary['final_shannon_diversity']:.2f}, "
        f"largest {summary['final_top_clone_share']:.1%} "
        + ("(body-equivalent)" if summary.get("clone_readouts_body_equivalent", True) else "(of the lattice sample)"),
        f"bleeding       about {summary['final_joint_bleeds_per_year']:.2f} joint bleeds a year",
    ]
    lines[2:2] = blood_count_lines(summary)
    if "final_platelet_factor_iu_per_1e8" in summary:
        lines.insert(1, f"platelet FVIII {summary['final_platelet_factor_iu_per_1e8'] * 1000:.2f} mU per 1e8 "
                        "platelets (stored; not in plasma)")
    if summary.get("hsc_scale_warning"):
        lines.append(f"warning        {summary['hsc_scale_warning']}")
    if summary.get("calibration_warning"):
        lines.append(f"warning        {summary['calibration_warning']}")
    if summary.get("calibration_note"):
        lines.append(f"calibration    {summary['calibration_note']}")
    lines.append(f"written to     {out}")
    return "\n".join(lines)


def main(args) -> int:
    import shutil

    from engraft.engines import preflight, simulate
    from engraft.outputs import check_run_dir, stage_dir
    from engraft.results import check_disk_space

    # --engine and --kernel are config overrides, so the run's config.yaml names what ran
    overrides = list(args.overrides)
    if args.engine:
        overrides.append(f"engine={args.engine}")
        if args.engine == "mesa" and not args.kernel:
            overrides.append("kernel=sequential")
    if args.kernel:
        overrides.append(f"kernel={args.kernel}")
    exp = load_config(args.config, overrides, seed=args.seed)
    preflight(exp)
    if args.threads is not None:
        import numba

        from engraft.cli import UsageError

        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            raise UsageError(f"--threads: must be in 1..{numba.config.NUMBA_NUM_THREADS}, got {args.threads}")
        numba.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
    # the output is checked, and its temporary sibling made, before simulating
    check_run_dir(out, force=args.force)
    staged = stage_dir(out)
    try:
        check_disk_space(exp, out)
        callback, bar = progress_bar(not args.quiet)
        try:
            result = simulate(exp, progress=callback)
        finally:
            if bar is not None:
                bar.close()
        write_run(result, out, command=["engraft", *sys.argv[1:]], figure=not args.no_figure,
                  force=args.force, staged=staged)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone already unless the run failed
    if not args.quiet:
        print(format_summary(result.summary, out))
    return 0

