"""`lnf plot` and :mod:`pyro_lnf.app.plot`: the figures' labelled axes, panels, best-epoch marker and
legends, checked through matplotlib's objects (Agg canvas, no pixels compared)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import matplotlib.image
import pytest

from pyro_lnf.app.plot import UNIT_NOTE, Run, best_epoch, curves_figure, read_run, read_runs
from pyro_lnf.errors import ConfigError
from helpers import run_lnf

matplotlib.use("Agg")


def write_metrics(run: Path, epochs: int = 4, lstm: bool = False, nll: bool = True) -> Path:
    """A metrics.jsonl as lnf train writes it: a flow run anneals β over epochs 0..2 (so its
    best epoch is the lowest β = 1 loss among epochs 3..), an LSTM has KL 0 at β = 1."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "metrics.jsonl", "w") as f:
        for epoch in range(epochs):
            beta = 1.0 if lstm else min(1.0, 0.4 * epoch)
            kl = 0.0 if lstm else 0.1 + 0.1 * epoch
            f.write(json.dumps({
                "epoch": epoch, "step": 10 * (epoch + 1), "beta": beta, "lr": 1e-3 / (1 + epoch),
                "anneal_done": lstm or beta == 1.0,
                "train_loss": 3.0 - 0.4 * epoch, "train_kl": kl,
                "valid_loss": 3.1 - 0.3 * epoch, "valid_kl": kl,
                # lowest at epoch 0 (still annealing, so no candidate), then at epoch 4
                "valid_loss_beta1": [2.0, 3.5, 3.3, 3.2, 3.0, 3.1][epoch],
                "valid_nll": 3.0 - 0.2 * epoch if nll and epoch % 2 else None,
            }) + "\n")
    return run


def visible_axes(figure):
    """The panels (twin axes share a panel's position and are left out)."""
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]
    return {ax.get_title(): ax for ax in panels}


def test_flow_run_has_loss_kl_beta_and_nll_panels_with_labelled_axes(tmp_path):
    run = read_run(write_metrics(tmp_path / "jsb-afaf", epochs=6))
    figure = curves_figure([run])
    panels = visible_axes(figure)
    assert list(panels) == ["loss", "KL(q(z|x) ‖ p(z))", "KL weight β and learning rate",
                            "validation NLL (importance-sampled)"]
    assert figure.get_suptitle() == "jsb-afaf: 6 epochs"
    for title in ("loss", "KL(q(z|x) ‖ p(z))", "validation NLL (importance-sampled)"):
        assert panels[title].get_ylabel().startswith("nats/unit")
    assert " ".join(figure.get_supxlabel().split()) == UNIT_NOTE and "Σ(T+1)" in UNIT_NOTE
    beta = panels["KL weight β and learning rate"]
    assert beta.get_ylabel() == "KL weight β"
    twins = [ax for ax in figure.axes if ax is not beta and ax.bbox.bounds == beta.bbox.bounds]
    assert [ax.get_ylabel() for ax in twins] == ["learning rate (log scale, dashed)"]
    assert twins[0].get_yscale() == "log"
    assert [t.get_text() for t in beta.get_legend().get_texts()] == [
        "β (left axis)", "learning rate (right axis)"]
    # the bottom panels carry the epoch axis; epochs as logged, from 0
    assert panels["KL weight β and learning rate"].get_xlabel() == "epoch (as logged, from 0)"
    loss = panels["loss"]
    train = next(line for line in loss.get_lines() if line.get_label().startswith("train"))
    assert list(train.get_xdata()) == [0, 1, 2, 3, 4, 5]
    labels = [text.get_text() for text in loss.get_legend().get_texts()]
    assert labels == ["train (β of the epoch)", "valid (β of the epoch)",
                      "valid −ELBO at β = 1", "best epoch 4: 3.000 nats/unit"]


