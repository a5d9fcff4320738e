"""Sweeps whose runs are listed explicitly: virtual-patient cohorts and sensitivity designs.

A :class:`DesignSweep` is a :class:`~engraft.sweep.spec.Sweep` whose runs are
not a factorial product but a given list (drawn patients, a Saltelli or
Morris design). Each run's ``params`` hold the values written into its config
(by key path) beside *labels* (the arm, the patient index, a drawn quantity
such as a busulfan exposure ratio) that only become columns of the aggregate
table. Everything else is the sweep machinery unchanged: ``sweep.json``,
resume after a kill, local processes or Dask, identical results for any
worker count, and the one-row-per-run aggregate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from engraft.config.load import set_path, split_key_path
from engraft.sweep.spec import Sweep


@dataclass
class DesignSweep(Sweep):
    """A sweep over an explicit list of runs.

    Attributes
    ----------
    config_paths : the keys of a run's ``params`` that are config key paths
        (set in its config); the other keys are labels for the table.
    design : what ``sweep.json`` records under ``design`` (the cohort or
        sensitivity section as parsed), so a changed design is refused on resume.
    record_key : if set, a run's config gets this top-level key holding its
        labels (a cohort's ``virtual_patient``: arm, patient, draws), so its
        ``config.yaml`` says who it is; the simulation does not read it.
    """

    config_paths: tuple[str, ...] = ()
    design: dict = field(default_factory=dict)
    record_key: str | None = None

    def config_with(self, params: dict) -> dict:
        """The base mapping with the config key paths of ``params`` set (labels are skipped)."""
        data = copy.deepcopy(self.base)
        for path in self.config_paths:
            if path in params:
                set_path(data, split_key_path(path), copy.deepcopy(params[path]))
        if self.record_key:
            data[self.record_key] = {k: copy.deepcopy(v) for k, v in params.items()
                                     if k not in self.config_paths}
        return data

    def spec_json(self) -> dict:
        spec = super().spec_json()
        spec["design"] = self.design
        spec["config_paths"] = list(self.config_paths)
        return spec
