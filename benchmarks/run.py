"""engraft benchmarks: kernel throughput, compile time, thread scaling, memory, Mesa, a human-scale run.

Run on its own (not part of the test suite)::

    python benchmarks/run.py                 # the default tier (the human-scale run is most of it)
    python benchmarks/run.py --quick         # a smoke run: small lattices, few repeats
    python benchmarks/run.py --out benchmarks/results/NAME.json

or as a library function, ``run_benchmarks(argv)`` (what ``engraft bench`` calls).

What is measured, in one run
----------------------------
compile
    A fresh subprocess with an empty ``NUMBA_CACHE_DIR`` (cold: Numba compiles)
    and then another fresh subprocess on the same cache dir (cached start),
    per kernel: seconds from interpreter start to the end of the first step
    (``import``, set-up and first step are reported separately as well).
throughput
    Two lattice states. *dense*: the stress case, the human biology of
    ``configs/hemophilia_a_lentiviral.yaml`` (host only, random niches), every
    niche holding a quiescent HSC and every other site a progenitor (types in
    the proportions of the human steady state, divisions left at random).
    Each repeat starts from the same state; the compile and warm-up step are
    excluded. Two rates are reported: *site-updates* per second (sites x steps
    / seconds: what the targets use) and *cell-updates* per second (visits of
    occupied sites, counted exactly by replaying the same steps one by one).
    *marrow*: the state users simulate, ``configs/hemophilia_a_lentiviral.yaml``
    at the end of its 400-day burn-in (host steady state, clustered niches;
    the occupancy is recorded with each result), the same state for both
    kernels.
threads
    The parallel kernel on 1 and on 2 threads (``numba.set_num_threads``).
memory
    State bytes per site (``State.nbytes()``), the kernels' own arrays per
    site, and the peak of traced allocations (``tracemalloc``: NumPy's arrays
    are traced) while setting up and running a lattice, per site.
mesa
    The Mesa reference engine (:mod:`engraft.reference`) and the kernels on
    the same configs, in the same run: stepping the dense marrow of the
    throughput section from 32^2 to 512^2 (site-updates per second, ratio
    kernel / Mesa; Mesa's rate falls with lattice size and the kernels' rises,
    so the ratio is reported per size; the kernels step from the same state
    for at least as many steps as in the throughput section, so that a
    call's fixed cost and timer noise do not weigh), and whole runs of
    ``configs/tiny.yaml`` (set-up, burn-in, transplant, records; ratio Mesa
    time / kernel time).
human
    ``configs/hemophilia_a_lentiviral.yaml`` at 1024 x 1024 (10^6 sites):
    burn-in, then 5 simulated years of follow-up with daily records, with the
    parallel kernel; wall time of each part.

Times are medians over repeats, with the interquartile range. The machine
(CPU, cores, memory, load average before and after), the library versions
and Numba's threading layer are recorded with the results. Shared machines
are noisy: compare runs only from the same machine, and look at the load and
at the *calibration*: a fixed one-thread loop, the same in every version,
timed at the start and after each section (:func:`calibrate`). Its spread
shows how much the machine's speed changed during the run; the load average
does not show other virtual machines on the same host.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "hemophilia_a_lentiviral.yaml"

#: progenitor mix of the dense lattice: the human steady state (1024^2, day 400 of burn-in)
DENSE_MIX = {"MPP": 0.04, "GMP": 0.42, "MkP": 0.13, "EP": 0.32, "CLP": 0.09}

#: the performance targets (reported against the measurements, never asserted)
TARGETS = {
    "parallel_site_updates_per_s_1024": 3e8,
    "sequential_site_updates_per_s_1024": 3e7,
    # the same targets on the burned-in human marrow, the state a human-scale run spends its time in
    "parallel_site_updates_per_s_1024_marrow": 3e8,
    "sequential_site_updates_per_s_1024_marrow": 3e7,
    "kernel_over_mesa": 1000.0,
    "human_5y_follow_up_s": 60.0,
    "state_bytes_per_site": 16.0,
    "cached_start_s": 2.0,
}


@dataclass(frozen=True)
class Tier:
    """What one benchmark tier measures."""

    sizes_2d: tuple[int, ...]
    sizes_3d: tuple[int, ...]
    thread_sizes: tuple[tuple[int, int], ...]  # (dims, size)
    repeats: int
    site_updates_per_repeat: float  # work per timed repeat (sets the steps)
    marrow_sizes: tuple[int, ...]  # burned-in human marrow (2D)
    mesa_sizes: tuple[int, ...]  # dense marrow, stepping only
    mesa_steps: tuple[int, ...]  # per Mesa size
    mesa_run_overrides: tuple[str, ...]  # whole runs of configs/tiny.yaml
    mesa_repeats: int
    human_years: float
    memory_size: int


TIERS = {
    "quick": Tier(sizes_2d=(64, 256, 1024), sizes_3d=(32,), thread_sizes=((2, 1024),), repeats=3,
                  site_updates_per_repeat=4e6, marrow_sizes=(256,), mesa_sizes=(32,), mesa_steps=(10,),
                  mesa_run_overrides=("time.burn_in_days=20", "time.duration_days=20"), mesa_repeats=1,
                  human_years=0.0, memory_size=256),
    "default": Tier(sizes_2d=(64, 128, 256, 512, 1024, 2048), sizes_3d=(32, 64, 128),
                    thread_sizes=((2, 256), (2, 1024), (2, 2048), (3, 64), (3, 128)), repeats=5,
                    site_updates_per_repeat=2e7, marrow_sizes=(256, 1024), mesa_sizes=(32, 64, 256, 512),
                    mesa_steps=(40, 40, 10, 4), mesa_run_overrides=(),
                    mesa_repeats=2, human_years=5.0, memory_size=1024),
}


# ----------------------------------------------------------------------------------
# statistics and machine information
# ----------------------------------------------------------------------------------
def summary(values: list[float]) -> dict:
    """Median, interquartile range, min and max of repeated measurements."""
    a = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "iqr": float(q3 - q1), "min": float(a.min()), "max": float(a.max()),
            "n": int(a.size), "values": [float(v) for v in a]}


def machine_info() -> dict:
    """CPU model, cores, memory, OS, library versions and Numba's threading set-up."""
    import numba
    import numpy

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "numba": numba.__version__}
    for name in ("llvmlite", "mesa", "scipy", "pandas", "engraft"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "memory_bytes": memory,
        "os": platform.platform(),
        "versions": versions,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "git_commit": commit,
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Windows
        return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------
# the machine's speed during the run: a fixed loop, timed between sections
# ----------------------------------------------------------------------------------
CALIBRATION_BYTES = 2**20  # one byte per "site", like the kernels' type array; stays in the L2 cache


def _calibration_loops():
    from numba import njit, prange

    @njit(cache=False)
    def loop(ctype, rounds):
        """Byte reads, branches on the data and scattered writes: the kind of work a kernel visit does."""
        acc = 0
        for r in range(rounds):
            for i in range(1, ctype.shape[0] - 1):
                t = ctype[i]
                if t > 3:
                    if ctype[i - 1] == 0 or ctype[i + 1] == 0:
                        ctype[i] = (t + r) & 7
                        acc += 1
                elif t == 1:
                    acc += 2
        return acc

    @njit(cache=False, parallel=True)
    def on_threads(copies, rounds):
        """The same loop on each row of ``copies`` at once, one row per thread."""
        acc = 0
        for k in prange(copies.shape[0]):
            acc += loop(copies[k], rounds)
        return acc

    return loop, on_threads


def calibrate(label: str, points: list, repeats: int = 3) -> None:
    """Time the fixed loop (best of ``repeats``) and append it to ``points`` under ``label``.

    The loop and its data are the same in every run and every engraft
    version, so its time tells how fast the machine was at that moment: a
    shared virtual machine's speed changes with its host's other work, which
    the load average does not show. This loop was chosen because its time
    follows that of a kernel step more closely than loops bound by one
    dependency chain or by memory; it does not catch every slowdown (the
    measurements: docs/performance.md, "The machine's speed during a run").

    The same loop is then run on every Numba thread at once, one copy each
    (``threads_seconds``). Where the threads have a core each this takes
    about as long as one loop; where the host has put two virtual CPUs on
    one physical core (hyperthreads) it takes longer, and so do the parallel
    kernel's multi-thread numbers. ``thread_throughput`` = threads x one
    loop's time / that time: the speed-up the threads can give right now.
    """
    import numba

    if not _CALIBRATION:  # compile and warm up once per process
        _CALIBRATION["loop"], _CALIBRATION["on_threads"] = _calibration_loops()
    loop, on_threads = _CALIBRATION["loop"], _CALIBRATION["on_threads"]
    data = np.random.default_rng(1).integers(0, 8, CALIBRATION_BYTES).astype(np.int8)
    threads = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(threads)  # every thread (the default; a section may have left fewer)
    best, best_threads = math.inf, math.inf
    for _ in range(repeats):
        ctype = data.copy()
        start = time.perf_counter()
        loop(ctype, 8)
        best = min(best, time.perf_counter() - start)
        copies = np.tile(data, (threads, 1))
        start = time.perf_counter()
        on_threads(copies, 8)
        best_threads = min(best_threads, time.perf_counter() - start)
    points.append({"label": label, "seconds": best, "threads": threads, "threads_seconds": best_threads,
                   "thread_throughput": threads * best / best_threads})


_CALIBRATION: dict = {}


# ----------------------------------------------------------------------------------
# compile time: fresh processes, empty vs filled cache
# ----------------------------------------------------------------------------------
_FIRST_STEP_SCRIPT = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from engraft import load_config
    from engraft.simulation import Simulation
    t1 = time.perf_counter()
    exp = load_config(sys.argv[1], ["lattice.size=64", "conditioning=null", "infusions=[]"])
    sim = Simulation(exp, seed=1, kernel=sys.argv[2])
    t2 = time.perf_counter()
    sim.advance(1)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "setup_s": t2 - t1, "first_step_s": t3 - t2}))
