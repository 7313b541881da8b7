"""Distributions: the von Mises–Fisher family on the sphere and the length model p(T).

Importing this package registers ``KL(VonMisesFisher || HypersphericalUniform)`` with
``torch.distributions.kl`` (and so with Pyro's ``kl_divergence``).
"""

from pyro_lnf.distributions.bessel import bessel_iv_ratio, log_bessel_iv
from pyro_lnf.distributions.length import LengthDistribution
from pyro_lnf.distributions.vmf import (
    HypersphericalUniform,
    VonMisesFisher,
    log_sphere_area,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
)

__all__ = [
    "HypersphericalUniform",
    "LengthDistribution",
    "VonMisesFisher",
    "bessel_iv_ratio",
    "log_bessel_iv",
    "log_sphere_area",
    "vmf_log_normalizer",
    "vmf_mean_resultant_length",
]
