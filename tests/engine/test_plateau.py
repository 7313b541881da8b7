"""The plateau rule for the learning rate (pyro_lnf.plateau), on its own."""

from __future__ import annotations

import pytest
import torch

from pyro_lnf.plateau import Plateau


def adam(lr: float = 0.04) -> torch.optim.Adam:
    first, second = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    return torch.optim.Adam([{"params": [first]}, {"params": [second]}], lr=lr)


def test_only_a_strictly_lower_loss_improves_and_patience_bad_epochs_drop_every_group():
    optimizer = adam()
    plateau = Plateau(optimizer, patience=2, decay=4.0, min_lr=None)
    assert [plateau.step(loss, epoch) for epoch, loss in enumerate([3.0, 2.0, 2.0])] == [
        True, True, False]
    assert [g["lr"] for g in optimizer.param_groups] == [0.04, 0.04]  # one bad epoch of two
    assert not plateau.step(2.5, 3)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.01])
    assert (plateau.best_valid, plateau.best_epoch, plateau.bad_epochs) == (2.0, 1, 0)


def test_a_drop_below_min_lr_stops_instead_and_a_lower_min_lr_takes_it_later():
    optimizer = adam()
    plateau = Plateau(optimizer, patience=1, decay=4.0, min_lr=0.02)
    plateau.step(1.0, 0)
    plateau.step(1.0, 1)
    assert plateau.stopped and optimizer.param_groups[0]["lr"] == 0.04
    plateau.retry_skipped_drop()
    assert plateau.stopped  # the same min_lr: still not allowed
    resumed = Plateau(optimizer, patience=1, decay=4.0, min_lr=None)
    resumed.load_state_dict(plateau.state_dict())
    resumed.retry_skipped_drop()
    assert not resumed.stopped and optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_the_state_holds_the_counters_not_the_settings():
    plateau = Plateau(adam(), patience=3, decay=2.0, min_lr=1e-4)
    plateau.step(1.0, 5)
    state = plateau.state_dict()
    assert state == {"best_valid": 1.0, "best_epoch": 5, "bad_epochs": 0, "stopped_early": False}
    other = Plateau(adam(), patience=1, decay=10.0, min_lr=None)
    other.load_state_dict(state)
    assert (other.patience, other.decay, other.min_lr) == (1, 10.0, None)
    assert other.state_dict() == state


@pytest.mark.parametrize(
    ("progress", "state"),
    [
        ({"epoch": 2}, {"best_valid": None, "best_epoch": None, "bad_epochs": 0,
                        "stopped_early": False}),
        ({"epoch": 9, "best_valid": 3.5, "best_epoch": 7, "bad_epochs": 1,
          "stopped_early": False}, {"best_valid": 3.5, "best_epoch": 7, "bad_epochs": 1,
                                    "stopped_early": False}),
    ],
    ids=["never-validated", "fields-at-the-top"],
)
def test_the_state_of_a_checkpoint_written_before_it_had_its_own_entry(progress, state):
    assert Plateau.state_from_progress(progress) == state
    assert Plateau.state_from_progress({"epoch": 1, "plateau": state}) == state
