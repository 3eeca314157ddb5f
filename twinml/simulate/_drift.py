"""Shifts planted on purpose from a date on: what a production monitor must catch.

Two kinds. *Process* shifts change what happens to patients or how often they are seen, so the
ground truth moves with them: ``visit_rate_ratio`` (outpatient visits, and so readings, come this
many times as often) and ``hazard_ratio`` (an outcome's hazard is multiplied; the truth table's
risks include it). *Recording* shifts change only what is written down, so the truth does not move:
``lab_offset`` (a new assay reads a lab this much higher) and ``recode`` (a new coding practice
writes a share of one code as another).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import AfterValidator, Field

from .._validation import ConfigError, StrictModel, load_validated
from ._codes import MEASUREMENTS, OUTCOMES, STATIC_CODES

__all__ = ["Drift", "load_drift", "recorded_with_drift"]


def _positive(v: float) -> float:
    if not v > 0:
        raise ValueError("must be > 0")
    return v


PositiveFloat = Annotated[float, AfterValidator(_positive)]


class Drift(StrictModel):
    """Shifts that start ``from_year`` years after the simulation's start (all optional)."""

    from_year: float = Field(gt=0)
    visit_rate_ratio: PositiveFloat = 1.0
    hazard_ratio: dict[str, PositiveFloat] = {}
    lab_offset: dict[str, float] = {}
    recode: dict[str, str] = {}
    recode_share: float = Field(default=1.0, ge=0.0, le=1.0)

    def hazard_multipliers(self) -> np.ndarray:
        """One factor per outcome, in the simulator's outcome order."""
        return np.array([self.hazard_ratio.get(name, 1.0) for name in OUTCOMES], np.float32)


def load_drift(spec, *, dynamic_codes) -> Drift | None:
    """``spec`` (a dict, or None) checked: outcome and lab names known, recoded codes recorded and new ones new."""
    if spec is None:
        return None
    drift = spec if isinstance(spec, Drift) else load_validated(Drift, spec, what="drift", source="simulate: drift")
    labs = {name: code for name, (code, _, _) in MEASUREMENTS.items()}
    for name in drift.hazard_ratio:
        if name not in OUTCOMES:
            raise ConfigError(f"simulate: drift.hazard_ratio: unknown outcome {name!r}; known: {sorted(OUTCOMES)}")
    for name in drift.lab_offset:
        if name not in labs and name not in labs.values():
            raise ConfigError(
                f"simulate: drift.lab_offset: {name!r} is not a simulated lab; use a name {sorted(labs)} or its code"
            )
    existing = set(dynamic_codes) | set(STATIC_CODES)
    for old, new in drift.recode.items():
        if old not in dynamic_codes or old in labs.values():
            raise ConfigError(
                f"simulate: drift.recode: {old!r} is not a recorded code without a value (labs move with lab_offset)"
            )
        if new in existing:
            raise ConfigError(f"simulate: drift.recode: the new code {new!r} is already a simulator code")
    return drift


def recorded_with_drift(years, code, value, drift: Drift | None, code_names: list[str], rng):
    """The recording shifts applied to events at or after ``from_year``.

    Returns ``(code, value, code_names)``: new code ids index the extended ``code_names``.
    """
    if drift is None or not (drift.lab_offset or drift.recode):
        return code, value, code_names
    late = years >= drift.from_year
    code, value, names = code.copy(), value.copy(), list(code_names)
    labs = {name: c for name, (c, _, _) in MEASUREMENTS.items()}
    for lab, offset in drift.lab_offset.items():
        hit = late & (code == names.index(labs.get(lab, lab)))
        value[hit] = np.round(value[hit] + np.float32(offset), 1)
    draws = rng.random(code.size)
    for old, new in drift.recode.items():
        names.append(new)
        hit = late & (code == names.index(old)) & (draws < drift.recode_share)
        code[hit] = len(names) - 1
    return code, value, names
