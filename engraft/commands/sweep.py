"""``engraft sweep FILE --out DIR``: many runs from one YAML, on local processes or Dask; resumable."""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "run a sweep (parameters x replicates) on local processes or a Dask cluster; reruns resume"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment with a sweep: section (or experiment: FILE + sweep:)")
    parser.add_argument("--out",
                        help="sweep directory (default: results/<file name>): a new path, an empty directory, "
                             "or this sweep's own directory (rerun into it to resume)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local worker processes (default: the sweep's workers, else every CPU; "
                             "1 runs in this process); with --dask-local, the Dask workers")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on a Dask distributed cluster, e.g. tcp://10.0.0.5:8786 (the sweep "
                             "directory must be on a file system the workers share)")
    parser.add_argument("--dask-local", action="store_true",
                        help="start a Dask LocalCluster on this machine (127.0.0.1) and run there")
    parser.add_argument("--figures", action="store_true", help="write each run's summary figure (slower)")
    parser.add_argument("--kernel", choices=("sequential", "parallel"),
                        help="kernel of every run (sets the base experiment's kernel): sequential (the "
                             "default) or parallel (faster; each local worker gets its share of the cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the base experiment (repeatable)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def progress_bar(enabled: bool):
    """A tqdm bar (runs done, failed, remaining time) on a terminal: (update, close); else (None, no-op)."""
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = None

    def update(state) -> None:
        nonlocal bar
        if bar is None:  # reused runs count as done but not towards the rate
            bar = tqdm(total=state.total, initial=state.finished, unit="run", desc="sweep",
                       dynamic_ncols=True, smoothing=0.1)
        bar.set_postfix(failed=state.failed, refresh=False)
        bar.update(state.finished - bar.n)

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def main(args) -> int:
    from engraft.sweep import load_sweep, run_sweep
    from engraft.sweep.executors import WorkersLost

    sweep = load_sweep(args.config, args.overrides + ([f"kernel={args.kernel}"] if args.kernel else []))
    out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
    callback, close = progress_bar(not args.quiet)
    try:
        try:
            outcome = run_sweep(sweep, out, workers=args.workers, scheduler=args.scheduler,
                                dask_local=args.dask_local, figures=args.figures, progress=callback)
        finally:
            close()  # before any message, so the bar does not overwrite it
    except KeyboardInterrupt:
        print(f"engraft sweep: interrupted; finished runs are kept in {out}: rerun the same command "
              "to run the rest", file=sys.stderr)
        return 130
    except WorkersLost as err:
        print(f"engraft sweep: error: {err}", file=sys.stderr)
        return 1
    print(f"{outcome.total} runs in {out} ({outcome.executor}): {outcome.ran} ran now, "
          f"{outcome.reused} reused; table {out / 'aggregate.parquet'}")
    if outcome.damaged_ids:
        print(f"{len(outcome.damaged_ids)} runs whose files no longer parsed were run again "
              f"({', '.join(outcome.damaged_ids[:5])}{', ...' if len(outcome.damaged_ids) > 5 else ''})")
    if outcome.failed:
        print(f"{outcome.failed} of {outcome.total} runs failed ({', '.join(outcome.failed_ids[:5])}"
              f"{', ...' if outcome.failed > 5 else ''}; see {out / 'runs'}/<run_id>.error.json); "
              "rerun the same command to retry them")
    return outcome.exit_status
