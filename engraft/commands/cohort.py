"""``engraft cohort FILE --out DIR``: a virtual patient cohort on the sweep machinery; trial read-outs."""

from __future__ import annotations

import sys
from pathlib import Path

from engraft.commands import add_executor_arguments, add_override_arguments

HELP = ("run a virtual patient cohort (drawn per-patient parameters x design arms) and write its trial "
        "read-outs: responders with exact CIs, Kaplan-Meier curves, figures; reruns resume")


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment with a cohort: section (and optionally sweep: arms)")
    parser.add_argument("--out", help="cohort directory (default: results/<file name>); rerun into it to resume")
    add_executor_arguments(parser)
    parser.add_argument("--kernel", choices=("sequential", "parallel"), help="kernel of every run")
    parser.add_argument("--patients", type=int, metavar="N",
                        help="patients per arm (overrides cohort.patients; the first N are the same patients)")
    add_override_arguments(parser, "skip the cohort figures")


def main(args) -> int:
    from engraft.cli import UsageError
    from engraft.cohort.run import run_cohort
    from engraft.cohort.spec import load_cohort
    from engraft.commands.sweep import progress_bar
    from engraft.sweep.executors import WorkersLost

    if args.patients is not None and args.patients < 1:
        raise UsageError(f"--patients: must be >= 1, got {args.patients}")
    overrides = list(args.overrides) + ([f"kernel={args.kernel}"] if args.kernel else [])
    cohort = load_cohort(args.config, overrides, patients=args.patients)
    out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
    callback, close = progress_bar(not args.quiet)
    try:
        try:
            outcome = run_cohort(cohort, out, workers=args.workers, scheduler=args.scheduler,
                                 dask_local=args.dask_local, progress=callback, figures=not args.no_figures)
        finally:
            close()
    except KeyboardInterrupt:
        print(f"engraft cohort: interrupted; finished runs are kept in {out}: rerun the same command "
              "to run the rest", file=sys.stderr)
        return 130
    except WorkersLost as err:
        print(f"engraft cohort: error: {err}", file=sys.stderr)
        return 1
    arms = len(cohort.arms)
    spec = cohort.cohort
    repeats = outcome.total - spec.patients * arms  # the runs beyond one per patient and arm
    noise = f" + {repeats} noise repeats with new seeds" if repeats > 0 else ""
    print(f"{outcome.total} runs ({spec.patients} patients x {arms} arm{'s' * (arms > 1)}{noise}) in {out} "
          f"({outcome.executor}): {outcome.ran} ran now, {outcome.reused} reused")
    if outcome.failed:
        print(f"{outcome.failed} of {outcome.total} runs failed ({', '.join(outcome.failed_ids[:5])}"
              f"{', ...' if outcome.failed > 5 else ''}); rerun the same command to retry them; "
              "the trial report is written once every run is done")
    else:
        print(f"trial report {out / 'trial_report.md'}; per-patient table {out / 'patients.parquet'}")
    return outcome.exit_status
