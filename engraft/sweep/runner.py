"""Running sweeps: local processes (default), a Dask cluster, resume, aggregate.

Layout of a sweep directory::

    sweep.json             the sweep: base config, parameters, every run's id, values and seed
    runs/r00000/           one run directory per finished run (see engraft.results)
    runs/r00007.error.json a run that raised: its error (retried on the next resume)
    aggregate.parquet      one row per run: swept values, seed, status, summary read-outs

Each worker writes its own run directory atomically and returns only a small
summary, so the parent's memory stays flat however many runs there are.
A run is done exactly when its run directory is complete; rerunning the same
command after an interruption runs only what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from engraft.config.load import ConfigError
from engraft.results import atomic_write_text, is_run_dir, to_json
from engraft.sweep.spec import Run, Sweep

STATUS_DONE, STATUS_FAILED, STATUS_MISSING = "done", "failed", "missing"


class SweepDirError(ConfigError):
    """The output directory holds another sweep (one line, exit status 2)."""


@dataclass
class Task:
    """What a worker needs for one run: plain data, cheap to send."""

    run_id: str
    config: dict
    seed: int
    run_dir: str
    figure: bool


def execute(task: Task) -> dict:
    """Run one simulation and write its directory; never raises (errors are returned)."""
    from engraft.config.load import validate
    from engraft.results import write_run
    from engraft.simulation import simulate

    start = time.perf_counter()
    error_path = Path(f"{task.run_dir}.error.json")
    try:
        exp = validate(task.config)
        result = simulate(exp, seed=task.seed)
        write_run(result, task.run_dir, command=["engraft", "sweep", task.run_id], figure=task.figure)
        error_path.unlink(missing_ok=True)
        return {"run_id": task.run_id, "status": STATUS_DONE, "summary": result.summary,
                "wall_seconds": time.perf_counter() - start}
    except Exception as err:  # a failing run is recorded, the sweep goes on
        message = f"{type(err).__name__}: {err}"
        atomic_write_text(error_path, to_json({"run_id": task.run_id, "seed": task.seed, "error": message,
                                               "traceback": traceback.format_exc()}))
        return {"run_id": task.run_id, "status": STATUS_FAILED, "error": message,
                "wall_seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------------
# executors: each maps execute() over tasks and yields results as they finish
# ------------------------------------------------------------------------------------
def run_serial(tasks: Iterable[Task]) -> Iterator[dict]:
    for task in tasks:
        yield execute(task)


def run_processes(tasks: Iterable[Task], workers: int) -> Iterator[dict]:
    """A local process pool (spawned workers: Numba and fork do not mix well)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from _windowed(tasks, lambda t: pool.submit(execute, t), 2 * workers,
                             lambda fs: wait(fs, return_when=FIRST_COMPLETED)[0],
                             lambda f: f.result())


def run_dask(tasks: Iterable[Task], client) -> Iterator[dict]:
    """A Dask distributed cluster: the same tasks, the same results."""
    from distributed import wait as dask_wait

    n = max(1, sum(client.nthreads().values()))
    yield from _windowed(tasks, lambda t: client.submit(execute, t, pure=False), 2 * n,
                         lambda fs: dask_wait(list(fs), return_when="FIRST_COMPLETED").done,
                         lambda f: f.result())


def _windowed(tasks, submit, window, wait_some, result) -> Iterator[dict]:
    """Keep at most ``window`` runs in flight, so the parent never holds them all."""
    pending = set()
    for task in tasks:
        pending.add(submit(task))
        if len(pending) >= window:
            done = wait_some(pending)
            pending -= done
            for fut in done:
                yield result(fut)
    while pending:
        done = wait_some(pending)
        pending -= done
        for fut in done:
            yield result(fut)


