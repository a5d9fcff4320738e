"""The timeline of a run, and the one way any engine goes through it.

A run's life is the same on every engine: the engine is built with host HSCs
in the niches, at the first burn-in step; :func:`burn_in` runs the host
alone and sets the mature compartments to the steady state of its output;
then the follow-up goes from boundary to boundary of the :class:`Timeline`
(at each, the conditioning doses and infusions of that step, then the
record and the snapshot of the state they leave); last, the records, the
summary and the clone table make the :class:`Result`. :func:`run_engine`
does all of it, for the kernel (:class:`engraft.simulation.Simulation`) and
the Mesa reference model (:class:`engraft.reference.ReferenceModel`) alike,
so an event or a record can never fall on different steps in the two.
:class:`TimelineRun` is its follow-up one boundary at a time, which the
browser view (:mod:`engraft.plots.view`) steps as the user clicks.

What an engine must provide for that is the :class:`Engine` protocol.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from engraft.readouts import CountWatch, summarize
from engraft.scaling import calibration_notes, scale_notes, scales

if TYPE_CHECKING:
    from engraft.config.schema import Experiment
    from engraft.readouts import ReadoutSpec
    from engraft.tally import TallyTables

#: called as ``progress(steps_done, steps_total)``, burn-in included
ProgressCallback = Callable[[int, int], None]

#: burn-in steps per ``Engine.advance`` call (a progress report after each)
BURN_IN_CHUNK_STEPS = 500


# ----------------------------------------------------------------------------------
# the timeline
# ----------------------------------------------------------------------------------
def _multiple_in(lo: int, hi: int, interval: float, dt: float) -> bool:
    """Whether the step of some multiple j x ``interval`` days (``round(j interval / dt)``)
    lies in (``lo``, ``hi``]."""
    if interval <= dt:  # the multiples' steps are every step
        return hi > lo
    j = max(0, math.floor(lo * dt / interval) - 1)
    while round(j * interval / dt) <= lo:
        j += 1
    return round(j * interval / dt) <= hi


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
        watch = None if exp.blood_counts is None else CountWatch.from_experiment(exp)
        record_steps = tuple(sorted(s for s in records if start <= s <= total))
        census = None
        if t.lattice_record_interval_days is not None:
            # every record to lattice_record_after_days, then the first record at or after each
            # multiple of the interval, and the last: one pass over the records, for any interval
            after = int(round(t.lattice_record_after_days / dt))
            census = tuple(s for i, s in enumerate(record_steps)
                           if s <= after or s == total
                           or _multiple_in(max(after, record_steps[i - 1]) if i else after, s,
                                           t.lattice_record_interval_days, dt))
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


# ----------------------------------------------------------------------------------
# what an engine provides
# ----------------------------------------------------------------------------------
@runtime_checkable
class Engine(Protocol):
    """A marrow that :func:`run_engine`, :func:`burn_in` and :class:`TimelineRun` can drive.

    The kernel's :class:`~engraft.simulation.Simulation` and the Mesa
    :class:`~engraft.reference.ReferenceModel` both satisfy it (a test
    checks, with ``isinstance``). The engine holds the marrow and steps it;
    what happens when, and what is made of the records, is not its business.

    Attributes
    ----------
    engine : the engine's name in a :class:`Result` (``"kernel"``, ``"mesa"``).
    exp, seed : the experiment and the seed of this run.
    timeline : ``Timeline.from_experiment(exp)``.
    spec : the read-outs to record (:class:`engraft.readouts.ReadoutSpec`).
    tally_tables, mature, chain : the experiment's tally and its blood and
        chain compartments (:class:`engraft.tally.TallyTables`), which
        :func:`burn_in` sets to their steady state.
    baseline_mature : the mature compartments at the end of burn-in (set by
        :func:`burn_in`; relative blood counts are read against it).
    position : the step number; step 0 starts at day 0, burn-in starts at
        ``timeline.first_step``. Settable.
    day : ``position * timeline.dt``.
    niche : the niche map, one value per site (non-zero: a niche).
    """

    engine: str
    exp: Experiment
    seed: int
    timeline: Timeline
    spec: ReadoutSpec
    tally_tables: TallyTables
    mature: np.ndarray
    chain: np.ndarray
    baseline_mature: np.ndarray | None
    position: int

    @property
    def day(self) -> float: ...

    @property
    def niche(self) -> np.ndarray: ...

    def advance(self, n_steps: int) -> np.ndarray:
        """Run ``n_steps`` steps and the tally over them; return the exits (steps, types, quantities)."""
        ...

    def condition(self) -> int:
        """One conditioning dose now; return the cells killed."""
        ...

    def infuse(self, index: int) -> dict[str, int]:
        """Put infusion ``index``'s cells into the blood now; return lattice cells per type."""
        ...

    def record(self, census: bool = True) -> dict:
        """The read-outs now (:func:`engraft.readouts.record_row`); ``census`` False: without the lattice."""
        ...

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the lattice arrays now (``ctype``, ``flags``, ``vcn``, ``clone``)."""
        ...

    def clone_table(self):
        """The graft clones alive now (:func:`engraft.readouts.clone_table`)."""
        ...

    def result_extra(self) -> dict:
        """What the :class:`Result`'s ``extra`` says of this engine, besides the scales."""
        ...


