r"""The latent part both text VAEs share (Xu & Durrett 2018): :math:`q(z \mid x)`, :math:`p(z)`
and the ``z`` site of the Pyro programs.

The latent is either

* ``"gaussian"``: :math:`q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))`,
  :math:`\sigma = \operatorname{softplus}(\cdot) + 10^{-4}`, prior :math:`\mathcal N(0, I)`; or
* ``"vmf"``: :math:`q(z \mid x) = \mathrm{vMF}(\mu(x), \kappa)` with
  :math:`\mu = h / \lVert h \rVert` and a *fixed* concentration κ, prior uniform on
  :math:`S^{d-1}`. The KL is then a constant of :math:`(\kappa, d)`,

  .. math::

      \mathrm{KL}(\mathrm{vMF}(\mu, \kappa) \,\|\, U(S^{d-1}))
          = \kappa A_d(\kappa) + \log C_d(\kappa) + \log |S^{d-1}|,

  whatever μ is, so the optimiser cannot shrink it to zero: the posterior cannot collapse onto
  the prior, the failure of Gaussian text VAEs with strong decoders (Bowman et al. 2016).

The Pyro programs follow :mod:`pyro_lnf.models.base`: one ``z`` site (batch ``(B,)``, event
``(d,)``) and one observed ``x`` site per sequence, in ``pyro.plate("sequences", B, dim=-1)``,
the ``z`` sites under ``poutine.scale(scale=beta)`` in both programs. ``Trace_ELBO`` thus
estimates the KL by Monte Carlo, :math:`\log q(z \mid x) - \log p(z)` at the sampled ``z``;
:meth:`VAEMixin.analytic_kl` gives the closed form for reporting.

References:
  J. Xu, G. Durrett, "Spherical Latent Spaces for Stable Variational Autoencoders", EMNLP 2018.
  S. R. Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn
from torch.distributions import kl_divergence

from pyro_lnf.distributions.vmf import HypersphericalUniform, VonMisesFisher
from pyro_lnf.errors import ConfigError
from pyro_lnf.models.encoder import positive_scale
from pyro_lnf.nn.checks import check_choice, check_positive_int

__all__ = ["LATENTS", "LatentHead", "VAEMixin"]

#: Latent families: a diagonal Gaussian against N(0, I), or a fixed-κ vMF against the uniform.
LATENTS = ("gaussian", "vmf")


class LatentHead(nn.Module):
    r"""Maps encoder features to :math:`q(z \mid x)` and provides the matching prior :math:`p(z)`.

    ``"gaussian"``: :math:`q = \mathcal N(W_\mu h + b_\mu, \sigma^2)` with
    :math:`\sigma = \operatorname{softplus}(W_\sigma h + b_\sigma) + 10^{-4}` (the floor keeps
    :math:`\log q` finite), :math:`p = \mathcal N(0, I)`. ``"vmf"``: :math:`q = \mathrm{vMF}(\mu, \kappa)`
    with :math:`\mu = \operatorname{normalize}(W h + b)` and κ fixed (Xu & Durrett 2018),
    :math:`p = U(S^{d-1})`. Both have event shape ``(d,)``.

    :param in_features: width of the encoder features ``h``.
    :param latent: ``"gaussian"`` or ``"vmf"``.
    :param latent_dim: ``d`` (at least 2 for the vMF: the sphere needs two dimensions).
    :param kappa: the vMF concentration κ > 0 (unused by the Gaussian).

    Example::

        >>> head = LatentHead(64, "vmf", latent_dim=8, kappa=20.0)
        >>> q = head.posterior(torch.randn(5, 64))
        >>> q.batch_shape, q.event_shape
        (torch.Size([5]), torch.Size([8]))
    """

    def __init__(self, in_features: int, latent: str, latent_dim: int, kappa: float) -> None:
        super().__init__()
        check_choice("latent", latent, LATENTS)
        check_positive_int("latent_dim", latent_dim)
        if latent == "vmf":
            if latent_dim < 2:
                raise ConfigError(f"a vMF latent needs latent_dim >= 2, got {latent_dim}")
            if not kappa > 0:
                raise ConfigError(f"kappa must be positive, got {kappa!r}")
        self.latent = latent
        self.latent_dim = latent_dim
        self.kappa = float(kappa)
        self.loc = nn.Linear(in_features, latent_dim)
        # The vMF has no learned spread: κ is fixed, so only the direction is predicted.
        self.scale = nn.Linear(in_features, latent_dim) if latent == "gaussian" else None

    def posterior(self, features: torch.Tensor) -> dist.TorchDistribution:
        """:math:`q(z \\mid x)` with batch shape ``features.shape[:-1]`` and event ``(d,)``."""
        loc = self.loc(features)
        if self.scale is None:
            return VonMisesFisher(F.normalize(loc, dim=-1), self.kappa)
        return dist.Normal(loc, positive_scale(self.scale(features))).to_event(1)

    def prior(self, batch_shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> dist.TorchDistribution:
        """:math:`p(z)` with ``batch_shape``, on the device and dtype of ``like``."""
        batch_shape = torch.Size(batch_shape)
        if self.latent == "vmf":
            return HypersphericalUniform(
                self.latent_dim, batch_shape, device=like.device, dtype=like.dtype
            )
        zero, one = like.new_zeros(()), like.new_ones(())
        return dist.Normal(zero, one).expand(batch_shape + (self.latent_dim,)).to_event(1)


class VAEMixin:
    """What both VAEs share: the ``z`` site in both programs and the analytic KL."""

    name: str
    head: LatentHead
    #: Encoder features of a batch, ``(B, in_features)`` of :attr:`head` (each model defines it).
    encode: Callable[[Any], torch.Tensor]

    def posterior(self, batch: Any) -> dist.TorchDistribution:
        r""":math:`q(z \mid x)` of every sequence of ``batch``: batch ``(B,)``, event ``(d,)``."""
        return self.head.posterior(self.encode(batch))

    def prior(self, num_sequences: int) -> dist.TorchDistribution:
        """:math:`p(z)` for ``num_sequences`` sequences, on the module's device and dtype."""
        return self.head.prior((num_sequences,), self.head.loc.weight)

    def analytic_kl(self, batch: Any) -> torch.Tensor:
        r"""Closed-form :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))` per sequence, shape ``(B,)``.

        Gaussian: :math:`\tfrac12 \sum_i (\mu_i^2 + \sigma_i^2 - 1 - \log \sigma_i^2)`. vMF: the
        constant :math:`\kappa A_d(\kappa) + \log C_d(\kappa) + \log|S^{d-1}|`, the same for
        every sequence and every parameter value. Training's ``Trace_ELBO`` uses the Monte Carlo
        estimate instead, whose expectation this is.
        """
        q = self.posterior(batch)
        return kl_divergence(q, self.prior(q.batch_shape[0]))

    def _sample_z(self, q_or_p: dist.TorchDistribution, beta: float) -> torch.Tensor:
        with poutine.scale(scale=beta):
            return pyro.sample("z", q_or_p)

    def guide(self, batch: Any, beta: float = 1.0) -> None:
        """Pyro guide: ``z ~ q(z | x)`` per sequence, its log-density scaled by ``beta``."""
        pyro.module(self.name, self)  # type: ignore[arg-type]
        q = self.posterior(batch)
        with pyro.plate("sequences", q.batch_shape[0], dim=-1):
            self._sample_z(q, beta)
