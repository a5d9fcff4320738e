"""The one way through a run (engraft.timeline): the Engine protocol, burn-in, and the view's steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engraft import load_config, simulate
from engraft.simulation import Simulation
from engraft.timeline import Engine, TimelineRun, burn_in
from tests.conftest import CONFIGS

TINY = str(CONFIGS / "tiny.yaml")
#: the tiny experiment, short enough for the Mesa engine
SHORT = ["time.burn_in_days=10", "time.duration_days=20"]


def _engines(overrides=()):
    exp = load_config(TINY, list(overrides))
    yield Simulation(exp)
    yield Simulation(exp, kernel="parallel")
    reference = pytest.importorskip("engraft.reference", reason="the Mesa reference model is not in this tree")
    yield reference.ReferenceModel(exp)


def test_both_engines_and_the_views_satisfy_the_engine_protocol():
    for engine in _engines(SHORT):
        assert isinstance(engine, Engine), type(engine).__name__
    view = pytest.importorskip("engraft.plots.view", reason="needs mesa")
    for name in ("kernel", "mesa"):
        assert isinstance(view.MarrowView(TINY, engine=name, overrides=SHORT).marrow, Engine), name
    assert not isinstance(object(), Engine)  # the check can fail


def test_burn_in_reports_progress_in_chunks_and_ends_at_the_start_step():
    # 600 burn-in steps: two chunks of at most 500
    for engine in _engines(["time.burn_in_days=120", "time.duration_days=5"]):
        calls: list[tuple[int, int]] = []
        burn_in(engine, lambda done, total, calls=calls: calls.append((done, total)))
        total = engine.timeline.steps_in_all
        assert calls == [(500, total), (600, total)], type(engine).__name__
        assert engine.position == engine.timeline.start_step
        np.testing.assert_array_equal(engine.baseline_mature, engine.mature)


@pytest.mark.parametrize(("engine", "overrides"), [("kernel", []), ("mesa", SHORT)])
def test_the_views_steps_give_the_records_and_rows_of_a_whole_run(engine, overrides):
    """The view takes the run's own timeline: stepped to the end, in steps of 7 days that fall
    between the records, it has recorded every row of ``engraft run``, bit for bit."""
    view = pytest.importorskip("engraft.plots.view", reason="needs mesa")
    if engine == "mesa":
        pytest.importorskip("engraft.reference", reason="the Mesa reference model is not in this tree")
    model = view.MarrowView(TINY, engine=engine, days_per_step=7, overrides=overrides)
    while model.running:
        model.step()
    whole = simulate(load_config(TINY, overrides), engine=engine)
    pd.testing.assert_frame_equal(pd.DataFrame(model.run.records), whole.timeseries, check_exact=True)
    # the view's own rows, one per step, are those of the run where a record falls on the step
    ts = whole.timeseries
    shared = [row for row in model.records if row["day"] in set(ts["day"])]
    assert len(shared) >= 4
    pd.testing.assert_frame_equal(pd.DataFrame(shared),
                                  ts[ts["day"].isin([row["day"] for row in shared])].reset_index(drop=True),
                                  check_exact=True)
    assert model.day == model.duration_days


def test_advance_to_takes_every_boundary_on_the_way():
    exp = load_config(TINY)
    sim = Simulation(exp)
    sim.burn_in()
    run = TimelineRun(sim)
    tl = sim.timeline
    between = tl.record_steps[3] + 1  # a step that is no boundary
    assert between not in tl.boundaries()
    moments = run.advance_to(between)
    assert sim.position == between
    assert [m.step for m in moments] == sorted(s for s in tl.boundaries() if s <= between)
    assert [m.step for m in moments if m.record is not None] == [s for s in tl.record_steps if s <= between]
    assert run.next_boundary > between and not run.finished
    for _ in run:
        pass
    assert run.finished and sim.position == tl.total_steps
    assert run.snapshots()["day"].tolist() == [s * tl.dt for s in tl.snapshot_steps]


def test_the_mesa_engine_records_without_the_lattice():
    """record(census=False) collects the tally read-outs only, as the kernel engine's does, and
    the next record reads the lattice again."""
    reference = pytest.importorskip("engraft.reference", reason="the Mesa reference model is not in this tree")
    from engraft.simulation import Simulation

    exp = load_config(TINY, SHORT)
    model, sim = reference.ReferenceModel(exp), Simulation(exp)
    tally_only, kernel_row = model.record(census=False), sim.record(census=False)
    assert tally_only.keys() == kernel_row.keys() and "factor_iu_dl" in tally_only
    assert "occupancy" not in tally_only and "clones_alive" not in tally_only
    full = model.record()
    assert full.keys() == sim.record().keys() and "occupancy" in full
    assert [len(r) for r in model.datacollector.model_vars["readouts"]] == [len(tally_only), len(full)]
