"""Codes the simulator writes, with MEDS namespaces and human-readable descriptions."""

from __future__ import annotations

# Latent health-state components, in this order everywhere.
COMPONENTS = ("glycaemic", "blood_pressure", "lipid", "renal", "adiposity")

# Outcomes: name -> (MEDS code, description, one_time).
# One-time outcomes (onsets) happen at most once; the others may recur; death ends everything.
OUTCOMES = {
    "t2d": ("SNOMED/44054006", "Type 2 diabetes mellitus", True),
    "mi": ("SNOMED/22298006", "Myocardial infarction", False),
    "stroke": ("SNOMED/230690007", "Cerebrovascular accident", False),
    "ckd": ("SNOMED/433144002", "Chronic kidney disease stage 3", True),
    "death": ("MEDS_DEATH", "Death", True),
}

# Treatments: name -> (RxNorm code, description, effect on each latent component in SD units).
TREATMENTS = {
    "metformin": ("RxNorm/6809", "metformin", (-0.8, 0.0, 0.0, 0.0, -0.1)),
    "statin": ("RxNorm/83367", "atorvastatin", (0.0, 0.0, -1.2, 0.0, 0.0)),
    "antihypertensive": ("RxNorm/29046", "lisinopril", (0.0, -0.9, 0.0, -0.15, 0.0)),
}

# Alternative plans at a prediction time: plan name -> treatment started (None = no new treatment).
PLANS = {
    "no_new_treatment": None,
    "start_metformin": "metformin",
    "start_statin": "statin",
    "start_antihypertensive": "antihypertensive",
}

# Readings taken at a visit: name -> (LOINC code, description, unit).
MEASUREMENTS = {
    "sbp": ("LOINC/8480-6", "Systolic blood pressure", "mm[Hg]"),
    "dbp": ("LOINC/8462-4", "Diastolic blood pressure", "mm[Hg]"),
    "bmi": ("LOINC/39156-5", "Body mass index", "kg/m2"),
    "hba1c": ("LOINC/4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%"),
    "glucose": ("LOINC/2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL"),
    "ldl": ("LOINC/13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation", "mg/dL"),
    "egfr": ("LOINC/33914-3", "Glomerular filtration rate/1.73 sq M.predicted [MDRD]", "mL/min/{1.73_m2}"),
}

# Diagnoses coded at a visit the first time a reading crosses a threshold.
THRESHOLD_DIAGNOSES = {
    "hypertension": ("SNOMED/38341003", "Hypertensive disorder"),
    "hyperlipidaemia": ("SNOMED/55822004", "Hyperlipidemia"),
    "prediabetes": ("SNOMED/714628002", "Prediabetes"),
    "obesity": ("SNOMED/414916001", "Obesity"),
}

VISIT_CODES = {
    "outpatient": ("SNOMED/185349003", "Encounter for check up"),
    "inpatient": ("SNOMED/32485007", "Hospital admission"),
}

# Observation period (as OMOP's observation_period): start at entry, end at loss to follow-up,
# death or the end of the data. Lets labels tell "not followed" from "followed, no outcome".
OBSERVATION_PERIOD = {
    "start": ("OBSERVATION_PERIOD//START", "Start of observation period"),
    "end": ("OBSERVATION_PERIOD//END", "End of observation period"),
}

# Coded at the first visit for half of the smokers.
SMOKER_CODE = ("SNOMED/77176002", "Smoker")

SEXES = ("F", "M")
RACE_GROUPS = ("White", "Black", "Hispanic", "Asian", "Other")
RACE_PROBS = (0.60, 0.13, 0.17, 0.06, 0.04)

STATIC_CODES = {
    **{f"GENDER//{s}": f"Administrative sex {s}" for s in SEXES},
    **{f"RACE//{r}": f"Race/ethnicity group {r}" for r in RACE_GROUPS},
    "SDOH//DEPRIVATION_INDEX": "Area deprivation index (0 least, 1 most deprived)",
    "MEDS_BIRTH": "Birth",
}


def code_descriptions() -> dict[str, str]:
    """Every code the simulator can write, mapped to its description."""
    table = dict(STATIC_CODES)
    table.update({code: desc for code, desc, _ in OUTCOMES.values()})
    table.update({code: desc for code, desc, _ in TREATMENTS.values()})
    table.update({code: desc for code, desc, _ in MEASUREMENTS.values()})
    table.update({code: desc for code, desc in THRESHOLD_DIAGNOSES.values()})
    table.update({code: desc for code, desc in VISIT_CODES.values()})
    table[SMOKER_CODE[0]] = SMOKER_CODE[1]
    table.update(dict(OBSERVATION_PERIOD.values()))
    return table
