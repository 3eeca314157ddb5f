"""The one epoch loop of twinml's torch models, with callbacks.

:func:`fit_epochs` runs epochs of a caller's ``train_epoch`` and ``tuning_loss`` and hands each epoch's
record to its callbacks: :class:`EarlyStopping` (patience on the tuning loss, and the best epoch's
weights restored at the end: the checkpoint) and :class:`EpochProgress` (one line per epoch). The
sequence, record and what-if models and the trajectory head all train through it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np

__all__ = ["fit_epochs", "EarlyStopping", "EpochProgress"]


class EarlyStopping:
    """Stop after ``patience`` epochs without a tuning loss ``min_delta`` below the best so far; at the end,
    load the best epoch's weights (a copy of the state dict taken at that epoch).

    ``best_epoch`` is that epoch. A tuning loss that is never finite is an error (there is no best
    epoch to restore), raised with ``what`` in its message.
    """

    def __init__(self, patience: int, *, min_delta: float = 1e-6, say=None, what: str = "training"):
        self.patience, self.min_delta, self.say, self.what = patience, min_delta, say, what

    def on_train_begin(self, net) -> None:
        self.best, self.best_state, self.best_epoch, self.stale, self.last = np.inf, None, 0, 0, None

    def on_epoch_end(self, net, record: dict) -> bool:
        loss = self.last = record["tuning_loss"]
        if loss < self.best - self.min_delta:
            self.best, self.best_state, self.stale = loss, copy.deepcopy(net.state_dict()), 0
            self.best_epoch = record["epoch"]
            return False
        self.stale += 1
        if self.stale < self.patience:
            return False
        if self.say is not None:
            self.say(f"early stop: no tuning improvement for {self.patience} epochs; best epoch {self.best_epoch}")
        return True

    def on_train_end(self, net) -> None:
        if self.best_state is None:
            raise RuntimeError(f"{self.what}: the tuning loss was never finite (last: {self.last}); check the inputs")
        net.load_state_dict(self.best_state)


class EpochProgress:
    """One line per epoch: train and tuning loss and the epoch's seconds."""

    def __init__(self, say):
        self.say = say

    def on_train_begin(self, net) -> None:
        pass

    def on_epoch_end(self, net, record: dict) -> bool:
        self.say(
            f"epoch {record['epoch']}: train loss {record['train_loss']:.5f}, tuning loss "
            f"{record['tuning_loss']:.5f} ({record['seconds']:.1f}s)"
        )
        return False

    def on_train_end(self, net) -> None:
        pass


def fit_epochs(
    net, train_epoch: Callable[[int], float], tuning_loss: Callable[[], float], *, max_epochs: int, callbacks=()
) -> list[dict]:
    """Train ``net`` for up to ``max_epochs``: each epoch puts it in training mode, runs ``train_epoch(epoch)``
    (which returns the mean train loss), then ``tuning_loss()``; the record ``{epoch, train_loss,
    tuning_loss, seconds}`` goes to every callback in order, and training stops when one says so. At the
    end the callbacks' ``on_train_end`` run (e.g. restoring the best weights) and ``net`` is left in
    evaluation mode. Returns the records."""
    history: list[dict] = []
    for cb in callbacks:
        cb.on_train_begin(net)
    for epoch in range(1, max_epochs + 1):
        t0 = time.perf_counter()
        net.train()
        train_loss = train_epoch(epoch)
        monitor = tuning_loss()
        record = {"epoch": epoch, "train_loss": train_loss, "tuning_loss": monitor, "seconds": time.perf_counter() - t0}
        history.append(record)
        stop = False
        for cb in callbacks:
            stop = cb.on_epoch_end(net, record) or stop
        if stop:
            break
    for cb in callbacks:
        cb.on_train_end(net)
    net.eval()
    return history
