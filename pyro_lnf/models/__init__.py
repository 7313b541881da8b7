"""Models on the shared contract (:mod:`pyro_lnf.models.base`): the latent-flow model, the
LSTM baseline, and the Gaussian/vMF sentence VAE and NVDM. Each registers itself
(:mod:`pyro_lnf.models.registry`) and owns its ``generate()``."""

from pyro_lnf.models.base import LatentVariableModel, SequenceGenerator
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.lnf import PRIORS, LatentFlowModel
from pyro_lnf.models.nvdm import NVDM
from pyro_lnf.models.sentence_vae import SentenceVAE

__all__ = [
    "NVDM",
    "PRIORS",
    "LSTMBaseline",
    "LatentFlowModel",
    "LatentVariableModel",
    "SentenceVAE",
    "SequenceGenerator",
]
