"""``engraft sensitivity FILE --out DIR``: Sobol indices or Morris screening of read-outs; resumable."""

from __future__ import annotations

import sys
from pathlib import Path

HELP = ("global sensitivity of read-outs (SALib): Sobol first-order and total indices with Saltelli sampling, "
        "or Morris screening, with bootstrap CIs and the noise floor; reruns resume")


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment with a sensitivity: section")
    parser.add_argument("--out", help="output directory (default: results/<file name>); rerun into it to resume")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local worker processes (default: every CPU; 1 runs in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--dask-local", action="store_true", help="start a Dask LocalCluster on 127.0.0.1")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the base experiment (repeatable)")
    parser.add_argument("--no-figures", action="store_true", help="skip the bar chart")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def main(args) -> int:
    from engraft.commands.sweep import progress_bar
    from engraft.sensitivity import REPORT_FILE, load_sensitivity, run_sensitivity
    from engraft.sweep.executors import WorkersLost

    design = load_sensitivity(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
    callback, close = progress_bar(not args.quiet)
    try:
        try:
            outcome = run_sensitivity(design, out, workers=args.workers, scheduler=args.scheduler,
                                      dask_local=args.dask_local, progress=callback, figures=not args.no_figures)
        finally:
            close()
    except KeyboardInterrupt:
        print(f"engraft sensitivity: interrupted; finished runs are kept in {out}: rerun to finish",
              file=sys.stderr)
        return 130
    except WorkersLost as err:
        print(f"engraft sensitivity: error: {err}", file=sys.stderr)
        return 1
    print(f"{outcome.total} runs ({design.spec.method}, {len(design.spec.parameters)} parameters) in {out} "
          f"({outcome.executor}): {outcome.ran} ran now, {outcome.reused} reused")
    if outcome.failed:
        print(f"{outcome.failed} runs failed ({', '.join(outcome.failed_ids[:5])}); rerun to retry them")
    else:
        print(f"indices {out / 'sensitivity.json'}; report {out / REPORT_FILE}")
    return outcome.exit_status
