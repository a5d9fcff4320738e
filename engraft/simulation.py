"""Orchestration of a run: burn-in, conditioning, infusion, chunked kernel calls, records.

Layers (style guide): config -> :class:`Simulation` (state arrays and the
timeline) -> :func:`engraft.kernel.sequential.run_steps` (compiled; named tuples
of arrays, :mod:`engraft.kernel.structs`). The kernel runs many steps per call
and returns to Python only at the next record, snapshot or event, so Python
costs stay per record, not per step.

Random streams: the run's seed feeds one :class:`numpy.random.SeedSequence`;
its first child drives set-up in Python (niche map, conditioning, infusions,
transduction), its second seeds the kernel's xoshiro256** state. The same
config and seed therefore give bit-identical tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engraft import rates, tally
from engraft.config.schema import Experiment
from engraft.kernel import parallel, sequential
from engraft.kernel.layout import C_EMPTY, C_EMPTY_NICHE, N_EXIT_QUANTITIES
from engraft.kernel.rng import seed_state
from engraft.kernel.structs import Lattice, Rules
from engraft.kernel.structs import Pool as KernelPool
from engraft.lattice import EMPTY, GRAFT, QUIESCENT, Pool, State, index_dtype, neighbour_offsets, niche_map
from engraft.readouts import ReadoutSpec, clone_table, record_row, summarize
from engraft.scaling import (  # noqa: F401 (BODY_EQUIVALENT_HSC_SCALE to niche_site_count: re-exported)
    BODY_EQUIVALENT_HSC_SCALE,
    check_infusions,
    expected_infused_lattice_cells,
    hsc_scale,
    lattice_size_for_hsc_scale,
    niche_site_count,
    sample_vcn,
    scale_notes,
    scales,
    stochastic_round,
)
from engraft.tally import EQUILIBRATION_WINDOW_DAYS, TallyTables  # noqa: F401 (re-exported)

ProgressCallback = Callable[[int, int], None]


# ----------------------------------------------------------------------------------
# the timeline
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timeline:
    """Step numbers of everything that happens; step 0 starts at day 0.

    Step k covers days (k dt, (k+1) dt]. An event on day e happens before
    step round(e / dt); a record on day r is taken after step round(r / dt) - 1.
    The follow-up starts at ``start_step``: day 0, or the first conditioning
    dose when a regimen starts before the infusion (negative days); burn-in
    ends there.
    """

    dt: float
    burn_in_steps: int
    total_steps: int
    record_steps: tuple[int, ...]
    snapshot_steps: tuple[int, ...]
    conditioning_steps: tuple[int, ...]
    infusion_steps: tuple[int, ...]
    start_step: int = 0
    #: daily records while a record's counts are low (engraft.readouts.CountWatch); None: never
    watch: object = None
    #: the records that also read the lattice (all of them unless time.lattice_record_interval_days)
    census_steps: tuple[int, ...] | None = None

    @classmethod
    def from_experiment(cls, exp: Experiment) -> Timeline:
        t = exp.time
        dt = t.dt_days
        total = int(round(t.duration_days / dt))
        cond = () if exp.conditioning is None else tuple(int(round(d / dt)) for d in exp.conditioning.dose_days)
        start = min(0, *cond) if cond else 0

        def steps_every(interval: float) -> set[int]:
            n = int(math.floor(t.duration_days / interval + 1e-9))
            return {int(round(j * interval / dt)) for j in range(n + 1)} | {0, total}

        snaps = steps_every(t.snapshot_interval_days) if t.snapshot_interval_days else {0, total}
        records = steps_every(t.record_interval_days)
        # daily from the first conditioning dose to day 0, and with blood counts to the end of
        # the engraftment window (blood_counts.daily_records_until_day)
        until_day = 0.0 if exp.blood_counts is None else exp.blood_counts.daily_records_until_day
        first_day = math.ceil(start * dt - 1e-9)
        # the first step at or after each whole day, so each record falls on its own calendar day
        records |= {math.ceil(d / dt - 1e-9) for d in range(first_day, int(math.floor(until_day + 1e-9)) + 1)}
        watch = None
        if exp.blood_counts is not None:
            from engraft.readouts import CountWatch

            watch = CountWatch.from_experiment(exp)
        record_steps = tuple(sorted(s for s in records if start <= s <= total))
        census = None
        if t.lattice_record_interval_days is not None:
            after = int(round(t.lattice_record_after_days / dt))
            grid = steps_every(t.lattice_record_interval_days)
            census = tuple(s for s in record_steps if s <= after or s in grid or s == total)
        return cls(
            dt=dt,
            burn_in_steps=int(round(t.burn_in_days / dt)),
            total_steps=total,
            record_steps=record_steps,
            census_steps=census,
            snapshot_steps=tuple(sorted(s for s in snaps if 0 <= s <= total)),
            conditioning_steps=cond,
            infusion_steps=tuple(int(round(inf.day / dt)) for inf in exp.infusions),
            start_step=start,
            watch=watch,
        )

    def next_day_step(self, step: int) -> int:
        """The first step at or after the next whole day after ``step`` (daily records while counts are low)."""
        return math.ceil((math.floor(step * self.dt + 1e-6) + 1) / self.dt - 1e-9)

    @property
    def first_step(self) -> int:
        """The step burn-in starts at (its steps come before ``start_step``)."""
        return self.start_step - self.burn_in_steps

    @property
    def steps_in_all(self) -> int:
        """Burn-in and follow-up steps together."""
        return self.total_steps - self.first_step

    def boundaries(self) -> list[int]:
        """Steps at which control must come back to Python, ascending (without daily records
        added while counts are low)."""
        events = (set(self.record_steps) | set(self.snapshot_steps) | set(self.infusion_steps)
                  | set(self.conditioning_steps))
        return sorted(s for s in events if self.start_step <= s <= self.total_steps)


def follow_timeline(engine, timeline: Timeline, position: Callable[[], int],
                    progress: ProgressCallback | None = None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Step an engine through the timeline after burn-in: events, records, snapshots.

    Both engines (the kernel :class:`Simulation` and the Mesa reference model)
    follow the same timeline through this one function, so an event or a
    record can never fall on different steps in the two. ``engine`` provides
    ``advance(n)``, ``condition()`` (one conditioning dose), ``infuse(i)``,
    ``record() -> dict``, ``snapshot() -> dict`` and ``day``; ``position()``
    is its step number. At each boundary the events come first, then the
    record and snapshot of the state they leave. A record whose blood counts
    are low (``timeline.watch``) adds a record one day later, so counts are
    recorded daily while they are low, whatever the record interval.

    Returns the records (one dict each) and the snapshots stacked per array,
    with their ``day``.
    """
    import heapq

    total = timeline.steps_in_all
    census = set(timeline.census_steps or ())
    rows, snaps, snap_days = [], [], []
    pending = timeline.boundaries()
    heapq.heapify(pending)
    records = set(timeline.record_steps)
    done: set[int] = set()
    while pending:
        boundary = heapq.heappop(pending)
        if boundary in done:
            continue
        done.add(boundary)
        while position() < boundary:
            engine.advance(boundary - position())
            if progress:
                progress(position() - timeline.first_step, total)
        for step in timeline.conditioning_steps:
            if step == boundary:
                engine.condition()
        for i, step in enumerate(timeline.infusion_steps):
            if step == boundary:
                engine.infuse(i)
        if boundary in records:
            if timeline.census_steps is None:
                row = engine.record()
            else:  # sparse lattice read-outs (kernel engine only; checked in the config)
                row = engine.record(census=boundary in census)
            rows.append(row)
            nxt = timeline.next_day_step(boundary)
            if (timeline.watch is not None and nxt <= timeline.total_steps and nxt not in done
                    and timeline.watch.low(row)):
                records.add(nxt)
                heapq.heappush(pending, nxt)
        if boundary in timeline.snapshot_steps:
            snaps.append(engine.snapshot())
            snap_days.append(engine.day)
    snapshots = {key: np.stack([snap[key] for snap in snaps]) for key in snaps[0]}
    snapshots["day"] = np.array(snap_days)
    return rows, snapshots


