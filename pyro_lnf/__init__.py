"""pyro-lnf: latent normalizing flows for discrete sequences, on Pyro.

The public API, re-exported here:

- flows (:mod:`pyro_lnf.transforms`): NLSq and affine maps, MADE, autoregressive and coupling
  flows around any elementwise map, stacks, and flows across time;
- distributions (:mod:`pyro_lnf.distributions`): von Mises–Fisher, uniform on the sphere,
  the length model p(T);
- models (:mod:`pyro_lnf.models`): the latent-flow model, the LSTM baseline, the sentence VAE
  and NVDM;
- data (:mod:`pyro_lnf.datasets`), training (:mod:`pyro_lnf.train`), evaluation
  (:mod:`pyro_lnf.evaluate`) and checkpoints (:mod:`pyro_lnf.checkpoint`). The functions
  ``train`` and ``evaluate`` stay in their modules: re-exported, they would shadow them.
- speed: reduced-precision evaluation (:mod:`pyro_lnf.nn.precision`) and an allocator setting
  for CPU runs (:mod:`pyro_lnf.nn.runtime`);
- sampling (:mod:`pyro_lnf.sample`): sequences and interpolations, sentences and homotopies
  of a sentence VAE, each drawn by the model's own ``generate()``.

Every name is imported on first use (PEP 562 module ``__getattr__``): ``import pyro_lnf`` and
``import pyro_lnf.errors`` load neither torch nor Pyro, so ``lnf --help`` stays fast;
``from pyro_lnf import LatentFlowModel`` imports what that name needs, as before.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (the flows' names come from
#: :data:`pyro_lnf.transforms.__all__`, looked up when first asked for).
_SOURCES: dict[str, str] = {
    **dict.fromkeys(
        ["load_checkpoint", "load_model", "save_checkpoint"],
        "pyro_lnf.checkpoint",
    ),
    **dict.fromkeys(["Batch", "Dataset", "iterate_batches", "load_dataset"], "pyro_lnf.datasets"),
    **dict.fromkeys(
        ["HypersphericalUniform", "LengthDistribution", "VonMisesFisher", "log_bessel_iv"],
        "pyro_lnf.distributions",
    ),
    **dict.fromkeys(
        ["CheckpointError", "ChecksumError", "ConfigError", "DatasetError", "DownloadError",
         "LnfError"],
        "pyro_lnf.errors",
    ),
    "importance_log_likelihood": "pyro_lnf.evaluate",
    **dict.fromkeys(["NVDM", "LatentFlowModel", "LSTMBaseline", "SentenceVAE"], "pyro_lnf.models"),
    "register_model": "pyro_lnf.models.registry",
    "bulk_precision": "pyro_lnf.nn.precision",
    "keep_freed_memory": "pyro_lnf.nn.runtime",
    "TrainConfig": "pyro_lnf.train",
    **dict.fromkeys(["TemporalFlow", "TemporalFlowDistribution"], "pyro_lnf.transforms.temporal"),
}


def _transform_names() -> list[str]:
    return list(importlib.import_module("pyro_lnf.transforms").__all__)


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = sorted([*_transform_names(), *_SOURCES])
    elif name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
    elif not name.startswith("_") and name in _transform_names():
        value = getattr(importlib.import_module("pyro_lnf.transforms"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
