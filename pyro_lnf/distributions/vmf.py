"""The von Mises–Fisher distribution on the sphere, its uniform prior, and the KL between them.

Xu & Durrett (2018) replace the Gaussian latent of a text VAE with a vMF posterior of *fixed*
concentration κ against a uniform prior on the sphere: the KL is then a constant of (κ, d) and the
posterior cannot collapse onto the prior. This module provides that pair for any ``d ≥ 2``:

* :class:`VonMisesFisher` — reparameterised in the mean direction μ: Wood's (1994) rejection
  sampler for the cosine ``w = μᵀz`` (which does not depend on μ), a uniform direction orthogonal
  to ``e₁``, and a Householder reflection taking ``e₁`` to μ (Davidson et al. 2018).
* :class:`HypersphericalUniform` — the uniform distribution on ``S^{d−1}``.
* ``KL(VonMisesFisher ‖ HypersphericalUniform)`` in closed form, registered with
  :func:`torch.distributions.kl.register_kl`, which is where Pyro's ``kl_divergence`` and
  ``TraceMeanField_ELBO`` look.

References:
  A. T. A. Wood, "Simulation of the von Mises Fisher distribution", Commun. Stat. Simul. 23 (1994).
  T. R. Davidson et al., "Hyperspherical Variational Auto-Encoders", UAI 2018.
  J. Xu and G. Durrett, "Spherical Latent Spaces for Stable Variational Autoencoders", EMNLP 2018.
  K. V. Mardia and P. E. Jupp, *Directional Statistics* (2000), §9.3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import Beta
from torch.distributions.kl import register_kl

from pyro_lnf.distributions.bessel import _log_iv_and_ratio
from pyro_lnf.errors import ConfigError

__all__ = [
    "HypersphericalUniform",
    "VonMisesFisher",
    "log_sphere_area",
    "vmf_log_normalizer",
    "vmf_mean_resultant_length",
]


def log_sphere_area(dim: int) -> float:
    r"""Log surface area of the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d`.

    .. math:: \log |S^{d-1}| = \log 2 + \tfrac{d}{2} \log \pi - \log \Gamma(d/2)

    Example: ``log_sphere_area(3) == math.log(4 * math.pi)``.
    """
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def _log_normalizer_and_mean_length(
    dim: int, concentration: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log C_d(κ), A_d(κ))`` from one Bessel pass."""
    order = 0.5 * dim - 1
    log_iv, ratio = _log_iv_and_ratio(order, concentration)
    log_c = order * torch.log(concentration) - 0.5 * dim * math.log(2 * math.pi) - log_iv
    return log_c, ratio


def vmf_log_normalizer(dim: int, concentration: torch.Tensor) -> torch.Tensor:
    r"""Log normaliser of the vMF density :math:`C_d(\kappa) e^{\kappa \mu^\top x}` on the sphere.

    .. math::

        \log C_d(\kappa) = (d/2 - 1) \log \kappa - (d/2) \log 2\pi - \log I_{d/2-1}(\kappa)

    Stable for large κ and d through :func:`~pyro_lnf.distributions.bessel.log_bessel_iv`.
    For ``d = 3`` it equals ``log κ − log(4π sinh κ)``.

    Reference: Mardia & Jupp (2000), §9.3.
    """
    return _log_normalizer_and_mean_length(dim, concentration)[0]


def vmf_mean_resultant_length(dim: int, concentration: torch.Tensor) -> torch.Tensor:
    r"""Mean resultant length of the vMF, :math:`A_d(\kappa) = \|\mathbb{E} z\|`.

    .. math:: A_d(\kappa) = I_{d/2}(\kappa) / I_{d/2-1}(\kappa)

    It is ``coth κ − 1/κ`` for ``d = 3``, tends to ``κ/d`` as κ → 0 and to ``1 − (d−1)/(2κ)``
    as κ → ∞.

    Reference: Mardia & Jupp (2000), §9.3.
    """
    return _log_normalizer_and_mean_length(dim, concentration)[1]


class VonMisesFisher(TorchDistribution):
    r"""von Mises–Fisher distribution on the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d`.

    .. math::

        p(x \mid \mu, \kappa) = C_d(\kappa) \exp(\kappa \mu^\top x), \qquad
        C_d(\kappa) = \frac{\kappa^{d/2-1}}{(2\pi)^{d/2} I_{d/2-1}(\kappa)}

    **Sampling** (:meth:`rsample`). The cosine ``w = μᵀz`` has density proportional to
    ``exp(κw) (1 − w²)^{(d−3)/2}`` on ``[−1, 1]``; Wood's (1994) rejection sampler draws it from
    a Beta proposal. With ``b = (d−1) / (2κ + √(4κ² + (d−1)²))`` (the form without
    cancellation at large κ), ``x₀ = (1−b)/(1+b)`` and ``ε ~ Beta((d−1)/2, (d−1)/2)``,
    the proposal is ``w = 1 − 2bε / (1 − (1−b)ε)`` and it is accepted when
    ``κ(w − x₀) + (d−1) log((1 − x₀w)/(1 − x₀²)) ≥ log u``, ``u ~ U(0, 1)``. Both sides are
    computed from ``1 − w`` and ``1 − x₀ = 2b/(1+b)`` directly, so nothing cancels when
    ``w → 1``. The batch is served by rounds of a few proposals per still-pending element; each
    takes its first accepted proposal. Then ``z' = (w, √((1−w)(1+w)) v)`` with ``v`` uniform on
    ``S^{d−2}``, and an orthogonal reflection ``Q`` with ``Q e₁ = μ`` gives ``z = Q z'``.

    **Gradients.** ``w`` and ``v`` do not depend on μ, so ``z`` is a differentiable function of
    ``loc`` (the pathwise gradient). ``concentration`` is treated as fixed, as in Xu & Durrett
    (2018): :meth:`rsample` raises :class:`~pyro_lnf.errors.ConfigError` when it requires grad
    (the Davidson et al. 2018 correction is not implemented). :meth:`log_prob`,
    :meth:`entropy` and the KL are differentiable in both parameters.

    **Parameterisation.** ``loc`` must be a unit vector (checked when validation is on). To learn
    it, keep a free vector ``h`` and pass ``loc = F.normalize(h, dim=-1)``: gradients reach ``h``
    through the normalisation.

    :param loc: mean directions, shape ``(..., d)`` with ``d ≥ 2``, unit norm.
    :param concentration: κ > 0, shape broadcastable with ``loc.shape[:-1]``.

    Example::

        >>> from torch.distributions import kl_divergence
        >>> loc = F.normalize(torch.randn(8, 50), dim=-1)
        >>> q = VonMisesFisher(loc, torch.tensor(80.0))
        >>> q.rsample().shape                                  # unit vectors
        torch.Size([8, 50])
        >>> kl_divergence(q, HypersphericalUniform(50)).shape  # the same for every loc
        torch.Size([8])

    References: Wood (1994); Davidson et al. (2018); Xu & Durrett (2018).
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.positive}
    support = constraints.sphere
    has_rsample = True
    # Proposals drawn per pending element per round. The acceptance rate of Wood's sampler is
    # high for every (κ, d), so most elements finish in the first round.
    _proposals_per_round = 4

    def __init__(
        self,
        loc: torch.Tensor,
        concentration: torch.Tensor | float,
        validate_args: bool | None = None,
    ) -> None:
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ConfigError(
                f"VonMisesFisher: loc must have shape (..., d) with d >= 2, got {tuple(loc.shape)}"
            )
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.concentration = concentration.expand(batch_shape)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    @property
    def dim(self) -> int:
        """Ambient dimension ``d`` (the sphere is ``S^{d−1}``)."""
        return self.event_shape[0]

    def expand(
        self, batch_shape: torch.Size, _instance: VonMisesFisher | None = None
    ) -> VonMisesFisher:
        new = self._get_checked_instance(VonMisesFisher, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.concentration = self.concentration.expand(batch_shape)
        super(VonMisesFisher, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        """``E[z] = A_d(κ) μ``."""
        return vmf_mean_resultant_length(self.dim, self.concentration).unsqueeze(-1) * self.loc

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``κ μᵀx + log C_d(κ)``, shape ``broadcast(value.shape[:-1], batch_shape)``."""
        if self._validate_args:
            self._validate_sample(value)
        log_c = vmf_log_normalizer(self.dim, self.concentration)
        return self.concentration * (self.loc * value).sum(-1) + log_c

    def entropy(self) -> torch.Tensor:
        """``H = −κ A_d(κ) − log C_d(κ)``."""
        log_c, mean_length = _log_normalizer_and_mean_length(self.dim, self.concentration)
        return -self.concentration * mean_length - log_c

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if self.concentration.requires_grad:
            raise ConfigError(
                "VonMisesFisher.rsample: concentration requires grad, but the sampler is "
                "reparameterised in loc only (fixed kappa, Xu & Durrett 2018); pass "
                "concentration.detach() or a constant"
            )
        return self._draw(torch.Size(sample_shape))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self._draw(torch.Size(sample_shape))

    def _draw(self, sample_shape: torch.Size) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        w, one_minus_w = self._sample_cosine(shape[:-1])
        gauss = torch.randn(
            shape[:-1] + (self.dim - 1,), dtype=self.loc.dtype, device=self.loc.device
        )
        v = F.normalize(gauss, dim=-1)
        # √(1 − w²) from the exact 1 − w: accurate when w is within rounding of 1 (large κ).
        tangent = torch.sqrt(one_minus_w * (1 + w)).unsqueeze(-1) * v
        z_e1 = torch.cat([w.unsqueeze(-1), tangent], dim=-1)
        return self._reflect(z_e1)

    def _sample_cosine(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """Wood's rejection sampler for ``w = μᵀz``; returns ``(w, 1 − w)`` of ``shape``."""
        kappa = self.concentration.detach().expand(shape).reshape(-1)
        m1 = self.dim - 1
        b = m1 / (2 * kappa + torch.sqrt(4 * kappa * kappa + m1 * m1))
        x0 = (1 - b) / (1 + b)
        one_minus_x0 = 2 * b / (1 + b)
        log_one_minus_x0_sq = torch.log(one_minus_x0) + torch.log(2 / (1 + b))
        half = kappa.new_tensor(0.5 * m1)
        proposal = Beta(half, half)

        one_minus_w = torch.empty_like(kappa)
        pending = torch.arange(kappa.numel(), device=kappa.device)
        while pending.numel() > 0:
            k, bb, xx = kappa[pending], b[pending], x0[pending]
            eps = proposal.sample((self._proposals_per_round, pending.numel()))
            omw = 2 * bb * eps / (1 - (1 - bb) * eps)
            log_ratio = torch.log(one_minus_x0[pending] + xx * omw) - log_one_minus_x0_sq[pending]
            # 1 − rand() is uniform on (0, 1]: its log is finite.
            log_u = torch.log1p(-torch.rand_like(omw))
            accept = k * (one_minus_x0[pending] - omw) + m1 * log_ratio >= log_u
            done = accept.any(0)
            first = accept.to(torch.uint8).argmax(0, keepdim=True)  # first accepted proposal
            one_minus_w[pending[done]] = omw.gather(0, first).squeeze(0)[done]
            pending = pending[~done]
        one_minus_w = one_minus_w.reshape(shape)
        return 1 - one_minus_w, one_minus_w

    def _reflect(self, z_e1: torch.Tensor) -> torch.Tensor:
        """Apply an orthogonal ``Q`` with ``Q e₁ = μ``, differentiable in μ.

        ``H = I − 2uuᵀ/‖u‖²`` with ``u = e₁ + σμ`` maps ``e₁`` to ``−σμ``, so ``Q = −σH``.
        Taking ``σ = sign(μ₁)`` (``+1`` at 0) keeps ``‖u‖² = 2(1 + |μ₁|) ≥ 2``: the textbook
        ``u = e₁ − μ`` degenerates to 0/0 when μ ≈ e₁, a common initialisation. The vMF is
        rotation-invariant about μ, so any such ``Q`` gives the same distribution.
        """
        mu = self.loc
        sign = 2 * (mu[..., :1] >= 0).to(mu.dtype) - 1
        u = torch.cat([1 + sign * mu[..., :1], sign * mu[..., 1:]], dim=-1)
        coef = 2 * (u * z_e1).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)
        return -sign * (z_e1 - coef * u)


class HypersphericalUniform(TorchDistribution):
    r"""Uniform distribution on the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d`.

    .. math::

        \log p(x) = -\log |S^{d-1}| = -\left(\log 2 + \tfrac{d}{2}\log\pi - \log\Gamma(d/2)\right)

    Samples are normalised standard Gaussians (rotation invariance).

    :param dim: ambient dimension ``d ≥ 2``.
    :param batch_shape: batch shape (the uniform has no parameters to broadcast).
    :param device: device of samples and densities.
    :param dtype: floating dtype of samples and densities (default: torch's default dtype).

    Example::

        >>> p = HypersphericalUniform(3, dtype=torch.float64)
        >>> p.entropy()   # log 4π
        tensor(2.5310, dtype=torch.float64)

    Reference: Davidson et al. (2018), §3.
    """

    arg_constraints: dict = {}
    support = constraints.sphere
    has_rsample = True

    def __init__(
        self,
        dim: int,
        batch_shape: torch.Size | tuple[int, ...] = torch.Size(),
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(dim, int) or dim < 2:
            raise ConfigError(f"HypersphericalUniform: dim must be an integer >= 2, got {dim!r}")
        # A zero-dim tensor carrying the device and dtype of everything this distribution makes.
        self._like = torch.zeros((), device=device, dtype=dtype or torch.get_default_dtype())
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    @property
    def dim(self) -> int:
        """Ambient dimension ``d`` (the sphere is ``S^{d−1}``)."""
        return self.event_shape[0]

    def expand(
        self, batch_shape: torch.Size, _instance: HypersphericalUniform | None = None
    ) -> HypersphericalUniform:
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new._like = self._like
        super(HypersphericalUniform, new).__init__(
            torch.Size(batch_shape), self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return self._like.new_zeros(self.batch_shape + self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return value.new_full(shape, -log_sphere_area(self.dim))

    def entropy(self) -> torch.Tensor:
        return self._like.new_full(self.batch_shape, log_sphere_area(self.dim))

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        gauss = torch.randn(shape, dtype=self._like.dtype, device=self._like.device)
        return F.normalize(gauss, dim=-1)


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p: VonMisesFisher, q: HypersphericalUniform) -> torch.Tensor:
    r"""``KL(vMF(μ, κ) ‖ U(S^{d−1})) = κ A_d(κ) + log C_d(κ) + log |S^{d−1}|``, free of μ."""
    if p.event_shape != q.event_shape:
        raise ConfigError(
            f"KL(VonMisesFisher || HypersphericalUniform): dimensions differ "
            f"({p.dim} vs {q.dim}); build the prior with the latent size of the posterior"
        )
    log_c, mean_length = _log_normalizer_and_mean_length(p.dim, p.concentration)
    kl = p.concentration * mean_length + log_c + log_sphere_area(p.dim)
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))
