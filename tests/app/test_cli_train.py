"""lnf train / evaluate as a user runs them, in this process through the console script's
``main``: a tiny model on real JSB data, resumed, evaluated, and bad input answered in one
line."""

import json
import re
from collections import namedtuple

import pytest
from helpers import assert_one_line_error, run_lnf

from pyro_lnf.nn.precision import bf16_lstm_supported

TINY = [
    "--hidden-size",
    "8",
    "--latent-dim",
    "4",
    "--flow-layers",
    "1",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--eval-batch-size",
    "128",
    "--kl-initial-zero",  # no annealing, so epoch 0 is a candidate for best.pt
    "0",
    "--kl-rampup",
    "0",
    "--quiet",
]


Done = namedtuple("Done", "returncode stdout stderr")


@pytest.fixture
def lnf(data_dir, monkeypatch, capsys):
    """``lnf(ARGS)``: lnf run in this process on the shared data, as ``subprocess.run`` reports
    a run."""
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))
    return lambda args: Done(*run_lnf(monkeypatch, capsys, *args))


def test_train_resume_evaluate(tmp_path, lnf):
    out = tmp_path / "run"
    first = lnf(
        ["train", "--model", "afscf", "--dataset", "jsb_chorales", "--out", str(out), *TINY],
    )
    assert first.returncode == 0, first.stderr
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    # Resuming needs no model or training options: they come from last.pt.
    more = lnf(
        [
            "train",
            "--model",
            "afscf",
            "--dataset",
            "jsb_chorales",
            "--out",
            str(out),
            "--resume",
            "--epochs",
            "2",
            "--quiet",
        ],
    )
    assert more.returncode == 0, more.stderr
    epochs = [
        json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [0, 1]
    result = lnf(
        [
            "evaluate",
            str(out / "last.pt"),
            "--split",
            "valid",
            "--samples",
            "2",
            "--batch-size",
            "76",
            "--json",
        ],
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["sequences"] == 76 and metrics["units"] == 4602 + 76
    assert metrics["nll_nats_per_unit"] <= metrics["elbo_loss_nats_per_unit"] + 1e-6
    if not bf16_lstm_supported():  # tested by tests/nn/test_precision.py on such a CPU
        return
    reduced = lnf(
        ["evaluate", str(out / "last.pt"), "--split", "valid", "--samples", "2",
         "--batch-size", "76", "--precision", "bf16", "--json"],
    )
    assert reduced.returncode == 0, reduced.stderr
    reduced_metrics = json.loads(reduced.stdout)
    assert (metrics["precision"], reduced_metrics["precision"]) == ("fp32", "bf16")
    shift = abs(reduced_metrics["nll_nats_per_unit"] - metrics["nll_nats_per_unit"])
    assert shift < 1e-3 * metrics["nll_nats_per_unit"]  # ~58 nats per unit after one epoch


@pytest.mark.parametrize(
    "args",
    [
        [
            "train",
            "--model",
            "lstm",
            "--dataset",
            "jsb_chorales",
            "--dropout",
            "1.5",
            "--out",
            "x",
        ],
        [
            "train",
            "--model",
            "afaf",
            "--dataset",
            "jsb_chorales",
            "--hidden-size",
            "0",
            "--out",
            "x",
        ],
        ["train", "--model", "nvdm", "--dataset", "jsb_chorales", "--out", "x"],
        ["train", "--model", "afaf", "--dataset", "jsb_chorales", "--out", "x", "--resume"],
        ["evaluate", "missing.pt"],
        ["evaluate", "missing.pt", "--device", "nonsense"],
    ],
)
def test_bad_input_is_one_line(args, tmp_path, lnf):
    result = lnf([a if a != "x" else str(tmp_path / "run") for a in args])
    assert result.returncode == (2 if "--hidden-size" in args else 1)  # 2: click's range
    assert_one_line_error(result.returncode, result.stderr)


def test_max_time_ends_the_run_after_the_first_epoch_that_spends_it(tmp_path, lnf):
    # A millisecond: spent by the start-up or by the first epoch, before the second.
    out = tmp_path / "run"
    tiny = [*TINY[:TINY.index("--epochs")], *TINY[TINY.index("--epochs") + 2:]]
    done = lnf(["train", "--model", "afaf", "--dataset", "jsb_chorales", "--out", str(out),
                *tiny, "--epochs", "3", "--max-time", "0.001s", "--limit-batches", "1"])
    assert done.returncode == 0, done.stderr
    assert re.match(r"done: [01] epochs \(stopped: --max-time spent", done.stdout), done.stdout
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["max_minutes"] == pytest.approx(0.001 / 60)