""")


def first_step_process(kernel: str, cache_dir: str) -> dict:
    """Run one fresh interpreter to the end of its first step; wall time from launch."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _FIRST_STEP_SCRIPT, str(CONFIG), kernel], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"the first-step process failed:\n{out.stderr[-2000:]}")
    parts = json.loads(out.stdout.strip().splitlines()[-1])
    return {**parts, "process_wall_s": wall}


def bench_compile() -> dict:
    """Cold compile vs cached start, per kernel, each in fresh subprocesses."""
    out = {}
    for kernel in ("sequential", "parallel"):
        with tempfile.TemporaryDirectory(prefix="engraft-numba-cache-") as cache:
            log(f"compile: {kernel}, cold (empty NUMBA_CACHE_DIR)")
            cold = first_step_process(kernel, cache)
            log(f"compile: {kernel}, cached")
            cached = first_step_process(kernel, cache)
        out[kernel] = {"cold": cold, "cached": cached,
                       "compile_s": cold["first_step_s"] - cached["first_step_s"]}
    return out


# ----------------------------------------------------------------------------------
# the dense marrow and timed stepping
# ----------------------------------------------------------------------------------
def dense_experiment(size: int, dims: int, extra: tuple[str, ...] = ()):
    from engraft import load_config

    return load_config(CONFIG, [f"lattice.size={size}", f"lattice.dims={dims}", "lattice.niche_placement=random",
                                "lattice.niche_cluster_size=null",
                                "conditioning=null", "infusions=[]", "time.burn_in_days=0", *extra])


