"""Writing samples out: piano rolls as MIDI and PNG, token ids as text, anything as ``.npz``.

Piano rolls follow the datasets' convention (:mod:`pyro_lnf.datasets.base`): a 0/1 array
``(T, 88)`` whose column ``k`` is MIDI pitch ``k + 21`` (A0 to C8), one row per time step. The
polyphonic datasets use one step per quarter note (JSB Chorales) or per eighth note (the
others, Boulanger-Lewandowski et al. 2012), hence :data:`FRAMES_PER_BEAT`.

A piano roll cannot tell a held note from a note struck again on the next step, so a key
active over consecutive frames becomes ONE note (the reading under which the datasets' rolls
were made from MIDI). Every file is written atomically (temporary name, then rename).

Example::

    >>> roll = np.zeros((4, 88)); roll[0:3, 39] = 1       # middle C held for three frames
    >>> [(n.pitch, n.start, n.end) for n in roll_to_midi(roll, tempo=120).instruments[0].notes]
    [(60, 0.0, 1.5)]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import torch

from pyro_lnf.errors import ConfigError
from pyro_lnf.io import atomic_write
# Bounds of the MIDI options, re-exported (the click app reads them from pyro_lnf.nn.checks).
from pyro_lnf.nn.checks import (  # noqa: F401
    check_between,
    MAX_FRAMES_PER_BEAT,
    MAX_TEMPO,
    MAX_VELOCITY,
    MIN_TEMPO,
    MIN_VELOCITY,
)

__all__ = [
    "FRAMES_PER_BEAT",
    "LOWEST_PITCH",
    "NUM_KEYS",
    "check_between",
    "check_midi_options",
    "frames_per_beat_for",
    "interpolation_figure",
    "note_name",
    "require_matplotlib",
    "roll_figure",
    "roll_to_midi",
    "roll_to_png",
    "save_figure",
    "write_midi",
    "write_npz",
    "write_text",
]

#: MIDI pitch of column 0 of a piano roll (A0).
LOWEST_PITCH = 21
#: Columns of a piano roll: the 88 keys of a piano.
NUM_KEYS = 88
#: Time steps per beat of each polyphonic dataset (JSB: quarter notes; others: eighth notes).
FRAMES_PER_BEAT = {"jsb_chorales": 1, "nottingham": 2, "muse_data": 2, "piano_midi": 2}


def frames_per_beat_for(dataset: str | None) -> int:
    """The time grid of a dataset's rolls in frames per beat (2, eighth notes, if unknown)."""
    return FRAMES_PER_BEAT.get(dataset or "", 2)


def _as_roll(roll: np.ndarray | torch.Tensor) -> np.ndarray:
    """A boolean ``(T, 88)`` array; anything else is refused with the shape it had."""
    if isinstance(roll, torch.Tensor):
        roll = roll.detach().cpu().numpy()
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != NUM_KEYS:
        raise ConfigError(f"a piano roll must have shape (T, {NUM_KEYS}), got {roll.shape}")
    return roll > 0.5


def check_midi_options(tempo: float, frames_per_beat: int, velocity: int) -> None:
    """Refuse MIDI settings that cannot make a file (before any expensive sampling).

    :raises ConfigError: a tempo outside :data:`MIN_TEMPO` .. :data:`MAX_TEMPO` (or not
        finite), a grid outside 1 .. :data:`MAX_FRAMES_PER_BEAT`, a velocity outside 1..127.
    """
    check_between("--tempo", tempo, MIN_TEMPO, MAX_TEMPO)
    check_between("--frames-per-beat", frames_per_beat, 1, MAX_FRAMES_PER_BEAT)
    check_between("--velocity", velocity, MIN_VELOCITY, MAX_VELOCITY)


