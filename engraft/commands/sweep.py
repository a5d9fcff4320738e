"""``engraft sweep FILE --out DIR``: many runs from one YAML, resumable."""

from __future__ import annotations

from pathlib import Path

HELP = "run a sweep (parameters x replicates) on local processes or a Dask cluster; resumes"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment with a sweep: section (or experiment: + sweep:)")
    parser.add_argument("--out", help="sweep directory (default: results/<file name>)")
    parser.add_argument("--workers", type=int, help="local worker processes (default: the sweep's "
                                                    "workers, else 1); with --dask-local, Dask workers")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on a Dask distributed cluster, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--dask-local", action="store_true",
                        help="start a Dask LocalCluster on this machine (loopback) and run there")
    parser.add_argument("--figures", action="store_true", help="write each run's summary figure")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the base experiment (repeatable)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def main(args) -> int:
    from engraft.cli import UsageError
    from engraft.sweep import load_sweep, run_sweep
    from engraft.sweep.runner import progress_bar

    sweep = load_sweep(args.config, args.overrides)
    workers = args.workers or sweep.workers or 1
    if workers < 1:
        raise UsageError(f"--workers: must be >= 1, got {workers}")
    scheduler = args.scheduler or sweep.scheduler
    if scheduler and args.dask_local:
        raise UsageError("--scheduler and --dask-local: choose one")
    out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
    callback, bar = progress_bar(not args.quiet)
    try:
        outcome = run_sweep(sweep, out, workers=workers, scheduler=scheduler, dask_local=args.dask_local,
                            figures=args.figures, progress=callback)
    finally:
        if bar is not None:
            bar.close()
    line = (f"{outcome.total} runs in {out}: {outcome.ran} ran now, {outcome.reused} reused; "
            f"aggregate table {out / 'aggregate.parquet'}")
    print(line)
    if outcome.failed:
        print(f"{outcome.failed} of {outcome.total} runs failed (see {out}/runs/*.error.json; "
              "rerun the same command to retry them)")
    return outcome.exit_status
