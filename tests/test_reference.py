"""The Mesa reference model: its rules on hand-set marrows, its results, and exact
agreement with the kernel where nothing is left to chance.

Rule tests force a cell's event (``draw_event`` patched) so that the outcome
of a step is certain; the statistical comparison with the kernel lives in
``tests/test_equivalence.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import engraft.kernel.sequential
from engraft import ConfigError, load_config, rates, simulate, tally
from engraft.kernel.rules import empty_neighbours
from engraft.lattice import EMPTY, GRAFT, QUIESCENT, neighbour_offsets, site_coordinates
from engraft.reference import (
    HSC,
    MAX_AGENT_STEPS,
    MAX_SITES,
    Progenitor,
    ReferenceModel,
    reference_cost,
    run_reference,
)
from engraft.simulation import Simulation, kernel_rules

DATA = Path(__file__).resolve().parent / "data" / "configs"
FROZEN = DATA / "equivalence_frozen.yaml"
MYELOABLATIVE = DATA / "equivalence_myeloablative.yaml"

#: an infusion whose lattice cell counts are whole numbers (frozen config: scales are 1)
EXACT_INFUSION = ("infusions=[{day: 0, dose_per_kg: 64, homing: 1.0, transduction: 1.0, "
                  "composition: {HSC: 0.125, MPP: 0.25, GMP: 0.125}, "
                  "vcn: {distribution: categorical, probabilities: {2: 1.0}}}]")
FULL_CONDITIONING = "conditioning={day: 0, myeloablation: {HSC: 1.0, MPP: 1.0, GMP: 1.0, MkP: 1.0}}"


# ----------------------------------------------------------------------------------
# hand-set marrows
# ----------------------------------------------------------------------------------
def empty_model(*overrides: str, seed: int = 0) -> ReferenceModel:
    """A frozen-config model (plus ``overrides``) with every cell removed, burn-in done."""
    model = ReferenceModel(load_config(FROZEN, ["time.burn_in_days=0", *overrides]), seed=seed)
    for cell in list(model.agents):
        cell.die()
    model.blood = []
    model.burn_in()
    return model


def index_of(model: ReferenceModel, name: str) -> int:
    return model.type_names.index(name)


def progenitor(model: ReferenceModel, site: int, name: str, divisions_left: int | None = None,
               **inherited) -> Progenitor:
    t = index_of(model, name)
    cell = Progenitor(model, t, divisions_left=model.max_divisions[t] if divisions_left is None
                      else divisions_left, **inherited)
    cell.settle(model.sites[site])
    return cell


def roomy_non_niche_site(model: ReferenceModel) -> int:
    """A non-niche site with at least three non-niche neighbours."""
    for i, site in enumerate(model.sites):
        if not site.niche and sum(not c.niche for c in site.neighborhood) >= 3:
            return i
    raise AssertionError("no such site")


def force(monkeypatch, event: int | None, only: str | None = None) -> None:
    """Make every cell (or only cells of type ``only``) draw ``event`` each step."""
    def draw(model, type_index, hsc_state, transgene_state):
        if only is not None and model.type_names[type_index] != only:
            return None
        return event
    monkeypatch.setattr(ReferenceModel, "draw_event", draw)


def cells(model: ReferenceModel) -> list:
    return [site.agents[0] for site in model.sites if not site.is_empty]


# ----------------------------------------------------------------------------------
# rules
# ----------------------------------------------------------------------------------
def test_daughters_act_from_the_next_step(monkeypatch):
    model = empty_model()
    force(monkeypatch, rates.DIVIDE)
    progenitor(model, roomy_non_niche_site(model), "GMP", divisions_left=3)
    model.step()
    assert len(cells(model)) == 2  # the daughter did not divide in its birth step
    assert sorted(c.divisions_left for c in cells(model)) == [2, 2]


def test_progenitor_daughters_inherit_and_never_take_a_niche(monkeypatch):
    model = empty_model()
    force(monkeypatch, rates.DIVIDE, only="MPP")
    site = roomy_non_niche_site(model)
    progenitor(model, site, "MPP", graft=True, vcn=3, clone_id=7, silenced=True)
    for _ in range(3):
        model.step()
    assert len(cells(model)) > 1
    for c in cells(model):
        assert not c.cell.niche
        assert (c.graft, c.vcn, c.clone_id, c.silenced) == (True, 3, 7, True)


def test_division_waits_when_only_niches_are_free(monkeypatch):
    model = empty_model()
    force(monkeypatch, rates.DIVIDE, only="MPP")
    site = next(i for i, s in enumerate(model.sites)
                if not s.niche and any(c.niche for c in s.neighborhood))
    progenitor(model, site, "MPP")
    for neighbour in model.sites[site].neighborhood:
        if not neighbour.niche:
            Progenitor(model, index_of(model, "GMP"), divisions_left=3).settle(neighbour)
    before = len(cells(model))
    model.step()
    assert len(cells(model)) == before
    assert all(c.is_empty for c in model.sites[site].neighborhood if c.niche)


def test_terminal_progenitor_exits_to_its_lineage(monkeypatch):
    model = empty_model("transgene.vcn_response=saturating", "transgene.vcn_half_saturation=2.0")
    force(monkeypatch, rates.DIVIDE)
    progenitor(model, roomy_non_niche_site(model), "GMP", divisions_left=0, graft=True, vcn=3)
    model.step()
    assert cells(model) == []
    gmp = index_of(model, "GMP")
    weight = tally.expression_weights("saturating", 2.0)[3]
    np.testing.assert_allclose(model.step_exits[gmp], [1.0, 1.0, 1.0, 3.0, weight])
    assert model.step_exits.sum() == pytest.approx(6.0 + weight)


def test_silenced_exit_has_no_expression(monkeypatch):
    model = empty_model()
    force(monkeypatch, rates.DIVIDE)
    progenitor(model, roomy_non_niche_site(model), "GMP", divisions_left=0, vcn=2, silenced=True)
    model.step()
    np.testing.assert_array_equal(model.step_exits[index_of(model, "GMP")], [1.0, 0.0, 1.0, 2.0, 0.0])


def test_non_terminal_progenitor_differentiates_in_place(monkeypatch):
    model = empty_model()
    force(monkeypatch, rates.DIVIDE)
    cell = progenitor(model, roomy_non_niche_site(model), "MPP", divisions_left=0)
    model.step()
    assert cells(model) == [cell]
    assert model.type_names[cell.type_index] in ("GMP", "MkP")
    assert cell.divisions_left == 3


@pytest.mark.parametrize("self_renewal, daughter", [(1.0, "HSC"), (0.0, "MPP")])
def test_hsc_division_in_its_niche(monkeypatch, self_renewal, daughter):
    model = empty_model(f"cell_types.HSC.self_renewal={self_renewal}")
    force(monkeypatch, rates.DIVIDE)
    niche = next(i for i, s in enumerate(model.sites) if s.niche)
    mother = HSC(model, graft=True, vcn=1, clone_id=3)
    mother.settle(model.sites[niche])
    mother.quiescent = False  # activated
    model.step()
    assert mother.quiescent  # back to rest in its niche
    others = [c for c in cells(model) if c is not mother]
    assert len(others) == 1
    child = others[0]
    assert model.type_names[child.type_index] == daughter
    assert child.cell in model.sites[niche].neighborhood
    assert (child.graft, child.vcn, child.clone_id) == (True, 1, 3)
    if daughter == "HSC":
        assert child.quiescent == bool(child.cell.niche)
    else:
        assert not child.cell.niche


def test_off_niche_hsc_commits_when_affinity_runs_out_exactly_as_the_kernel():
    """No event can happen (all rates 0): the commitment step is deterministic in both engines."""
    exp = load_config(FROZEN, ["time.burn_in_days=0"])
    hsc = exp.cell_types["HSC"]
    decay = rates.affinity_decay_per_step(hsc.affinity_loss_rate, exp.time.dt_days)
    expected = next(k for k in range(1, 1000) if decay**k < hsc.affinity_min)

    model = empty_model()
    site = roomy_non_niche_site(model)
    HSC(model).settle(model.sites[site])
    mesa_steps = 0
    while model.sites[site].agents[0].type_index == model.hsc_index:
        model.step()
        mesa_steps += 1

    sim = Simulation(exp, seed=0)
    s = sim.state
    s.ctype[:] = EMPTY
    s.flags[:] = 0
    site = int(np.flatnonzero(s.niche == 0)[0])
    s.ctype[site] = sim.rules.hsc_type
    s.affinity[site] = 1.0
    sim.recount()
    sim.burn_in()
    kernel_steps = 0
    while s.ctype[site] == sim.rules.hsc_type:
        sim.advance(1)
        kernel_steps += 1
    assert mesa_steps == kernel_steps == expected
    assert exp.type_names[s.ctype[site]] == "MPP"


def test_egress_puts_hscs_into_the_blood_where_they_die_without_lodging(monkeypatch):
    model = empty_model()
    force(monkeypatch, rates.EGRESS)
    for site in model.niche_sites:
        HSC(model).settle(site)
    model.agents.shuffle_do("step")  # the sweep only
    assert cells(model) == []
    assert len(model.blood) == len(model.niche_sites)
    assert all(c.in_blood and not c.quiescent for c in model.blood)
    model.resolve_blood()  # lodging rate 0; blood death over dt = 0.2 day is certain
    assert model.blood == [] and len(model.agents) == 0


def test_removed_cell_does_nothing(monkeypatch):
    model = empty_model()
    force(monkeypatch, rates.DIVIDE)
    cell = progenitor(model, roomy_non_niche_site(model), "GMP")
    cell.die()
    cell.step()
    assert cells(model) == []


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("neighbourhood", ["moore", "von_neumann"])
@pytest.mark.parametrize("boundary", ["periodic", "closed"])
def test_grid_neighbourhoods_are_the_kernels(dims, neighbourhood, boundary):
    """Site numbering and every site's neighbours equal the kernel's geometry."""
    size = 5
    model = empty_model(f"lattice.dims={dims}", f"lattice.size={size}", f"lattice.neighbourhood={neighbourhood}",
                        f"lattice.boundary={boundary}", "marrow.progenitor_count=1000")
    coords = site_coordinates(size, dims)
    assert [s.coordinate for s in model.sites] == [tuple(c) for c in coords.tolist()]
    rules = kernel_rules(model.exp)
    offsets = neighbour_offsets(dims, neighbourhood)
    np.testing.assert_array_equal(rules.offsets, offsets)
    n = size**dims
    ctype = np.full(n, EMPTY, dtype=np.int8)
    niche = np.zeros(n, dtype=np.uint8)
    buf = np.empty(offsets.shape[0], dtype=np.int64)
    for i, site in enumerate(model.sites):
        k = empty_neighbours(i, rules, ctype, niche, True, buf)
        assert {model.site_index[c] for c in site.neighborhood} == set(buf[:k].tolist())


def test_niche_layer_matches_the_niche_map():
    model = empty_model()
    layer = np.array([bool(s.niche) for s in model.sites])
    np.testing.assert_array_equal(layer, model.niche.astype(bool))
    assert layer.sum() == round(0.125 * 256)


# ----------------------------------------------------------------------------------
# whole runs
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def myeloablative_runs():
    exp = load_config(MYELOABLATIVE)
    return exp, run_reference(exp, seed=11), run_reference(exp, seed=11), run_reference(exp, seed=12)


def test_same_seed_same_result(myeloablative_runs):
    _, a, b, c = myeloablative_runs
    pd.testing.assert_frame_equal(a.timeseries, b.timeseries)
    pd.testing.assert_frame_equal(a.clones, b.clones)
    assert a.summary.keys() == b.summary.keys()
    for key, value in a.summary.items():
        assert value == b.summary[key] or (value != value and b.summary[key] != b.summary[key]), key
    for key in a.snapshots:
        np.testing.assert_array_equal(a.snapshots[key], b.snapshots[key])
    assert not a.timeseries.equals(c.timeseries)


def test_result_has_the_kernels_layout(myeloablative_runs):
    exp, mesa, _, _ = myeloablative_runs
    kernel = simulate(exp, seed=11)
    assert mesa.engine == "mesa" and kernel.engine == "kernel"
    assert list(mesa.timeseries.columns) == list(kernel.timeseries.columns)
    np.testing.assert_array_equal(mesa.timeseries["day"], kernel.timeseries["day"])
    assert list(mesa.clones.columns) == list(kernel.clones.columns)
    assert mesa.summary.keys() == kernel.summary.keys()
    assert mesa.snapshots.keys() == kernel.snapshots.keys()
    for key in mesa.snapshots:
        assert mesa.snapshots[key].shape == kernel.snapshots[key].shape, key
        assert mesa.snapshots[key].dtype == kernel.snapshots[key].dtype, key


def test_run_invariants(myeloablative_runs):
    exp, result, _, _ = myeloablative_runs
    snaps = result.snapshots
    niche = snaps["niche"].astype(bool)
    hsc = exp.type_names.index("HSC")
    ctype = snaps["ctype"]
    assert np.all((ctype[:, niche] == EMPTY) | (ctype[:, niche] == hsc))  # niches hold HSCs
    quiescent = (snaps["flags"] & QUIESCENT) != 0
    assert not np.any(quiescent & ~niche[None, :])  # only a niche HSC rests
    graft = (snaps["flags"] & GRAFT) != 0
    assert np.all((snaps["clone"] > 0) == (graft & (ctype != EMPTY)))
    ts = result.timeseries
    assert ts["day"].iloc[0] == 0.0 and ts["day"].iloc[-1] == exp.time.duration_days
    assert len(result.clones) == ts["clones_alive"].iloc[-1]


def test_datacollector_holds_the_time_series():
    exp = load_config(FROZEN)
    model = ReferenceModel(exp, seed=0)
    result = model.run()
    collected = model.datacollector.get_model_vars_dataframe()
    assert len(collected) == len(result.timeseries)
    pd.testing.assert_frame_equal(pd.DataFrame(list(collected["readouts"])), result.timeseries)


def test_simulate_dispatches_to_mesa_and_reports_progress():
    calls = []
    result = simulate(load_config(FROZEN), seed=0, engine="mesa", progress=lambda d, t: calls.append((d, t)))
    assert result.engine == "mesa"
    total = 50 + 100
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_other_geometries_and_pool_placement_run():
    """3D, von Neumann, closed boundary, clustered niches, daughters into the blood."""
    exp = load_config(MYELOABLATIVE, ["lattice.dims=3", "lattice.size=7", "lattice.neighbourhood=von_neumann",
                                      "lattice.boundary=closed", "lattice.niche_placement=clustered",
                                      "lattice.niche_cluster_size=4",
                                      "circulation.placement=pool", "time.burn_in_days=10",
                                      "time.duration_days=20"])
    result = run_reference(exp, seed=1)
    ts = result.timeseries
    assert ts["HSC_graft"].iloc[-1] > 0 and ts["occupancy"].iloc[-1] > 0.2
    niche = result.snapshots["niche"].astype(bool)
    ctype = result.snapshots["ctype"]
    assert np.all((ctype[:, niche] == EMPTY) | (ctype[:, niche] == exp.type_names.index("HSC")))


# ----------------------------------------------------------------------------------
# exact agreement with the kernel
# ----------------------------------------------------------------------------------
def assert_same_tables(exp):
    mesa = simulate(exp, seed=1, engine="mesa")
    kernel = simulate(exp, seed=1, engine="kernel")
    pd.testing.assert_frame_equal(mesa.timeseries, kernel.timeseries, check_exact=True)
    pd.testing.assert_frame_equal(mesa.clones, kernel.clones, check_exact=True)
    for key, value in kernel.summary.items():
        other = mesa.summary[key]
        assert value == other or (value != value and other != other), key
    return mesa, kernel


def test_frozen_marrow_is_unchanged_and_identical_in_both_engines():
    exp = load_config(FROZEN)
    mesa, kernel = assert_same_tables(exp)
    for result in (mesa, kernel):
        ctype = result.snapshots["ctype"]
        np.testing.assert_array_equal(ctype[0], ctype[-1])  # state unchanged
        np.testing.assert_array_equal(ctype[-1] != EMPTY, result.snapshots["niche"] != 0)
    assert (mesa.timeseries["HSC_host"] == 32).all()


def test_certain_conditioning_and_blood_death_are_identical_in_both_engines():
    """Myeloablation 1 kills every host cell; with no lodging every infused cell dies in
    the blood within the first step (death over dt = 0.2 day has probability 1.0)."""
    exp = load_config(FROZEN, [FULL_CONDITIONING, EXACT_INFUSION])
    mesa, _ = assert_same_tables(exp)
    ts = mesa.timeseries
    assert ts["pool_cells"].iloc[0] == 8 + 16 + 8
    assert (ts["pool_cells"].iloc[1:] == 0).all()
    assert (ts["occupancy"] == 0).all()


def test_identical_exit_streams_give_identical_blood_and_plasma(monkeypatch):
    """Pure PK: both engines' orchestration feeds the same exits to the tally.

    The cell dynamics of both engines are replaced by one stream of exits
    (per step, type and quantity); burn-in equilibration, mature compartments,
    plasma factor and every derived read-out must then agree exactly.
    """
    # 600 burn-in steps: more than one progress chunk of the Mesa burn-in, and more
    # than the 500-step equilibration window
    exp = load_config(FROZEN, ["time.burn_in_days=120", "time.duration_days=30"])
    n_types = len(exp.type_names)
    n_steps = 600 + 150
    rng = np.random.default_rng(5)
    stream = np.zeros((n_steps, n_types, tally.N_QUANTITIES))
    for name in ("GMP", "MkP"):  # the terminal types
        t = exp.type_names.index(name)
        cells_out = rng.poisson(3.0, n_steps).astype(float)
        stream[:, t, tally.CELLS] = cells_out
        stream[:, t, tally.GRAFT_CELLS] = np.floor(cells_out * rng.random(n_steps))
        stream[:, t, tally.TRANSDUCED_CELLS] = np.floor(stream[:, t, tally.GRAFT_CELLS] * 0.5)
        stream[:, t, tally.VECTOR_COPIES] = 2 * stream[:, t, tally.TRANSDUCED_CELLS]
        stream[:, t, tally.EXPRESSION_UNITS] = 1.5 * stream[:, t, tally.TRANSDUCED_CELLS]

    kernel_step = [0]

    def kernel_steps(n, exits, *arrays):
        exits[:n] = stream[kernel_step[0]:kernel_step[0] + n]
        kernel_step[0] += n
        return n

    mesa_step = [0]

    def mesa_step_fn(self):
        self.step_exits = stream[mesa_step[0]].copy()
        mesa_step[0] += 1

    monkeypatch.setattr(engraft.kernel.sequential, "run_steps", kernel_steps)
    monkeypatch.setattr(ReferenceModel, "step", mesa_step_fn)
    mesa, kernel = assert_same_tables(exp)
    assert kernel_step[0] == mesa_step[0] == n_steps
    assert mesa.timeseries["transgene_iu_dl"].max() > 0
    assert mesa.timeseries["myeloid_cells"].iloc[0] > 0


# ----------------------------------------------------------------------------------
# cost limits
# ----------------------------------------------------------------------------------
def test_reference_cost_counts_sites_steps_and_memory():
    exp = load_config(FROZEN)
    cost = reference_cost(exp)
    assert cost.sites == 256
    assert cost.steps == 50 + 100
    assert cost.agent_steps == 256 * 150
    assert cost.memory_bytes > 256 * 1000
    assert cost.seconds > 0


@pytest.mark.parametrize("overrides", [
    ["lattice.size=1200"],  # too many sites
    ["lattice.size=200", "time.duration_days=20000"],  # too many agent-steps
])
def test_too_large_a_run_is_refused_with_one_line(overrides):
    exp = load_config(FROZEN, overrides)
    cost = reference_cost(exp)
    assert cost.sites > MAX_SITES or cost.agent_steps > MAX_AGENT_STEPS
    with pytest.raises(ConfigError) as err:
        simulate(exp, engine="mesa")
    message = str(err.value)
    assert message.startswith("lattice.size: ")
    assert "\n" not in message
    assert f"{cost.agent_steps:.2g} agent-steps" in message
    assert f"{MAX_AGENT_STEPS:.0e}" in message and f"{MAX_SITES:,}" in message


def test_largest_allowed_run_is_not_refused():
    size = math.isqrt(MAX_SITES)
    exp = load_config(FROZEN, [f"lattice.size={size}", "time.burn_in_days=0", "time.duration_days=0.2",
                               "time.record_interval_days=0.2"])
    from engraft.reference.model import check_reference_cost

    check_reference_cost(exp)  # no error
