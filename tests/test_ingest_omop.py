import meds
import pandas as pd
import pyarrow.parquet as pq
import pytest

from twinml.cohort import TaskDefinition, build_labels
from twinml.data import read_meds
from twinml.ingest import ingest

WHEN = "2025-01-02"


@pytest.fixture
def omop(tmp_path):
    root = tmp_path / "omop"
    root.mkdir()
    pd.DataFrame(
        {
            "person_id": [1, 2],
            "gender_concept_id": [8532, 8507],
            "year_of_birth": [1950, 1960],
            "month_of_birth": [3, None],
            "day_of_birth": [4, None],
            "race_concept_id": [8527, 8516],
            "ethnicity_concept_id": [38003564, 38003564],
        }
    ).to_csv(root / "person.csv", index=False)
    pd.DataFrame(
        {
            "person_id": [1, 2],
            "observation_period_start_date": ["2010-01-01", "2011-01-01"],
            "observation_period_end_date": ["2020-01-01", "2018-05-01"],
        }
    ).to_csv(root / "observation_period.csv", index=False)
    pd.DataFrame({"person_id": [2], "death_date": ["2018-05-01"]}).to_csv(root / "death.csv", index=False)
    pd.DataFrame(
        {
            "person_id": [1, 1, 2, 3],
            "condition_concept_id": [201826, 201826, 4329847, 201826],
            "condition_start_date": ["2015-06-01", "2015-06-01", "2019-01-01", "2015-01-01"],
            "condition_source_value": ["E11.9", "E11.9", "I21.9", "E11.9"],
        }
    ).to_csv(root / "condition_occurrence.csv", index=False)
    pd.DataFrame(
        {
            "person_id": [1, 1],
            "measurement_concept_id": [3004410, 3004249],
            "measurement_datetime": ["2014-02-03 10:00:00", "2014-02-03 10:00:00"],
            "value_as_number": [6.4, 900],
            "measurement_source_value": ["4548-4", "8480-6"],
        }
    ).to_parquet(root / "measurement.parquet")
    return root


def test_omop_tables_become_meds_with_every_row_accounted_for(omop, tmp_path):
    report = ingest(
        "omop",
        omop,
        tmp_path / "meds",
        reference_time=WHEN,
        source_namespaces={"condition_occurrence": "ICD10CM", "measurement": "LOINC"},
    )
    out = tmp_path / "meds"
    for f in (out / "data").rglob("*.parquet"):
        meds.DataSchema.validate(pq.read_table(f))
    assert report.rows_read == report.rows_kept + report.rows_quarantined
    q = pq.read_table(out / "quality" / "quarantine.parquet").to_pandas().sort_values("reason")
    assert q["reason"].tolist() == [
        "event after death",
        "exact duplicate",
        "physiologically implausible value",
        "unknown subject",
    ]
    ev = read_meds(out)
    codes = set(ev["code"].astype(str))
    assert {
        "ICD10CM/E11.9",
        "LOINC/4548-4",
        "GENDER//F",
        "GENDER//M",
        "MEDS_DEATH",
        "OBSERVATION_PERIOD//END",
        "RACE//OMOP/8527",
    } <= codes
    assert ev.loc[ev["code"] == "MEDS_BIRTH", "time"].dt.strftime("%Y-%m-%d").tolist() == ["1950-03-04", "1960-01-01"]


def test_concept_ids_without_source_namespaces(omop, tmp_path):
    ingest("omop", omop, tmp_path / "meds", reference_time=WHEN)
    codes = set(read_meds(tmp_path / "meds")["code"].astype(str))
    assert "OMOP/201826" in codes and "OMOP/3004410" in codes and not any(c.startswith("ICD10CM/") for c in codes)


def test_labels_use_the_observation_period(omop, tmp_path):
    ingest("omop", omop, tmp_path / "meds", reference_time=WHEN, source_namespaces={"condition_occurrence": "ICD10CM"})
    task = TaskDefinition(
        name="t2d",
        outcomes={"t2d": {"prefixes": ["ICD10CM/E11"]}},
        horizons_days=[365],
        prediction_times={"start": "2014-07-01"},
        split={"strategy": "random"},
    )
    lab = build_labels(read_meds(tmp_path / "meds"), task=task).labels.set_index(["subject_id", "prediction_time"])
    assert bool(lab.loc[(1, pd.Timestamp("2014-07-01")), "t2d_365d"]) is True
    assert pd.isna(lab.loc[(1, pd.Timestamp("2015-07-01")), "t2d_365d"])  # prior diagnosis: excluded


def test_omop_from_a_duckdb_database_matches_the_files(omop, tmp_path):
    import duckdb

    db = tmp_path / "cdm.duckdb"
    con = duckdb.connect(str(db))
    for f in omop.iterdir():
        reader = "read_parquet" if f.suffix == ".parquet" else "read_csv_auto"
        con.execute(f"CREATE TABLE {f.stem} AS SELECT * FROM {reader}('{f}')")
    con.close()
    ns = {"condition_occurrence": "ICD10CM", "measurement": "LOINC"}
    a = ingest("omop", db, tmp_path / "from_db", reference_time=WHEN, source_namespaces=ns)
    b = ingest("omop", omop, tmp_path / "from_files", reference_time=WHEN, source_namespaces=ns)
    assert a.rows_read == b.rows_read and a.rows_quarantined == b.rows_quarantined
    x, y = read_meds(tmp_path / "from_db"), read_meds(tmp_path / "from_files")
    x["code"], y["code"] = x["code"].astype(str), y["code"].astype(str)
    pd.testing.assert_frame_equal(x, y)


@pytest.mark.parametrize("form", ["files", "duckdb"])
def test_chunked_omop_ingestion_gives_what_one_pass_gives(omop, tmp_path, form):
    from ._ingest_compare import assert_same_ingestion

    src = omop
    if form == "duckdb":
        import duckdb

        src = tmp_path / "cdm.duckdb"
        con = duckdb.connect(str(src))
        for f in omop.iterdir():
            con.execute(
                f"CREATE TABLE {f.stem} AS SELECT * FROM "
                f"{'read_parquet' if f.suffix == '.parquet' else 'read_csv_auto'}('{f}')"
            )
        con.close()
    ns = {"condition_occurrence": "ICD10CM", "measurement": "LOINC"}
    ingest("omop", src, tmp_path / "one", reference_time=WHEN, source_namespaces=ns)
    ingest("omop", src, tmp_path / "chunked", reference_time=WHEN, source_namespaces=ns, chunk_rows=1, bucket_rows=1)
    assert len(list((tmp_path / "chunked" / "data").rglob("*.parquet"))) == 2  # two persons, two buckets
    assert_same_ingestion(tmp_path / "chunked", tmp_path / "one", with_rows=False)


def test_a_parquet_table_with_a_pandas_index_is_read_as_data(omop, tmp_path):
    person = pd.read_csv(omop / "person.csv").set_index("person_id")
    (omop / "person.csv").unlink()
    person.to_parquet(omop / "person.parquet")  # person_id stored as the pandas index
    report = ingest("omop", omop, tmp_path / "meds", reference_time=WHEN)
    assert report.rows_read == report.rows_kept + report.rows_quarantined
    assert set(read_meds(tmp_path / "meds")["subject_id"]) == {1, 2}