def dask_client(scheduler: str | None, local_workers: int | None):
    """A ``distributed.Client``: to ``scheduler``, or to a new loopback LocalCluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        from engraft.cli import UsageError

        raise UsageError("Dask is not installed: pip install 'engraft[dask]'") from None
    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=local_workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, host="127.0.0.1", dashboard_address=None)
    return Client(cluster), cluster


# ------------------------------------------------------------------------------------
# the sweep directory
# ------------------------------------------------------------------------------------
def run_dir(out: Path, run: Run) -> Path:
    return out / "runs" / run.run_id


def prepare(sweep: Sweep, out: Path) -> None:
    """Create or reopen a sweep directory; refuse one that holds a different sweep."""
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "sweep.json"
    spec = {"digest": sweep.digest(), **sweep.spec_json()}
    if spec_path.exists():
        try:
            old = json.loads(spec_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        if old.get("digest") != spec["digest"]:
            raise SweepDirError(
                f"{out}: holds a different sweep (its config, parameters or seeds changed); "
                "resume it with its own file, or choose a new --out"
            )
    else:
        atomic_write_text(spec_path, to_json(spec))
    (out / "runs").mkdir(exist_ok=True)
    # half-written run directories of an interrupted sweep: never complete, remove
    for stale in (out / "runs").glob(".*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def status_of(out: Path, run: Run) -> str:
    path = run_dir(out, run)
    if is_run_dir(path):
        return STATUS_DONE
    if Path(f"{path}.error.json").exists():
        return STATUS_FAILED
    return STATUS_MISSING


@dataclass
class SweepOutcome:
    total: int
    reused: int
    ran: int
    failed: int
    out: Path

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


def run_sweep(sweep: Sweep, out: str | os.PathLike, *, workers: int = 1, scheduler: str | None = None,
              dask_local: bool = False, figures: bool = False,
              progress: Callable[[int, int, int], None] | None = None) -> SweepOutcome:
    """Run every missing run of ``sweep`` into ``out`` and write the aggregate table.

    Parameters
    ----------
    sweep : from :func:`engraft.sweep.load_sweep`.
    out : the sweep directory (created, or resumed if it holds the same sweep).
    workers : local processes (1: in this process); with ``dask_local`` the
        LocalCluster's worker count.
    scheduler : a Dask scheduler address (``tcp://host:8786``): run there.
    dask_local : start a Dask LocalCluster on loopback and run there.
    figures : also write each run's summary figure (slower).
    progress : called as ``progress(finished, failed, total)``.
    """
    out = Path(out)
    prepare(sweep, out)
    todo = [r for r in sweep.runs if status_of(out, r) != STATUS_DONE]
    reused = len(sweep.runs) - len(todo)
    tasks = (Task(r.run_id, sweep.run_config(r), r.seed, str(run_dir(out, r)), figures) for r in todo)
    finished = failed = 0
    if progress:
        progress(reused, 0, len(sweep.runs))
    if scheduler or dask_local:
        client, cluster = dask_client(scheduler, workers if dask_local else None)
        results = run_dask(tasks, client)
    elif workers > 1:
        client = cluster = None
        results = run_processes(tasks, workers)
    else:
        client = cluster = None
        results = run_serial(tasks)
    try:
        for res in results:
            finished += 1
            failed += res["status"] == STATUS_FAILED
            if progress:
                progress(reused + finished, failed, len(sweep.runs))
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    collect(out, sweep)
    return SweepOutcome(total=len(sweep.runs), reused=reused, ran=finished, failed=failed, out=out)


def collect(out: str | os.PathLike, sweep: Sweep | None = None) -> Path:
    """(Re)build ``aggregate.parquet`` from sweep.json and the run directories."""
    import pandas as pd

    out = Path(out)
    spec_path = out / "sweep.json"
    if not spec_path.exists():
        raise SweepDirError(f"{out}: not a sweep directory (no sweep.json)")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    rows = []
    for run in spec["runs"]:
        row = {"run_id": run["run_id"], **run["params"], "replicate": run["replicate"], "seed": run["seed"]}
        path = out / "runs" / run["run_id"]
        if is_run_dir(path):
            row["status"] = STATUS_DONE
            row.update(json.loads((path / "summary.json").read_text(encoding="utf-8")))
        elif Path(f"{path}.error.json").exists():
            row["status"] = STATUS_FAILED
            row["error"] = json.loads(Path(f"{path}.error.json").read_text(encoding="utf-8"))["error"]
        else:
            row["status"] = STATUS_MISSING
        rows.append(row)
    table = pd.DataFrame(rows)
    target = out / "aggregate.parquet"
    tmp = out / f".aggregate.parquet.tmp-{os.getpid()}"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    return target


def progress_bar(enabled: bool):
    """A tqdm bar of runs done / failed on a terminal, else None."""
    if not enabled or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=1, unit="run", desc="sweep")

    def update(done: int, failed: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix(failed=failed, refresh=False)
        bar.refresh()

    return update, bar
