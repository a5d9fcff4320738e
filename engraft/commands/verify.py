"""``engraft verify``: named verification cases against theory and independent models, with a report."""

from __future__ import annotations

import sys

HELP = "run the verification cases (theory, an independent model, the Mesa reference) and write a report"


def add_arguments(parser) -> None:
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--quick", dest="tier", action="store_const", const="quick",
                      help="the quick tier (the default): a few minutes on two cores")
    tier.add_argument("--full", dest="tier", action="store_const", const="full",
                      help="the full tier: more replicates and configs (see docs/verification/)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help="run only these cases (see --list)")
    parser.add_argument("--out", metavar="DIR",
                        help="write report.md, verification.json and figures/ there (default: results/verification): a new path, an empty "
                             "directory or an earlier verification directory (replaced)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local worker processes (default: every CPU; 1 runs in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the cases' simulations on a Dask distributed cluster, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--fault", metavar="NAME",
                        help="inject a deliberate fault into the simulated model of the cases that define it "
                             "(they should FAIL; shows what each case detects; see --list)")
    parser.add_argument("--list", action="store_true", help="list the cases and their faults, and exit")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(tier="quick")


def main(args) -> int:
    from engraft.verification import run_verification
    from engraft.verification.registry import CASES

    if args.list:
        for name, case in CASES.items():
            print(f"{name:24} {case.title}")
            for fault, what in case.faults.items():
                print(f"{'':24}   --fault {fault}: {what}")
        return 0
    bar = _bar(not args.quiet)
    try:
        v = run_verification(args.only, args.tier, args.out or "results/verification", workers=args.workers, scheduler=args.scheduler,
                             fault=args.fault, progress=bar[0], command=_command(args))
    finally:
        bar[1]()
    width = max(len(r.name) for r in v.results)
    for r in v.results:
        stat = [c for c in r.comparisons if c.statistical]
        worst = min((c.p_value for c in stat if c.p_value is not None), default=None)
        detail = f"{len(r.comparisons)} comparisons" + (f", smallest p {worst:.2g}" if worst is not None else "")
        if r.error:
            detail = "error: " + r.error.strip().splitlines()[0][:200]
        print(f"{r.name:{width}}  {'PASS' if r.passed else 'FAIL'}  {detail}")
        if not r.passed:
            for c in r.comparisons:
                if not c.passed:
                    print(f"{'':{width}}        {c.name}: observed {c.observed:.4g}, expected {c.expected:.4g}"
                          + (f", p {c.p_value:.2g}" if c.p_value is not None else ""))
                    break
            print(f"{'':{width}}        reproduce: {v.reproduce(r)}")
    where = f"; report {v.out / 'report.md'}" if v.out else ""
    print(f"{sum(r.passed for r in v.results)} of {len(v.results)} cases passed ({v.tier} tier, "
          f"{v.wall_seconds:.0f} s wall, {v.cpu_seconds:.0f} s CPU, {v.executor}){where}")
    return 0 if v.passed else 1


def _command(args) -> list[str]:
    """The command line that reproduces this verification (from the parsed options)."""
    cmd = ["engraft", "verify", f"--{args.tier}"]
    if args.only:
        cmd += ["--only", *args.only]
    if args.out:
        cmd += ["--out", args.out]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.scheduler:
        cmd += ["--scheduler", args.scheduler]
    if args.fault:
        cmd += ["--fault", args.fault]
    return cmd


def _bar(enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="job", desc="verify", dynamic_ncols=True)
        bar.update(done - bar.n)

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close
