"""Sampling and outputs: `lnf sample` files read back to what was drawn, seeds reproduce, the
prior's log-density accumulated while sampling is its density (`lnf plot`: test_plot.py)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pretty_midi
import pytest
import torch
from helpers import TINY, assert_one_line_error, run_lnf

from pyro_lnf.checkpoint import save_checkpoint
from pyro_lnf.datasets import load_dataset
from pyro_lnf.errors import ConfigError
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.lnf import PRIORS, LatentFlowModel
from pyro_lnf.app.files import roll_to_midi, roll_to_png
from pyro_lnf.sample import interpolate, sample_sequences, unpad

TINY_LSTM = dict(hidden_size=12, embedding_dim=8, length_dim=4, dropout=0.0)


def flow_model(kind: str = "binary", prior: str = "afscf", **extra) -> LatentFlowModel:
    features = 88 if kind == "binary" else 7
    return LatentFlowModel(kind=kind, num_features=features, max_length=16,
                           lengths=[3, 5, 6, 9], prior=prior, **TINY, **extra)


def lstm_model(kind: str) -> LSTMBaseline:
    features = 88 if kind == "binary" else 7
    return LSTMBaseline(kind=kind, num_features=features, max_length=16, lengths=[3, 5, 6, 9],
                        **TINY_LSTM)


def runs(column: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of ones in a 0/1 column, by a plain scan."""
    found, start = [], None
    for t, value in enumerate(list(column) + [0]):
        if value and start is None:
            start = t
        elif not value and start is not None:
            found.append((start, t))
            start = None
    return found


def roll_from_midi(path: Path, frames: int, frames_per_second: float) -> np.ndarray:
    roll = np.zeros((frames, 88))
    notes = pretty_midi.PrettyMIDI(str(path)).instruments[0].notes
    for note in notes:
        roll[round(note.start * frames_per_second):round(note.end * frames_per_second),
             note.pitch - 21] = 1
    return roll


# ------------------------------------------------------------------------------------------
# music through the command line


@pytest.fixture
def jsb_checkpoint(tmp_path: Path, data_dir: Path, monkeypatch) -> Path:
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))
    jsb = load_dataset("jsb_chorales", data_dir=data_dir)
    model = LatentFlowModel(kind="binary", num_features=88, max_length=40,
                            lengths=jsb.lengths("train"), prior="afscf", dataset="jsb_chorales",
                            **TINY)
    return save_checkpoint(tmp_path / "jsb.pt", module=model)


def figure_roll(figure) -> np.ndarray:
    """The (T, 88) 0/1 roll a piano-roll figure's (first) image shows, from its pixels' data
    and extent (pitch low - 0.5 .. high + 0.5): matplotlib's objects, not rendered pixels."""
    image = figure.axes[0].get_images()[0]
    rows = np.asarray(image.get_array())
    low = round(image.get_extent()[2] + 0.5)
    roll = np.zeros((rows.shape[1], 88))
    roll[:, low - 21:low - 21 + rows.shape[0]] = rows.T
    return roll


@pytest.fixture
def saved_figures(monkeypatch) -> dict[str, object]:
    """File name -> the matplotlib Figure that `lnf sample` wrote there."""
    from pyro_lnf.app import files as outputs

    figures: dict[str, object] = {}
    save = outputs.save_figure

    def keep(path, figure):
        figures[Path(path).name] = figure
        return save(path, figure)

    monkeypatch.setattr(outputs, "save_figure", keep)
    return figures


