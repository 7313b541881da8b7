"""Run records and their commands, in process on a tiny model and real JSB data: run.json and
``lnf train --config`` (a run repeated bit for bit from its record), ``--limit-batches`` (and
its exact resume), ``lnf runs``, ``--tensorboard``, and the plain progress lines off a
terminal."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from pyro_lnf.app import cli
from pyro_lnf.checkpoint import load_checkpoint
from pyro_lnf.records import distinct_names

TINY = [
    "--hidden-size", "8", "--latent-dim", "4", "--flow-layers", "1", "--epochs", "1",
    "--batch-size", "64", "--eval-batch-size", "128", "--kl-initial-zero", "0",
    "--kl-rampup", "0",
]
AFSCF = ["train", "--model", "afscf", "--dataset", "jsb_chorales"]


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))


def lnf(monkeypatch, *args) -> int:
    """``lnf ARGS`` in this process: its exit status."""
    monkeypatch.setattr(sys, "argv", ["lnf", *map(str, args)])
    try:
        cli.main()
    except SystemExit as err:
        return err.code
    return 0


def weights(path):
    return load_checkpoint(path)["model"]["state_dict"]


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_config_repeats_a_run_bit_for_bit(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert lnf(monkeypatch, *AFSCF, *TINY, "--seed", "3", "--nll-every", "1",
               "--nll-samples", "2", "--out", a, "--quiet") == 0
    record = json.loads((a / "run.json").read_text())
    assert (record["model"], record["dataset"], record["device"]) == ("afscf", "jsb_chorales", "cpu")
    assert record["config"]["seed"] == 3 and record["config"]["hidden_size"] == 8
    assert record["config"]["patience"] == 2  # the preset's, recorded too
    assert record["command"].startswith("lnf train --model afscf")
    assert set(record["versions"]) == {"pyro-lnf", "torch", "pyro", "python"}
    assert record["parameters"] > 0 and "git_commit" in record
    capsys.readouterr()
    # Nothing but the record and a new --out; not quiet: the summary and plain progress lines
    # (stderr is not a terminal here).
    assert lnf(monkeypatch, "train", "--config", a / "run.json", "--out", b,
               "--log-every", "1") == 0
    err = capsys.readouterr().err
    assert "run afscf on jsb_chorales" in err and "seed 3" in err
    lines = [line for line in err.splitlines() if line.startswith("epoch 1/1  batch")]
    assert [line.split("  ")[1] for line in lines] == [f"batch {i}/4" for i in range(1, 5)]
    assert all("ETA" in line and "loss" in line for line in lines)
    assert same_weights(a / "last.pt", b / "last.pt")
    assert json.loads((b / "run.json").read_text())["config"] == record["config"]

    # Resuming keeps the record and appends the resume.
    assert lnf(monkeypatch, *AFSCF, "--out", a, "--resume", "--epochs", "2", "--quiet") == 0
    again = json.loads((a / "run.json").read_text())
    assert again["command"] == record["command"] and again["started"] == record["started"]
    assert [r["epoch"] for r in again["resumed"]] == [1]
    assert "--resume" in again["resumed"][0]["command"]

    capsys.readouterr()
    # lnf evaluate keeps its result in the run folder; lnf runs shows it.
    assert lnf(monkeypatch, "evaluate", a / "best.pt", "--samples", "2", "--batch-size", "77",
               "--json") == 0
    test_nll = json.loads(capsys.readouterr().out)["nll_nats_per_unit"]
    evaluations = (a / "evaluations.jsonl").read_text().splitlines()
    assert len(evaluations) == 1 and json.loads(evaluations[0])["checkpoint"] == "best.pt"
    long_name = tmp_path / ("b-with-a-name-much-too-long-for-its-column" + "x" * 40)
    b.rename(long_name)
    (tmp_path / "empty").mkdir()
    status = lnf(monkeypatch, "runs", a, long_name, tmp_path / "empty")
    out, err = capsys.readouterr()
    assert status == 1 and err.strip() == (
        f"error: {tmp_path / 'empty'} is not a run folder (no run.json or metrics.jsonl)"
    )
    assert all(len(line) <= 80 for line in out.splitlines())
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.strip().startswith(("a ", "b-with"))}
    metrics = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    best = min(metrics, key=lambda m: m["valid_loss_beta1"])
    assert rows["a"][1:4] == ["afscf", "jsb", "2/2"]
    assert rows["a"][4:6] == [f"{best['valid_loss_beta1']:.3f}", f"({best['epoch']})"]
    assert rows["a"][6] == f"{min(m['valid_nll'] for m in metrics):.3f}"
    assert rows["a"][7] == f"{test_nll:.3f}"
    b_row = next(v for k, v in rows.items() if k.startswith("b-with"))
    assert b_row[0].endswith("…") and b_row[1:4] == ["afscf", "jsb", "1/1"] and b_row[7] == "-"


def test_distinct_names_add_parents_only_where_names_collide(tmp_path):
    folders = [tmp_path / "repro-jsb" / "afaf", tmp_path / "repro-piano" / "afaf",
               tmp_path / "repro-jsb" / "lstm", tmp_path / "x" / "a" / "b", tmp_path / "y" / "b"]
    assert distinct_names(folders) == ["repro-jsb/afaf", "repro-piano/afaf", "lstm", "a/b", "y/b"]
    # A folder given twice (or through a symlink) is one folder: its name stays bare.
    (tmp_path / "run").mkdir()
    (tmp_path / "latest").symlink_to(tmp_path / "run")
    assert distinct_names([tmp_path / "run", tmp_path / "latest", tmp_path / "run"]) == \
        ["run"] * 3


def _metrics_only(*folders):
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text(
            json.dumps({"epoch": 0, "valid_loss_beta1": 7.0, "wall_s": 60.0}) + "\n")
    return folders


def test_lnf_runs_tells_same_named_folders_apart(tmp_path, monkeypatch, capsys):
    # reproduce.py's layout, runs/repro-DATASET/MODEL: two datasets' runs share names. A name
    # too long for its column keeps what tells it apart, its first part and its folder.
    for folders, shown in [
        ([tmp_path / "repro-jsb" / "afaf", tmp_path / "repro-nottingham-priors" / "afaf"],
         ["repro-jsb/afaf", "repro-nottin…/afaf"]),
        ([tmp_path / "seed1" / "repro-nottingham" / "afaf",
          tmp_path / "seed2" / "repro-nottingham" / "afaf"], ["seed1/…/afaf", "seed2/…/afaf"]),
    ]:
        assert lnf(monkeypatch, "runs", *_metrics_only(*folders)) == 0
        assert [line.split()[0] for line in capsys.readouterr().out.splitlines()
                if "7.000" in line] == shown


@pytest.mark.parametrize("content, says", [
    (None, "does not exist"),
    ("{not json", "is not JSON"),
    ('{"model": "afscf", "dataset": "jsb_chorales", "epochz": 1}', "unknown option 'epochz'"),
    ('{"model": "afscf", "dataset": "jsb_chorales", "epochs": "3"}', "epochs must be integer"),
    ('{"model": "afscf", "dataset": "jsb_chorales", "epochs": 2.5}', "epochs must be integer"),
    ('{"model": "afscf", "dataset": "jsb_chorales", "latent_dim": 0}', "latent_dim"),
    ('{"model": "nope", "dataset": "jsb_chorales"}', "model"),
    ('{"model": "afscf", "dataset": "jsb_chorales", "out": "x"}', "'out' is given on the"),
    ('[1, 2]', "must hold a JSON object"),
])
def test_bad_config_is_one_line(content, says, tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    assert lnf(monkeypatch, "train", "--config", path, "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and says in err
    assert not (tmp_path / "out").exists()


def test_limit_batches_resumes_exactly(tmp_path, monkeypatch, capsys):
    limited = [*AFSCF, *TINY, "--limit-batches", "2", "--quiet"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert lnf(monkeypatch, *limited, "--epochs", "2", "--out", whole) == 0
    assert [json.loads(line)["step"] for line in (whole / "metrics.jsonl").open()] == [2, 4]
    assert lnf(monkeypatch, *limited, "--out", parts) == 0
    capsys.readouterr()
    assert lnf(monkeypatch, *AFSCF, "--out", parts, "--resume", "--limit-batches", "3") == 1
    assert "limit-batches 2 (given 3)" in capsys.readouterr().err
    # Left out, the limit is the run's.
    assert lnf(monkeypatch, *AFSCF, "--out", parts, "--resume", "--epochs", "2", "--quiet") == 0
    assert same_weights(whole / "last.pt", parts / "last.pt")


def test_tensorboard_scalars(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (in pyro-lnf[test])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert lnf(monkeypatch, *AFSCF, *TINY, "--limit-batches", "2", "--tensorboard",
               "--out", out, "--quiet") == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/beta", "step/lr", "step/kl", "epoch/train_loss",
            "epoch/valid_loss_beta1"} <= tags
    assert [e.step for e in events.Scalars("step/loss")] == [1, 2]
    metrics = json.loads((out / "metrics.jsonl").read_text())
    assert events.Scalars("epoch/valid_loss_beta1")[0].value == pytest.approx(
        metrics["valid_loss_beta1"])


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    assert lnf(monkeypatch, *AFSCF, *TINY, "--tensorboard", "--out", tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install "pyro-lnf[tensorboard]"' in err
    assert not (tmp_path / "run" / "last.pt").exists()
