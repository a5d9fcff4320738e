"""The interactive browser view: Mesa's SolaraViz around a marrow model with sliders.

:class:`MarrowView` is a thin Mesa model that drives either engine
(an :class:`engraft.timeline.Engine`) the way a run does: the one burn-in
(:func:`engraft.timeline.burn_in`), then the run's own timeline
(:class:`engraft.timeline.TimelineRun`), so events, records and the daily
records of low counts fall on the same steps as in ``engraft run``. The
engine is the Mesa reference model (:class:`engraft.reference.ReferenceModel`,
preferred: the page then shows agents stepping with ``shuffle_do``) or the
compiled kernel (:class:`engraft.simulation.Simulation`) for lattices too
large for Mesa. One Mesa step of the view is ``days_per_step`` days of
simulation.

:func:`build_page` returns the SolaraViz page: the lattice (coloured by type,
origin or clone, a mid-plane slice in 3D), the factor level on its severity
bands, chimerism per lineage, and sliders for dose, conditioning and
transduction. :func:`serve` runs it with ``solara run`` (loopback by
default). Mesa's own ``make_space_component`` draws one marker per agent
against the step number; the components here draw the lattice as an image
and the plots against days with units, in the colours of every other engraft
figure, and work with Mesa 3.3 to 3.5 (they use only ``SolaraViz(model,
components=[callables], model_params=..., name=...)``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import mesa
import numpy as np

from engraft.config.load import load_config
from engraft.lattice import EMPTY
from engraft.plots.data import LatticeGeometry, top_clones
from engraft.plots.lattice_image import LEGEND_CLONES, clone_ranks, lattice_legend, lattice_rgba
from engraft.readouts import clone_sizes
from engraft.timeline import Timeline, TimelineRun, burn_in

ENGINES = ("mesa", "kernel")
#: the app module that ``solara run`` serves; it reads its settings from this variable (JSON)
APP_MODULE = "engraft.plots.view_app"
SETTINGS_VARIABLE = "ENGRAFT_VIEW_SETTINGS"
#: estimated seconds of Mesa burn-in above which ``engine="auto"`` takes the kernel
AUTO_MESA_BURN_IN_SECONDS = 20.0
DEFAULT_DAYS_PER_STEP = 7


class ViewUnavailableError(RuntimeError):
    """The browser view's optional dependencies (``engraft[viz]``) are not installed."""


def import_solara_viz():
    """``mesa.visualization.SolaraViz``, without solara's hook-lint warning about Mesa's own code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*found despite early return", category=UserWarning)
        from mesa.visualization import SolaraViz  # imports altair too on Mesa 3.3
    return SolaraViz


def check_viz_installed() -> None:
    """Raise :class:`ViewUnavailableError`, naming the fix, unless solara and Mesa's viz import."""
    if importlib.util.find_spec("solara") is None:
        raise ViewUnavailableError("the browser view needs solara: pip install 'engraft[viz]'")
    try:
        import_solara_viz()
    except ImportError as err:
        raise ViewUnavailableError(f"the browser view needs Mesa's visualization extras "
                                   f"({err}): pip install 'engraft[viz]'") from None


def choose_engine(exp, engine: str = "auto") -> str:
    """``mesa`` or ``kernel``; ``auto`` takes the Mesa reference unless its burn-in would be slow.

    Raises ConfigError for ``engine="mesa"`` on a lattice the reference model refuses.
    """
    if engine == "kernel":
        return engine
    try:
        from engraft.reference import check_reference_cost
        from engraft.reference.model import SECONDS_PER_AGENT_STEP
    except ImportError:  # an install without the reference model: the kernel still works
        if engine == "mesa":
            raise ViewUnavailableError("--engine mesa: the Mesa reference model (engraft.reference) "
                                       "is not available; use --engine kernel") from None
        return "kernel"
    if engine == "mesa":
        check_reference_cost(exp)
        return engine
    if engine != "auto":
        raise ValueError(f"engine: must be one of auto, {', '.join(ENGINES)}, got {engine!r}")
    burn_in = exp.lattice.n_sites * Timeline.from_experiment(exp).burn_in_steps * SECONDS_PER_AGENT_STEP
    return "mesa" if burn_in <= AUTO_MESA_BURN_IN_SECONDS else "kernel"


def _overrides(exp, dose_per_kg: float | None, conditioning: float | None,
               transduction: float | None) -> list[str]:
    out = []
    if dose_per_kg is not None and exp.infusions:
        out.append(f"infusions[0].dose_per_kg={float(dose_per_kg)!r}")
    if transduction is not None:
        out += [f"infusions[{i}].transduction={float(transduction)!r}" for i in range(len(exp.infusions))]
    if conditioning is not None and (exp.conditioning is not None or conditioning > 0):
        out += [f"conditioning.myeloablation.{name}={float(conditioning)!r}" for name in exp.type_names]
    return out


