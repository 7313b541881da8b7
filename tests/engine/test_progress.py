"""The progress ETA: the rest of this epoch, the later epochs, and no more than --max-time
lets the run train (it ends after the epoch during which the budget is spent)."""

import pytest

from pyro_lnf.progress import _remaining

# 5 of an epoch's 10 batches done in 5 s (1 s a batch), 2 more epochs to go (20 batches).
DONE, TOTAL, ELAPSED = 5, 10, 5.0


@pytest.mark.parametrize("budget, eta", [
    (None, 25.0),    # no budget: this epoch's 5 s and two more epochs
    (1000.0, 25.0),  # a budget beyond the epochs: the epochs decide
    (12.0, 15.0),    # 2 s left after this epoch: one more epoch starts, and ends the run
    (3.0, 5.0),      # spent during this epoch: the run ends with it
])
def test_eta_counts_only_the_epochs_the_budget_reaches(budget, eta):
    fields = {"after": 20, "epoch_items": TOTAL, "budget_s": budget}
    assert _remaining(DONE, TOTAL, ELAPSED, fields) == pytest.approx(eta)


def test_no_eta_before_the_first_batch():
    assert _remaining(0, TOTAL, 0.0, {"after": 20}) is None
