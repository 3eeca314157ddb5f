import glob
import gzip
import json
from pathlib import Path

import meds
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from twinml._validation import ConfigError
from twinml.data import read_meds
from twinml.ingest import ingest
from twinml.ingest._fhir import iter_resources

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "fhir"
WHEN = "2025-01-02"


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    out = tmp_path_factory.mktemp("fhir") / "meds"
    return ingest("fhir", SAMPLE, out, reference_time=WHEN), out


def test_sample_becomes_a_valid_meds_dataset(ingested):
    report, out = ingested
    for f in glob.glob(str(out / "data" / "*" / "*.parquet")):
        meds.DataSchema.validate(pq.read_table(f))
    events = read_meds(out)
    codes = set(events["code"].astype(str))
    assert {c.split("/")[0] for c in codes} >= {"LOINC", "SNOMED", "RxNorm", "CVX", "MEDS_BIRTH", "GENDER"}
    assert events["subject_id"].nunique() == 3


def test_rows_read_equal_rows_kept_plus_quarantined(ingested):
    report, out = ingested
    assert report.rows_read == report.rows_kept + report.rows_quarantined
    assert len(read_meds(out)) == report.rows_kept
    assert len(pq.read_table(out / "quality" / "quarantine.parquet")) == report.rows_quarantined
    summary = json.loads((out / "quality" / "summary.json").read_text())
    assert summary["rows_read"] == report.rows_read
    # Synthea writes vitals twice: exact duplicates are counted, not kept twice
    dup = report.summary[(report.summary["table"] == "Observation") & (report.summary["reason"] == "exact duplicate")]
    assert int(dup["rows"].sum()) > 0


def test_blood_pressure_components_and_coded_values(ingested):
    events = pq.read_table(sorted(glob.glob(str(ingested[1] / "data" / "*" / "*.parquet")))[0]).to_pandas()
    sbp, dbp = events[events["code"] == "LOINC/8480-6"], events[events["code"] == "LOINC/8462-4"]
    assert len(sbp) and set(sbp["time"]) == set(dbp["time"])  # one panel -> two events at one time
    coded = events[events["code"] == "LOINC/72166-2"]  # tobacco smoking status: a coded value, kept as its words
    assert len(coded) and coded["text_value"].str.contains("smok", case=False).all()


def test_bulk_ndjson_gives_the_same_events_as_bundles(ingested, tmp_path):
    nd = tmp_path / "export"
    nd.mkdir()
    with gzip.open(nd / "all.ndjson.gz", "wb") as fh:
        for _, resource in iter_resources(SAMPLE):
            fh.write(orjson.dumps(resource) + b"\n")
    ingest("fhir", nd, tmp_path / "meds", reference_time=WHEN)
    pd.testing.assert_frame_equal(read_meds(tmp_path / "meds"), read_meds(ingested[1]))


def test_unknown_subjects_are_quarantined(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    obs = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/nobody"},
        "effectiveDateTime": "2020-01-01T00:00:00Z",
        "valueQuantity": {"value": 6.0},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
    }
    pat = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01", "gender": "female"}
    (src / "x.ndjson").write_bytes(orjson.dumps(pat) + b"\n" + orjson.dumps(obs) + b"\n")
    report = ingest("fhir", src, tmp_path / "out", reference_time=WHEN)
    q = pq.read_table(tmp_path / "out" / "quality" / "quarantine.parquet").to_pandas()
    assert q["reason"].tolist() == ["unknown subject"] and q["subject_ref"].tolist() == ["nobody"]
    assert report.rows_kept == 2  # birth and sex of p1


def test_ingestion_is_deterministic(ingested, tmp_path):
    ingest("fhir", SAMPLE, tmp_path / "again", reference_time=WHEN)
    pd.testing.assert_frame_equal(read_meds(tmp_path / "again"), read_meds(ingested[1]))


def test_chunked_bucketed_ingestion_gives_what_one_pass_gives(ingested, tmp_path):
    """40-row chunks and ~40 subject buckets (a source far larger than memory, in miniature)."""
    from ._fhir_to_synthea_csv import write_synthea_csv
    from ._ingest_compare import assert_same_ingestion

    small = ingest("fhir", SAMPLE, tmp_path / "small", reference_time=WHEN, chunk_rows=40, bucket_rows=40)
    assert (
        small.rows_read == ingested[0].rows_read and len(list((tmp_path / "small" / "data").rglob("*.parquet"))) == 3
    )  # one bucket per patient
    assert_same_ingestion(tmp_path / "small", ingested[1])
    write_synthea_csv(SAMPLE, tmp_path / "csv")
    ingest("synthea-csv", tmp_path / "csv", tmp_path / "csv_one", reference_time=WHEN)
    ingest("synthea-csv", tmp_path / "csv", tmp_path / "csv_small", reference_time=WHEN, chunk_rows=7, bucket_rows=10)
    assert_same_ingestion(tmp_path / "csv_small", tmp_path / "csv_one", with_rows=False)


