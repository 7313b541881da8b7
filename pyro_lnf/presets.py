"""Per-dataset training defaults from the authors' commands (textflow-spec §11.2).

``lnf train`` starts from these and lets any option override them. Model sizes are the paper's
everywhere (latent 50, LSTMs 500, 5 flow layers of a 2x100 MADE or coupling network), except
IAF/SCF on PTB, which the authors ran with 3 layers and no dropout.
"""

from __future__ import annotations

from typing import Any

from pyro_lnf.errors import ConfigError

MUSIC = ("jsb_chorales", "nottingham", "muse_data", "piano_midi")
TEXT = ("ptb_char",)
FLOW_MODELS = ("afaf", "afscf", "iafscf", "indep")
MODELS = (*FLOW_MODELS, "lstm")

_FLOW_MUSIC: dict[str, Any] = dict(
    lr=1e-3, optimizer="adam", particles=1, kl_initial_zero=20, kl_rampup=15, patience=2,
    nll_samples=30, dropout=0.2,
)
_LSTM: dict[str, Any] = dict(
    lr=20.0, optimizer="sgd", particles=1, kl_initial_zero=0, kl_rampup=0, dropout=0.1,
    nll_samples=0,
)

_DATASET_FLOW: dict[str, dict[str, Any]] = {
    "jsb_chorales": dict(_FLOW_MUSIC, batch_size=5, eval_batch_size=64),
    "nottingham": dict(_FLOW_MUSIC, batch_size=5, eval_batch_size=8),
    "muse_data": dict(_FLOW_MUSIC, batch_size=1, eval_batch_size=1, grad_accum=8, nll_samples=4),
    "piano_midi": dict(_FLOW_MUSIC, batch_size=1, eval_batch_size=1, grad_accum=8, nll_samples=4),
    "ptb_char": dict(
        lr=1e-3, optimizer="adam", particles=10, kl_initial_zero=4, kl_rampup=10, patience=1,
        nll_samples=30, dropout=0.2, batch_size=15, eval_batch_size=15,
    ),
}
_DATASET_LSTM: dict[str, dict[str, Any]] = {
    name: dict(_LSTM, batch_size=15, eval_batch_size=15, patience=1 if name in TEXT else 4)
    for name in (*MUSIC, *TEXT)
}


def preset(model: str, dataset: str) -> dict[str, Any]:
    """Training and model defaults for ``model`` on ``dataset`` (a fresh dict)."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if dataset not in _DATASET_FLOW:
        raise ConfigError(
            f"no training preset for dataset {dataset!r}; choose one of {', '.join(_DATASET_FLOW)}"
        )
    if model == "lstm":
        settings = dict(_DATASET_LSTM[dataset])
    else:
        settings = dict(_DATASET_FLOW[dataset])
        if model == "iafscf" and dataset in TEXT:
            settings.update(flow_layers=3, dropout=0.0)
    settings.setdefault("epochs", 100)
    return settings
