r"""The latent-flow model of Ziegler & Rush (2019) as a Pyro model and guide.

Generative process, for a sequence of length ``T``:

.. math::

    T \sim p(T), \qquad \epsilon_{1:T} \sim \mathcal N(0, I), \qquad
    z_{1:T} = f_\theta(\epsilon_{1:T}; T), \qquad
    x_t \mid z_{1:T}, T \;\overset{\text{indep}}{\sim}\; p(x_t \mid z_{1:T}, T),

with ``f`` a flow across time (AF or IAF in time, or independent across time) whose every step
is a ``K``-layer flow over the latent dimension (MADE or split coupling around NLSq or affine
maps), and the emission a categorical over characters or 88 Bernoullis over piano keys. The
guide is a mean-field Gaussian from a bidirectional LSTM. One ``z`` site carries the whole
latent sequence (batch ``(B,)``, event ``(T, H)``, masked per step), so the ELBO's log-densities
are exact for padded batches and per-sequence importance weights come for free.

Reference: Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete
Sequences. ICML 2019. [arXiv:1901.10548]
"""

from __future__ import annotations


import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor

from pyro_lnf.errors import ConfigError
from pyro_lnf.models.decoding import decode_logits, mask_padding
from pyro_lnf.models.emission import Emission
from pyro_lnf.models.encoder import SequenceEncoder
from pyro_lnf.models.registry import register_model
from pyro_lnf.models.sequence import SequenceModel, observation_distribution
from pyro_lnf.nn.modes import evaluating
from pyro_lnf.transforms.temporal import TemporalFlow

#: Prior name -> (flow across time, coupling layers inside each step).
PRIORS: dict[str, tuple[str, bool]] = {
    "afaf": ("af", False),
    "afscf": ("af", True),
    "iafscf": ("iaf", True),
    "indep": ("indep", False),
}


