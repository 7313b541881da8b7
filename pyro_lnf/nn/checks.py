"""Bounds of the command line's options and their one range check, in a module that imports
nothing heavy (the standard library and :mod:`pyro_lnf.errors`).

The click app (:mod:`pyro_lnf.app.cli`) reads these when its options are declared, i.e. on
every ``lnf`` call, ``lnf --help`` included; keeping them here (not in
:mod:`pyro_lnf.evaluate`, :mod:`pyro_lnf.app.files` or :mod:`pyro_lnf.sample`, which import
torch and Pyro) keeps ``lnf --help`` and argument errors fast. Those modules check the same
bounds for Python callers (:func:`check_between`; :class:`pyro_lnf.train.TrainConfig` uses it
too).

The models' constructors share the other small validators (:func:`check_sizes` for sizes
and dropout, :func:`check_choice`, :func:`check_positive_int`).
"""

from __future__ import annotations

import numbers
from typing import Any

from pyro_lnf.errors import ConfigError

__all__ = [
    "DATASET_NAMES",
    "MAX_BATCH_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_FRAMES",
    "MAX_FRAMES_PER_BEAT",
    "MAX_LENGTH",
    "MAX_NUM",
    "MAX_SAMPLES",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_TEMPERATURE",
    "MAX_TEMPO",
    "MAX_VELOCITY",
    "MIN_TEMPERATURE",
    "MIN_TEMPO",
    "MIN_VELOCITY",
    "check_between",
    "check_choice",
    "check_positive_int",
    "check_sizes",
]

#: Every dataset :data:`pyro_lnf.datasets.DATASETS` registers, in its order: the names
#: ``--dataset`` offers, kept here because the registry imports torch (the registry refuses to
#: load if the two differ).
DATASET_NAMES = (
    "jsb_chorales", "nottingham", "muse_data", "piano_midi", "ptb_char", "ptb_words", "20news",
)

# -- lnf evaluate --------------------------------------------------------------------------
#: K only costs time, since samples run in chunks: 100000 is 200x the paper's K = 500 ...
MAX_SAMPLES = 100_000
#: ... while memory grows with chunk x batch x the longest item of the split: each bound is
#: generous alone, and :data:`pyro_lnf.evaluate.MAX_PASS_UNITS` bounds the product.
MAX_BATCH_SIZE = 4096
MAX_CHUNK_SIZE = 4096

# -- MIDI output (lnf sample) --------------------------------------------------------------
#: Tempo bounds in beats per minute: far beyond any marking (Larghissimo ~20, Prestissimo
#: ~200), while a tempo near 0 would stretch a frame to centuries of seconds.
MIN_TEMPO, MAX_TEMPO = 1.0, 1000.0
#: Most frames per beat: the file's tick resolution is lcm(480, frames per beat), and every
#: grid up to 64 (a 256th note per quarter) keeps it within MIDI's 15-bit division (32767).
MAX_FRAMES_PER_BEAT = 64
#: MIDI note velocities: 0 means note-off, 127 is the largest 7-bit value.
MIN_VELOCITY, MAX_VELOCITY = 1, 127

# -- lnf sample ----------------------------------------------------------------------------
#: Generous for research, but each one stops an allocation or a run that could never finish:
#: at most MAX_NUM sequences ...
MAX_NUM = 10_000
#: ... of at most MAX_LENGTH steps (MuseData's longest test piece has 4273 frames) ...
MAX_LENGTH = 100_000
#: ... and at most MAX_FRAMES steps in the padded batch (N x T, or points x T on a path):
#: the flows' activations are N x T x hidden (~2 GB at hidden 500 for 10^6 steps), so it is
#: the product, not either factor, that exhausts memory.
MAX_FRAMES = 1_000_000
#: Points on an interpolation path.
MAX_STEPS = 1_000
#: The LSTM's logits are divided by the temperature, so a tiny one overflows float32 (and a
#: huge one only draws noise); the flows scale their noise by it.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-6, 100.0
#: Seeds go to numpy's generator too (pyro.set_rng_seed), which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_between(option: str, value: Any, low: float, high: float) -> None:
    """Refuse ``value`` unless it lies in ``[low, high]``, naming ``option`` and both bounds.

    The one range check of the options, for training, sampling and evaluation alike (the
    CLI's click ranges read the same bounds). An integer is required where ``low`` is one;
    NaN fails every comparison and so is refused too, as are booleans (an ``int`` to Python,
    never a size to a user).

    :raises ConfigError: e.g. ``--num must be between 1 and 10000, got 1000000000``.
    """
    kinds = numbers.Integral if isinstance(low, int) else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise ConfigError(
            f"{option} must be between {_bound(low)} and {_bound(high)}, got {value!r}"
        )


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``choices``, naming ``what`` and the choices.

    :raises ConfigError: e.g. ``unknown latent 'normal'; choose one of gaussian, vmf``.
    """
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def check_positive_int(what: str, value: Any) -> None:
    """Refuse anything but an integer of at least 1 (a boolean is not a size).

    :raises ConfigError: e.g. ``latent_dim must be a positive integer, got 0``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


def _bound(value: float) -> str:
    """A bound as a user types it: ``10000``, ``0.01``, ``1e-06`` (``:g`` alone gives 1e+04)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_sizes(dropout: float, **sizes: int) -> None:
    """Refuse non-positive sizes and a dropout outside [0, 1) with a :class:`ConfigError`
    naming the option, before torch fails deeper down with a less helpful message."""
    for name, value in sizes.items():
        check_positive_int(name, value)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