def dense_simulation(size: int, dims: int, kernel: str, seed: int = 0):
    """A Simulation whose every site is occupied (HSCs on niches, progenitors elsewhere)."""
    from engraft.lattice import QUIESCENT
    from engraft.simulation import Simulation

    exp = dense_experiment(size, dims)
    sim = Simulation(exp, seed=seed, kernel=kernel)
    rng = np.random.default_rng(seed)
    s, names = sim.state, exp.type_names
    other = np.flatnonzero(s.niche == 0)
    mix = np.array([DENSE_MIX[n] for n in DENSE_MIX])
    types = np.array([names.index(n) for n in DENSE_MIX])[rng.choice(len(mix), other.size, p=mix / mix.sum())]
    s.ctype[other] = types
    s.divs[other] = rng.integers(0, sim.rules.max_divisions[types] + 1)
    s.flags[other] = 0
    s.ctype[sim.niche_sites] = sim.rules.hsc_type
    s.flags[sim.niche_sites] = QUIESCENT
    s.affinity[sim.niche_sites] = 1.0
    sim.recount()
    return sim


def marrow_simulations(size: int, seed: int = 0) -> dict:
    """The human marrow at the end of burn-in, one Simulation per kernel, same state."""
    from engraft import load_config
    from engraft.simulation import Simulation

    exp = load_config(CONFIG, [f"lattice.size={size}"])
    sims = {"parallel": Simulation(exp, seed=seed, kernel="parallel")}
    sims["parallel"].burn_in()
    sims["sequential"] = Simulation(exp, seed=seed, kernel="sequential")
    restore(sims["sequential"], capture(sims["parallel"]))
    return sims


def capture(sim) -> dict:
    p = sim.pool
    return {"state": sim.state.copy(), "counters": sim.counters.copy(), "kstate": sim.kstate.copy(),
            "step": sim.step, "pool_n": p.size,
            "pool": {k: getattr(p, k)[: p.size].copy() for k in ("ctype", "flags", "vcn", "divs", "clone")},
            "mature": sim.mature.copy(), "conc": sim.conc.copy()}


def restore(sim, snap: dict) -> None:
    for name in ("ctype", "flags", "vcn", "divs", "clone", "affinity"):
        getattr(sim.state, name)[:] = getattr(snap["state"], name)
    sim.counters[:] = snap["counters"]
    sim.kstate[:] = snap["kstate"]
    sim.step = snap["step"]
    p = sim.pool
    for k, arr in snap["pool"].items():
        getattr(p, k)[: arr.size] = arr
    p.n[0] = snap["pool_n"]
    sim.mature[:] = snap["mature"]
    sim.conc[:] = snap["conc"]