# ----------------------------------------------------------------------------------
# a run
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


def burn_in(engine: Engine, progress: ProgressCallback | None = None,
            chunk_steps: int = BURN_IN_CHUNK_STEPS) -> None:
    """Run the host alone to steady state, then set the mature compartments to the
    steady state of the mean exit flux over the last days of burn-in.

    The steps go in chunks of ``chunk_steps``, with a progress report after
    each (one report of none done where there is no burn-in). The engine
    ends at ``timeline.start_step`` with its ``baseline_mature`` set.
    """
    tl = engine.timeline
    n = tl.burn_in_steps
    if n == 0 and progress:
        progress(0, tl.steps_in_all)
    if n > 0:
        chunks = []
        done = 0
        while done < n:
            k = min(chunk_steps, n - done)
            chunks.append(engine.advance(k))
            done += k
            if progress:
                progress(done, tl.steps_in_all)
        engine.mature[:], engine.chain[:] = engine.tally_tables.equilibrium(np.concatenate(chunks), tl.dt)
    engine.position = tl.start_step
    engine.baseline_mature = engine.mature.copy()


@dataclass(frozen=True)
class Moment:
    """One boundary of the timeline, after its events: what was read there.

    ``record`` is the read-out row taken at this step (None where none is),
    ``census`` whether it read the lattice (sparse lattice records: not
    all do); ``snapshot`` the lattice arrays (None where none is taken).
    """

    step: int
    day: float
    record: dict | None
    census: bool
    snapshot: dict | None


