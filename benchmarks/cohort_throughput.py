"""Cohort throughput: virtual patients per hour at the shipped resolution, 5-year follow-up, and where the time goes.

Not a test: it measures. The first ``--patients`` patients of
``configs/cohort_hemophilia_a.yaml`` (the shipped 1024 x 1024 lattice, 400-day
burn-in, 5 years of daily records; no noise replicates) run as a cohort with
``--workers`` local processes into a fresh directory, after one warm-up run
in this process that compiles (or loads the cached) kernel, timed
separately. Reported: patients per hour as a user sees it (worker start-up
and the trial read-outs included), the median wall time of one run, and the
load average before and after (the machine's cores may be shared: other
work lowers the figure).

The breakdown times ``--profile`` patients in this process, phase by phase:
burn-in, the kernel's follow-up steps, the daily read-outs (``record``), the
rest of the run (conditioning, infusion, snapshots, summary) and writing the
run directory, each patient twice, alternating: as shipped (lattice read-outs
weekly after the first year) and with the lattice read at every daily record::

    python benchmarks/cohort_throughput.py [--patients 8] [--workers 2] [--profile 2]
                                           [--set key.path=value ...]
                                           [--out benchmarks/results/cohort_throughput.json]

``--set`` overrides the cohort's experiment as ``engraft cohort --set`` does,
for example ``--set lattice.size=256`` for a cohort on a quarter lattice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engraft.cohort import load_cohort, run_cohort  # noqa: E402
from engraft.results import atomic_write_text, environment, write_run  # noqa: E402

COHORT = ROOT / "configs" / "cohort_hemophilia_a.yaml"


def phase_breakdown(cohort, n: int, dense: bool = False) -> dict:
    """Seconds per phase of ``n`` patients run in this process (wrapping the run's functions).

    ``dense``: with the lattice read at every record (``time.lattice_record_interval_days`` unset).
    The burn-in is :func:`engraft.timeline.burn_in`, which :func:`engraft.timeline.run_engine`
    calls for either engine; the kernel steps and records are the Simulation's methods.
    """
    from engraft import engines, simulation, timeline

    totals = {"burn_in": 0.0, "follow_up_kernel": 0.0, "record": 0.0}
    originals = {name: getattr(simulation.Simulation, name) for name in ("advance", "record")}
    original_burn_in = timeline.burn_in
    in_burn_in = [False]

    def timed_burn_in(*args, **kwargs):
        start = time.perf_counter()
        in_burn_in[0] = True
        try:
            return original_burn_in(*args, **kwargs)
        finally:
            in_burn_in[0] = False
            totals["burn_in"] += time.perf_counter() - start

    def timed(name, key):
        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return originals[name](self, *args, **kwargs)
            finally:
                if not in_burn_in[0]:
                    totals[key] += time.perf_counter() - start
        return wrapper

    timeline.burn_in = timed_burn_in
    simulation.Simulation.advance = timed("advance", "follow_up_kernel")
    simulation.Simulation.record = timed("record", "record")
    runs = [r for r in cohort.runs if r.replicate == 0][:n]
    total = write = 0.0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in runs:
                exp = cohort.run_experiment(run)
                if dense:
                    exp = exp.model_copy(update={"time": exp.time.model_copy(
                        update={"lattice_record_interval_days": None})})
                start = time.perf_counter()
                result = engines.simulate(exp)
                total += time.perf_counter() - start
                start = time.perf_counter()
                write_run(result, Path(tmp) / run.run_id, figure=False)
                write += time.perf_counter() - start
    finally:
        timeline.burn_in = original_burn_in
        for name, method in originals.items():
            setattr(simulation.Simulation, name, method)
    per = {k: v / n for k, v in totals.items()}
    per["other_simulation"] = total / n - sum(per.values())
    per["write_run_dir"] = write / n
    per["total"] = total / n + write / n
    return {"patients": n, "seconds_per_patient": per,
            "share": {k: v / per["total"] for k, v in per.items() if k != "total"}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", type=int, default=2, help="patients timed phase by phase (0: none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the cohort's experiment (repeatable)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cohort_throughput.json"))
    args = parser.parse_args(argv)

    from engraft.engines import simulate

    cohort = load_cohort(COHORT, args.overrides, patients=args.patients)
    cohort.runs = [r for r in cohort.runs if r.replicate == 0]  # no noise replicates: patients only
    start = time.perf_counter()
    simulate(cohort.run_experiment(cohort.runs[0]))  # compile or load the cached kernel
    warm_up = time.perf_counter() - start
    report = {"benchmark": "cohort_throughput", "config": str(COHORT.relative_to(ROOT)),
              "patients": args.patients, "workers": args.workers, "warm_up_seconds": warm_up,
              "follow_up_days": cohort.base["time"]["duration_days"], "lattice_size": cohort.base["lattice"]["size"],
              "kernel": cohort.base.get("kernel", "sequential"), "overrides": args.overrides,
              "environment": environment(), "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        outcome = run_cohort(cohort, Path(tmp) / "cohort", workers=args.workers, figures=False)
        elapsed = time.perf_counter() - start
        import pandas as pd

        per_run = pd.read_parquet(Path(tmp) / "cohort" / "aggregate.parquet")["wall_seconds"]
    if outcome.failed:
        raise SystemExit(f"{outcome.failed} runs failed")
    report.update({"seconds": elapsed, "patients_per_hour": args.patients / elapsed * 3600,
                   "run_seconds_median": float(statistics.median(per_run)),
                   "load_average_after": os.getloadavg()[0]})
    if args.profile:  # sparse (as shipped) and dense lattice records, alternating, one patient at a time
        sparse, dense = [], []
        for k in range(args.profile):
            sub = load_cohort(COHORT, args.overrides, patients=k + 1)
            sub.runs = [r for r in sub.runs if r.replicate == 0][k:k + 1]
            sparse.append(phase_breakdown(sub, 1))
            dense.append(phase_breakdown(sub, 1, dense=True))
        report["breakdown"] = {label: {key: statistics.median(b["seconds_per_patient"][key] for b in runs)
                                       for key in runs[0]["seconds_per_patient"]}
                               for label, runs in (("shipped", sparse), ("lattice_read_daily", dense))}
        report["breakdown"]["paired_total_ratio"] = [s["seconds_per_patient"]["total"] / d["seconds_per_patient"]["total"]
                                                     for s, d in zip(sparse, dense, strict=True)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(report, indent=2))
    print(f"{args.patients} patients, {args.workers} workers: {report['patients_per_hour']:.0f} patients/hour "
          f"({elapsed:.1f} s; one run {report['run_seconds_median']:.2f} s median; load "
          f"{report['load_average_before']:.1f} -> {report['load_average_after']:.1f})")
    if args.profile:
        for label in ("shipped", "lattice_read_daily"):
            per = report["breakdown"][label]
            print(f"{label}, per patient (median): " + ", ".join(f"{k} {v:.2f} s" for k, v in per.items()))
        print("paired shipped / daily-lattice time: "
              + ", ".join(f"{r:.2f}" for r in report["breakdown"]["paired_total_ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