def roll_to_midi(
    roll: np.ndarray | torch.Tensor,
    *,
    tempo: float = 120.0,
    frames_per_beat: int = 1,
    velocity: int = 80,
    program: int = 0,
) -> pretty_midi.PrettyMIDI:
    r"""A :class:`pretty_midi.PrettyMIDI` with one note per run of active frames of each key.

    Frame ``t`` spans :math:`[t\,\Delta, (t+1)\,\Delta)` seconds, :math:`\Delta =
    60 / (\text{tempo} \cdot \text{frames\_per\_beat})`; a key active on frames
    ``s .. e-1`` (and not on ``s-1`` nor ``e``) becomes one note from :math:`s\Delta` to
    :math:`e\Delta`. The tick resolution is a multiple of ``frames_per_beat``, so frame
    boundaries fall on exact ticks and the file reads back to the same roll.

    :param roll: ``(T, 88)``, nonzero (> 0.5) where a key sounds.
    :param tempo: beats per minute.
    :param frames_per_beat: time steps per beat (see :data:`FRAMES_PER_BEAT`).
    :param velocity: MIDI velocity of every note, 1..127.
    :param program: General MIDI program (0: acoustic grand piano).
    """
    check_midi_options(tempo, frames_per_beat, velocity)
    active = _as_roll(roll)
    frame = 60.0 / (tempo * frames_per_beat)
    midi = pretty_midi.PrettyMIDI(
        resolution=math.lcm(480, frames_per_beat), initial_tempo=float(tempo)
    )
    instrument = pretty_midi.Instrument(program=program)
    # Onsets and offsets are where a key's column changes value, with silence on either side.
    edges = np.diff(np.pad(active, ((1, 1), (0, 0))).astype(np.int8), axis=0)
    onset_t, onset_k = np.nonzero(edges == 1)
    offset_t, offset_k = np.nonzero(edges == -1)
    # Sorting both by (key, time) pairs each onset with the offset that ends its run.
    on = np.lexsort((onset_t, onset_k))
    off = np.lexsort((offset_t, offset_k))
    for start, end, key in zip(onset_t[on], offset_t[off], onset_k[on]):
        instrument.notes.append(
            pretty_midi.Note(velocity=velocity, pitch=int(key) + LOWEST_PITCH,
                             start=float(start * frame), end=float(end * frame))
        )
    instrument.notes.sort(key=lambda note: (note.start, note.pitch))
    midi.instruments.append(instrument)
    return midi


def write_midi(path: str | os.PathLike, roll: np.ndarray | torch.Tensor, **options: Any) -> Path:
    """Write :func:`roll_to_midi` of ``roll`` to ``path`` (atomically) and return the path."""
    midi = roll_to_midi(roll, **options)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        midi.write(f)
    return path


def require_matplotlib() -> Any:
    """Import matplotlib (an optional dependency) and return it, or say how to install it.

    :raises ConfigError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
        import matplotlib.image
    except ImportError as err:
        raise ConfigError(
            "writing PNG files needs matplotlib: pip install 'pyro-lnf[plot]'"
        ) from err
    return matplotlib


def roll_to_png(
    path: str | os.PathLike, roll: np.ndarray | torch.Tensor, *, scale: int = 4
) -> Path:
    """Write a piano roll as a PNG image of exactly ``(88 * scale, T * scale)`` pixels.

    Time runs left to right, pitch bottom (A0) to top (C8); each (frame, key) cell is a
    ``scale`` x ``scale`` block: black where the key sounds, white where it is silent, and
    light grey on the rows of the C keys as a guide. No axes or margins, so pixels map to cells
    exactly. Needs matplotlib (``pip install 'pyro-lnf[plot]'``).
    """
    if not (isinstance(scale, int) and scale >= 1):
        raise ConfigError(f"PNG scale must be a positive integer, got {scale!r}")
    active = _as_roll(roll)
    if active.shape[0] == 0:
        raise ConfigError("cannot draw an empty piano roll")
    matplotlib = require_matplotlib()
    image = np.ones((NUM_KEYS, active.shape[0], 3))
    image[(np.arange(NUM_KEYS) + LOWEST_PITCH) % 12 == 0] = 0.85
    image[active.T] = 0.0
    image = image[::-1].repeat(scale, axis=0).repeat(scale, axis=1)  # highest key on top
    path = Path(path)
    with atomic_write(path, "wb") as f:
        matplotlib.image.imsave(f, image, format="png")
    return path


#: Names of the pitch classes, C first (MIDI pitch 60 is C4, "middle C").
_PITCH_CLASSES = ("C", "C♯", "D", "D♯", "E", "F", "F♯", "G", "G♯", "A", "A♯", "B")


def note_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI pitch: ``60 -> "C4"``, ``21 -> "A0"``, ``108 -> "C8"``."""
    return f"{_PITCH_CLASSES[pitch % 12]}{pitch // 12 - 1}"


