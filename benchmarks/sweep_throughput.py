"""Sweep throughput: runs per minute with 1 and 2 local workers, and the scaling ratio.

Not a test: it measures. Runs the same sweep (the default human experiment on
a 128 x 128 lattice, 16 runs of one year after a 200-day burn-in, about a
second each) with 1 worker (in process) and 2 worker processes, after
one warm-up run that compiles or loads the kernel, and reports runs per
minute, medians of ``--repeats`` repetitions, and the 2-worker / 1-worker ratio::

    python benchmarks/sweep_throughput.py [--repeats 3] [--out benchmarks/results/sweep_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engraft.config.load import load_yaml, resolve_bases  # noqa: E402
from engraft.results import environment  # noqa: E402
from engraft.sweep import parse_sweep, run_sweep  # noqa: E402


def bench_sweep():
    path = ROOT / "configs" / "hemophilia_a_lentiviral.yaml"
    data = resolve_bases(load_yaml(path), path.resolve())
    data["sweep"] = {
        "replicates": 4,
        "root_seed": 1,
        "overrides": {"time.duration_days": 365, "time.burn_in_days": 200, "lattice.size": 128},
        "parameters": {"infusions[0].dose_per_kg": {"values": [4e6, 8e6]},
                       "infusions[0].transduction": {"values": [0.3, 0.8]}},
    }
    return parse_sweep(data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_throughput.json"))
    args = parser.parse_args(argv)
    sweep = bench_sweep()
    n = len(sweep.runs)
    with tempfile.TemporaryDirectory() as tmp:
        run_sweep(parse_sweep({**sweep.base, "sweep": {"parameters": {"seed": {"values": [1]}}}}),
                  Path(tmp) / "warmup")  # compile or load the kernel once
        results = {}
        for workers in (1, 2):
            rates = []
            for rep in range(args.repeats):
                start = time.perf_counter()
                outcome = run_sweep(sweep, Path(tmp) / f"w{workers}-{rep}", workers=workers)
                elapsed = time.perf_counter() - start
                assert outcome.failed == 0
                rates.append(n / elapsed * 60)
            results[workers] = {"runs_per_minute_median": statistics.median(rates),
                                "runs_per_minute": rates}
    ratio = results[2]["runs_per_minute_median"] / results[1]["runs_per_minute_median"]
    record = {
        "benchmark": "sweep_throughput",
        "runs": n,
        "run": "configs/hemophilia_a_lentiviral.yaml, 128 x 128 lattice, 200-day burn-in + 365 days",
        "workers": {str(k): v for k, v in results.items()},
        "scaling_2_over_1": ratio,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "environment": environment(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"{'workers':>8} {'runs/min (median)':>18}")
    for k, v in results.items():
        print(f"{k:>8} {v['runs_per_minute_median']:>18.1f}")
    print(f"scaling 2 / 1 workers: {ratio:.2f}x   ({n} runs per repetition; {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