def test_cli_midi_and_png_hold_the_sampled_rolls(jsb_checkpoint, tmp_path, monkeypatch, capsys,
                                                 saved_figures):
    out = tmp_path / "samples"
    code, _, err = run_lnf(monkeypatch, capsys, "sample", str(jsb_checkpoint), "-n", "3",
                           "--length", "12", "--tempo", "90", "--seed", "5", "--format", "midi",
                           "--format", "png", "--format", "npz", "--out", str(out))
    assert code == 0, err
    arrays = np.load(out / "samples.npz")
    assert arrays["lengths"].tolist() == [12, 12, 12]
    frames_per_second = 90 * 1 / 60  # JSB: one frame per beat
    merged_notes = 0
    for i, (roll, n) in enumerate(zip(arrays["x"], arrays["lengths"])):
        roll = roll[:n]
        assert roll.any()
        midi = pretty_midi.PrettyMIDI(str(out / f"sample_{i:03d}.mid"))
        notes = sorted((n.pitch - 21, n.start, n.end) for n in midi.instruments[0].notes)
        # One note per run of active frames: a held note is ONE note, spanning its run.
        expected = sorted((k, s / frames_per_second, e / frames_per_second)
                          for k in range(88) for s, e in runs(roll[:, k]))
        assert len(notes) == len(expected)
        for got, want in zip(notes, expected):  # MIDI stores the tempo in whole µs per beat
            assert got[0] == want[0] and got[1:] == pytest.approx(want[1:], rel=1e-5)
        merged_notes += sum(e - s > 1 for k in range(88) for s, e in runs(roll[:, k]))
        assert np.array_equal(
            roll_from_midi(out / f"sample_{i:03d}.mid", n, frames_per_second), roll)
        assert matplotlib.image.imread(out / f"sample_{i:03d}.png").shape[0] > 200
        figure = saved_figures[f"sample_{i:03d}.png"]
        assert np.array_equal(figure_roll(figure), roll > 0)
        assert f"sample {i} · seed 5" in figure.axes[0].get_title()
        assert "AF/SCF on jsb_chorales" in figure.axes[0].get_title()
    assert merged_notes > 0  # the merge above was exercised, not vacuous


def test_cli_sampling_is_reproducible_by_seed(jsb_checkpoint, tmp_path, monkeypatch, capsys):
    drawn = []
    for seed, folder in [(7, "a"), (7, "b"), (8, "c")]:
        code, _, err = run_lnf(monkeypatch, capsys, "sample", str(jsb_checkpoint), "-n", "2",
                               "--seed", str(seed), "--format", "npz", "--out",
                               str(tmp_path / folder))
        assert code == 0, err
        drawn.append(np.load(tmp_path / folder / "samples.npz"))
    assert np.array_equal(drawn[0]["x"], drawn[1]["x"])
    assert np.array_equal(drawn[0]["lengths"], drawn[1]["lengths"])
    assert drawn[0]["x"].shape != drawn[2]["x"].shape or not np.array_equal(drawn[0]["x"],
                                                                            drawn[2]["x"])