def _pitch_window(active: np.ndarray) -> tuple[int, int]:
    """(lowest, highest) MIDI pitch drawn: the sounding keys widened to the C at or below the
    lowest and the C at or above the highest (at least an octave), so that a figure spends
    its height on the notes and its pitch axis starts and ends on a labelled C."""
    keys = np.nonzero(active.reshape(-1, NUM_KEYS).any(0))[0]
    if keys.size == 0:
        return 48, 84  # C3 .. C6: an empty roll still gets a readable pitch axis
    low = max(LOWEST_PITCH, (int(keys.min()) + LOWEST_PITCH) // 12 * 12)
    high = min(LOWEST_PITCH + NUM_KEYS - 1, -(-(int(keys.max()) + LOWEST_PITCH) // 12) * 12)
    if high - low < 12:
        high = min(LOWEST_PITCH + NUM_KEYS - 1, low + 12)
    return low, high


def _draw_roll(ax: Any, active: np.ndarray, window: tuple[int, int], seconds_per_frame: float,
               *, seconds_axis: bool = True, pitch_labels: str = "all") -> None:
    """Draw ``active`` ``(T, 88)`` into ``ax``: frame t spans [t, t+1) on x, pitch p spans
    [p - 0.5, p + 0.5] on y; C keys named on the y axis and ruled; seconds on a top axis."""
    low, high = window
    rows = active[:, low - LOWEST_PITCH:high - LOWEST_PITCH + 1].T
    ax.imshow(rows, origin="lower", aspect="auto", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest", extent=(0, active.shape[0], low - 0.5, high + 0.5))
    cs = [p for p in range(low, high + 1) if p % 12 == 0]
    for p in cs:
        ax.axhline(p, color="tab:blue", alpha=0.25, linewidth=0.6)
    if pitch_labels == "ends":
        cs = sorted({cs[0], cs[-1], *(p for p in cs if p == 60)})
    ax.set_yticks(cs, [note_name(p) for p in cs])
    ax.set_ylim(low - 0.5, high + 0.5)
    ax.set_xlim(0, active.shape[0])
    if seconds_axis:
        top = ax.secondary_xaxis(
            "top", functions=(lambda f: f * seconds_per_frame, lambda t: t / seconds_per_frame))
        top.set_xlabel("seconds")


def roll_figure(
    roll: np.ndarray | torch.Tensor,
    *,
    title: str = "piano roll",
    tempo: float = 120.0,
    frames_per_beat: int = 1,
    dpi: int = 100,
) -> Any:
    """A :class:`matplotlib.figure.Figure` of one piano roll with labelled axes: time in
    frames (bottom) and in seconds at ``tempo`` and ``frames_per_beat`` (top, as the MIDI file
    plays it), pitch by note name at every C (MIDI 60 = C4), and ``title``. The pitch axis spans
    the sounding keys widened to whole octaves. Needs matplotlib."""
    check_midi_options(tempo, frames_per_beat, MIN_VELOCITY)
    active = _as_roll(roll)
    if active.shape[0] == 0:
        raise ConfigError("cannot draw an empty piano roll")
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    window = _pitch_window(active)
    width = min(16.0, max(6.0, 2.0 + active.shape[0] * 0.08))
    height = min(7.0, max(3.2, 1.8 + (window[1] - window[0]) * 0.045))
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    _draw_roll(ax, active, window, 60.0 / (tempo * frames_per_beat))
    ax.set_xlabel(f"time (frames; {frames_per_beat} per beat at {tempo:g} beats per minute)")
    ax.set_ylabel("pitch")
    ax.set_title(title)
    return figure


def interpolation_figure(
    rolls: Sequence[np.ndarray | torch.Tensor],
    alphas: Sequence[float],
    *,
    ends: tuple[str, str] = ("A", "B"),
    title: str = "interpolation",
    tempo: float = 120.0,
    frames_per_beat: int = 1,
    dpi: int = 80,
) -> Any:
    """One figure of an interpolation path: a row per point, top (α = 0) to bottom (α = 1),
    on shared time and pitch axes; the two endpoints framed in colour and labelled with
    ``ends`` (e.g. ``("test sequence 0", "test sequence 5")``). Needs matplotlib."""
    check_midi_options(tempo, frames_per_beat, MIN_VELOCITY)
    actives = [_as_roll(roll) for roll in rolls]
    if len(actives) < 2 or len(actives) != len(alphas):
        raise ConfigError(
            f"an interpolation figure needs one α per roll and at least 2 rolls, got "
            f"{len(actives)} rolls and {len(alphas)} αs"
        )
    if min(len(active) for active in actives) == 0:
        raise ConfigError("cannot draw an empty piano roll")
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = max(len(active) for active in actives)
    padded = np.zeros((len(actives), frames, NUM_KEYS), dtype=bool)
    for i, active in enumerate(actives):
        padded[i, :len(active)] = active
    window = _pitch_window(padded)
    row_height = min(1.6, max(1.0, (window[1] - window[0]) * 0.035))
    width = min(14.0, max(7.0, 2.5 + frames * 0.07))
    figure = Figure(figsize=(width, 0.9 + row_height * len(actives)), dpi=dpi,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(actives), 1, sharex=True, squeeze=False)[:, 0]
    seconds_per_frame = 60.0 / (tempo * frames_per_beat)
    end_colours = ("tab:red", "tab:green")
    for i, (ax, active, alpha) in enumerate(zip(axes, padded, alphas)):
        _draw_roll(ax, active, window, seconds_per_frame, seconds_axis=i == 0,
                   pitch_labels="ends")
        label = f"α = {float(alpha):.2f}"
        end = 0 if i == 0 else 1 if i == len(actives) - 1 else None
        if end is not None:
            label = f"{'AB'[end]}: {ends[end]}\n{label}"
            for spine in ax.spines.values():
                spine.set_edgecolor(end_colours[end])
                spine.set_linewidth(2.5)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small",
                      color="black" if end is None else end_colours[end])
        ax.tick_params(axis="y", labelsize="x-small")
    axes[-1].set_xlabel(f"time (frames; {frames_per_beat} per beat at {tempo:g} beats per minute)")
    figure.suptitle(title)
    return figure


def save_figure(path: str | os.PathLike, figure: Any) -> Path:
    """Write a matplotlib figure as PNG (atomically) and return the path."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png")
    return path


def write_text(path: str | os.PathLike, lines: Sequence[str]) -> Path:
    """Write one sample per line (UTF-8, atomically); newlines inside a sample are escaped."""
    path = Path(path)
    with atomic_write(path, "w") as f:
        for line in lines:
            f.write(line.replace("\n", "\\n") + "\n")
    return path


def write_npz(path: str | os.PathLike, **arrays: np.ndarray | torch.Tensor) -> Path:
    """Write arrays (tensors are moved to the CPU) as an uncompressed ``.npz``, atomically.

    Read back with ``np.load(path)`` (no pickles inside: ``allow_pickle`` can stay False).
    """
    plain = {
        name: value.detach().cpu().numpy() if isinstance(value, torch.Tensor)
        else np.asarray(value)
        for name, value in arrays.items()
    }
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(f, **plain)
    return path
