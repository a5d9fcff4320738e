"""Lodging into a nearly full marrow: the adaptive search against random trials only.

Not a test: it measures. An HSC-only marrow (``configs/tiny.yaml`` with
every site a niche, filled with HSCs, egress ``--egress`` a day, no death in
the blood and fast lodging, no conditioning or infusion) has almost no free
niche at the end of each step: the HSCs that left during the step compete
for the niches they left, and with random trials the last of them need
about as many trials as there are niches. Each kernel is timed with
``circulation.lodging_search`` ``adaptive`` (the default) and ``rejection``,
in separate processes, alternating, ``--repeats`` times; the median seconds
per step and the free niches at the end are written as JSON::

    python benchmarks/lodging.py [--size 100] [--egress 0.46] [--steps 400] [--repeats 3]
                                 [--out benchmarks/results/lodging.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engraft.results import atomic_write_text, environment  # noqa: E402


def overrides(size: int, egress: float, search: str) -> list[str]:
    return [f"lattice.size={size}", "lattice.niche_fraction=1.0", "lattice.niche_placement=random",
            "lattice.niche_cluster_size=null", f"circulation.egress_rate={egress}",
            "cell_types.HSC.apoptosis_rate=0", "cell_types.HSC.division_rate=0",
            "circulation.lodging_rate=28800", "circulation.blood_lifetime_minutes=1e12",
            "conditioning=null", "infusions=[]", "time.burn_in_days=0", f"circulation.lodging_search={search}"]


def one(kernel: str, size: int, egress: float, search: str, steps: int) -> dict:
    """Time ``steps`` steps in this process (after one step that compiles or loads the kernel)."""
    from engraft import load_config
    from engraft.kernel.layout import C_EMPTY_NICHE
    from engraft.simulation import Simulation

    exp = load_config(ROOT / "configs" / "tiny.yaml", overrides(size, egress, search))
    sim = Simulation(exp, seed=1, kernel=kernel)
    sim.advance(1)
    t0 = time.perf_counter()
    sim.advance(steps)
    seconds = time.perf_counter() - t0
    return {"seconds_per_step": seconds / steps, "free_niches_end": int(sim.counters[C_EMPTY_NICHE]),
            "niches": int(sim.niche_sites.size), "pool_end": int(sim.pool.size)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--egress", type=float, default=0.46)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lodging.json")
    ap.add_argument("--one", nargs=2, metavar=("KERNEL", "SEARCH"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.one[0], a.size, a.egress, a.one[1], a.steps)))
        return 0
    rows = []
    for kernel in ("sequential", "parallel"):
        runs = {"adaptive": [], "rejection": []}
        for _ in range(a.repeats):
            for search in runs:  # alternating, each in a fresh process
                out = subprocess.run([sys.executable, __file__, "--one", kernel, search, "--size", str(a.size),
                                      "--egress", str(a.egress), "--steps", str(a.steps)],
                                     check=True, capture_output=True, text=True).stdout
                runs[search].append(json.loads(out.splitlines()[-1]))
        med = {s: statistics.median(r["seconds_per_step"] for r in v) for s, v in runs.items()}
        rows.append({"kernel": kernel, "runs": runs, "median_seconds_per_step": med,
                     "adaptive_over_rejection": med["adaptive"] / med["rejection"]})
        print(f"{kernel}: adaptive {1e3 * med['adaptive']:.3f} ms/step, rejection {1e3 * med['rejection']:.3f} "
              f"ms/step ({med['adaptive'] / med['rejection']:.2f}x); free niches at the end "
              f"{[r['free_niches_end'] for r in runs['adaptive']]} of {runs['adaptive'][0]['niches']}")
    result = {"what": __doc__.splitlines()[0], "size": a.size, "egress": a.egress, "steps": a.steps,
              "repeats": a.repeats, "environment": environment(), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