class TimelineRun:
    """An engine's follow-up after burn-in, one boundary of its timeline at a time.

    Iterating yields a :class:`Moment` per boundary, in order; at each the
    engine is advanced to it, the conditioning doses and infusions of the
    step happen, then the record and the snapshot of the state they leave.
    A record whose blood counts are low (``timeline.watch``) adds a record
    one day later, so counts are recorded daily while they are low, whatever
    the record interval. :meth:`advance_to` goes to any step (the browser
    view's steps), taking every boundary on the way: the same events,
    records and snapshots on the same steps as a whole run, which is this
    iterator consumed to the end (:func:`run_engine`).

    ``records`` holds every record so far; :meth:`snapshots` stacks the
    snapshots so far, per array, with their ``day``. With ``keep_snapshots``
    False none is taken (the view draws the lattice itself).
    """

    def __init__(self, engine: Engine, progress: ProgressCallback | None = None,
                 keep_snapshots: bool = True) -> None:
        self.engine = engine
        self.timeline = tl = engine.timeline
        self.progress = progress
        self.keep_snapshots = keep_snapshots
        self.records: list[dict] = []
        self._snapshots: list[dict[str, np.ndarray]] = []
        self._snapshot_days: list[float] = []
        self._pending = tl.boundaries()
        heapq.heapify(self._pending)
        self._record_steps = set(tl.record_steps)
        self._snapshot_steps = set(tl.snapshot_steps)
        self._census = None if tl.census_steps is None else set(tl.census_steps)
        self._done: set[int] = set()

    @property
    def next_boundary(self) -> int | None:
        """The step of the next boundary, or None when the follow-up is over."""
        while self._pending and self._pending[0] in self._done:
            heapq.heappop(self._pending)
        return self._pending[0] if self._pending else None

    @property
    def finished(self) -> bool:
        return self.next_boundary is None

    def __iter__(self) -> Iterator[Moment]:
        return self

    def __next__(self) -> Moment:
        boundary = self.next_boundary
        if boundary is None:
            raise StopIteration
        heapq.heappop(self._pending)
        self._done.add(boundary)
        self._advance_engine_to(boundary)
        tl, engine = self.timeline, self.engine
        for step in tl.conditioning_steps:
            if step == boundary:
                engine.condition()
        for i, step in enumerate(tl.infusion_steps):
            if step == boundary:
                engine.infuse(i)
        row = snap = None
        # sparse lattice read-outs (time.lattice_record_interval_days)
        census = self._census is None or boundary in self._census
        if boundary in self._record_steps:
            row = engine.record(census=census)
            self.records.append(row)
            nxt = tl.next_day_step(boundary)
            if tl.watch is not None and nxt <= tl.total_steps and nxt not in self._done and tl.watch.low(row):
                self._record_steps.add(nxt)
                heapq.heappush(self._pending, nxt)
        if boundary in self._snapshot_steps and self.keep_snapshots:
            snap = engine.snapshot()
            self._snapshots.append(snap)
            self._snapshot_days.append(engine.day)
        return Moment(step=boundary, day=engine.day, record=row, census=row is not None and census,
                      snapshot=snap)

    def advance_to(self, step: int) -> list[Moment]:
        """Take every boundary up to ``step``, then advance the engine to ``step``; return their moments."""
        moments = []
        while (nxt := self.next_boundary) is not None and nxt <= step:
            moments.append(next(self))
        self._advance_engine_to(step)
        return moments

    def _advance_engine_to(self, step: int) -> None:
        tl, engine = self.timeline, self.engine
        while engine.position < step:
            engine.advance(step - engine.position)
            if self.progress:
                self.progress(engine.position - tl.first_step, tl.steps_in_all)

    def snapshots(self) -> dict[str, np.ndarray]:
        """The snapshots so far, stacked per array (first axis: the snapshot), and their ``day``."""
        out = {key: np.stack([snap[key] for snap in self._snapshots]) for key in
               (self._snapshots[0] if self._snapshots else ())}
        out["day"] = np.array(self._snapshot_days)
        return out


def run_engine(engine: Engine, progress: ProgressCallback | None = None) -> Result:
    """Run an engine through its experiment: burn-in, the timeline, the summary; its :class:`Result`.

    Both engines' ``run`` are this function; ``progress`` is called as
    ``progress(steps_done, steps_total)``, burn-in included.
    """
    import pandas as pd

    start = time.perf_counter()
    burn_in(engine, progress)
    run = TimelineRun(engine, progress)
    for _ in run:
        pass
    timeseries = pd.DataFrame(run.records)
    snapshots = run.snapshots()
    snapshots["niche"] = engine.niche.copy()
    summary = summarize(timeseries, engine.spec)
    summary.update(scale_notes(engine.exp))
    summary.update(calibration_notes(engine.exp))
    return Result(
        config=engine.exp, seed=engine.seed, engine=engine.engine, timeseries=timeseries,
        clones=engine.clone_table(), snapshots=snapshots, summary=summary,
        wall_seconds=time.perf_counter() - start,
        extra={"scales": scales(engine.exp), **engine.result_extra()},
    )
