import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twinml._validation import MEDSValidationError
from twinml.data import read_meds, validate_events_table, write_meds


def _table(**overrides):
    cols = {
        "subject_id": pa.array([1, 1, 2], pa.int64()),
        "time": pa.array([None, 1_600_000_000_000_000, 1_600_000_000_000_000], pa.timestamp("us")),
        "code": pa.array(["GENDER//F", "LOINC/4548-4", "LOINC/4548-4"]),
        "numeric_value": pa.array([None, 5.6, 6.1], pa.float32()),
    }
    cols.update(overrides)
    return pa.table({k: v for k, v in cols.items() if v is not None})


def _copy_with(meds_dir, tmp_path, table):
    root = tmp_path / "bad"
    shutil.copytree(meds_dir, root)
    f = sorted((root / "data" / "train").glob("*.parquet"))[0]
    pq.write_table(table, f)
    return root, f.relative_to(root)


def test_reads_what_it_writes(events, small_cohort):
    assert len(events) == small_cohort.events.num_rows
    assert list(events.columns) == ["subject_id", "time", "code", "numeric_value"]
    assert str(events["time"].dtype) == "datetime64[us]"


def test_missing_column_names_file_and_column(meds_dir, tmp_path):
    root, rel = _copy_with(meds_dir, tmp_path, _table(code=None))
    with pytest.raises(MEDSValidationError) as err:
        read_meds(root)
    assert str(err.value).startswith(f"{rel}: column 'code' is required by the MEDS data schema but missing")


def test_string_in_numeric_value_shows_the_bad_value(meds_dir, tmp_path):
    root, rel = _copy_with(meds_dir, tmp_path, _table(numeric_value=pa.array(["", "5.6", "high"])))
    with pytest.raises(MEDSValidationError) as err:
        read_meds(root)
    assert str(err.value) == (
        f"{rel}: column 'numeric_value' must be float32; got type string "
        "(example: 'high'). Put text results in 'text_value'."
    )


def test_null_code_names_the_row():
    with pytest.raises(MEDSValidationError) as err:
        validate_events_table(_table(code=pa.array(["A", None, "B"])), name="x.parquet")
    assert str(err.value) == "x.parquet: column 'code' must not be null (example: row 1, subject_id=1)"


def test_wrong_time_type():
    t = _table(time=pa.array(["2020-01-01", "2020-01-02", "2020-01-03"]))
    with pytest.raises(MEDSValidationError, match=r"x.parquet: column 'time' must be timestamp\[us\]; got type string"):
        validate_events_table(t, name="x.parquet")


def test_unsorted_time_within_subject():
    t = _table(
        subject_id=pa.array([1, 1, 1], pa.int64()),
        time=pa.array([None, 1_600_000_000_000_000, 1_500_000_000_000_000], pa.timestamp("us")),
    )
    with pytest.raises(MEDSValidationError) as err:
        validate_events_table(t, name="x.parquet")
    assert (
        "column 'time' must not decrease within a subject (static rows with null time first) (example: subject_id=1: "
        "2020-09-13 12:26:40 then "
        "2017-07-14 02:40:00). Sort by subject_id, then time." in str(err.value)
    )


def test_subject_split_across_rows_and_files(meds_dir, tmp_path):
    t = _table(subject_id=pa.array([1, 2, 1], pa.int64()))
    with pytest.raises(
        MEDSValidationError,
        match=r"x.parquet: column 'subject_id' must keep each subject's rows together \(sorted by subject\) "
        r"\(example: 1\)",
    ):
        validate_events_table(t, name="x.parquet")
    root = tmp_path / "dup"
    shutil.copytree(meds_dir, root)
    src = sorted((root / "data" / "train").glob("*.parquet"))[0]
    shutil.copy(src, root / "data" / "tuning" / "copy.parquet")
    with pytest.raises(MEDSValidationError, match="each subject must be in one file only"):
        read_meds(root)


def test_write_is_atomic(tmp_path, small_cohort):
    out = tmp_path / "out"

    def explode(path):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_meds(
            out,
            events=small_cohort.events,
            subject_splits=small_cohort.subject_splits,
            codes=pd.DataFrame({"code": ["x"], "description": ["x"], "parent_codes": [[]]}),
            dataset_name="t",
            etl_name="t",
            etl_version="0",
            extra={"boom.txt": explode},
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


def test_refuses_to_overwrite_without_asking(tmp_path, small_cohort):
    out = tmp_path / "out"
    small_cohort.write(out)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        small_cohort.write(out)


def test_text_answers_are_read_and_blank_ones_are_null(meds_dir, tmp_path):
    text = pa.array([None, "Never smoker", "  "])
    root, _ = _copy_with(meds_dir, tmp_path, _table(text_value=text))
    events = read_meds(root)
    assert list(events.columns) == ["subject_id", "time", "code", "numeric_value", "text_value"]
    assert isinstance(events["text_value"].dtype, pd.CategoricalDtype)
    got = events["text_value"].astype(object)
    assert (got == "Never smoker").sum() == 1
    assert events["text_value"].notna().sum() == 1  # the blank one is null, and the other files have none


def test_events_without_text_answers_have_no_text_column(events):
    assert "text_value" not in events  # the simulator writes none


def test_text_value_of_another_type_is_named(meds_dir, tmp_path):
    root, rel = _copy_with(meds_dir, tmp_path, _table(text_value=pa.array([None, 3, 4], pa.int64())))
    with pytest.raises(MEDSValidationError) as err:
        read_meds(root)
    assert str(err.value) == f"{rel}: column 'text_value' must be string; got type int64 (example: 3)"
