"""The built-in patient simulator: the twin whose true risks and counterfactuals are known."""

from ._api import DEFAULT_HORIZONS, SimulatedCohort, code_table, simulate, simulate_to
from ._codes import OUTCOMES, PLANS, TREATMENTS

__all__ = [
    "simulate",
    "simulate_to",
    "SimulatedCohort",
    "code_table",
    "DEFAULT_HORIZONS",
    "OUTCOMES",
    "PLANS",
    "TREATMENTS",
]