def timed_stepping(sim, steps: int, repeats: int) -> dict:
    """Median time of ``steps`` steps from one start state, and the visits of occupied sites."""
    from engraft.kernel.sequential import C_EMPTY

    snap = capture(sim)
    sim.advance(1)  # compile (if needed) and warm up: not timed
    times = []
    for _ in range(repeats):
        restore(sim, snap)
        gc.collect()
        t0 = time.perf_counter()
        sim.advance(steps)
        times.append(time.perf_counter() - t0)
    occupancy_end = float((sim.state.ctype != -1).mean())
    # the same steps again, one call each (the result does not depend on the chunking):
    # the exact number of occupied sites visited
    restore(sim, snap)
    visits = 0
    n = sim.state.n_sites
    for _ in range(steps):
        visits += n - int(sim.counters[C_EMPTY])
        sim.advance(1)
    restore(sim, snap)
    t = summary(times)
    return {"steps": steps, "sites": n, "seconds": t, "site_updates_per_s": n * steps / t["median"],
            "cell_updates_per_s": visits / t["median"], "occupied_visits": visits,
            "occupancy_start": float((snap["state"].ctype != -1).mean()), "occupancy_end": occupancy_end}


def steps_for(n_sites: int, tier: Tier) -> int:
    return int(max(3, min(500, round(tier.site_updates_per_repeat / n_sites))))