@register_model("lnf", data=("lengths",))
class LatentFlowModel(SequenceModel):
    """Latent normalizing flow over discrete sequences (AF/AF, AF/SCF, IAF/SCF, indep).

    Example::

        model = LatentFlowModel(kind="binary", num_features=88, max_length=200,
                                lengths=train_lengths, prior="afscf")
        loss = pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, batch)

    :param kind: ``"categorical"`` (token ids) or ``"binary"`` (piano rolls).
    :param num_features: vocabulary size, or 88 keys.
    :param max_length: rows of the length-feature tables (longer sequences are clamped).
    :param lengths: training lengths, for the length model p(T).
    :param prior: one of :data:`PRIORS`.
    :param transform: ``"nlsq"`` or ``"affine"`` elementwise maps in the flow.
    :param latent_dim: size H of each z_t (paper: 50).
    :param hidden_size: LSTM width of encoder, prior and emission (paper: 500).
    :param embedding_dim: tied input/output embedding width (paper: 500).
    :param flow_layers: K flow layers over the latent dimension per step (paper: 5).
    :param flow_hidden: hidden widths of each MADE / coupling network (paper: 100, 100).
    :param length_dim: width of the length features.
    :param dropout: dropout on the prior's LSTM context (paper: 0.2).
    :param dataset: name of the dataset the model is for (kept in checkpoints, so that
        ``lnf evaluate`` and ``lnf sample`` know what to load and how to decode).
    """

    name = "lnf"

    def __init__(
        self,
        *,
        kind: str,
        num_features: int,
        max_length: int,
        lengths: list[int] | torch.Tensor | None = None,
        prior: str = "afaf",
        transform: str = "nlsq",
        latent_dim: int = 50,
        hidden_size: int = 500,
        embedding_dim: int = 500,
        flow_layers: int = 5,
        flow_hidden: tuple[int, ...] = (100, 100),
        lstm_layers: int = 2,
        length_dim: int = 64,
        dropout: float = 0.2,
        dataset: str | None = None,
    ) -> None:
        if prior not in PRIORS:
            raise ConfigError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
        super().__init__(
            kind=kind, num_features=num_features, max_length=max_length, lengths=lengths,
            embedding_dim=embedding_dim, length_dim=length_dim, dropout=dropout,
            latent_dim=latent_dim, hidden_size=hidden_size, flow_layers=flow_layers,
            lstm_layers=lstm_layers,
        )
        self.encoder = SequenceEncoder(
            self.embedding, self.length_features, latent_dim, hidden_size, lstm_layers
        )
        self.emission = Emission(
            self.embedding, self.length_features, latent_dim, hidden_size, lstm_layers
        )
        time_kind, coupling = PRIORS[prior]
        self.prior = TemporalFlow(
            dim=latent_dim,
            kind=time_kind,
            max_length=max_length,
            num_layers=flow_layers,
            coupling=coupling,
            transform=transform,
            hidden_dims=tuple(flow_hidden),
            lstm_hidden=hidden_size,
            lstm_layers=lstm_layers,
            length_embedding_dim=length_dim,
            dropout=dropout,
        )

    def model(self, batch, beta: float = 1.0) -> None:
        pyro.module(self.name, self)
        num_seqs, num_steps = batch.mask.shape
        with pyro.plate("sequences", num_seqs, dim=-1):
            pyro.sample("length", self.length_model.distribution(), obs=batch.lengths)
            prior = self.prior.distribution(batch.lengths, num_steps)
            with poutine.scale(scale=beta):
                z = pyro.sample("z", prior.mask(batch.mask).to_event(1))
            logits = self.emission(z, batch.lengths)
            x_dist = observation_distribution(self.kind, logits)
            pyro.sample("x", x_dist.mask(batch.mask).to_event(1), obs=batch.x)

    def guide(self, batch, beta: float = 1.0) -> None:
        pyro.module(self.name, self)
        with pyro.plate("sequences", batch.mask.shape[0], dim=-1):
            loc, scale = self.encoder(batch.x, batch.lengths)
            q = dist.Normal(loc, scale).mask(batch.mask.unsqueeze(-1)).to_event(2)
            with poutine.scale(scale=beta):
                pyro.sample("z", q)

    @torch.no_grad()
    def generate(
        self, lengths: Tensor, *, temperature: float = 1.0, decode: str = "sample"
    ) -> Tensor:
        r"""Sequences of the given lengths, in eval mode (the authors' ``DFModel.generate``):

        .. math::

            \epsilon_{1:T} \sim \mathcal N(0, \tau^2 I), \qquad
            z_{1:T} = f_\theta(\epsilon_{1:T}; T), \qquad x_t \sim p(x_t \mid z_{1:T}, T),

        the prior run in its sampling direction (sequential in t for AF in time, one pass for
        IAF and the independent ablation) and every :math:`x_t` decoded at once by :meth:`emit`.
        The temperature :math:`\tau` scales the noise, as in the authors' code.

        :param lengths: ``(N,)``, e.g. drawn from p(T): ``self.length_model.distribution()``.
        :param decode: ``"sample"`` or ``"mode"`` (:mod:`pyro_lnf.models.decoding`).
        :returns: ``x`` padded to ``max(lengths)`` steps, 0 at padded steps.
        """
        with evaluating(self):
            z, _ = self.prior.sample(lengths, int(lengths.max()), temperature)
            return mask_padding(self.emit(z, lengths, decode), lengths)

    def emit(self, z: Tensor, lengths: Tensor, decode: str = "sample") -> Tensor:
        """``x`` from latent sequences ``z`` ``(N, T, H)``: every step decoded at once (the
        emission never reads ``x``)."""
        return decode_logits(self.kind, self.emission(z, lengths), decode)

    def latent_path(
        self, x_a: Tensor, x_b: Tensor, steps: int, pad_value: int | float = 0
    ) -> tuple[Tensor, Tensor]:
        r"""``steps`` latent sequences on the segment between the encodings of two sequences,
        and their lengths.

        Both sequences are encoded with the posterior mean :math:`\mu = \mathrm{encoder}(x)`
        at the common length :math:`T = \max(T_a, T_b)`, the shorter one right-padded with
        ``pad_value``, so that both latent sequences have shape ``(T, H)``. Point ``k`` is
        :math:`z = (1 - \alpha_k)\,\mu_a + \alpha_k\,\mu_b`, :math:`\alpha_k = k /
        (\text{steps}-1)`. Draws nothing; call it in eval mode.

        :returns: ``z`` ``(steps, T, H)`` and lengths ``(steps,)``, all ``T``.
        """
        device = self.embedding.weight.device
        common = max(len(x_a), len(x_b))
        ends = torch.stack([_pad_to(x.to(device), common, pad_value) for x in (x_a, x_b)])
        if self.kind == "binary":
            ends = ends.to(self.embedding.weight.dtype)
        else:
            ends = ends.long()
        lengths = torch.full((2,), common, dtype=torch.long, device=device)
        loc, _ = self.encoder(ends, lengths)
        alpha = torch.linspace(0.0, 1.0, steps, dtype=loc.dtype, device=device)[:, None, None]
        return torch.lerp(loc[0], loc[1], alpha), lengths.new_full((steps,), common)


def _pad_to(x: Tensor, length: int, value: int | float) -> Tensor:
    """``x`` ``(T, ...)`` right-padded with ``value`` to ``length`` steps."""
    if len(x) == length:
        return x
    filler = x.new_full((length - len(x), *x.shape[1:]), value)
    return torch.cat([x, filler])