# ----------------------------------------------------------------------------------
# kernel parameter arrays
# ----------------------------------------------------------------------------------
def kernel_rules(exp: Experiment) -> Rules:
    """Every number of the rules, as the kernels take them (built once per run)."""
    names = exp.type_names
    n = len(names)
    lat = exp.lattice
    is_hsc = np.zeros(n, dtype=np.int64)
    max_divisions = np.zeros(n, dtype=np.int64)
    terminal = np.zeros(n, dtype=np.int64)
    diff_cum = np.zeros((n, n))
    exit_cum = np.zeros((n, n))
    for t, name in enumerate(names):
        ct = exp.cell_types[name]
        is_hsc[t] = ct.kind == "hsc"
        if ct.kind == "progenitor":
            max_divisions[t] = ct.max_divisions
            terminal[t] = ct.lineage is not None
            p = np.array([ct.differentiation.get(other, 0.0) for other in names])
            diff_cum[t] = np.cumsum(p / p.sum())
            q = p.copy()
            q[t] = 0.0
            if q.sum() > 0:
                exit_cum[t] = np.cumsum(q / q.sum())
            diff_cum[t, -1] = 1.0
    hsc = exp.cell_types[exp.hsc_type]
    p_any, cum = rates.step_tables(exp)
    return Rules(
        dims=int(lat.dims),
        size=int(lat.size),
        periodic=bool(lat.boundary == "periodic"),
        placement_pool=bool(exp.circulation.placement == "pool"),
        offsets=neighbour_offsets(lat.dims, lat.neighbourhood),
        is_hsc=is_hsc,
        max_divisions=max_divisions,
        terminal=terminal,
        diff_cum=diff_cum,
        exit_cum=exit_cum,
        hsc_type=names.index(exp.hsc_type),
        hsc_diff_type=names.index(hsc.differentiated_type),
        self_renewal=float(hsc.self_renewal),
        affinity_decay=float(rates.affinity_decay_per_step(hsc.affinity_loss_rate, exp.time.dt_days)),
        affinity_min=float(hsc.affinity_min),
        p_any=p_any,
        cum=cum,
        lodging_rate=float(exp.circulation.lodging_rate),
        death_rate=float(24 * 60 / exp.circulation.blood_lifetime_minutes),
        dt=float(exp.time.dt_days),
        expr_weight=tally.expression_weights(exp.transgene.vcn_response, exp.transgene.vcn_half_saturation),
    )


