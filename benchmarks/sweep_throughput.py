"""Sweep throughput: runs per minute with 1 and 2 local workers, and the scaling ratio.

Not a test: it measures. One small sweep (the default hemophilia A experiment,
256 x 256 lattice, with a 200-day burn-in and 1 year of follow-up: 2 doses x
2 transduction levels x 4 replicates = 16 short runs) runs with 1 worker
(in this process) and with 2 worker processes (a spawned pool), ``--repeats``
times each, after one warm-up run that compiles (or loads the cached) kernel,
timed separately. Reported: runs per minute of the whole sweep as a user sees
it (worker start-up included; median of the repeats), the time to the first
finished run, the median wall time of one run, and the 2-worker / 1-worker
ratio. The load average is recorded because other work on the machine skews
the ratio. ``--kernel parallel`` runs the sweep with the parallel kernel (all
cores in one worker, one thread each in two)::

    python benchmarks/sweep_throughput.py [--repeats 3] [--kernel sequential|parallel]
                                          [--out benchmarks/results/sweep_throughput.json]
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

from engraft.config.load import load_yaml, resolve_bases  # noqa: E402
from engraft.results import atomic_write_text, environment  # noqa: E402
from engraft.sweep import parse_sweep, run_sweep  # noqa: E402

EXPERIMENT = ROOT / "configs" / "hemophilia_a_lentiviral.yaml"
SWEEP = {
    "replicates": 4,  # 2 x 2 x 4 = 16 runs
    "root_seed": 1,
    "overrides": {"time.burn_in_days": 200, "time.duration_days": 365, "time.snapshot_interval_days": 365},
    "parameters": {"infusions[0].dose_per_kg": {"values": [4e6, 8e6]},
                   "infusions[0].transduction": {"values": [0.3, 0.8]}},
}


def bench_sweep(replicates: int = SWEEP["replicates"], kernel: str = "sequential"):
    data = resolve_bases(load_yaml(EXPERIMENT), EXPERIMENT.resolve())
    data["kernel"] = kernel
    data["sweep"] = {**SWEEP, "replicates": replicates}
    return parse_sweep(data)


def timed_sweep(sweep, out: Path, workers: int) -> dict:
    """One sweep into a fresh directory: wall time, time to the first finished run, per-run times."""
    first: list[float] = []
    start = time.perf_counter()

    def progress(state) -> None:
        if state.ran and not first:
            first.append(time.perf_counter() - start)

    load = os.getloadavg()[0]
    outcome = run_sweep(sweep, out, workers=workers, progress=progress)
    elapsed = time.perf_counter() - start
    if outcome.failed:
        raise SystemExit(f"{outcome.failed} runs failed in {out}")
    import pandas as pd

    per_run = pd.read_parquet(out / "aggregate.parquet")["wall_seconds"]
    return {"seconds": elapsed, "runs_per_minute": len(sweep.runs) / elapsed * 60,
            "first_run_seconds": first[0], "run_seconds_median": float(per_run.median()),
            "load_average_before": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kernel", choices=("sequential", "parallel"), default="sequential")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_throughput.json"))
    args = parser.parse_args(argv)
    sweep = bench_sweep(kernel=args.kernel)
    n = len(sweep.runs)
    results: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_sweep(bench_sweep(replicates=1, kernel=args.kernel), Path(tmp) / "warmup", workers=1)  # compile/load
        warmup = time.perf_counter() - start
        for rep in range(args.repeats):  # interleaved, so slow drifts in machine load hit both alike
            for workers in (1, 2):
                results[workers].append(timed_sweep(sweep, Path(tmp) / f"w{workers}-{rep}", workers))
    summary = {}
    for workers, reps in results.items():
        summary[str(workers)] = {
            "runs_per_minute_median": statistics.median(r["runs_per_minute"] for r in reps),
            "first_run_seconds_median": statistics.median(r["first_run_seconds"] for r in reps),
            "run_seconds_median": statistics.median(r["run_seconds_median"] for r in reps),
            "repeats": reps,
        }
    ratio = summary["2"]["runs_per_minute_median"] / summary["1"]["runs_per_minute_median"]
    record = {
        "benchmark": "sweep_throughput",
        "sweep": f"{EXPERIMENT.relative_to(ROOT)} with {json.dumps(SWEEP['overrides'])}; "
                 f"2 doses x 2 transduction x {SWEEP['replicates']} replicates",
        "kernel": args.kernel,
        "runs": n,
        "warmup_seconds": warmup,
        "workers": summary,
        "scaling_2_over_1": ratio,
        "environment": environment(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(record, indent=2) + "\n")
    one, two = summary["1"], summary["2"]
    print(f"sweep throughput ({args.kernel} kernel, {n} runs, median of {args.repeats}): "
          f"1 worker {one['runs_per_minute_median']:.1f} "
          f"runs/min | 2 workers {two['runs_per_minute_median']:.1f} runs/min | scaling {ratio:.2f}x "
          f"| one run {one['run_seconds_median']:.2f} s alone, {two['run_seconds_median']:.2f} s in a pair "
          f"| first result {two['first_run_seconds_median']:.1f} s with 2 workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