def test_best_epoch_is_the_lowest_beta1_loss_after_annealing(tmp_path):
    run = read_run(write_metrics(tmp_path / "run", epochs=6))
    assert best_epoch(run) == (4.0, 3.0)  # epoch 0 is lower, but β was still ramping up
    loss = visible_axes(curves_figure([run]))["loss"]
    star = next(line for line in loss.get_lines() if line.get_marker() == "*")
    assert list(star.get_xdata()) == [4] and list(star.get_ydata()) == [3.0]
    assert 4 in [line.get_xdata()[0] for line in loss.get_lines() if line.get_linestyle() == ":"
                 and len(line.get_xdata()) == 2]  # the vertical line at the best epoch
    # a run still annealing has no best epoch, and says so
    young = read_run(write_metrics(tmp_path / "young", epochs=2))
    assert best_epoch(young) is None
    figure = curves_figure([young])
    assert "no best epoch" in figure.get_suptitle()
    assert not any(line.get_marker() == "*" for ax in figure.axes for line in ax.get_lines())


def test_lstm_run_has_no_kl_or_beta_panel(tmp_path):
    run = read_run(write_metrics(tmp_path / "jsb-lstm", lstm=True, nll=False))
    assert not run.has_latent
    panels = visible_axes(curves_figure([run]))
    assert list(panels) == ["loss (−log-likelihood)", "learning rate"]
    assert panels["learning rate"].get_ylabel() == "learning rate (log scale)"
    assert panels["learning rate"].get_yscale() == "log"
    assert panels["loss (−log-likelihood)"].get_xlabel() == "epoch (as logged, from 0)"
    labels = [t.get_text() for t in panels["loss (−log-likelihood)"].get_legend().get_texts()]
    assert labels[:2] == ["train", "valid"]


def test_several_runs_overlay_with_a_legend_naming_each_folder(tmp_path):
    runs = [read_run(write_metrics(tmp_path / "jsb-afaf", epochs=6)),
            read_run(write_metrics(tmp_path / "jsb-lstm", lstm=True))]
    figure = curves_figure(runs)
    assert figure.get_suptitle() == "2 runs: jsb-afaf, jsb-lstm"
    (legend,) = figure.legends
    entries = [text.get_text() for text in legend.get_texts()]
    assert entries[:2] == ["jsb-afaf (best: 3.000 nats/unit, epoch 4)",
                           "jsb-lstm (best: 2.000 nats/unit, epoch 0)"]  # no annealing
    assert "valid −ELBO at β = 1" in entries
    assert " ".join(legend.get_title().get_text().split()) == UNIT_NOTE
    panels = visible_axes(figure)
    assert "KL(q(z|x) ‖ p(z))" in panels
    kl_lines = [line.get_label() for line in panels["KL(q(z|x) ‖ p(z))"].get_lines()]
    assert kl_lines and all(label.startswith("jsb-afaf") for label in kl_lines)  # no LSTM KL
    beta = panels["KL weight β and learning rate"]
    assert len(beta.get_lines()) == 1  # β of the flow only ...
    (lr_axis,) = [ax for ax in figure.axes if ax is not beta and ax.bbox.bounds == beta.bbox.bounds]
    assert len(lr_axis.get_lines()) == 2  # ... but both runs' learning rates
    stars = [line for line in panels["loss"].get_lines() if line.get_marker() == "*"]
    assert len(stars) == 2


def test_lnf_plot_one_run_writes_run_curves(tmp_path, monkeypatch, capsys):
    run = write_metrics(tmp_path / "run")
    code, stdout, err = run_lnf(monkeypatch, capsys, "plot", str(run))
    assert code == 0, err
    assert stdout.strip() == str(run / "curves.png")
    image = matplotlib.image.imread(run / "curves.png")
    assert image.shape[0] > 300 and image.shape[1] > 500


def test_lnf_plot_several_runs_writes_one_overlay(tmp_path, monkeypatch, capsys):
    a, b = write_metrics(tmp_path / "a"), write_metrics(tmp_path / "b", lstm=True)
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_lnf(monkeypatch, capsys, "plot", str(a), str(b))
    assert code == 0, err
    assert stdout.strip() == "curves.png" and (tmp_path / "curves.png").is_file()
    code, stdout, err = run_lnf(monkeypatch, capsys, "plot", str(a), str(b), "--out",
                                str(tmp_path / "both.png"))
    assert code == 0, err
    assert stdout.strip() == str(tmp_path / "both.png") and (tmp_path / "both.png").is_file()
    assert not (a / "curves.png").exists() and not (b / "curves.png").exists()


