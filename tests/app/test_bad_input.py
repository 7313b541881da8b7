"""Bad input to `lnf train`, `lnf evaluate`, `lnf sample` and `lnf plot`: each case is one line of the
table below, and each must end in exactly one line on stderr starting with "error:", a
non-zero exit status (2: click refused an option, 1: the library refused the input) and no
traceback. The options are checked before any model is sampled or evaluated.

The table runs in this process through ``main``, the console script's code path (it turns a
library error into that line and ``sys.exit``); one case also runs as a real ``lnf`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_lnf.checkpoint import save_checkpoint
from pyro_lnf.datasets import load_dataset
from pyro_lnf.models.lnf import LatentFlowModel
from helpers import REPO, TINY, run_lnf

# (arguments, text the error line must hold, exit status). In the arguments, {jsb} is a good
# JSB Chorales checkpoint, {out} an unused output directory, {dir} an existing directory and
# {file} an existing file; every other {name} is a bad file made by `bad_files` below.
CASES = [
    # lnf evaluate: bounds on every size-like option, in the message
    ("evaluate {jsb} --samples 0", "0 is not in the range 1<=x<=100000", 2),
    ("evaluate {jsb} --samples 1000000000", "1000000000 is not in the range 1<=x<=100000", 2),
    ("evaluate {jsb} --batch-size 0", "'--batch-size': 0 is not in the range 1<=x<=4096", 2),
    ("evaluate {jsb} --batch-size 100000", "100000 is not in the range 1<=x<=4096", 2),
    ("evaluate {jsb} --chunk-size 0", "'--chunk-size': 0 is not in the range 1<=x<=4096", 2),
    ("evaluate {jsb} --chunk-size -5", "'--chunk-size': -5 is not in the range", 2),
    ("evaluate {jsb} --samples 4096 --chunk-size 4096 --batch-size 4096",
     "must be at most 8000000 per pass, got 4096 x 4096 x 160", 1),
    ("evaluate {jsb} --seed -1", "'--seed': -1 is not in the range 0<=x<=4294967295", 2),
    ("evaluate {jsb} --seed 18446744073709551616", "is not in the range 0<=x<=4294967295", 2),
    ("evaluate {jsb} --split dev", "'dev' is not one of 'train', 'valid', 'test'", 2),
    # --device: only cpu and cuda[:N]
    ("evaluate {jsb} --device mps", "device 'mps' is not supported; use cpu, cuda or cuda:N", 1),
    ("evaluate {jsb} --device meta", "device 'meta' is not supported", 1),
    ("evaluate {jsb} --device xla", "device 'xla' is not supported", 1),
    ("evaluate {jsb} --device cpu:1", "device 'cpu:1' is not supported", 1),
    ("evaluate {jsb} --device gpu", "unknown device 'gpu'; use cpu, cuda or cuda:N", 1),
    ("evaluate {jsb} --device cuda:99", "device 'cuda:99' requested but", 1),
    ("sample {jsb} --out {out} --device mps", "device 'mps' is not supported", 1),
    # checkpoints: wrong kind of file, damaged parts, non-finite weights, another dataset
    ("evaluate {dir}", "is a directory", 2),
    ("evaluate {empty}", "is truncated, corrupt or unsafe to load", 1),
    ("evaluate {no_progress}", "is damaged: its progress is missing", 1),
    ("sample {no_state_dict} --out {out}", "is damaged: its model.state_dict is missing", 1),
    ("evaluate {bad_constraint}", "names an unknown constraint 'wobbly'", 1),
    ("evaluate {nan_weights}", "holds NaN or infinite values", 1),
    ("sample {nan_weights} --out {out}", "holds NaN or infinite values", 1),
    ("evaluate {ptb_other_vocab}", "the model has 60 symbols, the dataset 51", 1),
    ("sample {ptb_other_vocab} --out {out}", "does not fit dataset 'ptb_char'", 1),
    ("evaluate {music_on_text}", "reads binary data, the dataset is categorical", 1),
    ("sample {music_on_text} --out {out} --interpolate 0 1", "reads binary data", 1),
    ("evaluate {no_dataset}", "does not name its dataset", 1),
    ("evaluate {unknown_dataset}", "nonesuch", 1),
    # lnf sample: bounds, alone and as a product
    ("sample {jsb} --out {out} -n 1000000000", "1000000000 is not in the range 1<=x<=10000", 2),
    ("sample {jsb} --out {out} --length 1000000000", "is not in the range 1<=x<=100000", 2),
    ("sample {jsb} --out {out} -n 10000 --length 1000",
     "-n x --length must be at most 1000000 steps in one batch, got 10000 x 1000", 1),
    ("sample {jsb} --out {out} --temperature inf", "inf is not in the range 1e-06<=x<=100.0", 2),
    ("sample {jsb} --out {out} --temperature nan", "--temperature must be between 1e-06 and "
                                                   "100, got nan", 1),
    ("sample {jsb} --out {out} --temperature 0", "0.0 is not in the range 1e-06<=x<=100.0", 2),
    ("sample {jsb} --out {out} --tempo inf", "inf is not in the range 1.0<=x<=1000.0", 2),
    ("sample {jsb} --out {out} --tempo nan", "--tempo must be between 1 and 1000, got nan", 1),
    ("sample {jsb} --out {out} --tempo 0.001", "0.001 is not in the range 1.0<=x<=1000.0", 2),
    ("sample {jsb} --out {out} --frames-per-beat 0", "0 is not in the range 1<=x<=64", 2),
    ("sample {jsb} --out {out} --frames-per-beat 97", "97 is not in the range 1<=x<=64", 2),
    ("sample {jsb} --out {out} --velocity 0", "0 is not in the range 1<=x<=127", 2),
    ("sample {jsb} --out {out} --velocity 128", "128 is not in the range 1<=x<=127", 2),
    ("sample {jsb} --out {out} --seed 4294967296", "is not in the range 0<=x<=4294967295", 2),
    ("sample {jsb} --out {out} --interpolate 0 1 --steps 1000000",
     "1000000 is not in the range 2<=x<=1000", 2),
    ("sample {jsb} --out {out} --interpolate 0 -1", "test sequence -1 does not exist", 1),
    ("sample {jsb} --out {out} --interpolate 77 0", "test sequence 77 does not exist: "
                                                    "jsb_chorales has 77 test sequences", 1),
    ("sample {jsb} --out {file}", "is a file", 2),
    ("sample {dir} --out {out}", "is a directory", 2),
    ("sample {jsb} --out {out} --length x", "'x' is not a valid integer", 2),
    # lnf train: sizes, ranges and resumes ({T} is `train --model afaf --dataset jsb_chorales`)
    ("{T} --out {out} --hidden-size 1000000000", "1000000000 is not in the range 1<=x<=8192", 2),
    ("{T} --out {out} --flow-layers 100000", "100000 is not in the range 1<=x<=64", 2),
    ("{T} --out {out} --latent-dim 0", "0 is not in the range 1<=x<=4096", 2),
    ("train --model svae --dataset ptb_words --out {out} --kappa -1",
     "-1.0 is not in the range 0<x<=10000.0", 2),
    ("{T} --out {out} --batch-size 999999999999",
     "batch_size must be between 1 and 100000, got 999999999999", 1),
    ("{T} --out {out} --epochs -1", "epochs must be between 0 and 100000, got -1", 1),
    ("{T} --out {out} --lr nan", "lr must be between 0 and 1000, got nan", 1),
    ("{T} --out {out} --lr inf", "lr must be between 0 and 1000, got inf", 1),
    ("{T} --out {out} --seed 4294967296", "seed must be between 0 and 4294967295", 1),
    ("{T} --out {out} --checkpoint-every 0", "'0' is neither a number of steps", 2),
    ("{T} --out {out} --checkpoint-every 1e9m", "nor of minutes (e.g. 10m; at most a week)", 2),
    ("{T} --out {out} --max-time soon", "'soon' is not a duration such as 2h", 2),
    ("{T} --out {out} --max-time 2y", "'2y' is not a duration such as 2h", 2),
    ("{T} --out {out} --patience 0", "patience must be between 1 and 100000, got 0", 1),
    ("{T} --out {out} --device meta", "device 'meta' is not supported", 1),
    ("{T} --out {file}", "is a file", 2),
    ("{T} --out {out} --resume", "never/last.pt does not exist", 1),
    ("{T} --out {jsb_run} --resume", "is truncated, corrupt or unsafe to load", 1),
    # lnf plot
    ("plot {file}", "is a file", 2),
    ("plot {corrupt_run}", "metrics.jsonl, line 2: not valid JSON", 1),
    ("plot {binary_run}", "metrics.jsonl is not UTF-8 text", 1),
]


def _damaged(path: Path, source: Path, edit) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, data_dir) -> dict[str, str]:
    """The files the table names, made once for the module."""
    root = tmp_path_factory.mktemp("bad")
    jsb = load_dataset("jsb_chorales", data_dir=data_dir)
    model = LatentFlowModel(kind="binary", num_features=88, max_length=40,
                            lengths=jsb.lengths("train"), prior="afscf", dataset="jsb_chorales",
                            **TINY)
    good = save_checkpoint(root / "jsb.pt", module=model)
    (root / "file.txt").write_text("not a directory\n")
    (root / "empty.pt").write_bytes(b"")

    def nan(checkpoint):
        next(iter(checkpoint["model"]["state_dict"].values())).view(-1)[0] = float("nan")

    def config(**changes):
        return lambda checkpoint: checkpoint["model"]["config"].update(changes)

    files = {
        "jsb": good,
        "out": root / "never",
        "dir": root,
        "file": root / "file.txt",
        "empty": root / "empty.pt",
        "no_progress": _damaged(root / "np.pt", good, lambda c: c.pop("progress")),
        "no_state_dict": _damaged(root / "ns.pt", good, lambda c: c["model"].pop("state_dict")),
        "bad_constraint": _damaged(
            root / "bc.pt", good, lambda c: c["param_store"].update(
                params={"x": torch.zeros(1)}, constraints={"x": "wobbly"})),
        "nan_weights": _damaged(root / "nan.pt", good, nan),
        "music_on_text": _damaged(root / "mt.pt", good, config(dataset="ptb_char")),
        "no_dataset": _damaged(root / "nd.pt", good, config(dataset=None)),
        "unknown_dataset": _damaged(root / "ud.pt", good, config(dataset="nonesuch")),
    }
    # A ptb_char model whose output layer has 60 symbols: trained on another vocabulary.
    text = LatentFlowModel(kind="categorical", num_features=60, max_length=20,
                           lengths=[4, 9, 15], prior="iafscf", dataset="ptb_char", **TINY)
    files["ptb_other_vocab"] = save_checkpoint(root / "ptb60.pt", module=text)
    (root / "jsb_run").mkdir()  # a run folder whose last.pt is a torn copy of a checkpoint
    (root / "jsb_run" / "last.pt").write_bytes(Path(good).read_bytes()[:1000])
    files["jsb_run"] = root / "jsb_run"
    for name, content in [("corrupt_run", b'{"epoch": 0}\n{"epoch": 1, "train_loss": \n'),
                          ("binary_run", b"\xff\xfe\x00\x01 not text\n")]:
        (root / name).mkdir()
        (root / name / "metrics.jsonl").write_bytes(content)
        files[name] = root / name
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize("command, needle, status", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(command, needle, status, bad_files, data_dir, monkeypatch,
                               capsys):
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))
    command = command.replace("{T}", "train --model afaf --dataset jsb_chorales")
    args = [arg.format(**bad_files) for arg in command.split()]
    code, _, err = run_lnf(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert code == status, (code, lines[0])
    assert not Path(bad_files["out"]).exists()  # nothing written


def test_a_real_lnf_process_fails_in_one_line(tmp_path, data_dir):
    """The table's path as its own process: a library error (not click's) is one line on
    stderr, exit status 1 and no traceback."""
    done = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "train", "--model", "afaf", "--dataset",
         "jsb_chorales", "--out", str(tmp_path / "never"), "--resume"],
        cwd=REPO, env={**os.environ, "LNF_DATA_DIR": str(data_dir)}, capture_output=True,
        text=True, timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert "never/last.pt does not exist" in done.stderr
    assert done.returncode == 1 and not (tmp_path / "never").exists()
