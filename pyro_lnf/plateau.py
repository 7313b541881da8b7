"""The authors' plateau rule for the learning rate, as a scheduler whose state checkpoints hold.

After ``patience`` epochs in a row without a strictly lower validation loss the learning rate
of every parameter group is divided by ``decay``; the optimizer is left alone otherwise, so
Adam's moments survive the drop. A drop that would take the rate below ``min_lr`` ends the run
instead (:attr:`Plateau.stopped`), and a resumed run whose ``min_lr`` allows it takes that
skipped drop first (:meth:`Plateau.retry_skipped_drop`). The same tracker names the best epoch,
which :mod:`pyro_lnf.train` copies to ``best.pt``.

Why not :class:`torch.optim.lr_scheduler.ReduceLROnPlateau`: the counting maps onto it
(``patience - 1``, since it reduces when the bad epochs *exceed* its patience; ``threshold=0``
in ``"abs"`` mode for a strict improvement; no cooldown; ``eps=0``), but the rest does not.
It clamps at ``min_lr`` where this rule stops the run, and nothing in it can take a drop that
was skipped; it multiplies by ``1 / decay``, which for a decay that is not a power of two
differs from the authors' division in the last bit (and it refuses ``decay = 1``); and its
``load_state_dict`` restores its settings with its counters, so a resumed run with a lower
``min_lr`` or another ``patience`` would silently keep the old ones. Expressing the rule with
it would take more code around it than the rule itself. Here :meth:`state_dict` holds only the
counters; the settings are always the ones the run was started or resumed with.

Example::

    plateau = Plateau(optimizer, patience=2, decay=4.0, min_lr=None)
    for epoch in range(epochs):
        ...
        if annealing_done and plateau.step(valid_loss, epoch):
            save_best()
        if plateau.stopped:
            break
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["Plateau"]

#: The state of a run that has not validated yet (after annealing), as :meth:`state_dict` says.
_INITIAL = {"best_valid": None, "best_epoch": None, "bad_epochs": 0, "stopped_early": False}


class Plateau:
    """Divide the learning rate by ``decay`` after ``patience`` epochs without improvement.

    :param optimizer: whose parameter groups' ``lr`` is divided (group 0's rate decides
        whether ``min_lr`` allows a drop).
    :param patience: epochs without a strictly lower loss before a drop (at least 1).
    :param decay: the divisor of a drop (at least 1).
    :param min_lr: stop instead of dropping below this (``None``: never stop).
    """

    best_valid: float | None
    best_epoch: int | None
    bad_epochs: int
    stopped: bool  # a drop would have taken the rate below min_lr

    def __init__(self, optimizer: torch.optim.Optimizer, *, patience: int, decay: float,
                 min_lr: float | None) -> None:
        self.optimizer, self.patience, self.decay, self.min_lr = optimizer, patience, decay, min_lr
        self.load_state_dict(_INITIAL)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss: float, epoch: int) -> bool:
        """Count one epoch's validation ``loss``; True if it is a new best (strictly lower)."""
        if self.best_valid is None or loss < self.best_valid:
            self.best_valid, self.best_epoch, self.bad_epochs = loss, epoch, 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self._drop()
        return False

    def retry_skipped_drop(self) -> None:
        """After a resume: take the drop that ended the run if ``min_lr`` now allows it."""
        if self.stopped:
            self._drop()

    def _drop(self) -> None:
        if self.min_lr is not None and self.lr / self.decay < self.min_lr:
            self.stopped = True
            return
        for group in self.optimizer.param_groups:
            group["lr"] /= self.decay
        self.bad_epochs = 0
        self.stopped = False

    def state_dict(self) -> dict[str, Any]:
        """The counters (plain values), without the settings or the optimizer."""
        return {"best_valid": self.best_valid, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "stopped_early": self.stopped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_valid, self.best_epoch = state["best_valid"], state["best_epoch"]
        self.bad_epochs, self.stopped = state["bad_epochs"], state["stopped_early"]

    @staticmethod
    def state_from_progress(progress: Mapping[str, Any]) -> dict[str, Any]:
        """The state in a checkpoint's ``progress``: its ``plateau`` entry, or in a checkpoint
        written before it had one, the same fields at the top level (a run that had not
        validated yet has none of them: the initial state)."""
        if "plateau" in progress:
            return dict(progress["plateau"])
        return {key: progress.get(key, initial) for key, initial in _INITIAL.items()}