class MarrowView(mesa.Model):
    """A Mesa model whose step is ``days_per_step`` days of an engraft experiment.

    Parameters
    ----------
    config_path : YAML experiment file.
    engine : ``"mesa"`` (the reference model) or ``"kernel"``.
    dose : CD34+ dose of the first infusion, in units of ``dose_unit`` cells/kg.
    dose_unit : cells/kg per unit of ``dose``.
    conditioning : fraction of host cells of every type killed by conditioning.
    transduction : fraction of graft cells carrying the vector (every infusion).
    days_per_step : simulated days per Mesa step.
    seed : random seed (default: the config's).
    overrides : further ``key.path=value`` overrides, applied first.

    The burn-in runs when the model is built; conditioning and infusions then
    happen on their configured days as the model steps. ``records`` holds one
    read-out row (:func:`engraft.readouts.record_row`) per step; ``run`` (an
    :class:`engraft.timeline.TimelineRun`) holds the run's own records so far
    (``run.records``: those of ``engraft run`` with the same config and seed,
    up to the current day).
    """

    def __init__(self, config_path: str = "", engine: str = "kernel", dose: float | None = None,
                 dose_unit: float = 1.0, conditioning: float | None = None,
                 transduction: float | None = None, days_per_step: int = DEFAULT_DAYS_PER_STEP,
                 seed: int | None = None, overrides: Sequence[str] = ()) -> None:
        super().__init__()
        base = load_config(config_path, list(overrides))
        dose_per_kg = None if dose is None else float(dose) * float(dose_unit)
        self.exp = load_config(config_path, list(overrides) + _overrides(base, dose_per_kg, conditioning,
                                                                          transduction), seed=seed)
        self.engine = engine
        first = self.exp.infusions[0] if self.exp.infusions else None
        self.dose_per_kg = first.dose_per_kg if first else 0.0
        self.transduction = first.transduction if first else 0.0
        self.conditioning = (max(self.exp.conditioning.myeloablation.values(), default=0.0)
                             if self.exp.conditioning else 0.0)
        if engine == "mesa":
            from engraft.reference import ReferenceModel

            self.marrow = ReferenceModel(self.exp)
        elif engine == "kernel":
            from engraft.simulation import Simulation

            self.marrow = Simulation(self.exp)
        else:
            raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.timeline = self.marrow.timeline
        self.days_per_step = max(1, int(days_per_step))
        self.steps_per_view_step = max(1, int(round(self.days_per_step / self.timeline.dt)))
        lat = self.exp.lattice
        self.geometry = LatticeGeometry(lat.size, lat.dims)
        self.type_names = list(self.exp.type_names)
        self.lineage_names = list(self.exp.lineage_names)
        self.threshold_iu_dl = float(self.exp.readouts.threshold_iu_dl)
        self.duration_days = float(self.exp.time.duration_days)
        burn_in(self.marrow)
        self.run = TimelineRun(self.marrow, keep_snapshots=False)
        self.records: list[dict] = []
        self.datacollector = mesa.DataCollector(model_reporters={
            "day": lambda m: m.day,
            "factor_iu_dl": lambda m: m.latest("factor_iu_dl"),
            "hsc_chimerism": lambda m: m.latest("hsc_chimerism"),
        })
        self._record(self.run.advance_to(self.timeline.start_step))
        self.running = True

    # -- the timeline ------------------------------------------------------------------
    @property
    def step_index(self) -> int:
        """The engine's step (steps since day 0; negative: conditioning first)."""
        return self.marrow.position

    @property
    def day(self) -> float:
        return self.marrow.day

    def _record(self, moments) -> None:
        """This step's row: the run's own record of this step where it read the lattice, else one read now."""
        here = moments[-1] if moments and moments[-1].step == self.step_index else None
        row = here.record if here is not None and here.census else self.marrow.record()
        self.records.append(row)
        self.datacollector.collect(self)

    def latest(self, column: str) -> float:
        return float(self.records[-1].get(column, math.nan)) if self.records else math.nan

    def step(self) -> None:
        """Advance ``days_per_step`` days along the run's timeline (events on their days), then record."""
        target = min(self.step_index + self.steps_per_view_step, self.timeline.total_steps)
        self._record(self.run.advance_to(target))
        self.running = self.step_index < self.timeline.total_steps

    # -- what the page shows ---------------------------------------------------------------
    def lattice_state(self) -> dict[str, np.ndarray]:
        state = dict(self.marrow.snapshot())
        state["niche"] = np.asarray(self.marrow.niche)
        return state

    def timeseries(self):
        import pandas as pd

        return pd.DataFrame(self.records)