def test_chunk_and_bucket_sizes_are_checked(tmp_path):
    with pytest.raises(
        ConfigError, match=r"The 'chunk_rows' parameter of ingest must be a positive int. Got 0 instead."
    ):
        ingest("fhir", SAMPLE, tmp_path / "x", chunk_rows=0)


def test_unknown_source_is_named():
    with pytest.raises(
        ConfigError,
        match=r"ingest: 'source' must be one of \['fhir', 'synthea-csv', 'omop', 'meds'\]. Got 'hl7v2' instead.",
    ):
        ingest("hl7v2", SAMPLE, "x")


def test_pseudonymisation_is_stable_keyed_and_leaves_no_trace(ingested, tmp_path, monkeypatch):
    from twinml.ingest import load_pseudonym_key

    key = b"a-secret-key-of-32-bytes-length!"
    monkeypatch.setenv("TWINML_PSEUDONYM_KEY", key.decode())
    a = ingest("fhir", SAMPLE, tmp_path / "a", reference_time=WHEN, pseudonym_key=load_pseudonym_key())
    b = ingest("fhir", SAMPLE, tmp_path / "b", reference_time=WHEN, pseudonym_key=key)
    other = ingest("fhir", SAMPLE, tmp_path / "c", reference_time=WHEN, pseudonym_key=b"another-key-16by!")
    ea, eb, ec = (read_meds(tmp_path / d) for d in "abc")
    pd.testing.assert_frame_equal(ea, eb)  # stable across runs with the same key
    plain = read_meds(ingested[1])
    assert set(ea["subject_id"]).isdisjoint(plain["subject_id"]) and set(ea["subject_id"]).isdisjoint(ec["subject_id"])
    assert a.rows_read == b.rows_read == other.rows_read
    fhir_ids = {r["id"] for _, r in iter_resources(SAMPLE) if r["resourceType"] == "Patient"}
    for f in (tmp_path / "a").rglob("*"):
        if not f.is_file():
            continue
        # parquet is compressed: check decoded cells, not bytes
        text = pq.read_table(f).to_pandas().astype(str).to_csv() if f.suffix == ".parquet" else f.read_text()
        assert key.decode() not in text and not any(i in text for i in fhir_ids), f


def test_a_short_key_is_refused(tmp_path):
    from twinml.ingest import load_pseudonym_key

    (tmp_path / "k").write_text("short")
    with pytest.raises(
        ConfigError, match=r"pseudonymisation: the key from key file .* must be at least 16 bytes; got 5."
    ):
        load_pseudonym_key(key_file=tmp_path / "k")


def test_the_same_patients_through_fhir_and_synthea_csv_give_the_same_events(ingested, tmp_path):
    from ._fhir_to_synthea_csv import write_synthea_csv

    write_synthea_csv(SAMPLE, tmp_path / "csv")
    report = ingest("synthea-csv", tmp_path / "csv", tmp_path / "meds", reference_time=WHEN)
    assert report.rows_read == report.rows_kept + report.rows_quarantined
    a, b = read_meds(tmp_path / "meds"), read_meds(ingested[1])
    a["code"], b["code"] = a["code"].astype(str), b["code"].astype(str)
    pd.testing.assert_frame_equal(a, b)
    # the code metadata carries the export's DESCRIPTION column, as FHIR's displays
    from twinml.data import read_code_metadata

    csv_desc = read_code_metadata(tmp_path / "meds").set_index("code")["description"]
    fhir_desc = read_code_metadata(ingested[1]).set_index("code")["description"]
    assert csv_desc.notna().mean() > 0.8, csv_desc[csv_desc.isna()].index[:5].tolist()
    assert csv_desc.get("LOINC/8480-6") == fhir_desc.get("LOINC/8480-6") == "Systolic blood pressure"
    # newer Synthea writes a SYSTEM column of URLs (immunizations: http://hl7.org/fhir/sid/cvx):
    # mapped as FHIR maps them
    imm = pd.read_csv(tmp_path / "csv" / "immunizations.csv", dtype=str)
    imm.insert(3, "SYSTEM", "http://hl7.org/fhir/sid/cvx")
    imm.to_csv(tmp_path / "csv" / "immunizations.csv", index=False)
    ingest("synthea-csv", tmp_path / "csv", tmp_path / "meds_system", reference_time=WHEN)
    c = read_meds(tmp_path / "meds_system")
    pd.testing.assert_frame_equal(c.assign(code=c["code"].astype(str)), a)


def test_quality_summary_is_logged_inside_a_tracked_run(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("ingest-test")  # not the process's last active experiment, which may live in another store
    with mlflow.start_run() as run:
        report = ingest("fhir", SAMPLE, tmp_path / "meds", reference_time=WHEN)
    client = mlflow.MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics["ingest/rows_quarantined"] == report.rows_quarantined
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/quality/summary.json")
    assert logged["rows_read"] == report.rows_read
