"""Differentially private training: the accountant's ε is reported and within budget, the subject is the
unit, nothing but DP-SGD reads the training subjects, and the noise seed is not the logged one."""

import numpy as np
import pandas as pd
import pytest
import torch

from twinml._validation import ConfigError
from twinml.audit import render_model_card
from twinml.models import SequenceRiskModel
from twinml.models._private import SubjectDPSGD, check_privacy, row_weights

from .conftest import split_rows

TINY = dict(d_model=8, max_len=24, max_epochs=2, patience=2, n_threads=1, trajectory_codes=None, forecast_weight=0.0)


@pytest.fixture(scope="module")
def rows(labels):
    train, tune = split_rows(labels, "train"), split_rows(labels, "tuning")
    keep = train["subject_id"].isin(train["subject_id"].unique()[:300])
    return train[keep].reset_index(drop=True), tune


@pytest.fixture(scope="module")
def planted(events, rows):
    """The events plus a code recorded only for 40 training subjects (enough to enter a vocabulary)."""
    ids = rows[0]["subject_id"].unique()[:40]
    extra = pd.DataFrame({"subject_id": ids, "time": pd.Timestamp("2011-06-01"), "code": "SECRET/1"})
    ev = pd.concat([events.astype({"code": str}), extra.assign(numeric_value=np.float32("nan"))], ignore_index=True)
    ev = ev.sort_values(["subject_id", "time"], kind="stable", na_position="first").reset_index(drop=True)
    return ev.astype({"code": "category"})


def _fit(events, rows, **privacy):
    train, tune = rows
    spec = {"epsilon": 3.0, "subjects_per_step": 64, **privacy}
    # asks for the trajectory head, which a private fit does not train
    return SequenceRiskModel(privacy=spec, **{**TINY, "trajectory_codes": "auto"}).fit(
        events, train, tuning_labels=tune
    )


@pytest.fixture(scope="module")
def private(planted, rows):
    return _fit(planted, rows, reproducible=True)


def test_a_private_fit_reports_the_accountants_epsilon_within_the_budget(private):
    p = private.privacy_
    assert 0 < p["epsilon"] <= 3.0 and p["delta"] == 1e-5 and p["unit"] == "subject"
    assert p["steps"] == len(private.history_) * round(1 / p["sample_rate"]) and p["steps"] <= p["planned_steps"]
    assert p["noise_multiplier"] > 0.5  # a budget of 3 over ~10 steps a subject needs real noise
    assert private.trajectory_ is None and "differential privacy" in private.trajectory_skipped_
    card = render_model_card(_report(p))
    assert f"ε = {p['epsilon']:.2f}" in card and "δ = 1e-05" in card


@pytest.mark.slow  # two more private fits: make test keeps its margin under 5 minutes
def test_the_noise_seed_is_secret_unless_asked_for(private, planted, rows):
    again, secret = _fit(planted, rows, reproducible=True), _fit(planted, rows)
    index = rows[1].head(50)
    ra, rb, rc = (m.predict_risk(planted, index)[m.label_columns_].to_numpy() for m in (private, again, secret))
    np.testing.assert_array_equal(ra, rb)
    assert not np.allclose(ra, rc)  # same random_state, but the noise came from the operating system


def test_only_the_tuning_subjects_shape_the_featurizer(private, planted, rows):
    """A code recorded only for training subjects must not enter the vocabulary (it would reveal them)."""
    plain = SequenceRiskModel(**{**TINY, "max_epochs": 1}).fit(planted, rows[0], tuning_labels=rows[1])
    assert "SECRET/1" in set(map(str, plain.featurizer_.vocabulary_))
    assert "SECRET/1" not in set(map(str, private.featurizer_.vocabulary_))


