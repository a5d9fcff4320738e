"""The Mesa reference model: the same experiment, one readable agent per cell.

This is engraft's oracle (style guide: "a slow, readable reference"). It reads
the same validated :class:`~engraft.config.schema.Experiment` as the kernel
and shares with it only what is not step logic: the rate -> per-step
probability tables (:mod:`engraft.rates`), the mature-cell and plasma tally
(:mod:`engraft.tally`), the read-outs (:mod:`engraft.readouts`), the
scales and infusion arithmetic (:mod:`engraft.scaling`), the timeline
and the run around it (:mod:`engraft.timeline`) and the
niche map (:func:`engraft.lattice.niche_map`). The rules themselves are
written again, as agent methods (:mod:`engraft.reference.agents`), with Mesa
idioms:

- the marrow is a ``mesa.discrete_space`` grid (``OrthogonalMooreGrid`` or
  ``OrthogonalVonNeumannGrid``, 2D or 3D, ``torus`` for a periodic boundary,
  capacity one cell per site) with a boolean ``niche`` property layer;
- ``HSC`` and ``Progenitor`` are ``CellAgent`` subclasses; a circulating cell
  is an agent with no grid cell;
- a step is ``model.agents.shuffle_do("step")`` (random sequential order over
  the agents alive at its start; daughters born in the step act from the next
  one), then the blood (:meth:`ReferenceModel.resolve_blood`);
- read-outs are collected by a ``DataCollector`` whose one model reporter is
  :func:`engraft.readouts.record_row`.

Random streams: the run's seed feeds ``np.random.SeedSequence(seed)``; the
kernel uses its children 0 and 1, this model child 2 (which seeds Mesa's
``model.rng`` for set-up draws and ``model.random`` for the steps), so the two
engines never share a stream and agree only in distribution. The same seed
gives the same result.

Time step semantics (docs/model.md, section 4, and the kernel's docstring in
:mod:`engraft.kernel.sequential`):

1. Every agent alive at the start of the step acts once, in a fresh random
   order; cells in the blood wait for step 3.
2. An HSC off a niche loses affinity first and, below ``affinity_min``,
   commits in place to its differentiated type instead of any other event.
3. After the sweep every circulating cell lodges, dies or stays, exactly over
   the step (competing exponentials), in random order; HSCs lodge into empty
   niche sites at ``lodging_rate`` x the free fraction of niches,
   progenitors into empty non-niche sites at ``lodging_rate`` x the free
   fraction of those.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import mesa
import numpy as np
from mesa.discrete_space import OrthogonalMooreGrid, OrthogonalVonNeumannGrid

from engraft import rates, tally, timeline
from engraft.config.load import ConfigError
from engraft.config.schema import Experiment
from engraft.lattice import EMPTY, GRAFT, QUIESCENT, SILENCED, niche_map, site_coordinates
from engraft.readouts import GraftClones, ReadoutSpec, record_row
from engraft.reference.agents import HSC, MarrowCell, Progenitor
from engraft.scaling import check_infusions, draw_infusion
from engraft.timeline import ProgressCallback, Result, Timeline, run_engine

#: child of the run's SeedSequence that seeds this engine (the kernel uses 0 and 1)
MESA_STREAM = 2

# Cost model: a typical cost per agent and step, so that a config meant for the
# kernel is refused before it starts hours of Mesa (measurements: docs/performance.md).
#: seconds per agent and step (sweep, blood and records)
SECONDS_PER_AGENT_STEP = 5e-6
#: bytes per lattice site: the Mesa grid cell, its cached neighbourhood and its agent (measured 2.5 kB)
BYTES_PER_SITE = 2_500
#: refuse runs above this many agent-steps (about half an hour, an hour for a busy transplant)
MAX_AGENT_STEPS = 3e8
#: refuse lattices above this many sites (about 2.5 GB of Python objects)
MAX_SITES = 1_000_000


# ----------------------------------------------------------------------------------
# cost
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceCost:
    """What a Mesa run of an experiment would cost (upper estimates).

    Attributes
    ----------
    sites : lattice sites (each a Mesa grid cell, at most one agent each).
    steps : burn-in plus follow-up steps.
    agent_steps : sites x steps: every site occupied is the upper bound.
    memory_bytes : grid cells, their neighbourhoods and agents.
    seconds : ``agent_steps`` x :data:`SECONDS_PER_AGENT_STEP`.
    """

    sites: int
    steps: int
    agent_steps: float
    memory_bytes: float
    seconds: float


def reference_cost(exp: Experiment) -> ReferenceCost:
    """Estimate the agent-steps, memory and time of a Mesa run of ``exp``.

    Parameters
    ----------
    exp : a validated experiment.

    Returns
    -------
    ReferenceCost
        Upper estimates: every site is counted as occupied in every step.
    """
    tl = Timeline.from_experiment(exp)
    sites = exp.lattice.n_sites
    steps = tl.steps_in_all
    agent_steps = float(sites) * steps
    return ReferenceCost(sites=sites, steps=steps, agent_steps=agent_steps,
                         memory_bytes=float(sites) * BYTES_PER_SITE,
                         seconds=agent_steps * SECONDS_PER_AGENT_STEP)


def check_reference_cost(exp: Experiment) -> None:
    """Refuse, with one line naming ``lattice.size``, a run the Mesa engine cannot finish.

    Raises
    ------
    ConfigError
        If the run exceeds :data:`MAX_SITES` sites or :data:`MAX_AGENT_STEPS` agent-steps.
    """
    cost = reference_cost(exp)
    if cost.sites <= MAX_SITES and cost.agent_steps <= MAX_AGENT_STEPS:
        return
    lat = exp.lattice
    raise ConfigError(
        f"lattice.size: {lat.size} ({lat.dims}D, {cost.sites:,} sites) x {cost.steps:,} steps is about "
        f"{cost.agent_steps:.2g} agent-steps (~{cost.seconds / 3600:.2g} h, "
        f"{cost.memory_bytes / 2**30:.2g} GiB) for the Mesa engine, whose limits are "
        f"{MAX_AGENT_STEPS:.0e} agent-steps and {MAX_SITES:,} sites; use a smaller lattice.size, "
        f"a shorter time.duration_days/time.burn_in_days, or engine 'kernel'"
    )


def _seed_integer(seq: np.random.SeedSequence) -> int:
    """A 128-bit integer from a SeedSequence: seeds both Mesa generators on Mesa 3.3 to 3.x."""
    words = seq.generate_state(4, dtype=np.uint32)
    return int(sum(int(w) << (32 * k) for k, w in enumerate(words)))


def _readout_row(model: ReferenceModel) -> dict:
    """The DataCollector's model reporter: every read-out of this time point (the tally's
    only, where :meth:`ReferenceModel.record` was asked for no census)."""
    return model.readout_row(census=model._census)


# ----------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------
class ReferenceModel(mesa.Model):
    """The marrow of one experiment as a Mesa model.

    Parameters
    ----------
    exp : a validated experiment.
    seed : overrides ``exp.seed``.

    Most users call :func:`run_reference`; tests use the pieces (``burn_in``,
    ``condition``, ``infuse``, ``advance``, ``record``), as for
    :class:`engraft.simulation.Simulation`.
    """

    engine = "mesa"

    def __init__(self, exp: Experiment, seed: int | None = None) -> None:
        check_infusions(exp)
        check_reference_cost(exp)
        run_seed = int(exp.seed if seed is None else seed)
        stream = np.random.SeedSequence(run_seed).spawn(MESA_STREAM + 1)[MESA_STREAM]
        super().__init__(rng=_seed_integer(stream))
        self.exp = exp
        self.seed = run_seed
        self.timeline = Timeline.from_experiment(exp)
        self.dt = exp.time.dt_days
        self.tally_tables = tally.TallyTables.from_experiment(exp)
        self.spec = ReadoutSpec.from_experiment(exp)
        self._read_rules(exp)
        self._build_marrow(exp)

        self.blood: list[MarrowCell] = []
        self.step_exits = np.zeros((len(self.type_names), tally.N_QUANTITIES))
        self.mature = np.zeros((len(exp.lineage_names), tally.N_QUANTITIES))
        self.chain = self.tally_tables.empty_chain()
        self.conc = np.zeros(1)
        self.baseline_mature: np.ndarray | None = None
        self.graft_clones = GraftClones()
        self.step_index = self.timeline.first_step  # step 0 starts at day 0
        self._census = True  # whether the next record reads the lattice (record())
        self.datacollector = mesa.DataCollector(model_reporters={"readouts": _readout_row})
        self._seed_host_hscs()

    # -- set-up --------------------------------------------------------------------------
    def _read_rules(self, exp: Experiment) -> None:
        """The config's numbers in the form the agents use them."""
        names = exp.type_names
        self.type_names = names
        self.hsc_index = names.index(exp.hsc_type)
        hsc = exp.cell_types[exp.hsc_type]
        self.hsc_differentiated_index = names.index(hsc.differentiated_type)
        self.self_renewal = hsc.self_renewal
        self.affinity_decay = rates.affinity_decay_per_step(hsc.affinity_loss_rate, self.dt)
        self.affinity_min = hsc.affinity_min
        p_any, cum = rates.step_tables(exp)
        self.p_any = p_any.tolist()
        self.event_cum = cum.tolist()
        self.max_divisions = [exp.cell_types[n].max_divisions or 0 for n in names]
        self.lineage_of = [exp.cell_types[n].lineage if exp.cell_types[n].kind == "progenitor" else None
                           for n in names]
        self.differentiation_cum: list[list[float] | None] = []
        self.exit_cum: list[list[float] | None] = []
        for t, name in enumerate(names):
            ct = exp.cell_types[name]
            if ct.kind != "progenitor":
                self.differentiation_cum.append(None)
                self.exit_cum.append(None)
                continue
            weights = [ct.differentiation.get(other, 0.0) for other in names]
            self.differentiation_cum.append(np.cumsum(weights).tolist())
            # differentiating in place means becoming one of the *other* types
            others = [0.0 if k == t else w for k, w in enumerate(weights)]
            self.exit_cum.append(np.cumsum(others).tolist() if sum(others) > 0 else None)
        circ = exp.circulation
        self.placement = circ.placement
        self.lodging_rate = circ.lodging_rate
        self.blood_death_rate = 24 * 60 / circ.blood_lifetime_minutes  # per day
        self.expression_weight = tally.expression_weights(exp.transgene.vcn_response,
                                                          exp.transgene.vcn_half_saturation).tolist()

    def _build_marrow(self, exp: Experiment) -> None:
        """The grid, its niche layer, and the site numbering shared with the read-outs."""
        lat = exp.lattice
        grid_class = OrthogonalMooreGrid if lat.neighbourhood == "moore" else OrthogonalVonNeumannGrid
        self.grid = grid_class((lat.size,) * lat.dims, torus=lat.boundary == "periodic", capacity=1,
                               random=self.random)
        niche_layer = self.grid.create_property_layer("niche", default_value=False, dtype=bool)
        niche = niche_map(lat.size, lat.dims, lat.niche_fraction, lat.niche_placement,
                          lat.niche_cluster_count, lat.boundary == "periodic", self.rng,
                          cluster_size=lat.niche_cluster_size)
        # sites numbered x + L (y + L z) as in engraft.lattice, so snapshots and read-outs match
        coords = [tuple(int(c) for c in row) for row in site_coordinates(lat.size, lat.dims)]
        self.sites = [self.grid[coord] for coord in coords]
        self.site_index = {cell: i for i, cell in enumerate(self.sites)}
        for i in np.flatnonzero(niche):
            niche_layer.data[coords[i]] = True
        self.niche = niche
        self.niche_sites = [self.sites[i] for i in np.flatnonzero(niche)]
        self.other_sites = [self.sites[i] for i in np.flatnonzero(niche == 0)]

    def _seed_host_hscs(self) -> None:
        """Host HSCs fill every niche, resting, before burn-in."""
        for site in self.niche_sites:
            HSC(self).settle(site)

    # -- draws the agents ask for --------------------------------------------------------
    def draw_event(self, type_index: int, hsc_state: int, transgene_state: int) -> int | None:
        """The event of one cell in this step (competing risks), or None.

        An event happens with probability ``R dt`` (or ``1 - exp(-R dt)`` with
        ``time.event_probability: first_event``); given one, it is event i with
        probability ``r_i / R`` (tables from :mod:`engraft.rates`).
        """
        p = self.p_any[type_index][hsc_state][transgene_state]
        u = self.random.random()
        if u >= p:
            return None
        cum = self.event_cum[type_index][hsc_state][transgene_state]
        return min(bisect_right(cum, u / p), len(cum) - 1)

    def draw_daughter_type(self, mother_type: int) -> int:
        """A progenitor daughter's type, from the mother type's ``differentiation``."""
        cum = self.differentiation_cum[mother_type]
        return self.random.choices(range(len(cum)), cum_weights=cum)[0]

    def draw_exit_type(self, type_index: int) -> int:
        """The type a non-terminal progenitor with no divisions left becomes."""
        cum = self.exit_cum[type_index]
        return self.random.choices(range(len(cum)), cum_weights=cum)[0]

    def random_empty_neighbour(self, site, niche_allowed: bool):
        """A uniformly random empty neighbouring grid cell, or None.

        ``niche_allowed`` is False for progenitor daughters: niches hold HSCs.
        """
        free = [c for c in site.neighborhood if c.is_empty and (niche_allowed or not c.niche)]
        return self.random.choice(free) if free else None

    def count_exit(self, cell: Progenitor) -> None:
        """Book a progenitor leaving the marrow into its lineage (the tally's inflow)."""
        self.step_exits[cell.type_index] += cell.exit_quantities(self.expression_weight)

    # -- one step ------------------------------------------------------------------------
    def step(self) -> None:
        """One time step: every cell in the marrow acts once, in random order; then the blood."""
        self.step_exits = np.zeros_like(self.step_exits)
        self.agents.shuffle_do("step")
        self.resolve_blood()

    def resolve_blood(self) -> None:
        """Each circulating cell lodges, dies or stays, exactly over the step, in random order.

        A cell lodges at ``lodging_rate`` x the free fraction of its target
        sites and dies at the blood death rate; both compete, so
        :func:`engraft.rates.blood_outcome_probabilities` gives the outcome.
        Lodged cells fill sites at once, so a later cell sees fewer free ones.
        """
        if not self.blood:
            return
        circulating = self.blood
        self.random.shuffle(circulating)
        free = {True: [c for c in self.niche_sites if c.is_empty],
                False: [c for c in self.other_sites if c.is_empty]}
        n_target_sites = {True: len(self.niche_sites), False: len(self.other_sites)}
        still_circulating = []
        for cell in circulating:
            is_hsc = isinstance(cell, HSC)
            targets = free[is_hsc]
            n_all = n_target_sites[is_hsc]
            lodging = self.lodging_rate * len(targets) / n_all if n_all else 0.0
            p_lodge, p_die = rates.blood_outcome_probabilities(lodging, self.blood_death_rate, self.dt)
            u = self.random.random()
            if u < p_lodge:
                k = self.random.randrange(len(targets))
                targets[k], targets[-1] = targets[-1], targets[k]
                cell.settle(targets.pop())
            elif u < p_lodge + p_die:
                cell.die()
            else:
                still_circulating.append(cell)
        self.blood = still_circulating

    def advance(self, n_steps: int) -> np.ndarray:
        """Run ``n_steps`` steps and the tally over them; return the exit counts.

        The exits (steps, types, quantities) feed :func:`engraft.tally.advance`
        exactly as :meth:`engraft.simulation.Simulation.advance` feeds it.
        """
        exits = np.zeros((n_steps, len(self.type_names), tally.N_QUANTITIES))
        for s in range(n_steps):
            self.step()
            exits[s] = self.step_exits
        self.tally_tables.advance(self.mature, self.chain, self.conc, exits, self.dt, self.baseline_mature)
        self.step_index += n_steps
        return exits

    # -- transplant ----------------------------------------------------------------------
    def burn_in(self, progress: ProgressCallback | None = None) -> None:
        """Run the host alone to steady state (:func:`engraft.timeline.burn_in`, as for the kernel)."""
        timeline.burn_in(self, progress)

    def condition(self) -> int:
        """One conditioning dose: kill host cells (marrow and blood) with their type's kill per
        dose (as :meth:`engraft.simulation.Simulation.condition`); return kills."""
        cond = self.exp.conditioning
        if cond is None:
            return 0
        kill_p = [cond.kill_per_dose(name) for name in self.type_names]
        in_marrow = [site.agents[0] for site in self.sites if not site.is_empty]
        killed = 0
        for cell in in_marrow:
            if not cell.graft and self.rng.random() < kill_p[cell.type_index]:
                cell.die()
                killed += 1
        survivors = []
        for cell in self.blood:
            if not cell.graft and self.rng.random() < kill_p[cell.type_index]:
                cell.die()
            else:
                survivors.append(cell)
        self.blood = survivors
        return killed

    def infuse(self, index: int) -> dict[str, int]:
        """Put infusion ``index``'s homed cells into the blood; return cells per type.

        Each graft cell is its own clone, transduced with probability
        ``transduction``; a transduced cell's copies come from the VCN
        distribution (:func:`engraft.scaling.draw_infusion`, as for the kernel).
        """
        cells = draw_infusion(self.exp, index, self.rng)
        clone_ids = self.graft_clones.add(cells.vcn, index)
        for t, copies, clone_id in zip(cells.types.tolist(), cells.vcn.tolist(), clone_ids.tolist(),
                                           strict=True):
            graft = {"graft": True, "vcn": copies, "clone_id": clone_id}
            if t == self.hsc_index:
                cell: MarrowCell = HSC(self, **graft)
            else:
                cell = Progenitor(self, t, divisions_left=self.max_divisions[t], **graft)
            cell.enter_blood()
        return cells.counts

    # -- read-outs -----------------------------------------------------------------------
    @property
    def position(self) -> int:
        """The step number (:class:`engraft.timeline.Engine`): ``step_index`` (``step`` is Mesa's)."""
        return self.step_index

    @position.setter
    def position(self, step: int) -> None:
        self.step_index = step

    @property
    def day(self) -> float:
        return self.step_index * self.dt

    def lattice_arrays(self) -> dict[str, np.ndarray]:
        """The marrow as the structure-of-arrays state of :mod:`engraft.lattice`."""
        n = len(self.sites)
        ctype = np.full(n, EMPTY, dtype=np.int8)
        flags = np.zeros(n, dtype=np.uint8)
        vcn = np.zeros(n, dtype=np.uint8)
        clone = np.zeros(n, dtype=np.int32)
        for i, site in enumerate(self.sites):
            if site.is_empty:
                continue
            cell = site.agents[0]
            ctype[i] = cell.type_index
            flags[i] = ((GRAFT if cell.graft else 0) | (SILENCED if cell.silenced else 0)
                        | (QUIESCENT if getattr(cell, "quiescent", False) else 0))
            vcn[i] = cell.vcn
            clone[i] = cell.clone_id
        return {"ctype": ctype, "flags": flags, "vcn": vcn, "clone": clone}

    def readout_row(self, census: bool = True) -> dict:
        """All read-outs now (:func:`engraft.readouts.record_row`); ``census`` False leaves
        out those that read the lattice (``time.lattice_record_interval_days``)."""
        if not census:
            return record_row(self.spec, self.day, None, None, None, None, len(self.blood), self.mature,
                              float(self.conc[0]), self.baseline_mature, census=False)
        s = self.lattice_arrays()
        return record_row(self.spec, self.day, s["ctype"], s["flags"], s["vcn"], s["clone"],
                          len(self.blood), self.mature, float(self.conc[0]), self.baseline_mature)

    def record(self, census: bool = True) -> dict:
        """Collect this time point's read-outs into the DataCollector; return them.

        ``census`` False (``time.lattice_record_interval_days``) collects the tally
        read-outs only, as the kernel engine does.
        """
        self._census = census
        try:
            self.datacollector.collect(self)
        finally:
            self._census = True
        return self.datacollector.model_vars["readouts"][-1]

    def snapshot(self) -> dict[str, np.ndarray]:
        return self.lattice_arrays()

    def clone_table(self):
        s = self.lattice_arrays()
        return self.graft_clones.table(self.spec, s["ctype"], s["flags"], s["clone"])

    def result_extra(self) -> dict:
        return {"mesa_version": mesa.__version__}

    # -- a whole run ---------------------------------------------------------------------
    def run(self, progress: ProgressCallback | None = None) -> Result:
        """Burn-in, the timeline and the summary (:func:`engraft.timeline.run_engine`); a :class:`Result`.

        Every record also goes to the model's ``DataCollector``.
        """
        return run_engine(self, progress)


def run_reference(exp: Experiment, seed: int | None = None,
                  progress: ProgressCallback | None = None) -> Result:
    """Run one experiment on the Mesa reference model.

    Parameters
    ----------
    exp : a validated experiment.
    seed : overrides ``exp.seed``.
    progress : called as ``progress(steps_done, steps_total)``.

    Returns
    -------
    Result
        The same tables, snapshots and summary as the kernel engine, with
        ``engine == "mesa"``.

    Raises
    ------
    ConfigError
        If the lattice is too large for the Mesa engine (:func:`check_reference_cost`)
        or an infusion puts no cell on the lattice.
    """
    return ReferenceModel(exp, seed).run(progress)


__all__ = ["MAX_AGENT_STEPS", "MAX_SITES", "ReferenceCost", "ReferenceModel", "check_reference_cost",
           "reference_cost", "run_reference"]
