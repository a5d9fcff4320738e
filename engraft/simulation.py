"""The kernel engine: state arrays, conditioning, infusion, chunked kernel calls, records.

Layers (style guide): config -> :class:`Simulation` (state arrays; an
:class:`engraft.timeline.Engine`) -> :func:`engraft.kernel.sequential.run_steps`
(compiled; named tuples of arrays, :mod:`engraft.kernel.structs`). The run
around it (burn-in, the timeline, the summary, the :class:`Result`) is
:func:`engraft.timeline.run_engine`, shared with the Mesa reference model. The
kernel runs many steps per call and returns to Python only at the next record,
snapshot or event, so Python costs stay per record, not per step.

The timeline, scales, infusion arithmetic and tally tables that used to live
here are re-exported from :mod:`engraft.timeline`, :mod:`engraft.scaling` and
:mod:`engraft.tally` (``from engraft.simulation import Timeline`` still works).

Random streams: the run's seed feeds one :class:`numpy.random.SeedSequence`;
its first child drives set-up in Python (niche map, conditioning, infusions,
transduction), its second seeds the kernel's xoshiro256** state. The same
config and seed therefore give bit-identical tables.
"""

from __future__ import annotations

import numpy as np

from engraft import rates, tally, timeline
from engraft.config.schema import Experiment
from engraft.kernel import parallel, sequential
from engraft.kernel.layout import C_EMPTY, C_EMPTY_NICHE, N_EXIT_QUANTITIES
from engraft.kernel.rng import seed_state
from engraft.kernel.structs import Lattice, Rules
from engraft.kernel.structs import Pool as KernelPool
from engraft.lattice import EMPTY, GRAFT, QUIESCENT, Pool, State, index_dtype, neighbour_offsets, niche_map
from engraft.readouts import GraftClones, ReadoutSpec, record_row
from engraft.scaling import (  # noqa: F401 (the rest: re-exported)
    BODY_EQUIVALENT_HSC_SCALE,
    check_infusions,
    draw_infusion,
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
from engraft.timeline import ProgressCallback, Result, Timeline, run_engine


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
        lodging_list=bool(exp.circulation.lodging_search == "adaptive"),
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
        self.graft_clones = GraftClones()
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
        self.tally_tables.advance(self.mature, self.chain, self.conc, exits, self.timeline.dt, self.baseline_mature)
        self.step += n_steps
        return exits

    def burn_in(self, progress: ProgressCallback | None = None) -> None:
        """Run the host alone to steady state (:func:`engraft.timeline.burn_in`)."""
        timeline.burn_in(self, progress)

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
        cells = draw_infusion(self.exp, index, self.rng)
        ctype, vcn = cells.types, cells.vcn
        divs = self.rules.max_divisions[ctype].astype(np.uint8)
        divs[ctype == self.rules.hsc_type] = 0
        clone = self.graft_clones.add(vcn, index)
        self.pool.add(ctype, np.full(ctype.size, GRAFT, dtype=np.uint8), vcn, divs, clone)
        return cells.counts

    # -- read-outs ---------------------------------------------------------------------
    @property
    def position(self) -> int:
        """The step number (``step``; the :class:`engraft.timeline.Engine` name)."""
        return self.step

    @position.setter
    def position(self, step: int) -> None:
        self.step = step

    @property
    def day(self) -> float:
        return self.step * self.timeline.dt

    @property
    def niche(self) -> np.ndarray:
        return self.state.niche

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
        return self.graft_clones.table(self.spec, s.ctype, s.flags, s.clone)

    def result_extra(self) -> dict:
        return {"kernel": self.kernel}

    # -- a whole run ---------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None) -> Result:
        """Burn-in, the timeline and the summary (:func:`engraft.timeline.run_engine`)."""
        return run_engine(self, progress)
