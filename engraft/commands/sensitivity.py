"""``engraft sensitivity FILE --out DIR``: Sobol indices or Morris screening of read-outs; resumable."""

from __future__ import annotations

import sys
from pathlib import Path

from engraft.commands import add_executor_arguments, add_override_arguments

HELP = ("global sensitivity of read-outs (SALib): Sobol first-order and total indices with Saltelli sampling, "
        "or Morris screening, with bootstrap CIs and the noise floor; reruns resume")


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML experiment with a sensitivity: section")
    parser.add_argument("--out", help="output directory (default: results/<file name>); rerun into it to resume")
    add_executor_arguments(parser)
    add_override_arguments(parser, "skip the bar chart")


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
