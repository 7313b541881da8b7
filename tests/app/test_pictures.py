"""Piano-roll pictures: a sample's figure and an interpolation grid have time (frames and
seconds), pitch (note names at the C keys) and a title; checked through matplotlib's objects."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_lnf.errors import ConfigError
from pyro_lnf.app.files import interpolation_figure, note_name, roll_figure, save_figure


def test_note_names_follow_midi_60_is_c4():
    assert [note_name(p) for p in (21, 24, 60, 61, 69, 108)] == [
        "A0", "C1", "C4", "C♯4", "A4", "C8"]


def chord_roll() -> np.ndarray:
    roll = np.zeros((10, 88))
    roll[0:4, 60 - 21] = 1   # C4
    roll[2:9, 64 - 21] = 1   # E4
    roll[5, 79 - 21] = 1     # G5
    return roll


def test_roll_figure_has_time_pitch_and_title():
    figure = roll_figure(chord_roll(), title="a chord", tempo=90, frames_per_beat=2)
    ax = figure.axes[0]
    assert ax.get_title() == "a chord"
    assert ax.get_ylabel() == "pitch"
    assert ax.get_xlabel() == "time (frames; 2 per beat at 90 beats per minute)"
    # the pitch axis spans whole octaves around the notes, named at every C
    assert [t.get_text() for t in ax.get_yticklabels()] == ["C4", "C5", "C6"]
    assert list(ax.get_yticks()) == [60, 72, 84]
    # the data shown is the roll, cell for cell
    image = ax.get_images()[0]
    assert image.get_extent() == [0, 10, 59.5, 84.5]
    shown = np.asarray(image.get_array())
    assert np.array_equal(shown, chord_roll()[:, 60 - 21:84 - 21 + 1].T > 0)
    # seconds on the top axis, at the MIDI file's tempo: 2 frames per beat at 90 bpm
    (seconds,) = ax.child_axes
    assert seconds.get_xlabel() == "seconds"
    frame = 60 / (90 * 2)
    figure.canvas.draw()  # the secondary axis takes its limits from the frames' at draw time
    assert seconds.get_xlim() == pytest.approx((0, 10 * frame))


def test_interpolation_grid_marks_its_endpoints(tmp_path):
    rolls = [chord_roll(), chord_roll()[:7], chord_roll()[::-1]]
    figure = interpolation_figure(rolls, [0.0, 0.5, 1.0], ends=("test sequence 2", "test 9"),
                                  title="a path", tempo=120, frames_per_beat=1)
    assert figure.get_suptitle() == "a path"
    rows = [ax for ax in figure.axes if ax.get_images()]
    assert len(rows) == 3
    assert [ax.get_ylabel() for ax in rows] == [
        "A: test sequence 2\nα = 0.00", "α = 0.50", "B: test 9\nα = 1.00"]
    thick = [max(spine.get_linewidth() for spine in ax.spines.values()) for ax in rows]
    assert thick[0] > 2 and thick[2] > 2 and thick[1] < 2  # the ends are framed
    for ax in rows:  # one time axis for all, padded to the longest
        assert ax.get_images()[0].get_extent()[:2] == [0, 10]
        assert "C4" in [t.get_text() for t in ax.get_yticklabels()]
    assert rows[-1].get_xlabel().startswith("time (frames")
    assert rows[0].child_axes[0].get_xlabel() == "seconds"
    path = save_figure(tmp_path / "grid.png", figure)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_figures_refuse_bad_rolls():
    with pytest.raises(ConfigError, match="empty piano roll"):
        roll_figure(np.zeros((0, 88)))
    with pytest.raises(ConfigError, match=r"shape \(T, 88\)"):
        roll_figure(np.zeros((4, 12)))
    with pytest.raises(ConfigError, match="one α per roll"):
        interpolation_figure([chord_roll()] * 3, [0.0, 1.0])
    with pytest.raises(ConfigError, match="--tempo"):
        roll_figure(chord_roll(), tempo=0)
