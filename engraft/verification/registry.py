"""The named verification cases, in report order."""

from __future__ import annotations

from engraft.verification.core import Case
from engraft.verification.engines import KernelVsMesa, SequentialVsParallel
from engraft.verification.fixation import Fixation
from engraft.verification.maturation import Maturation
from engraft.verification.neutral import NeutralCompetition
from engraft.verification.plasma import PlasmaKinetics
from engraft.verification.resolution import Resolution
from engraft.verification.setup import SetUp
from engraft.verification.steady import SteadyState
from engraft.verification.timestep import TimeStep

CASES: dict[str, Case] = {case.name: case for case in (
    PlasmaKinetics(),
    NeutralCompetition(),
    Fixation(),
    SteadyState(),
    KernelVsMesa(),
    SequentialVsParallel(),
    Resolution(),
    TimeStep(),
    SetUp(),
    Maturation(),
)}