# ----------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------
@dataclass
class Result:
    """Everything one run produced (see :mod:`engraft.results` for the files)."""

    config: Experiment
    seed: int
    engine: str
    timeseries: object  # pandas.DataFrame, one row per record
    clones: object  # pandas.DataFrame, one row per graft clone alive at the end
    snapshots: dict[str, np.ndarray]
    summary: dict
    wall_seconds: float
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------
# the kernel engine
# ----------------------------------------------------------------------------------
class Simulation:
    """A kernel-engine run of one experiment with one seed.

    Most users call :func:`engraft.simulate`; tests and scripts use the
    pieces (``burn_in``, ``condition``, ``infuse``, ``advance``, ``record``).
    """

    engine = "kernel"

    def __init__(self, exp: Experiment, seed: int | None = None, kernel: str | None = None):
        kernel = kernel or exp.kernel
        if kernel not in ("sequential", "parallel"):
            raise ValueError(f"kernel: must be 'sequential' or 'parallel', got {kernel!r}")
        check_infusions(exp)
        #: "sequential" (random sequential update) or "parallel" (sublattice updates,
        #: bit-identical for any thread count; see engraft.kernel.parallel)
        self.kernel = kernel
        if exp.engine != "kernel" or exp.kernel != kernel:  # the config a run writes names what ran
            exp = exp.model_copy(update={"engine": "kernel", "kernel": kernel})
        self.exp = exp
        self.seed = int(exp.seed if seed is None else seed)
        setup_seq, kernel_seq = np.random.SeedSequence(self.seed).spawn(2)
        self.rng = np.random.default_rng(setup_seq)
        self.kstate = seed_state(kernel_seq)
        self.timeline = Timeline.from_experiment(exp)
        self.rules = kernel_rules(exp)
        self.tally_tables = TallyTables.from_experiment(exp)
        self.spec = ReadoutSpec.from_experiment(exp)
        lat = exp.lattice
        niche = niche_map(lat.size, lat.dims, lat.niche_fraction, lat.niche_placement,
                          lat.niche_cluster_count, lat.boundary == "periodic", self.rng,
                          cluster_size=lat.niche_cluster_size)
        self.state = State.empty(niche)
        self.niche_sites = np.flatnonzero(niche).astype(np.int64)
        self.order = np.empty(self.state.n_sites if kernel == "sequential" else 0,
                              dtype=index_dtype(self.state.n_sites))
        # a step sends at most one cell per occupied site to the blood; the pool grows
        # (advance, infuse) when it might not hold that
        self.pool = Pool.with_capacity(self.state.n_sites + 1024)
        self.counters = np.zeros(2, dtype=np.int64)
        self.workspace = (parallel.make_workspace(self.state.n_sites, lat.dims, lat.size,
                                                  lat.boundary == "periodic", len(exp.type_names))
                          if kernel == "parallel" else None)
        self.mature = np.zeros((len(exp.lineage_names), N_EXIT_QUANTITIES))
        self.chain = self.tally_tables.empty_chain()
        self.conc = np.zeros(1)
        self.clone_vcn = [np.zeros(1, dtype=np.uint8)]  # clone 0 = host
        self.clone_infusion = [np.full(1, -1, dtype=np.int64)]
        self.next_clone = 1
        self.step = self.timeline.first_step
        self.baseline_mature: np.ndarray | None = None
        self._seed_host_hscs()

    # -- state set-up -------------------------------------------------------------
    def _seed_host_hscs(self) -> None:
        """Host HSCs fill every niche, quiescent, before burn-in."""
        s = self.state
        s.ctype[self.niche_sites] = self.rules.hsc_type
        s.flags[self.niche_sites] = QUIESCENT
        s.affinity[self.niche_sites] = 1.0
        self.recount()

    def recount(self) -> None:
        """Recompute the empty-site counters after a change made from Python."""
        empty = self.state.ctype == EMPTY
        self.counters[C_EMPTY] = int(empty.sum())
        self.counters[C_EMPTY_NICHE] = int((empty & (self.state.niche != 0)).sum())

    # -- stepping -------------------------------------------------------------------
    def advance(self, n_steps: int) -> np.ndarray:
        """Run ``n_steps`` kernel steps and the tally over them; return the exit counts."""
        exits = np.zeros((n_steps, len(self.exp.type_names), N_EXIT_QUANTITIES))
        done = 0
        s, p = self.state, self.pool
        lattice = Lattice(s.ctype, s.flags, s.vcn, s.divs, s.clone, s.affinity, s.niche, self.niche_sites,
                          self.counters)
        while done < n_steps:
            pool = KernelPool(p.ctype, p.flags, p.vcn, p.divs, p.clone, p.n, p.order)  # the pool may grow
            if self.kernel == "parallel":
                first_step = self.step - self.timeline.first_step + done
                key = np.uint64(parallel.counter_key(self.kstate))
                k = parallel.run_steps(n_steps - done, first_step, key, exits[done:], lattice, pool, self.rules,
                                       self.workspace)
            else:
                k = sequential.run_steps(n_steps - done, exits[done:], lattice, pool, self.rules, self.order,
                                         self.kstate)
            done += k
            if done < n_steps:  # the pool might overflow in the next step: grow it
                p.grow(p.size + s.n_sites + 1024)
        self.tally_tables.advance(self.mature, self.chain, self.conc, exits, self.timeline.dt)
        self.step += n_steps
        return exits

    def burn_in(self) -> None:
        """Run the host alone to steady state; then set the mature compartments to
        the steady state of the mean exit flux over the last days of burn-in."""
        n = self.timeline.burn_in_steps
        if n > 0:
            self.mature[:], self.chain[:] = self.tally_tables.equilibrium(self.advance(n), self.timeline.dt)
        self.step = self.timeline.start_step
        self.baseline_mature = self.mature.copy()

    def condition(self) -> int:
        """One conditioning dose: kill host cells (lattice and blood) with their type's kill
        per dose (:meth:`ConditioningConfig.kill_per_dose`); return kills. Maturing and
        mature cells (the tally) are spared."""
        cond = self.exp.conditioning
        if cond is None:
            return 0
        kill_p = np.array([cond.kill_per_dose(name) for name in self.exp.type_names])
        s = self.state
        occupied = np.flatnonzero((s.ctype != EMPTY) & ((s.flags & GRAFT) == 0))
        killed = occupied[self.rng.random(occupied.size) < kill_p[s.ctype[occupied]]]
        s.ctype[killed] = EMPTY
        s.flags[killed] = 0
        s.vcn[killed] = 0
        s.divs[killed] = 0
        s.clone[killed] = 0
        s.affinity[killed] = 0.0
        self.recount()
        p = self.pool
        if p.size:
            host = (p.flags[: p.size] & GRAFT) == 0
            dies = host & (self.rng.random(p.size) < kill_p[p.ctype[: p.size]])
            p.keep(~dies)
        return int(killed.size)

    def infuse(self, index: int) -> dict[str, int]:
        """Put infusion ``index``'s homed cells into the blood; return lattice cells per type."""
        inf = self.exp.infusions[index]
        names = self.exp.type_names
        counts = {name: stochastic_round(mean, self.rng)
                  for name, mean in expected_infused_lattice_cells(self.exp, inf).items()}
        ctype = np.concatenate([np.full(c, names.index(name), dtype=np.int8) for name, c in counts.items()]
                               or [np.zeros(0, np.int8)])
        n = ctype.size
        transduced = self.rng.random(n) < inf.transduction
        vcn = np.zeros(n, dtype=np.uint8)
        vcn[transduced] = sample_vcn(inf, int(transduced.sum()), self.rng)
        divs = self.rules.max_divisions[ctype].astype(np.uint8)
        divs[ctype == self.rules.hsc_type] = 0
        clone = np.arange(self.next_clone, self.next_clone + n, dtype=np.int32)
        self.next_clone += n
        self.clone_vcn.append(vcn.copy())
        self.clone_infusion.append(np.full(n, index, dtype=np.int64))
        self.pool.add(ctype, np.full(n, GRAFT, dtype=np.uint8), vcn, divs, clone)
        return counts

    # -- read-outs ---------------------------------------------------------------------
    @property
    def day(self) -> float:
        return self.step * self.timeline.dt

    def record(self, census: bool = True) -> dict:
        s = self.state
        return record_row(self.spec, self.day, s.ctype, s.flags, s.vcn, s.clone, self.pool.size,
                          self.mature, float(self.conc[0]), self.baseline_mature, census=census)

    def snapshot(self) -> dict[str, np.ndarray]:
        s = self.state
        return {"ctype": s.ctype.copy(), "flags": s.flags.copy(), "vcn": s.vcn.copy(),
                "clone": s.clone.copy()}

    def clone_table(self):
        s = self.state
        return clone_table(self.spec, s.ctype, s.flags, s.clone, np.concatenate(self.clone_vcn),
                           np.concatenate(self.clone_infusion))

    # -- a whole run ---------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None) -> Result:
        import pandas as pd

        start = time.perf_counter()
        tl = self.timeline
        self.burn_in()
        if progress:
            progress(tl.burn_in_steps, tl.steps_in_all)
        rows, snapshots = follow_timeline(self, tl, lambda: self.step, progress)
        timeseries = pd.DataFrame(rows)
        snapshots["niche"] = self.state.niche.copy()
        summary = summarize(timeseries, self.spec)
        summary.update(scale_notes(self.exp))
        return Result(
            config=self.exp, seed=self.seed, engine=self.engine, timeseries=timeseries,
            clones=self.clone_table(), snapshots=snapshots, summary=summary,
            wall_seconds=time.perf_counter() - start,
            extra={"scales": scales(self.exp), "kernel": self.kernel},
        )