def test_each_step_holds_every_row_of_the_subjects_drawn_and_no_other():
    rng = np.random.default_rng(0)
    row_subject = rng.permutation(np.repeat(np.arange(100, 140), rng.integers(1, 13, 40)))  # 40 subjects, 1-12 rows
    dp = SubjectDPSGD(
        torch.nn.Linear(2, 1),
        check_privacy({"epsilon": 5, "subjects_per_step": 4, "reproducible": True}),
        row_subject,
        epochs=2,
        lr=1e-3,
        weight_decay=0.0,
        seed=0,
    )
    assert dp.n_subjects == 40 and dp.sample_rate == 0.1 and dp.steps_per_epoch == 10
    seen = 0
    for rows, local, n_drawn in dp.epoch():
        drawn = set(row_subject[rows])
        assert len(drawn) == n_drawn and set(np.flatnonzero(np.isin(row_subject, list(drawn)))) == set(rows)
        assert all(len(set(row_subject[rows][local == k])) == 1 for k in range(n_drawn))
        seen += n_drawn
    assert seen > 0


def test_a_subjects_rows_weigh_one_mean_loss():
    # subject 0: two rows with 2 and 1 observed bins; subject 1: one row with 2 bins (nan: unknown)
    y = np.array([[[0, 0]], [[0, np.nan]], [[0, 1]]], np.float32)
    w, _ = row_weights(y, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 2])


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"delta": 1e-5}, "needs 'epsilon'"),
        ({"epsilon": 0}, "epsilon must be a positive number"),
        ({"epsilon": 1, "delta": 2}, "delta must be in \\(0, 1\\)"),
        ({"epsilon": 1, "clip": 1}, "privacy key 'clip' is not known"),
        ({"epsilon": 1, "subjects_per_step": 0.5}, "subjects_per_step must be a positive integer"),
        (8, "privacy must be a dict"),
    ],
)
def test_a_bad_privacy_setting_is_named(spec, words):
    with pytest.raises(ConfigError, match=words):
        check_privacy(spec)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # opacus' hooks on a net whose input needs no grad
def test_a_private_transformer_trains_with_the_same_layers_and_per_subject_gradients(events, rows):
    """Its attention is rebuilt of Linear layers (opacus' own breaks inside nn.TransformerEncoder): the same
    outputs as the plain encoder on the same weights, and per-row gradients that add up to the batch's."""
    import copy

    from opacus import GradSampleModule

    from twinml.models._dp_layers import dp_compatible
    from twinml.models._torch_modules import TransformerEncoder

    torch.manual_seed(0)
    plain = TransformerEncoder(16).train()
    x, log_days = torch.randn(3, 7, 16), torch.rand(3, 7)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:], mask[2, 1:] = False, False
    dp = dp_compatible(copy.deepcopy(plain)).train()
    assert torch.allclose(dp(x, mask, None, log_days), plain(x, mask, None, log_days), atol=1e-5)
    alone = copy.deepcopy(dp)
    wrapped = GradSampleModule(dp, loss_reduction="sum")
    (wrapped(x, mask, None, log_days) ** 2).sum().backward()
    (alone(x[1:2], mask[1:2], None, log_days[1:2]) ** 2).sum().backward()
    for p, q in zip(wrapped.parameters(), alone.parameters()):
        assert torch.allclose(p.grad_sample.sum(0), p.grad, atol=1e-4)
        assert torch.allclose(p.grad_sample[1], q.grad, atol=1e-4)  # row 1's gradient is row 1's alone
    train, tune = rows
    model = SequenceRiskModel(kind="transformer", privacy={"epsilon": 3.0, "subjects_per_step": 64}, **TINY)
    model.fit(events, train, tuning_labels=tune)
    assert 0 < model.privacy_["epsilon"] <= 3.0
    risks = model.predict_risk(events, tune)
    assert risks[model.label_columns_].notna().all().all()


def test_privacy_needs_tuning_rows(events, rows):
    with pytest.raises(ConfigError, match="needs tuning rows"):
        SequenceRiskModel(privacy={"epsilon": 1}, **TINY).fit(events, rows[0])


def _report(privacy):
    """The smallest audit report the model card renders."""
    return {
        "lineage": {"model_uri": "models:/m/1"},
        "model": {"class": "SequenceRiskModel", "privacy": privacy},
        "passed": True,
        "split": "held_out",
        "policy": {"intended_use": "test", "limitations": []},
        "task": {"name": "t", "outcomes": {}, "horizons_days": [365]},
        "performance": [],
        "calibration": [],
        "gates": [],
        "fairness": {"ground_truth": False, "labels": []},
    }