def test_a_legend_wider_than_the_figure_is_saved_whole(tmp_path, monkeypatch, capsys):
    # Four runs with long folder names: the legend's three columns are wider than the figure,
    # so a plain savefig would cut its right-hand column off.
    names = [f"a-long-run-folder-name-{i}-for-the-legend" for i in range(4)]
    runs = [write_metrics(tmp_path / name, epochs=6) for name in names]
    legend = curves_figure([read_run(run) for run in runs], panels=["loss"]).legends[0]
    renderer = legend.figure.canvas.get_renderer()
    legend_width = legend.get_window_extent(renderer).width
    assert legend_width > legend.figure.bbox.width  # the case this test is about
    out = tmp_path / "wide.png"
    code, _, err = run_lnf(monkeypatch, capsys, "plot", *map(str, runs), "--panel", "loss",
                           "--out", str(out))
    assert code == 0, err
    assert matplotlib.image.imread(out).shape[1] >= legend_width


def test_overlay_of_same_named_folders_names_their_parents(tmp_path):
    runs = [write_metrics(tmp_path / "repro-jsb" / "afaf"),
            write_metrics(tmp_path / "repro-piano" / "afaf", lstm=True)]
    assert [run.name for run in map(read_run, runs)] == ["afaf", "afaf"]
    named = read_runs(runs)
    assert [run.name for run in named] == ["repro-jsb/afaf", "repro-piano/afaf"]
    assert curves_figure(named).get_suptitle() == "2 runs: repro-jsb/afaf, repro-piano/afaf"


