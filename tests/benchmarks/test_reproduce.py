"""benchmarks/reproduce.py and benchmarks/gpu_check.sh, end to end on CPU with tiny models.

Both scripts drive ``lnf`` as a subprocess, so these tests do too. The sizes are the smallest
that still train: one epoch of JSB Chorales in 3 steps of 100 sequences.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

SCRIPT = [sys.executable, str(REPO / "benchmarks" / "reproduce.py")]
TINY = ["--", "--hidden-size", "8", "--latent-dim", "4", "--flow-layers", "1",
        "--batch-size", "100", "--nll-every", "0"]


def run(command: list[str], data_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, LNF_DATA_DIR=str(data_dir), OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def reproduce(out: Path, data_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return run([*SCRIPT, "--dataset", "jsb_chorales", "--out", str(out), "--samples", "2",
                "--eval-batch-size", "80", *options, *TINY], data_dir)


def row(table: str, label: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_then_rerun_skips(tmp_path, data_dir):
    options = ["--models", "afaf,lstm", "--epochs", "1", "--kl-initial-zero", "0",
               "--kl-rampup", "0"]
    first = reproduce(tmp_path, data_dir, *options)
    assert first.returncode == 0, first.stderr
    table = (tmp_path / "results.md").read_text()
    afaf, lstm = row(table, "AF/AF"), row(table, "LSTM (exact)")
    for cells, paper in ((afaf, "6.53"), (lstm, "8.17")):
        assert all(float(x) > 0 for x in cells[1:4])  # NLL, per frame, -ELBO
        assert cells[4] == "1 (best 1)" and cells[7] == "cpu" and cells[9] == paper
        assert cells[6].endswith(" s")  # the evaluation's time
        assert cells[8].split("+")[0] in subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    state = json.loads((tmp_path / "results.json").read_text())
    assert state["models"]["lstm"]["evaluation"]["results"]["model"] == "lstm"
    assert state["protocol"]["lnf_train_extra"] == TINY[1:]

    metrics = (tmp_path / "afaf" / "metrics.jsonl").read_text()
    best = (tmp_path / "afaf" / "best.pt").stat().st_mtime_ns
    second = reproduce(tmp_path, data_dir, *options)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("not retrained") == 2
    assert second.stderr.count("already evaluated") == 2
    assert (tmp_path / "afaf" / "metrics.jsonl").read_text() == metrics
    assert (tmp_path / "afaf" / "best.pt").stat().st_mtime_ns == best
    assert (tmp_path / "results.md").read_text() == table


def test_budget_ends_each_model_after_the_epoch_that_spends_it_then_rerun_resumes(
        tmp_path, data_dir):
    # 1000 epochs cannot fit in a second: lnf train --max-time ends the run after an epoch.
    first = reproduce(tmp_path, data_dir, "--models", "afaf", "--epochs", "1000",
                      "--budget", "1s")
    assert first.returncode == 0, first.stderr
    log = (tmp_path / "afaf" / "train.log").read_text()
    assert "--max-time 1.000s" in log and "stopped: --max-time spent" in log
    assert (tmp_path / "afaf" / "last.pt").exists()
    cells = row((tmp_path / "results.md").read_text(), "AF/AF")
    reached = len((tmp_path / "afaf" / "metrics.jsonl").read_text().splitlines())
    # The preset's KL schedule (20 + 15 epochs) is not over: no best.pt, last.pt evaluated.
    assert 1 <= reached < 1000
    assert cells[4] == f"{reached} of 1000, budget-limited (last.pt: no best.pt yet)"
    assert float(cells[1]) > 0

    # A larger budget goes on (without one, a resumed run keeps the budget it was given).
    second = reproduce(tmp_path, data_dir, "--models", "afaf", "--epochs", str(reached + 1),
                       "--budget", "1h")
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr
    lines = (tmp_path / "afaf" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(reached + 1))
    assert row((tmp_path / "results.md").read_text(), "AF/AF")[4].startswith(f"{reached + 1} (")


def test_evaluation_resumes_its_partial_file_and_restarts_it_for_other_options(
        tmp_path, data_dir):
    options = ["--models", "lstm", "--epochs", "1", "--eval-batch-size", "20"]
    first = reproduce(tmp_path, data_dir, *options)
    assert first.returncode == 0, first.stderr
    partial = tmp_path / "lstm" / "test.partial"
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + 4  # the header, then a line per batch of 20 of the 77 pieces
    state_path = tmp_path / "results.json"
    state = json.loads(state_path.read_text())
    figures = {key: value for key, value in state["models"]["lstm"].pop("evaluation")[
        "results"].items() if key.startswith(("nll_", "elbo_"))}
    assert figures
    state_path.write_text(json.dumps(state))
    partial.write_text("\n".join(lines[:3]) + "\n")  # as if stopped after two batches

    second = reproduce(tmp_path, data_dir, *options)
    assert second.returncode == 0, second.stderr
    assert "evaluating best.pt (K = 2, resuming)" in second.stderr
    results = json.loads(state_path.read_text())["models"]["lstm"]["evaluation"]["results"]
    assert {key: results[key] for key in figures} == figures
    assert partial.read_text().splitlines() == lines

    # Other evaluation options: the kept batches no longer apply, and lnf evaluate would
    # refuse the file, so it starts afresh.
    third = reproduce(tmp_path, data_dir, *options, "--eval-batch-size", "40")
    assert third.returncode == 0, third.stderr
    assert "evaluating best.pt (K = 2)" in third.stderr
    assert len(partial.read_text().splitlines()) == 1 + 2
    assert json.loads(partial.read_text().splitlines()[0])["batch_size"] == 40


def test_bf16_is_for_the_flows_the_lstm_evaluates_in_float32(tmp_path, data_dir):
    from pyro_lnf.nn.precision import bf16_lstm_supported

    models = "afaf,lstm" if bf16_lstm_supported() else "lstm"  # an AVX2-only CPU: no bf16 LSTM
    result = reproduce(tmp_path, data_dir, "--models", models, "--epochs", "1",
                       "--kl-initial-zero", "0", "--kl-rampup", "0", "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    state = json.loads((tmp_path / "results.json").read_text())["models"]
    for model in models.split(","):
        evaluation = state[model]["evaluation"]
        expected = "fp32" if model == "lstm" else "bf16"
        assert evaluation["results"]["precision"] == evaluation["key"]["precision"] == expected


def test_commits_are_those_the_run_recorded(tmp_path, data_dir):
    # A run begun at another commit (by hand, or in another checkout) and resumed here: the
    # table names the commits of its run.json, not only the one reproduce.py runs at.
    options = ["--models", "lstm", "--epochs", "1"]
    assert reproduce(tmp_path, data_dir, *options).returncode == 0
    record_path = tmp_path / "lstm" / "run.json"
    record = json.loads(record_path.read_text())
    record["git_commit"], record["git_dirty"] = "0123456789abcdef", False
    record["resumed"] = [{"git_commit": record["git_commit"], "git_dirty": True},
                         {"git_commit": "fedcba9876543210" + "0" * 24, "git_dirty": False}]
    record_path.write_text(json.dumps(record))
    second = reproduce(tmp_path, data_dir, *options)
    assert second.returncode == 0, second.stderr
    entry = json.loads((tmp_path / "results.json").read_text())["models"]["lstm"]
    assert entry["commits"] == ["0123456", "0123456+dirty", "fedcba9"]
    assert row((tmp_path / "results.md").read_text(), "LSTM (exact)")[8] == \
        "0123456, 0123456+dirty, fedcba9"


def test_a_partial_evaluation_begun_under_other_settings_restarts(tmp_path, data_dir):
    # reproduce.py's own key (checkpoint, options) matches, but lnf evaluate refuses the kept
    # file (here: begun with another CPU thread count): the evaluation starts afresh.
    options = ["--models", "lstm", "--epochs", "1"]
    assert reproduce(tmp_path, data_dir, *options).returncode == 0
    state = json.loads((tmp_path / "results.json").read_text())
    first = state["models"]["lstm"].pop("evaluation")["results"]
    (tmp_path / "results.json").write_text(json.dumps(state))
    partial = tmp_path / "lstm" / "test.partial"
    header, *batches = partial.read_text().splitlines()
    partial.write_text("\n".join([json.dumps({**json.loads(header), "cpu_threads": 99}),
                                   *batches]) + "\n")
    second = reproduce(tmp_path, data_dir, *options)
    assert second.returncode == 0, second.stderr
    assert ("lstm: the kept evaluation differs in cpu_threads 99 (now 1); moved to "
            "test.partial.stale, evaluating afresh") in second.stderr
    assert json.loads((tmp_path / "lstm" / "test.partial.stale").read_text().splitlines()[0])[
        "cpu_threads"] == 99  # set aside, not deleted
    again = json.loads((tmp_path / "results.json").read_text())["models"]["lstm"]["evaluation"]
    assert again["results"] == first


@pytest.mark.parametrize("options", [
    ["--dataset", "mnist"],
    ["--dataset", "jsb_chorales", "--models", "afaf,rnn"],
    ["--dataset", "jsb_chorales", "--budget", "soon"],
    ["--dataset", "jsb_chorales", "--samples", "0"],
    ["--dataset", "jsb_chorales", "--", "--out", "elsewhere"],
])
def test_bad_input_is_one_line(tmp_path, data_dir, options):
    result = run([*SCRIPT, "--out", str(tmp_path / "r"), *options], data_dir)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_failed_lnf_is_one_line(tmp_path, data_dir):
    result = run([*SCRIPT, "--dataset", "jsb_chorales", "--models", "lstm", "--out",
                  str(tmp_path), "--", "--hidden-size", "-3"], data_dir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: lnf train for lstm failed")
    assert "Traceback" not in result.stderr
    # What ran is recorded even for a training that did not end (failed, or stopped).
    entry = json.loads((tmp_path / "results.json").read_text())["models"]["lstm"]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    assert entry["devices"] == ["cpu"] and entry["commits"][0].split("+")[0] == head


needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="gpu_check.sh needs bash and coreutils' timeout")


@needs_bash
def test_gpu_check_small_on_cpu(data_dir):
    # About 25 s on two shared cores: four parts at tiny sizes, one summary.
    result = run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--small",
                  "--budget", "240"], data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout[result.stdout.index("gpu_check: device cpu"):]
    for part in ("cuda-tests", "sample-speed", "train-speed", "jsb-afaf"):
        assert f"| {part:<12} | ok " in summary
    assert "IAF/SCF speed-up over the LSTM" in summary and "test NLL" in summary


@needs_bash
def test_gpu_check_reports_a_spent_budget(data_dir):
    result = run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--small",
                  "--budget", "0"], data_dir)
    assert result.returncode == 1
    assert result.stdout.count("skipped (budget spent)") == 4
