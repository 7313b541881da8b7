"""Models on the shared contract (:mod:`pyro_lnf.models.base`): the latent-flow model, the
LSTM baseline, and the Gaussian/vMF sentence VAE and NVDM."""

from pyro_lnf.models.base import LatentVariableModel
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.lnf import PRIORS, LatentFlowModel
from pyro_lnf.models.vae import NVDM, SentenceVAE

__all__ = [
    "NVDM",
    "PRIORS",
    "LSTMBaseline",
    "LatentFlowModel",
    "LatentVariableModel",
    "SentenceVAE",
]
