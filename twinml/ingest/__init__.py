"""Bringing records in: the data-quality gate (source readers for FHIR, Synthea CSV and OMOP are
being built on it, see issue 3)."""

from ._gate import PLAUSIBLE_RANGES, REASONS, GateResult, QualityGate

__all__ = ["QualityGate", "GateResult", "PLAUSIBLE_RANGES", "REASONS"]
