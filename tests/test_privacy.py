"""Membership inference: a model that memorised its training subjects is caught, a regularised one is not."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from twinml._validation import ConfigError
from twinml.cohort import TaskDefinition, build_labels
from twinml.evaluation import membership_attack, subject_losses
from twinml.models import TabularRiskModel
from twinml.simulate import simulate

from .conftest import TASK, split_rows

# tiny data, no early stopping, leaves of one row, a thousand trees: it learns each subject by heart
OVERFIT = {
    "n_estimators": 2000,
    "early_stopping_rounds": 2000,
    "num_leaves": 256,
    "min_child_samples": 1,
    "min_sum_hessian_in_leaf": 1e-9,
    "learning_rate": 0.5,
    "lambda_l2": 0.0,
}


@pytest.fixture(scope="module")
def cohort():
    sim = simulate(n_subjects=6000, seed=11)
    events = sim.events.to_pandas()
    events["code"] = events["code"].astype("category")
    labels = build_labels(events, task=TaskDefinition.model_validate(TASK), subject_splits=sim.subject_splits).labels
    return events, labels


def _subjects(rows, n, seed=0):
    chosen = np.random.default_rng(seed).choice(rows["subject_id"].unique(), n, replace=False)
    return rows[rows["subject_id"].isin(chosen)].reset_index(drop=True)


def _attack(model, events, members, non_members):
    losses = [
        subject_losses(rows, model.predict_risk(events, rows), model.label_columns_) for rows in (members, non_members)
    ]
    return membership_attack(*losses, n_boot=100)


def test_the_default_model_does_not_leak_who_trained_it(cohort):
    events, labels = cohort
    train, held_out = split_rows(labels, "train"), split_rows(labels, "held_out")
    model = TabularRiskModel(kind="lightgbm").fit(events, train, tuning_labels=split_rows(labels, "tuning"))
    result = _attack(model, events, _subjects(train, held_out["subject_id"].nunique()), held_out)
    assert min(result["members"], result["non_members"]) > 500
    assert result["auc_hi"] <= 0.6  # the audit's default gate passes


def test_a_memorising_model_is_caught(cohort):
    events, labels = cohort
    train, held_out = _subjects(split_rows(labels, "train"), 300), split_rows(labels, "held_out")
    model = TabularRiskModel(kind="lightgbm", model_params=OVERFIT, min_code_count=1, subject_shares=1).fit(
        events, train
    )
    result = _attack(model, events, train, _subjects(held_out, 300))
    assert result["auc"] >= 0.7 and result["auc_lo"] > 0.6  # the gate fails
    assert result["tpr_at_fpr_1pct"] > 0.01


def test_subject_losses_average_each_subjects_known_labels():
    labels = pd.DataFrame({"subject_id": [1, 1, 2], "a": pd.array([True, None, False], dtype="boolean")})
    risks = pd.DataFrame({"subject_id": [1, 1, 2], "a": [0.5, 0.9, 0.1]})
    losses = subject_losses(labels, risks, ["a"])
    assert losses.to_dict() == pytest.approx({1: np.log(2), 2: -np.log(0.9)})


def _difficulty_world(memorised: float, seed: int = 0):
    """Subjects whose loss mostly reflects how hard they are; members' losses lowered by ``memorised``."""
    rng = np.random.default_rng(seed)
    ids = np.arange(3000)
    hard = rng.uniform(0.05, 1.0, ids.size)
    members, non_members, population = ids[:1000], ids[1000:2000], ids[2000:]
    target = pd.Series(hard + rng.normal(0, 0.01, ids.size), index=ids)
    target[members] -= memorised
    references = pd.DataFrame({k: hard + rng.normal(0, 0.01, ids.size) for k in range(4)}, index=ids)
    return target, references, members, non_members, population


def test_the_reference_attack_sees_memorisation_that_difficulty_hides_from_a_loss_threshold():
    from twinml.evaluation import reference_attack

    target, refs, members, non_members, population = _difficulty_world(memorised=0.03)
    loss = membership_attack(target[members], target[non_members], n_boot=50)
    ref = reference_attack(target, refs, members, non_members, population, n_boot=50)
    assert loss["auc"] < 0.6 and ref["auc"] > 0.9 and ref["auc_lo"] > loss["auc_hi"]
    assert ref["reference_models"] == 4 and ref["population"] == 1000 and ref["tpr_at_fpr_1pct"] > 0.1
    target, refs, members, non_members, population = _difficulty_world(memorised=0.0)
    null = reference_attack(target, refs, members, non_members, population, n_boot=50)
    assert null["auc_lo"] < 0.5 < null["auc_hi"]


