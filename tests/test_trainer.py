"""The shared epoch loop: early stopping, the best epoch's weights restored, progress, a never-finite loss."""

import math

import pytest
import torch

from twinml.models._trainer import EarlyStopping, EpochProgress, fit_epochs


def _run(losses, patience, say=None):
    """A net whose single weight is set to the epoch number; the tuning loss of epoch k is losses[k - 1]."""
    net = torch.nn.Linear(1, 1, bias=False)
    epoch_now = {}

    def train_epoch(epoch):
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        epoch_now["k"] = epoch
        assert net.training
        return 1.0

    stopper = EarlyStopping(patience, say=say, what="test model")
    callbacks = [stopper] if say is None else [EpochProgress(say), stopper]
    history = fit_epochs(
        net, train_epoch, lambda: losses[epoch_now["k"] - 1], max_epochs=len(losses), callbacks=callbacks
    )
    return net, history, stopper


def test_stops_after_patience_epochs_without_improvement_and_keeps_the_best_weights():
    lines = []
    net, history, stopper = _run([3.0, 2.0, 2.5, 2.2, 1.0, 0.5], patience=2, say=lines.append)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]  # no improvement at 3 and 4: stop
    assert stopper.best_epoch == 2 and net.weight.item() == 2.0  # the checkpoint, not the last epoch
    assert not net.training
    assert lines[-1] == "early stop: no tuning improvement for 2 epochs; best epoch 2"
    assert lines[0].startswith("epoch 1: train loss 1.00000, tuning loss 3.00000 (")


def test_an_improvement_smaller_than_min_delta_is_no_improvement():
    _, history, stopper = _run([1.0, 1.0 - 1e-7, 1.0 - 2e-7], patience=2)
    assert stopper.best_epoch == 1 and len(history) == 3


def test_runs_every_epoch_while_it_improves():
    net, history, stopper = _run([4.0, 3.0, 2.0, 1.0], patience=1)
    assert len(history) == 4 and stopper.best_epoch == 4 and net.weight.item() == 4.0


def test_a_tuning_loss_that_is_never_finite_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"^test model: the tuning loss was never finite \(last: nan\)"):
        _run([math.nan, math.nan], patience=5)