def test_lnf_plot_bad_inputs_are_one_line(tmp_path, monkeypatch, capsys):
    def error(*args: str) -> str:
        code, _, err = run_lnf(monkeypatch, capsys, "plot", *args)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]

    assert "does not exist" in error(str(tmp_path / "nowhere"))
    assert "metrics.jsonl does not exist" in error(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text("")
    assert "holds no epochs" in error(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1, "train_loss": \n')
    assert "line 2: not valid JSON" in error(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text("[1, 2]\n")
    assert "line 1: expected a JSON object" in error(str(tmp_path))
    assert not (tmp_path / "curves.png").exists()
    good = write_metrics(tmp_path / "good")
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "metrics.jsonl").write_bytes(b"\xff\xfe\x00")
    assert f"{binary / 'metrics.jsonl'} is not UTF-8" in error(str(good), str(binary))
    assert "Missing argument" in error()


def test_runs_without_latent_or_lr_have_just_the_loss_panel():
    run = Run("bare", [{"epoch": 0, "train_loss": 2.0}, {"epoch": 1, "train_loss": 1.5}])
    panels = visible_axes(curves_figure([run]))
    assert list(panels) == ["loss (−log-likelihood)"]


def with_wall_clock(run: Path, hours_per_epoch: float) -> Path:
    """Add ``wall_s`` (seconds summed over resumes, as lnf train logs it) to each record."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        record["wall_s"] = 3600 * hours_per_epoch * (record["epoch"] + 1)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_hours_axis_places_each_epoch_at_its_wall_clock(tmp_path):
    fast = read_run(with_wall_clock(write_metrics(tmp_path / "fast", epochs=6), 0.25))
    slow = read_run(with_wall_clock(write_metrics(tmp_path / "slow", epochs=6), 1.0))
    figure = curves_figure([fast, slow], x="hours")
    loss = visible_axes(figure)["loss"]
    curves = {line.get_label(): line.get_xdata() for line in loss.get_lines()}
    assert list(curves["fast: train (β of the epoch)"]) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert list(curves["slow: train (β of the epoch)"]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    stars = [line for line in loss.get_lines() if line.get_marker() == "*"]
    assert sorted(star.get_xdata()[0] for star in stars) == [1.25, 5.0]  # best: epoch 4
    assert any(ax.get_xlabel() == "wall-clock (hours)" for ax in figure.axes)


def test_bits_divides_the_per_unit_panels_by_ln2(tmp_path):
    run = read_run(write_metrics(tmp_path / "ptb-afaf", epochs=6))
    nats, bits = curves_figure([run]), curves_figure([run], bits=True)
    for title in ("loss", "KL(q(z|x) ‖ p(z))", "validation NLL (importance-sampled)"):
        assert visible_axes(bits)[title].get_ylabel().startswith("bits/unit")
        def curves(figure):  # not the best epoch's vertical rule
            return [line for line in visible_axes(figure)[title].get_lines()
                    if not line.get_label().startswith("_")]

        assert len(curves(bits)) == len(curves(nats)) > 0
        for a, b in zip(curves(nats), curves(bits)):
            assert list(b.get_xdata()) == list(a.get_xdata())
            assert b.get_ydata() == pytest.approx([y / math.log(2) for y in a.get_ydata()])
    beta = "KL weight β and learning rate"
    assert [list(line.get_ydata()) for line in visible_axes(bits)[beta].get_lines()] == [
        list(line.get_ydata()) for line in visible_axes(nats)[beta].get_lines()]
    assert "best epoch 4: 4.328 bits/unit" in [
        t.get_text() for t in visible_axes(bits)["loss"].get_legend().get_texts()]


def test_lnf_plot_hours_and_bits(tmp_path, monkeypatch, capsys):
    timed = with_wall_clock(write_metrics(tmp_path / "timed"), 0.5)
    code, stdout, err = run_lnf(monkeypatch, capsys, "plot", str(timed), "--x", "hours",
                                "--bits", "--out", str(tmp_path / "t.png"))
    assert code == 0, err
    assert stdout.strip() == str(tmp_path / "t.png") and (tmp_path / "t.png").is_file()
    untimed = write_metrics(tmp_path / "untimed")
    code, _, err = run_lnf(monkeypatch, capsys, "plot", str(timed), str(untimed), "--x", "hours")
    assert code != 0 and err.strip() == (
        "error: run untimed logged no wall_s; plot it against the epoch")
    code, _, err = run_lnf(monkeypatch, capsys, "plot", str(timed), "--x", "minutes")
    assert code != 0 and len(err.strip().splitlines()) == 1


def test_panels_and_ylim_choose_what_is_drawn(tmp_path):
    run = read_run(write_metrics(tmp_path / "jsb-afaf", epochs=6))
    figure = curves_figure([run], panels=["loss", "nll"], ylim=(1.5, 3.5))
    panels = visible_axes(figure)
    assert list(panels) == ["loss", "validation NLL (importance-sampled)"]
    assert panels["loss"].get_ylim() == (1.5, 3.5) and panels["loss"].get_yscale() == "linear"
    assert curves_figure([run]).axes[0].get_yscale() == "linear"  # spans < 20x: linear anyway
    lstm = read_run(write_metrics(tmp_path / "jsb-lstm", lstm=True, nll=False))
    assert list(visible_axes(curves_figure([lstm], panels=["beta"]))) == ["learning rate"]
    for bad, message in ((["kl"], "no data for the kl panel"), (["nll"], "no data for the nll"),
                         (["pixels"], "unknown panel 'pixels'")):
        with pytest.raises(ConfigError, match=message):
            curves_figure([lstm], panels=bad)


def test_lnf_plot_panel_and_bad_ylim(tmp_path, monkeypatch, capsys):
    run = write_metrics(tmp_path / "run")
    code, _, err = run_lnf(monkeypatch, capsys, "plot", str(run), "--panel", "loss", "--panel",
                           "kl", "--ylim", "0.5,4")
    assert code == 0, err
    for bad in ("4,0.5", "1", "a,b", "nan,2", "1,2,3"):
        code, _, err = run_lnf(monkeypatch, capsys, "plot", str(run), "--ylim", bad)
        assert code != 0 and err.strip().splitlines() == [
            err.strip()] and "--ylim wants" in err, (bad, err)
