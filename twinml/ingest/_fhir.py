"""FHIR R4 resources to raw event rows (before the quality gate).

Reads transaction/collection Bundles (one JSON per patient, as Synthea writes them) and
bulk-export NDJSON (one resource per line), plain or gzipped, one file at a time with
orjson, so a directory of any size streams through. Codes keep their system:
``LOINC/…``, ``SNOMED/…``, ``RxNorm/…``, ``CVX/…``, ``ICD10CM/…``.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import orjson

__all__ = ["iter_resources", "RowCollector", "subject_key", "NAMESPACES"]

NAMESPACES = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode": "ActCode",
}
_US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
# OMB categories by CDC code -> one canonical name (producers differ in displays: "white" vs "White")
OMB_CATEGORIES = {
    "2106-3": "White",
    "2054-5": "Black or African American",
    "2028-9": "Asian",
    "1002-5": "American Indian or Alaska Native",
    "2076-8": "Native Hawaiian or Other Pacific Islander",
    "2131-1": "Other",
    "2135-2": "Hispanic or Latino",
    "2186-5": "Not Hispanic or Latino",
}
INGESTED = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "Procedure",
    "Immunization",
)


def subject_key(source_id: str, key: bytes | None = None) -> int:
    """A stable int64 subject_id for a source id: 59 bits (at most 18 digits) of its SHA-256, or of
    HMAC-SHA256 under ``key`` when pseudonymising (same key, same id; no key, no way back)."""
    data = str(source_id).encode()
    digest = hmac.new(key, data, hashlib.sha256).digest() if key else hashlib.sha256(data).digest()
    return int.from_bytes(digest[:8], "big") >> 5


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_resources(path) -> Iterator[tuple[str, dict]]:
    """Yield ``(file name, resource)`` from Bundle JSON or NDJSON files (optionally .gz) under ``path``."""
    root = Path(path)
    files = (
        [root]
        if root.is_file()
        else sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and p.name.endswith((".json", ".ndjson", ".json.gz", ".ndjson.gz"))
        )
    )
    if not files:
        raise FileNotFoundError(f"{root}: no FHIR files (*.json bundles or *.ndjson, optionally .gz)")
    for f in files:
        with _open(f) as fh:
            if ".ndjson" in f.name:
                for line in fh:
                    if line.strip():
                        yield f.name, orjson.loads(line)
                continue
            doc = orjson.loads(fh.read())
            if doc.get("resourceType") == "Bundle":
                for entry in doc.get("entry", []):
                    if "resource" in entry:
                        yield f.name, entry["resource"]
            else:
                yield f.name, doc


def _code(concept) -> str | None:
    for coding in (concept or {}).get("coding", []):
        if coding.get("code") is not None:
            system = coding.get("system", "")
            ns = NAMESPACES.get(system) or (system.rstrip("/").rsplit("/", 1)[-1] or "UNKNOWN")
            return f"{ns}/{coding['code']}"
    return None


def _ref(reference: dict | None) -> str | None:
    ref = (reference or {}).get("reference")
    if not ref:
        return None
    return ref.removeprefix("urn:uuid:").rsplit("/", 1)[-1]


def _start(resource, *keys):
    for k in keys:
        v = resource.get(k)
        if isinstance(v, dict):
            v = v.get("start")
        if v:
            return v
    return None


class RowCollector:
    """Accumulates raw rows per resource type (``subject_ref``, ``time``, ``code``, values).

    ``take()`` hands over the rows gathered so far and starts afresh, so a caller bounds memory by
    taking every ``n_rows`` rows; patients, skipped-resource counts and code displays stay (small).
    """

    def __init__(self):
        self.tables: dict[str, dict[str, list]] = {}
        self.n_rows = 0
        self.patients: dict[str, dict] = {}
        self.skipped: dict[str | None, int] = {}  # None: a resource without resourceType
        self.displays: dict[str, str] = {}

    def take(self) -> dict[str, dict[str, list]]:
        """The rows collected since the last ``take`` (columns as lists, per resource type)."""
        tables, self.tables, self.n_rows = self.tables, {}, 0
        return tables

    def _add(self, table, subject, time, code, value=None, text=None):
        self.n_rows += 1
        t = self.tables.setdefault(
            table, {"subject_ref": [], "time": [], "code": [], "numeric_value": [], "text_value": []}
        )
        t["subject_ref"].append(subject)
        t["time"].append(time)
        t["code"].append(code)
        t["numeric_value"].append(value)
        t["text_value"].append(text)

    def add(self, resource: dict) -> None:
        kind = resource.get("resourceType")
        if kind not in INGESTED:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        getattr(self, f"_{kind.lower()}")(resource)

    def _note(self, concept):
        for coding in (concept or {}).get("coding", []):
            code = _code({"coding": [coding]})
            if code and coding.get("display"):
                self.displays.setdefault(code, coding["display"])

    def _patient(self, r):
        pid = r.get("id")
        self.patients[pid] = {"birth": r.get("birthDate"), "death": r.get("deceasedDateTime")}
        self._add("Patient", pid, r.get("birthDate"), "MEDS_BIRTH")
        gender = {"female": "F", "male": "M"}.get(r.get("gender"), r.get("gender"))
        if gender:
            self._add("Patient", pid, None, f"GENDER//{gender}")
        for ext in r.get("extension", []):
            kind = {_US_CORE + "us-core-race": "RACE", _US_CORE + "us-core-ethnicity": "ETHNICITY"}.get(ext.get("url"))
            for sub in ext.get("extension", []) if kind else []:
                coding = sub.get("valueCoding") or {}
                name = OMB_CATEGORIES.get(coding.get("code", "")) or coding.get("display")
                if sub.get("url") == "ombCategory" and name:
                    self._add("Patient", pid, None, f"{kind}//{name}")
        if r.get("deceasedDateTime"):
            self._add("Patient", pid, r["deceasedDateTime"], "MEDS_DEATH")

    def _encounter(self, r):
        concept = (r.get("type") or [{}])[0]
        self._note(concept)
        self._add("Encounter", _ref(r.get("subject")), _start(r, "period"), _code(concept))

    def _condition(self, r):
        self._note(r.get("code"))
        code, subject = _code(r.get("code")), _ref(r.get("subject"))
        self._add("Condition", subject, _start(r, "onsetDateTime", "onsetPeriod", "recordedDate"), code)
        end = _start(r, "abatementDateTime", "abatementPeriod")
        if end:
            self._add("Condition", subject, end, f"{code}//ABATED" if code else None)

    def _observation(self, r):
        subject, time = _ref(r.get("subject")), _start(r, "effectiveDateTime", "effectivePeriod", "issued")
        parts = r.get("component") or [r]
        for part in parts:  # components (the two blood pressures) become separate events
            self._note(part.get("code"))
            value, text = None, None
            if "valueQuantity" in part:
                value = part["valueQuantity"].get("value")
            elif "valueCodeableConcept" in part:  # its words, as Synthea's CSV export writes them
                concept = part["valueCodeableConcept"]
                codings = concept.get("coding") or [{}]
                text = concept.get("text") or codings[0].get("display") or _code(concept)
            elif "valueString" in part:
                text = part["valueString"]
            self._add("Observation", subject, time, _code(part.get("code")), value, text)

    def _medication(self, r, table, *times):
        concept = r.get("medicationCodeableConcept")
        self._note(concept)
        self._add(table, _ref(r.get("subject")), _start(r, *times), _code(concept))

    def _medicationrequest(self, r):
        self._medication(r, "MedicationRequest", "authoredOn")

    def _medicationstatement(self, r):
        self._medication(r, "MedicationStatement", "effectiveDateTime", "effectivePeriod", "dateAsserted")

    def _medicationadministration(self, r):
        self._medication(r, "MedicationAdministration", "effectiveDateTime", "effectivePeriod")

    def _procedure(self, r):
        self._note(r.get("code"))
        self._add(
            "Procedure", _ref(r.get("subject")), _start(r, "performedDateTime", "performedPeriod"), _code(r.get("code"))
        )

    def _immunization(self, r):
        self._note(r.get("vaccineCode"))
        self._add("Immunization", _ref(r.get("patient")), _start(r, "occurrenceDateTime"), _code(r.get("vaccineCode")))
