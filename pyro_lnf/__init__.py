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
- speed: reduced-precision evaluation (:mod:`pyro_lnf.precision`) and an allocator setting
  for CPU runs (:mod:`pyro_lnf.runtime`);
- sampling: sequences and interpolations (:mod:`pyro_lnf.sample`), sentences and homotopies
  of a sentence VAE (:mod:`pyro_lnf.sentences`).
"""

from pyro_lnf.checkpoint import load_checkpoint, load_model, register_model, save_checkpoint
from pyro_lnf.datasets import Batch, Dataset, iterate_batches, load_dataset
from pyro_lnf.distributions import (
    HypersphericalUniform,
    LengthDistribution,
    VonMisesFisher,
    log_bessel_iv,
)
from pyro_lnf.errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    DatasetError,
    DownloadError,
    LnfError,
)
from pyro_lnf.evaluate import importance_log_likelihood
from pyro_lnf.models import NVDM, LatentFlowModel, LSTMBaseline, SentenceVAE
from pyro_lnf.precision import bulk_precision
from pyro_lnf.runtime import keep_freed_memory
from pyro_lnf.train import TrainConfig
from pyro_lnf.transforms import *  # noqa: F403  (the flow library's own __all__)
from pyro_lnf.transforms import __all__ as _transforms_all
from pyro_lnf.transforms.temporal import TemporalFlow, TemporalFlowDistribution

__version__ = "0.1.0"

__all__ = sorted(
    [
        *_transforms_all,
        "NVDM",
        "Batch",
        "CheckpointError",
        "ChecksumError",
        "ConfigError",
        "Dataset",
        "DatasetError",
        "DownloadError",
        "HypersphericalUniform",
        "LSTMBaseline",
        "LatentFlowModel",
        "LengthDistribution",
        "LnfError",
        "SentenceVAE",
        "TemporalFlow",
        "TemporalFlowDistribution",
        "TrainConfig",
        "VonMisesFisher",
        "bulk_precision",
        "importance_log_likelihood",
        "iterate_batches",
        "keep_freed_memory",
        "load_checkpoint",
        "load_dataset",
        "load_model",
        "log_bessel_iv",
        "register_model",
        "save_checkpoint",
    ]
)