def bench_throughput(tier: Tier) -> list[dict]:
    import numba

    rows = []
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for dims, sizes in ((2, tier.sizes_2d), (3, tier.sizes_3d)):
        for size in sizes:
            for kernel in ("sequential", "parallel"):
                sim = dense_simulation(size, dims, kernel)
                steps = steps_for(sim.state.n_sites, tier)
                if kernel == "sequential":
                    steps = max(3, steps // 4)  # the slower kernel on a dense lattice: keep the repeat short
                log(f"throughput: {kernel} {dims}D {size}^{dims}, {steps} steps x {tier.repeats}")
                r = timed_stepping(sim, steps, tier.repeats)
                rows.append({"kernel": kernel, "state": "dense", "dims": dims, "size": size,
                             "threads": numba.get_num_threads(), **r})
                del sim
                gc.collect()
    for size in tier.marrow_sizes:
        log(f"throughput: human marrow {size}^2, burn-in")
        sims = marrow_simulations(size)
        for kernel, sim in sims.items():
            steps = steps_for(sim.state.n_sites, tier)
            log(f"throughput: {kernel} human marrow {size}^2, {steps} steps x {tier.repeats}")
            r = timed_stepping(sim, steps, tier.repeats)
            rows.append({"kernel": kernel, "state": "marrow", "dims": 2, "size": size,
                         "threads": numba.get_num_threads(), **r})
        del sims
        gc.collect()
    return rows


def bench_threads(tier: Tier) -> list[dict]:
    import numba

    rows = []
    for dims, size in tier.thread_sizes:
        sim = dense_simulation(size, dims, "parallel")
        steps = steps_for(sim.state.n_sites, tier)
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            log(f"threads: parallel {dims}D {size}^{dims} on {threads} thread(s)")
            r = timed_stepping(sim, steps, tier.repeats)
            rows.append({"kernel": "parallel", "dims": dims, "size": size, "threads": threads, **r})
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        del sim
        gc.collect()
    for dims, size in tier.thread_sizes:
        base = [r for r in rows if (r["dims"], r["size"], r["threads"]) == (dims, size, 1)][0]
        for r in rows:
            if (r["dims"], r["size"]) == (dims, size):
                r["speed_up"] = r["site_updates_per_s"] / base["site_updates_per_s"]
    return rows


# ----------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------
def bench_memory(tier: Tier) -> list[dict]:
    from engraft.lattice import State

    rows = []
    for kernel in ("sequential", "parallel"):
        size = tier.memory_size
        dense_simulation(32, 2, kernel).advance(2)  # compile or load first: not traced
        gc.collect()
        tracemalloc.start()
        sim = dense_simulation(size, 2, kernel)
        sim.advance(5)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        n = sim.state.n_sites
        p = sim.pool
        kernel_arrays = sim.order.nbytes + sim.counters.nbytes + sum(
            getattr(p, k).nbytes for k in ("ctype", "flags", "vcn", "divs", "clone", "order"))
        if sim.workspace is not None:
            kernel_arrays += sim.workspace.nbytes()
        rows.append({"kernel": kernel, "size": size, "sites": n,
                     "state_bytes_per_site": sim.state.nbytes() / n,
                     "state_fields": {f: getattr(sim.state, f).dtype.itemsize for f in
                                      State.__dataclass_fields__},
                     "kernel_arrays_bytes_per_site": kernel_arrays / n,
                     "peak_traced_bytes_per_site": peak / n})
        del sim
        gc.collect()
    return rows


# ----------------------------------------------------------------------------------
# Mesa
# ----------------------------------------------------------------------------------
def dense_reference_model(size: int, seed: int = 0):
    """The Mesa model of :func:`dense_simulation`'s experiment, filled the same way."""
    from engraft.reference import ReferenceModel
    from engraft.reference.agents import Progenitor

    # a short duration: the Mesa engine refuses a planned run over its cost limits, and
    # only stepping is timed here (the duration changes nothing else)
    exp = dense_experiment(size, 2, ("time.duration_days=1",))
    model = ReferenceModel(exp, seed=seed)  # niches hold resting host HSCs
    rng = np.random.default_rng(seed)
    names = exp.type_names
    mix = np.array([DENSE_MIX[n] for n in DENSE_MIX])
    types = np.array([names.index(n) for n in DENSE_MIX])[rng.choice(len(mix), len(model.other_sites),
                                                                       p=mix / mix.sum())]
    for site, t in zip(model.other_sites, types, strict=True):
        max_div = exp.cell_types[names[t]].max_divisions
        Progenitor(model, int(t), divisions_left=int(rng.integers(0, max_div + 1))).settle(site)
    return model


def bench_mesa(tier: Tier) -> dict:
    """Mesa vs the kernels: stepping on the dense marrow, and whole runs of ``configs/tiny.yaml``."""
    try:
        from engraft.reference import run_reference
    except ImportError as exc:
        msg = f"skipped: the Mesa reference engine is not available ({exc})"
        log(f"mesa: {msg}")
        return {"skipped": msg}
    import numba

    from engraft import load_config
    from engraft.simulation import Simulation

    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    stepping = []
    for size, steps in zip(tier.mesa_sizes, tier.mesa_steps, strict=True):
        times = []
        for r in range(tier.mesa_repeats):
            model = dense_reference_model(size, seed=r)
            log(f"mesa: stepping, Mesa, dense {size}^2, {steps} steps")
            gc.collect()
            t0 = time.perf_counter()
            model.advance(steps)
            times.append(time.perf_counter() - t0)
            del model
        row = {"size": size, "steps": steps, "sites": size * size, "mesa_seconds": summary(times),
               "mesa_site_updates_per_s": size * size * steps / summary(times)["median"]}
        # the kernels step from the same state for at least as long as in the throughput
        # section: Mesa's few steps at 512^2 are too little kernel work to time against a
        # call's fixed cost and the machine's noise (docs/performance.md)
        kernel_steps = max(steps, steps_for(size * size, tier))
        for kernel in ("sequential", "parallel"):
            log(f"mesa: stepping, {kernel}, dense {size}^2, {kernel_steps} steps")
            r = timed_stepping(dense_simulation(size, 2, kernel), kernel_steps, tier.repeats)
            row[f"{kernel}_steps"] = kernel_steps
            row[f"{kernel}_site_updates_per_s"] = r["site_updates_per_s"]
            row[f"{kernel}_seconds"] = r["seconds"]
            row[f"ratio_{kernel}"] = r["site_updates_per_s"] / row["mesa_site_updates_per_s"]
        stepping.append(row)
    # whole runs (set-up, burn-in, conditioning, infusion, records), configs/tiny.yaml
    exp = load_config(ROOT / "configs" / "tiny.yaml", list(tier.mesa_run_overrides))
    run = {"config": "configs/tiny.yaml", "overrides": list(tier.mesa_run_overrides),
           "sites": exp.lattice.n_sites}
    Simulation(exp, seed=0).run()  # warm-up: compile or load both kernels
    Simulation(exp, seed=0, kernel="parallel").run()
    for engine in ("mesa", "sequential", "parallel"):
        log(f"mesa: whole run of configs/tiny.yaml, {engine}")
        times = []
        for r in range(tier.mesa_repeats if engine == "mesa" else tier.repeats):
            t0 = time.perf_counter()
            if engine == "mesa":
                run_reference(exp, seed=r)
            else:
                Simulation(exp, seed=r, kernel=engine).run()
            times.append(time.perf_counter() - t0)
        run[f"{engine}_seconds"] = summary(times)
    for kernel in ("sequential", "parallel"):
        run[f"ratio_{kernel}"] = run["mesa_seconds"]["median"] / run[f"{kernel}_seconds"]["median"]
    return {"stepping": stepping, "whole_run": run}


# ----------------------------------------------------------------------------------
# a human-scale run
# ----------------------------------------------------------------------------------
class _TimedCall:
    """Wraps ``Simulation.advance`` and adds up the seconds spent in it and the steps it took."""

    def __init__(self, func):
        self.func = func
        self.seconds = 0.0
        self.steps = 0

    def __call__(self, n_steps):
        t = time.perf_counter()
        try:
            return self.func(n_steps)
        finally:
            self.seconds += time.perf_counter() - t
            self.steps += n_steps


def bench_human(tier: Tier, kernels: tuple[str, ...] = ("parallel",), size: int = 1024,
                overrides: tuple[str, ...] = ()) -> list[dict]:
    """The default experiment at ``size``^2: burn-in, then ``tier.human_years`` of follow-up.

    The burn-in ends at the progress report that has all its steps done
    (:func:`engraft.timeline.burn_in` reports after each chunk of steps);
    the kernel-and-tally seconds are split there too.
    """
    import numba

    from engraft import load_config
    from engraft.simulation import Simulation

    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    rows = []
    days = tier.human_years * 365.0
    for kernel in kernels:
        exp = load_config(CONFIG, [f"lattice.size={size}", f"time.duration_days={days:g}", *overrides])
        log(f"human: {kernel}, {exp.lattice.size}^{exp.lattice.dims}, burn-in {exp.time.burn_in_days:g} d "
            f"+ {exp.time.duration_days:g} d")
        t0 = time.perf_counter()
        sim = Simulation(exp, kernel=kernel)
        t_setup = time.perf_counter() - t0
        marks = {}
        sim.advance = advance = _TimedCall(sim.advance)  # the time spent in kernel steps and tally
        burn_in_steps = sim.timeline.burn_in_steps

        def progress(done, total, _marks=marks, _advance=advance, _n=burn_in_steps):
            if done >= _n and "burn_in_end" not in _marks:
                _marks.update(burn_in_end=time.perf_counter(), burn_in_advance_s=_advance.seconds,
                              burn_in_steps=_advance.steps)

        t1 = time.perf_counter()
        result = sim.run(progress)
        t_end = time.perf_counter()
        burn = marks["burn_in_end"] - t1
        rows.append({
            "kernel": kernel, "sites": sim.state.n_sites, "burn_in_days": exp.time.burn_in_days,
            "follow_up_days": exp.time.duration_days, "setup_s": t_setup, "burn_in_s": burn, "follow_up_s": t_end - marks["burn_in_end"],
            "total_s": t_end - t0, "burn_in_steps": marks["burn_in_steps"],
            "kernel_and_tally_burn_in_s": marks["burn_in_advance_s"],
            "kernel_and_tally_follow_up_s": advance.seconds - marks["burn_in_advance_s"],
            "records": len(result.timeseries), "final_factor_iu_dl": float(result.timeseries["factor_iu_dl"].iloc[-1]),
            "final_occupancy": float(result.timeseries["occupancy"].iloc[-1]),
        })
        del sim, result
        gc.collect()
    return rows


# ----------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def report(results: dict) -> str:
    """A readable table of the results and the targets."""
    lines = []
    m = results["machine"]
    lines.append(f"engraft benchmarks ({results['tier']}), {results['started']}")
    lines.append(f"machine: {m['cpu_model']}, {m['logical_cores']} logical cores, "
                 f"{(m['memory_bytes'] or 0) / 2**30:.1f} GiB; numba {m['versions']['numba']} "
                 f"({results.get('threading_layer')}, {m['numba_threads']} threads); "
                 f"load {results['load_before']} -> {results['load_after']}")
    points = results.get("calibration", {}).get("points", [])
    cal = [p["seconds"] for p in points]
    if cal:
        lines.append("machine speed: the fixed calibration loop took "
                     + ", ".join(f"{1e3 * c:.0f}" for c in cal)
                     + f" ms at the start and after each section (slowest / fastest {max(cal) / min(cal):.2f});"
                     + f" on {points[0]['threads']} threads at once it gave "
                     + ", ".join(f"{p['thread_throughput']:.2f}x" for p in points) + " the throughput of one")
    if "compile" in results:
        lines.append("\nstart-up (fresh process, seconds: import + set-up + first step; process wall)")
        for kernel, c in results["compile"].items():
            for which in ("cold", "cached"):
                d = c[which]
                lines.append(f"  {kernel:>10} {which:>6}: import {d['import_s']:6.2f}  set-up {d['setup_s']:5.2f}  "
                             f"first step {d['first_step_s']:6.2f}  process {d['process_wall_s']:6.2f}")
    if "throughput" in results:
        lines.append("\nthroughput (median of repeats; site-updates = sites x steps / s; dense: every site "
                     "occupied; marrow: the burned-in human marrow)")
        lines.append(f"  {'kernel':>10} {'state':>6} {'lattice':>9} {'threads':>7} {'steps':>5} {'s/step':>9} {'IQR':>8} "
                     f"{'site-upd/s':>11} {'cell-upd/s':>11} {'occupancy':>13}")
        for r in results["throughput"]:
            lat = f"{r['size']}^{r['dims']}"
            lines.append(f"  {r['kernel']:>10} {r.get('state', 'dense'):>6} {lat:>9} {r['threads']:>7} {r['steps']:>5} "
                         f"{r['seconds']['median'] / r['steps']:9.2e} {r['seconds']['iqr'] / r['steps']:8.1e} "
                         f"{r['site_updates_per_s']:11.3g} {r['cell_updates_per_s']:11.3g} "
                         f"{r['occupancy_start']:5.2f}->{r['occupancy_end']:4.2f}")
    if "threads" in results:
        lines.append("\nthread scaling of the parallel kernel")
        for r in results["threads"]:
            lat = f"{r['size']}^{r['dims']}"
            lines.append(f"  {lat:>9} threads {r['threads']}: {r['site_updates_per_s']:10.3g} site-upd/s "
                         f"(x{r['speed_up']:.2f})")
    if "memory" in results:
        lines.append("\nmemory per lattice site (bytes)")
        for r in results["memory"]:
            lines.append(f"  {r['kernel']:>10} {r['size']}^2: state {r['state_bytes_per_site']:.1f}, "
                         f"kernel arrays {r['kernel_arrays_bytes_per_site']:.1f}, "
                         f"peak traced (set-up + 5 steps) {r['peak_traced_bytes_per_site']:.1f}")
    if "mesa" in results:
        lines.append("\nkernels vs the Mesa reference (same config, same run)")
        mesa = results["mesa"]
        if "skipped" in mesa:
            lines.append(f"  {mesa['skipped']}")
        for r in mesa.get("stepping", []):
            lines.append(f"  dense {r['size']}^2: Mesa {r['mesa_site_updates_per_s']:.3g} site-upd/s ({r['steps']} steps); "
                         f"sequential {r['sequential_site_updates_per_s']:.3g} (x{r['ratio_sequential']:.0f}), "
                         f"parallel {r['parallel_site_updates_per_s']:.3g} (x{r['ratio_parallel']:.0f})"
                         f" ({r.get('parallel_steps', r['steps'])} steps)")
        if "whole_run" in mesa:
            w = mesa["whole_run"]
            lines.append(f"  whole run of {w['config']} {' '.join(w['overrides'])}: Mesa "
                         f"{w['mesa_seconds']['median']:.2f} s, sequential {w['sequential_seconds']['median']:.3f} s "
                         f"(x{w['ratio_sequential']:.0f}), parallel {w['parallel_seconds']['median']:.3f} s "
                         f"(x{w['ratio_parallel']:.0f})")
    if results.get("human"):
        over = " ".join(f"--set {o}" for o in results.get("human_overrides") or [])
        lines.append("\nhuman scale: the default experiment, burn-in + follow-up with daily records"
                     + (f" ({over})" if over else ""))
        for r in results["human"]:
            lines.append(f"  {r['kernel']:>10}, {r['sites']} sites: set-up {r['setup_s']:.1f} s, burn-in "
                         f"{r['burn_in_days']:g} d {r['burn_in_s']:.1f} s, follow-up {r['follow_up_days']:g} d "
                         f"{r['follow_up_s']:.1f} s (total {r['total_s']:.1f} s; kernel + tally "
                         f"{r['kernel_and_tally_burn_in_s']:.1f} s in burn-in, "
                         f"{r['kernel_and_tally_follow_up_s']:.1f} s in follow-up)")
    lines.append("\ntargets (reported, not asserted)")
    for name, row in results.get("targets", {}).items():
        ok = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        lines.append(f"  {name:>42}: target {row['target']:<10.3g} measured {_fmt(row['measured']):<10} {ok}")
    return "\n".join(lines)


def compare_targets(results: dict) -> dict:
    def pick(kernel, state="dense"):
        rows = [r for r in results.get("throughput", [])
                if (r["kernel"], r.get("state", "dense"), r["dims"], r["size"]) == (kernel, state, 2, 1024)]
        return rows[0]["site_updates_per_s"] if rows else None

    mesa = [max(r["ratio_sequential"], r["ratio_parallel"]) for r in results.get("mesa", {}).get("stepping", [])]
    human = results.get("human") or []
    memory = results.get("memory") or []
    comp = results.get("compile", {})
    cached = [c["cached"]["process_wall_s"] for c in comp.values()] if comp else []
    measured = {
        "parallel_site_updates_per_s_1024": pick("parallel"),
        "sequential_site_updates_per_s_1024": pick("sequential"),
        "parallel_site_updates_per_s_1024_marrow": pick("parallel", "marrow"),
        "sequential_site_updates_per_s_1024_marrow": pick("sequential", "marrow"),
        "kernel_over_mesa": max(mesa) if mesa else None,
        # the target is the shipped experiment's: a run with --set overrides is another case
        "human_5y_follow_up_s": (human[0]["follow_up_s"] if human and human[0]["follow_up_days"] >= 1825
                                 and not results.get("human_overrides") else None),
        "state_bytes_per_site": memory[0]["state_bytes_per_site"] if memory else None,
        "cached_start_s": max(cached) if cached else None,
    }
    lower_is_better = {"human_5y_follow_up_s", "state_bytes_per_site", "cached_start_s"}
    out = {}
    for name, target in TARGETS.items():
        value = measured[name]
        met = None if value is None else (value <= target if name in lower_is_better else value >= target)
        out[name] = {"target": target, "measured": value, "met": met}
    return out


# ----------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------
SECTIONS = ("compile", "throughput", "threads", "memory", "mesa", "human")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="engraft bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (small lattices, few repeats)")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="leave these sections out")
    parser.add_argument("--human-sequential", action="store_true",
                        help="also run the human-scale case with the sequential kernel (as long again, or longer)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of the human-scale run's config, as for engraft run (repeatable), "
                        "e.g. --set time.lattice_record_interval_days=null")
    return parser.parse_args(argv)


