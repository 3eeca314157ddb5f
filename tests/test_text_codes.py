"""Text answers as codes: only answers of enough distinct subjects, never free text; leakage-free."""

import numpy as np
import pandas as pd
import pytest

from twinml._validation import ConfigError
from twinml.features import RecordFeaturizer, TabularFeaturizer, fit_text_codes, with_text_codes

SMOKING, ADDRESS = "LOINC/72166-2", "LOINC/56799-0"


@pytest.fixture(scope="module")
def index(labels):
    first = labels.groupby("subject_id", sort=False).head(1)
    return first[["subject_id", "prediction_time"]].head(200).reset_index(drop=True)


@pytest.fixture(scope="module")
def with_text(events, index):
    """The simulated events plus, for the indexed subjects, a smoking status a year before each
    prediction time (two answers) and an address only that subject has, and one answer after it."""
    n = len(index)
    rows = pd.DataFrame(
        {
            "subject_id": np.tile(index["subject_id"].to_numpy(), 3),
            "time": pd.concat(
                [
                    index["prediction_time"] - pd.Timedelta(days=365),
                    index["prediction_time"] - pd.Timedelta(days=365),
                    index["prediction_time"] + pd.Timedelta(days=1),
                ],
                ignore_index=True,
            ),
            "code": [SMOKING] * n + [ADDRESS] * n + [SMOKING] * n,
            "numeric_value": np.float32(np.nan),
            "text_value": np.r_[
                np.where(np.arange(n) % 4 == 0, "Ex-smoker", "Never smoker"),
                [f"{i} Main Street" for i in range(n)],
                ["Smokes daily"] * n,
            ],
        }
    )
    ev = pd.concat([events.assign(text_value=None), rows], ignore_index=True)
    ev = ev.sort_values(["subject_id", "time"], na_position="first", kind="stable").reset_index(drop=True)
    ev["code"] = ev["code"].astype(str).astype("category")
    ev["text_value"] = ev["text_value"].astype("category")
    return ev


def test_answers_of_enough_subjects_become_codes_free_text_never(with_text):
    codes = fit_text_codes(with_text, min_subjects=10)
    assert codes.tolist() == [f"{SMOKING}//Ex-smoker", f"{SMOKING}//Never smoker", f"{SMOKING}//Smokes daily"]
    assert fit_text_codes(with_text, min_subjects=0).size == 0
    out = with_text_codes(with_text, codes)
    addr = with_text["code"] == ADDRESS
    assert (out.loc[addr, "code"] == ADDRESS).all()  # not a code of its own: each address is one subject's
    assert len(out) == len(with_text)
    plain = with_text["text_value"].isna().to_numpy()
    np.testing.assert_array_equal(
        out["code"].astype(str).to_numpy()[plain], with_text["code"].astype(str).to_numpy()[plain]
    )


def test_tabular_features_count_each_answer_before_the_prediction_time(with_text, index):
    f = TabularFeaturizer(min_code_count=5, min_text_subjects=10).fit(with_text)
    names = list(f.feature_names_)
    assert not any("Main Street" in n for n in names)
    X = f.transform(with_text, index).tocsc()
    never = X[:, names.index(f"{SMOKING}//Never smoker/all/count")].toarray().ravel()
    ex = X[:, names.index(f"{SMOKING}//Ex-smoker/all/count")].toarray().ravel()
    want_ex = (np.arange(len(index)) % 4 == 0).astype(float)
    np.testing.assert_array_equal(ex, want_ex)
    np.testing.assert_array_equal(never, 1 - want_ex)
    # the answer after each prediction time never counts (the leakage rule)
    assert X[:, names.index(f"{SMOKING}//Smokes daily/all/count")].nnz == 0
    # the addresses still count under their plain code
    assert (X[:, names.index(f"{ADDRESS}/all/count")].toarray() == 1).all()


def test_without_text_codes_the_text_column_changes_nothing(events, with_text, index):
    plain = TabularFeaturizer(min_code_count=5, min_text_subjects=0).fit(with_text)
    assert plain.text_codes_.size == 0
    no_text = with_text.drop(columns="text_value")
    assert (plain.transform(with_text, index) != plain.transform(no_text, index)).nnz == 0


def test_sequence_featurizers_read_answers_as_event_codes(with_text, index):
    f = RecordFeaturizer(min_code_count=5, min_text_subjects=10).fit(with_text)
    assert f"{SMOKING}//Never smoker" in f.vocabulary_
    data = f.transform(with_text, index)
    code_id = {c: i + 2 for i, c in enumerate(f.vocabulary_)}  # ids 0 and 1: padding and unknown
    assert (data.code == code_id[f"{SMOKING}//Ex-smoker"]).sum() == (np.arange(len(index)) % 4 == 0).sum()


@pytest.mark.parametrize("make", [TabularFeaturizer, RecordFeaturizer])
def test_bad_min_text_subjects_is_named(events, make):
    with pytest.raises(ConfigError) as err:
        make(min_text_subjects=-1).fit(events)
    assert str(err.value) == (
        f"The 'min_text_subjects' parameter of {make.__name__} must be a non-negative int. Got -1 instead."
    )


def test_the_config_passes_min_text_subjects_to_every_member():
    from twinml.config import load_config
    from twinml.pipeline import build_model

    from .conftest import TASK

    def model(kind, n=7):
        return build_model(
            load_config(
                {
                    "name": "t",
                    "data": {"path": "x"},
                    "task": TASK,
                    "model": {"kind": kind},
                    "features": {"min_text_subjects": n},
                }
            )
        )

    assert model("lightgbm").min_text_subjects == 7
    assert model("record").min_text_subjects == 7
    blend = model("blend")
    assert blend.record_params["min_text_subjects"] == blend.tabular_params["min_text_subjects"] == 7
    with pytest.raises(ConfigError) as err:
        model("gru")
    assert str(err.value) == (
        "config: features.min_text_subjects applies to model kinds lightgbm, logistic, hist_gb, record and blend. "
        "Got 7 with kind 'gru'."
    )
    assert model("gru", 0).kind == "gru"


def test_a_logged_model_reads_text_answers_through_mlflow(with_text, index, tmp_path):
    """MLflow drops input columns its signature does not name: a model with text codes logs one with
    text_value, so the pyfunc scores as the model does."""
    import mlflow

    from twinml.models import TabularRiskModel
    from twinml.tracking import as_pyfunc_input, log_model

    lab = index.assign(t2d_365d=pd.array(np.arange(len(index)) % 4 == 0, dtype="boolean"), split="train")
    model = TabularRiskModel(kind="logistic", min_text_subjects=10).fit(with_text, lab)
    assert model.featurizer_.text_codes_.size
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.set_experiment("text-answers")  # not an earlier test's experiment id
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        info = log_model(model)
    some = with_text[with_text["subject_id"].isin(index["subject_id"].head(5))].reset_index(drop=True)
    t = "2030-01-01"
    got = mlflow.pyfunc.load_model(info.model_uri).predict(as_pyfunc_input(some), params={"prediction_time": t})
    at = pd.DataFrame({"subject_id": some["subject_id"].unique(), "prediction_time": pd.Timestamp(t).as_unit("us")})
    want = model.predict_risk(some, at)
    np.testing.assert_allclose(got["t2d_365d"].to_numpy(), want["t2d_365d"].to_numpy(), rtol=1e-6)
    blind = model.predict_risk(some.drop(columns="text_value"), at)
    assert not np.allclose(blind["t2d_365d"].to_numpy(), want["t2d_365d"].to_numpy())