def test_cli_interpolation_writes_one_grid_and_a_midi_file_per_point(
        jsb_checkpoint, tmp_path, monkeypatch, capsys, data_dir, saved_figures):
    out = tmp_path / "path"
    code, _, err = run_lnf(monkeypatch, capsys, "sample", str(jsb_checkpoint), "--interpolate",
                           "0", "3", "--steps", "4", "--format", "midi", "--format", "png",
                           "--format", "npz", "--out", str(out))
    assert code == 0, err
    test = load_dataset("jsb_chorales", data_dir=data_dir).splits["test"]
    arrays = np.load(out / "interps.npz")
    assert arrays["lengths"].tolist() == [max(len(test[0]), len(test[3]))] * 4
    assert arrays["alpha"].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert sorted(p.name for p in out.glob("*.mid")) == [f"interp_{i:03d}.mid" for i in range(4)]
    assert sorted(p.name for p in out.glob("*.png")) == ["interp.png"]
    grid = saved_figures["interp.png"]
    rows = [ax for ax in grid.axes if ax.get_images()]
    assert len(rows) == 4
    for ax, roll, n in zip(rows, arrays["x"], arrays["lengths"]):
        shown = np.asarray(ax.get_images()[0].get_array())
        low = round(ax.get_images()[0].get_extent()[2] + 0.5)
        assert np.array_equal(shown, roll[:n, low - 21:low - 21 + shown.shape[0]].T > 0)
    assert rows[0].get_ylabel().startswith("A: test sequence 0")
    assert rows[-1].get_ylabel().startswith("B: test sequence 3")
    assert "z = (1 − α) μ(test 0) + α μ(test 3)" in grid.get_suptitle()
    # the default for a music path: MIDI and the grid
    code, _, err = run_lnf(monkeypatch, capsys, "sample", str(jsb_checkpoint), "--interpolate",
                           "0", "3", "--steps", "3", "--out", str(tmp_path / "default"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == [
        "interp.png", "interp_000.mid", "interp_001.mid", "interp_002.mid"]


def test_cli_bad_sample_options_are_one_line(jsb_checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "never"
    cases = [
        (["--format", "txt"], "--format txt needs a text model"),
        (["--interpolate", "0", "77"], "test sequence 77 does not exist"),
        (["--tempo", "0"], "'--tempo': 0.0 is not in the range 1.0<=x<=1000.0"),
        (["--velocity", "200"], "'--velocity': 200 is not in the range 1<=x<=127"),
        (["--temperature", "-1"], "'--temperature': -1.0 is not in the range 1e-06<=x<=100.0"),
        (["-n", "0"], "0 is not in the range 1<=x<=10000"),
        (["--length", "0"], "0 is not in the range 1<=x<=100000"),
        (["--steps", "1", "--interpolate", "0", "1"], "1 is not in the range 2<=x<=1000"),
    ]
    for extra, needle in cases:
        code, _, err = run_lnf(monkeypatch, capsys, "sample", str(jsb_checkpoint), *extra,
                               "--out", str(out))
        assert_one_line_error(code, err, needle)
    code, _, err = run_lnf(monkeypatch, capsys, "sample", str(tmp_path / "missing.pt"),
                           "--out", str(out))
    assert_one_line_error(code, err, "missing.pt does not exist")
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# text


def test_cli_text_samples_decode_through_the_vocabulary(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))
    vocab = load_dataset("ptb_char", data_dir=data_dir).vocab
    model = LatentFlowModel(kind="categorical", num_features=len(vocab), max_length=20,
                            lengths=[4, 9, 15], prior="iafscf", dataset="ptb_char", **TINY)
    checkpoint = save_checkpoint(tmp_path / "ptb.pt", module=model)
    out = tmp_path / "text"
    code, stdout, err = run_lnf(monkeypatch, capsys, "sample", str(checkpoint), "-n", "4",
                                "--format", "txt", "--format", "npz", "--out", str(out))
    assert code == 0, err
    arrays = np.load(out / "samples.npz")
    expected = ["".join(vocab.itos[i] for i in ids[:n] if i != vocab.pad_index)
                for ids, n in zip(arrays["x"].tolist(), arrays["lengths"])]
    assert stdout.splitlines() == expected
    assert (out / "samples.txt").read_text(encoding="utf-8").splitlines() == expected
    assert any(line.strip() for line in expected)

    code, _, err = run_lnf(monkeypatch, capsys, "sample", str(checkpoint), "--format", "midi",
                           "--out", str(out))
    assert_one_line_error(code, err, "--format midi needs a music model")


# ------------------------------------------------------------------------------------------
# the library


@pytest.mark.parametrize("kind", ["binary", "categorical"])
@pytest.mark.parametrize("model_name", [*sorted(PRIORS), "lstm"])
def test_sampling_is_deterministic_under_a_seed(kind, model_name):
    model = lstm_model(kind) if model_name == "lstm" else flow_model(kind, model_name)
    model.train()
    before = torch.get_rng_state()
    x1, n1 = sample_sequences(model, 5, seed=11)
    x2, n2 = sample_sequences(model, 5, seed=11)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    assert model.training  # and so is its mode
    assert torch.equal(x1, x2) and torch.equal(n1, n2)
    x3, n3 = sample_sequences(model, 5, seed=12)
    assert not (torch.equal(n1, n3) and torch.equal(x1, x3))
    # Padded steps hold 0 and the lengths come from p(T)'s support.
    assert x1.shape[:2] == (5, int(n1.max())) and bool((n1 >= 1).all())
    for seq, n in zip(x1, n1.tolist()):
        assert not seq[n:].any()
    assert [len(s) for s in unpad(x1, n1)] == n1.tolist()


class _Repeater(torch.nn.Module):
    """A model of the user's own that honours SequenceGenerator: lengths from a fixed p(T),
    and each sequence its length's last digit, repeated."""

    class _Lengths:
        def distribution(self):
            return torch.distributions.Categorical(probs=torch.tensor([0.0, 0.0, 0.5, 0.5]))

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.length_model = self._Lengths()

    def generate(self, lengths, *, temperature=1.0, decode="sample"):
        steps = torch.arange(int(lengths.max()))
        return torch.where(steps < lengths[:, None], lengths[:, None] % 10, 0)


def test_any_model_with_a_length_model_and_generate_is_sampled_the_same_way():
    x, n = sample_sequences(_Repeater(), 6, seed=3)
    assert set(n.tolist()) <= {2, 3} and x.shape == (6, int(n.max()))
    assert [seq.tolist() for seq in unpad(x, n)] == [[k] * k for k in n.tolist()]
    with pytest.raises(ConfigError, match="needs a model with a length model and generate"):
        sample_sequences(torch.nn.Linear(2, 2), 2)


@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_prior_log_prob_while_sampling_equals_density_pass(prior, temperature):
    flow = flow_model("binary", prior).double().eval().prior
    lengths = torch.tensor([6, 2, 4])
    with torch.no_grad():
        z, while_sampling = flow.sample(lengths, 6, temperature, with_log_prob=True)
        density = flow.log_prob(z, lengths)
    assert z.dtype == torch.float64 and bool(torch.isfinite(z).all())
    assert torch.allclose(while_sampling, density, rtol=1e-9, atol=1e-9)
    assert bool((density[torch.arange(6) >= lengths[:, None]] == 0).all())


@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_temperature_scales_the_prior_noise(prior):
    """As tau -> 0 a flow's z tends to f(0): mode decodes stop depending on the seed."""
    model = flow_model("binary", prior)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)  # an untrained model barely reads z; make the dependence visible
    cold = [sample_sequences(model, 3, length=6, temperature=1e-6, decode="mode", seed=s)[0]
            for s in (1, 2)]
    warm = [sample_sequences(model, 3, length=6, temperature=1.0, decode="mode", seed=s)[0]
            for s in (1, 2)]
    assert torch.equal(cold[0], cold[1])
    assert not torch.equal(warm[0], warm[1])


@pytest.mark.parametrize("kind", ["binary", "categorical"])
def test_lstm_sampler_feeds_back_what_teacher_forcing_reads(kind):
    """Greedy decoding: each sampled step is the argmax of the teacher-forced logits of the
    finished sequence, so input, features and state were carried exactly."""
    model = lstm_model(kind).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)  # strong enough that every input moves the argmax
    x, lengths = sample_sequences(model, 4, lengths=[7, 3, 5, 7], decode="mode", seed=0)
    with torch.no_grad():
        logits = model.eval().logits(x, lengths)
    valid = torch.arange(7) < lengths[:, None]
    greedy = logits.argmax(-1) if kind == "categorical" else (logits > 0).double()
    assert torch.equal(greedy[valid], x[valid])
    assert len(torch.unique(x[valid], dim=0)) > 1  # the argmax moves: the check has teeth