class _Spy(BaseEstimator):
    """A model that remembers which subjects each fit saw and predicts the same risk for everyone."""

    fits: list = []

    def __init__(self, risk=0.1):
        self.risk = risk

    def fit(self, events, labels, *, tuning_labels=None, progress=None):
        _Spy.fits.append(set(labels["subject_id"]))
        self.label_columns_ = ["a", "b"]
        return self

    def predict_risk(self, events, rows):
        return pd.DataFrame({"subject_id": rows["subject_id"].to_numpy(), "a": self.risk, "b": self.risk})


def _rows(ids, known=True):
    """Two rows a subject; label ``a`` false (or unknown), ``b`` never known."""
    n = 2 * len(ids)
    a = pd.array([False if known else None] * n, dtype="boolean")
    return pd.DataFrame({"subject_id": np.repeat(ids, 2), "a": a, "b": pd.array([None] * n, dtype="boolean")})


def test_no_reference_model_sees_an_attacked_subject_and_each_sees_its_own_share():
    from twinml.evaluation import membership_audit

    _Spy.fits.clear()
    train, held = _rows(np.arange(1000)), pd.concat([_rows(np.arange(1000, 1300)), _rows([5000], known=False)])
    out = membership_audit(
        _Spy(), None, train, held, ["a", "b"], max_subjects=100, reference_models=3, n_boot=20, progress=lambda m: None
    )
    assert (out["members"], out["non_members"], out["population"]) == (100, 100, 100)
    assert out["reference_models"] == 3 and out["reference_subjects"] == 300  # (1000 - 100 members) / 3
    assert len(_Spy.fits) == 3 and all(len(f) == 300 for f in _Spy.fits)
    assert not (_Spy.fits[0] & _Spy.fits[1]) and not (_Spy.fits[1] & _Spy.fits[2])  # disjoint samples
    assert all(f <= set(range(1000)) for f in _Spy.fits)  # training subjects, never a held-out one
    # b is never known: no row for it; a subject with no known label is never drawn
    assert {(a["label"], a["attack"].split(" ")[0]) for a in out["attacks"]} == {
        (c, k) for c in ("all", "a") for k in ("loss", "reference")
    } | {("b", "loss"), ("b", "reference")}
    assert all(a["auc"] == pytest.approx(0.5) for a in out["attacks"] if a["label"] != "b")  # all losses equal
    assert all(np.isnan(a["auc"]) and a["members"] == 0 for a in out["attacks"] if a["label"] == "b")
    with pytest.raises(ConfigError, match="need at least one subject each"):
        membership_audit(_Spy(), None, _rows(np.arange(10)), held, ["a"], max_subjects=100, reference_models=2)


def test_the_audit_of_a_memorising_model_fails_under_both_attacks(cohort):
    from twinml.evaluation import membership_audit

    events, labels = cohort
    train = split_rows(labels, "train")
    target_rows = _subjects(train, 300)
    model = TabularRiskModel(kind="lightgbm", model_params=OVERFIT, min_code_count=1, subject_shares=1).fit(
        events, target_rows
    )
    out = membership_audit(
        model,
        events,
        target_rows,
        split_rows(labels, "held_out"),
        model.label_columns_,
        max_subjects=300,
        reference_models=2,
        reference_rows=train[~train["subject_id"].isin(target_rows["subject_id"])],
        reference_subjects=300,  # as many as the model trained on
        n_boot=50,
        progress=lambda m: None,
    )
    assert out["reference_subjects"] == 300 and out["members"] > 250  # training subjects with a known label
    pooled = {a["attack"].split(" ")[0]: a for a in out["attacks"] if a["label"] == "all"}
    assert pooled["loss"]["auc_lo"] > 0.6 and pooled["reference"]["auc_lo"] > 0.6  # both fail the 0.6 gate


def test_a_model_that_cannot_be_refitted_gets_a_clear_error():
    from twinml.evaluation import membership_audit
    from twinml.models import RecalibratedModel

    model = RecalibratedModel(_Spy().fit(None, _rows([1])), {"a": (0.0, 1.0)})
    with pytest.raises(ConfigError, match="a RecalibratedModel cannot be refitted as a reference model"):
        membership_audit(model, None, _rows(np.arange(100)), _rows(np.arange(100, 140)), ["a"], reference_models=2)
