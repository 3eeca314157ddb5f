"""Bringing records in: FHIR R4 (bundles and bulk NDJSON) and MEDS, through a data-quality gate
that quarantines bad rows with a reason and never loses one. Synthea CSV and OMOP are next (issue 3)."""

from ._gate import PLAUSIBLE_RANGES, REASONS, GateResult, QualityGate
from ._ingest import SOURCES, IngestReport, ingest, load_pseudonym_key, parse_source_namespaces

__all__ = [
    "ingest",
    "IngestReport",
    "SOURCES",
    "load_pseudonym_key",
    "parse_source_namespaces",
    "QualityGate",
    "GateResult",
    "PLAUSIBLE_RANGES",
    "REASONS",
]