# ----------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------
def lattice_figure(model: MarrowView, by: str):
    """Matplotlib Figure of the model's lattice now (no pyplot: safe in the server's threads)."""
    from matplotlib.figure import Figure

    from engraft.plots.style import LATTICE_X_LABEL, LATTICE_Y_LABEL, figure_style

    state = model.lattice_state()
    top = np.zeros(0, dtype=np.int64)
    if by == "clone":
        top = top_clones(clone_sizes(state["ctype"], state["flags"], state["clone"])[None, :], LEGEND_CLONES)
    with figure_style():
        fig = Figure(figsize=(5.6, 3.9), layout="constrained")
        ax = fig.add_subplot()
        g = model.geometry
        ax.imshow(lattice_rgba(state, g, by, len(model.type_names), clone_ranks(top) if by == "clone" else None),
                  origin="lower", extent=(0, g.size, 0, g.size), interpolation="nearest")
        occupied = float(np.mean(state["ctype"] != EMPTY))
        note = f", {g.slice_note}" if g.slice_note else ""
        ax.set_title(f"marrow lattice by {by}, day {model.day:g}\n({occupied:.0%} of sites occupied{note})",
                     fontsize=8.5)
        ax.set_xlabel(LATTICE_X_LABEL)
        ax.set_ylabel(LATTICE_Y_LABEL)
        ax.legend(handles=lattice_legend(by, model.type_names, top), loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
    return fig


def factor_figure(model: MarrowView):
    from matplotlib.figure import Figure

    from engraft.plots.run_figures import draw_factor_level
    from engraft.plots.style import figure_style

    ts = model.timeseries()
    with figure_style():
        fig = Figure(figsize=(5.6, 3.0), layout="constrained")
        ax = fig.add_subplot()
        draw_factor_level(ax, ts["day"].to_numpy(float), ts["factor_iu_dl"].to_numpy(float),
                          model.threshold_iu_dl)
        ax.set_title(f"plasma factor level: {model.latest('factor_iu_dl'):.1f} IU/dL on day {model.day:g}")
        ax.set_xlim(0, model.duration_days)
        ax.legend(loc="upper left", ncol=3, fontsize=6.5)
    return fig


def chimerism_figure(model: MarrowView):
    from matplotlib.figure import Figure

    from engraft.plots.style import CHIMERISM_LABEL, DAY_LABEL, HSC_COLOUR, figure_style, lineage_colour

    ts = model.timeseries()
    days = ts["day"].to_numpy(float)
    with figure_style():
        fig = Figure(figsize=(5.6, 3.0), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(days, ts["hsc_chimerism"], color=HSC_COLOUR, lw=2.0, label="HSC (marrow)")
        for i, lin in enumerate(model.lineage_names):
            ax.plot(days, ts[f"{lin}_chimerism"], color=lineage_colour(lin, i), lw=1.3, label=f"{lin} (blood)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, model.duration_days)
        ax.set_ylabel(CHIMERISM_LABEL)
        ax.set_xlabel(DAY_LABEL)
        ax.set_title("donor chimerism per lineage")
        ax.legend(loc="lower right", fontsize=6.5)
    return fig


def LatticeView(model: MarrowView):
    """Page component: the lattice, with a choice of colouring."""
    import solara

    by, set_by = solara.use_state("origin")
    with solara.Column() as column:
        solara.ToggleButtonsSingle(value=by, values=["type", "origin", "clone"], on_value=set_by)
        solara.FigureMatplotlib(lattice_figure(model, by), format="png", dependencies=[model.day, by])
    return column


def FactorLevelPlot(model: MarrowView):
    import solara

    return solara.FigureMatplotlib(factor_figure(model), format="png", dependencies=[model.day])


def ChimerismPlot(model: MarrowView):
    import solara

    return solara.FigureMatplotlib(chimerism_figure(model), format="png", dependencies=[model.day])


def Readouts(model: MarrowView):
    """Page component: the current read-outs as text."""
    import solara

    r = model.records[-1]
    return solara.Markdown(
        f"**day {model.day:g}** of {model.duration_days:g} ({model.engine} engine): factor "
        f"**{r['factor_iu_dl']:.1f} IU/dL** ({r['severity']}), HSC chimerism {r['hsc_chimerism']:.0%}, "
        f"{r['clones_alive']} graft clones, Shannon diversity {r['shannon_diversity']:.2f} nats\n\n"
        f"dose {model.dose_per_kg:.3g} CD34+ cells/kg, transduction {model.transduction:.2f}, "
        f"conditioning kills {model.conditioning:.0%} of host cells; {model.days_per_step} days per step"
    )


def model_parameters(config_path: str, engine: str, seed: int | None = None,
                     overrides: Sequence[str] = ()) -> dict:
    """SolaraViz ``model_params``: sliders for dose, conditioning, transduction and days per step."""
    exp = load_config(config_path, list(overrides))
    params: dict = {"config_path": str(config_path), "engine": engine, "seed": seed,
                    "overrides": list(overrides)}
    if exp.infusions:
        dose = exp.infusions[0].dose_per_kg
        exponent = int(math.floor(math.log10(dose)))
        unit = 10.0**exponent
        value = round(dose / unit, 3)
        params["dose_unit"] = unit
        params["dose"] = {"type": "SliderFloat", "value": value, "min": round(value / 10, 3),
                          "max": round(value * 4, 3), "step": round(value / 20, 3),
                          "label": f"CD34+ dose (×10^{exponent} cells/kg)"}
        params["transduction"] = {"type": "SliderFloat", "value": exp.infusions[0].transduction, "min": 0.0,
                                  "max": 1.0, "step": 0.05, "label": "transduction (fraction of graft cells)"}
    kill = max(exp.conditioning.myeloablation.values(), default=0.0) if exp.conditioning else 0.0
    params["conditioning"] = {"type": "SliderFloat", "value": kill, "min": 0.0, "max": 1.0, "step": 0.01,
                              "label": "conditioning (fraction of host cells killed)"}
    params["days_per_step"] = {"type": "SliderInt", "value": DEFAULT_DAYS_PER_STEP, "min": 1, "max": 90,
                               "step": 1, "label": "days per step"}
    return params


def build_page(config_path: str, engine: str = "auto", seed: int | None = None,
               overrides: Sequence[str] = ()):
    """The SolaraViz page for an experiment file (what ``solara run`` serves)."""
    SolaraViz = import_solara_viz()  # noqa: N806 - Mesa's component name

    exp = load_config(config_path, list(overrides))
    engine = choose_engine(exp, engine)
    params = model_parameters(config_path, engine, seed, overrides)
    initial = {k: (v["value"] if isinstance(v, dict) and "type" in v else v) for k, v in params.items()}
    model = MarrowView(**initial)
    return SolaraViz(model, components=[LatticeView, FactorLevelPlot, ChimerismPlot, Readouts],
                     model_params=params, name=f"engraft: {exp.name}")


def page_from_environment():
    """Build the page from :data:`SETTINGS_VARIABLE` (set by :func:`serve`)."""
    settings = json.loads(os.environ.get(SETTINGS_VARIABLE) or "{}")
    if "config_path" not in settings:
        raise RuntimeError(f"{SETTINGS_VARIABLE} is not set: start the view with `engraft view FILE`")
    return build_page(settings["config_path"], settings.get("engine", "auto"), settings.get("seed"),
                      settings.get("overrides", ()))


def solara_command(host: str, port: int) -> list[str]:
    """The ``solara run`` command line serving :data:`APP_MODULE` on ``host:port``."""
    return [sys.executable, "-m", "solara", "run", APP_MODULE, "--host", host, "--port", str(port),
            "--no-open", "--production", "--no-check-version"]


def serve(config_path: str | os.PathLike, engine: str = "auto", host: str = "127.0.0.1", port: int = 8765,
          seed: int | None = None, overrides: Sequence[str] = ()) -> int:
    """Serve the view with ``solara run`` until interrupted; return its exit status.

    Validates the config and the engine first, so mistakes are reported
    before the server starts.
    """
    check_viz_installed()
    exp = load_config(config_path, list(overrides), seed=seed)
    engine = choose_engine(exp, engine)
    settings = {"config_path": str(Path(config_path).resolve()), "engine": engine, "seed": seed,
                "overrides": list(overrides)}
    env = dict(os.environ, **{SETTINGS_VARIABLE: json.dumps(settings),
                              "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "false"})
    print(f"engraft view: {exp.name} ({engine} engine) at http://{host}:{port}/  (Ctrl-C stops it)",
          flush=True)
    process = subprocess.Popen(solara_command(host, port), env=env)

    def stop(signum, frame):  # SIGTERM ends the server too, not only Ctrl-C
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        return 0
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