def check_results_file(path: Path) -> None:
    """Refuse, before minutes of benchmarks, an --out that is someone else's file or cannot be written.

    A benchmark results file (a JSON object with this script's ``tier`` and
    ``targets``) is replaced; any other existing file is left alone.
    """
    from engraft.outputs import OutputError, check_creatable

    if path.exists():
        try:
            data = json.loads(path.read_bytes()[: 64 << 20].decode("utf-8"))
        except (OSError, ValueError):
            data = None
        if path.is_dir() or not (isinstance(data, dict) and "tier" in data and "targets" in data):
            raise OutputError(f"{path}: exists and is not an engraft benchmark results file; it is left "
                              "alone: choose another --out")
    check_creatable(path)


def run_benchmarks(argv: list[str] | None = None) -> dict:
    """Run the benchmarks; print the table; return (and optionally save) the results.

    Parameters
    ----------
    argv : command-line arguments (``--quick``, ``--out PATH``, ``--only ...``,
        ``--skip ...``, ``--human-sequential``, ``--set KEY=VALUE``); ``None`` reads ``sys.argv``.

    Returns
    -------
    dict
        The results, as written to ``--out``.
    """
    args = parse_args(argv)
    if args.out:
        check_results_file(args.out)
    if args.set:
        from engraft import load_config

        load_config(CONFIG, ["lattice.size=1024", *args.set])  # a wrong key fails now, not after minutes
    tier_name = "quick" if args.quick else "default"
    tier = TIERS[tier_name]
    sections = [s for s in (args.only or SECTIONS) if s not in args.skip]
    if tier.human_years <= 0 and "human" in sections and not args.only:
        sections.remove("human")
    results: dict = {"tier": tier_name, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                     "machine": machine_info(), "load_before": load_average(), "sections": sections,
                     "units": {"site_updates_per_s": "lattice sites x steps per second (the targets use this)",
                               "cell_updates_per_s": "visits of occupied sites per second"}}
    t0 = time.perf_counter()
    points: list = []
    results["calibration"] = {
        "what": "seconds of a fixed one-thread loop (byte reads, data-dependent branches and writes over "
                f"{CALIBRATION_BYTES >> 20} MB), best of 3, timed at the start and after each section: the machine's "
                "speed at that moment (lower is faster); and the same loop on every thread at once "
                "(threads_seconds, thread_throughput: the speed-up the threads could give then; see calibrate())",
        "points": points}
    calibrate("start", points)
    if "compile" in sections:
        results["compile"] = bench_compile()
        calibrate("after compile", points)
    if "throughput" in sections:
        results["throughput"] = bench_throughput(tier)
        calibrate("after throughput", points)
    if "threads" in sections:
        results["threads"] = bench_threads(tier)
        calibrate("after threads", points)
    if "memory" in sections:
        results["memory"] = bench_memory(tier)
        calibrate("after memory", points)
    if "mesa" in sections:
        results["mesa"] = bench_mesa(tier)
        calibrate("after mesa", points)
    if "human" in sections:
        kernels = ("parallel", "sequential") if args.human_sequential else ("parallel",)
        results["human_overrides"] = list(args.set)
        results["human"] = bench_human(tier if tier.human_years > 0 else TIERS["default"], kernels,
                                       overrides=tuple(args.set))
        calibrate("after human", points)
    try:
        import numba

        results["threading_layer"] = numba.threading_layer()
    except (ImportError, ValueError):
        results["threading_layer"] = None
    results["load_after"] = load_average()
    results["wall_s"] = time.perf_counter() - t0
    results["targets"] = compare_targets(results)
    print(report(results))
    if args.out:
        from engraft.outputs import make_parents
        from engraft.results import atomic_write_text

        make_parents(args.out)
        atomic_write_text(args.out, json.dumps(results, indent=1))
        log(f"results written to {args.out}")
    return results


def main(argv: list[str] | None = None) -> int:
    run_benchmarks(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