def test_interpolation_ends_decode_the_two_encodings():
    model = flow_model("binary", "afscf").double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    g = torch.Generator().manual_seed(0)
    x_a = (torch.rand(5, 88, generator=g, dtype=torch.float64) < 0.2).double()
    x_b = (torch.rand(3, 88, generator=g, dtype=torch.float64) < 0.2).double()
    path, lengths = interpolate(model, x_a, x_b, steps=5)
    assert path.shape == (5, 5, 88) and lengths.tolist() == [5] * 5
    padded_b = torch.cat([x_b, torch.zeros(2, 88, dtype=torch.float64)])
    with torch.no_grad():
        loc, _ = model.encoder(torch.stack([x_a, padded_b]), torch.tensor([5, 5]))
        ends = (model.emission(loc, torch.tensor([5, 5])) > 0).double()
    assert torch.equal(path[0], ends[0]) and torch.equal(path[-1], ends[1])
    same, _ = interpolate(model, x_a, x_a, steps=3)
    assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2])
    with pytest.raises(ConfigError, match="latent-flow model"):
        interpolate(lstm_model("binary"), x_a, x_b, steps=3)


def test_roll_to_midi_merges_held_frames_into_one_note():
    roll = np.zeros((6, 88))
    roll[0:3, 39] = 1  # held three frames
    roll[4, 39] = 1  # struck again after a rest
    roll[:, 87] = 1  # the top key, held from the first to the last frame
    roll[5, 0] = 1  # the bottom key, on the last frame only
    midi = roll_to_midi(roll, tempo=100, frames_per_beat=2, velocity=64)
    frame = 60 / (100 * 2)
    notes = sorted((n.pitch, n.start, n.end, n.velocity) for n in midi.instruments[0].notes)
    want = sorted([(60, 0, 3 * frame, 64), (60, 4 * frame, 5 * frame, 64),
                   (108, 0, 6 * frame, 64), (21, 5 * frame, 6 * frame, 64)])
    assert [n[0] for n in notes] == [w[0] for w in want]
    assert np.allclose([n[1:] for n in notes], [w[1:] for w in want])
    with pytest.raises(ConfigError, match=r"shape \(T, 88\)"):
        roll_to_midi(np.zeros((4, 12)))


def test_png_is_one_block_per_cell(tmp_path):
    roll = np.zeros((7, 88))
    roll[2:5, 10] = roll[6, 87] = roll[0, 0] = 1
    image = matplotlib.image.imread(roll_to_png(tmp_path / "roll.png", roll, scale=3))
    assert image.shape[:2] == (88 * 3, 7 * 3)
    black = image[:, :, :3].max(-1) < 0.5
    assert np.array_equal(black, np.kron(roll.T[::-1], np.ones((3, 3))) > 0)
