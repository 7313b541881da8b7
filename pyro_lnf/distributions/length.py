r"""The length model :math:`p(T)` of latent normalizing flows.

Ziegler & Rush (2019, §3) model a sequence as :math:`p(x, T) = p(T)\, p(x \mid T)` and take
:math:`p(T)` to be the empirical distribution of the training lengths. The empirical histogram
alone gives :math:`-\log p(T) = \infty` to every length it has not seen, and the authors' code
indexes out of range for a length beyond its table, so this version is smoothed:

.. math::

    p(T) = \frac{c_T + \alpha}{N + \alpha (L + 1)}, \qquad 1 \le T \le L,

    p(T) = m\,(1 - q)\,q^{T - L - 1}, \qquad T > L,
    \quad m = \frac{\alpha}{N + \alpha (L + 1)}, \quad q = \frac{L}{L + 1},

where :math:`c_T` counts the training sequences of length :math:`T` (:math:`N` in all),
:math:`L = \max(M + 1, \lceil 1.25\,M \rceil)` for the longest training length :math:`M` (the
authors' 1.25 margin for music), and :math:`\alpha = 1` (their add-one smoothing for music).
The tail is one more add-:math:`\alpha` bin, spread geometrically with mean overshoot
:math:`q / (1 - q) = L`, so its density at :math:`L + 1` is below that of any smoothed bin and
decays on the scale of the data. The probabilities sum to one exactly, and every positive length
has a finite cost. Unlike the authors' code, only *training* lengths are counted (theirs also
counts the validation split) and :math:`T = 0` gets no mass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints

from pyro_lnf.errors import DatasetError


class LengthDistribution(TorchDistribution):
    r"""A distribution over positive integer lengths: a table up to :math:`L`, geometric beyond.

    .. math::

        \log p(T) = \text{log\_probs\_table}[T - 1] \quad (1 \le T \le L), \qquad
        \log p(T) = \log m + \log(1 - q) + (T - L - 1) \log q \quad (T > L).

    All parameters are plain tensors (see :meth:`state_dict`), so a checkpoint can store the
    distribution and :meth:`to` moves it between devices. Build one from data with
    :meth:`from_lengths`.

    Args:
        log_probs_table: ``(L,)`` log-probabilities of the lengths ``1..L``.
        tail_log_mass: scalar :math:`\log m`, the log of the total mass beyond ``L``.
        tail_log_ratio: scalar :math:`\log q < 0`, the log of the geometric ratio of the tail.

    Example::

        >>> p = LengthDistribution.from_lengths(torch.tensor([3, 5, 5, 8]))
        >>> p.log_prob(torch.tensor([5, 1000])).isfinite().all()
        tensor(True)
        >>> p.sample((2,)).shape
        torch.Size([2])

    Reference: Z. M. Ziegler, A. M. Rush, "Latent Normalizing Flows for Discrete Sequences",
    ICML 2019.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.positive_integer
    has_enumerate_support = False

    def __init__(
        self,
        log_probs_table: torch.Tensor,
        tail_log_mass: torch.Tensor,
        tail_log_ratio: torch.Tensor,
        batch_shape: torch.Size | Sequence[int] = torch.Size(),
        validate_args: bool | None = None,
    ) -> None:
        self.log_probs_table = log_probs_table
        like = {"dtype": log_probs_table.dtype, "device": log_probs_table.device}
        self.tail_log_mass = torch.as_tensor(tail_log_mass, **like)
        self.tail_log_ratio = torch.as_tensor(tail_log_ratio, **like)
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=validate_args)
        if self._validate_args:
            if log_probs_table.dim() != 1 or log_probs_table.numel() == 0:
                raise ValueError(
                    "log_probs_table must be a non-empty vector, "
                    f"got shape {tuple(log_probs_table.shape)}"
                )
            if not (self.tail_log_ratio < 0).item():
                raise ValueError(
                    f"tail_log_ratio must be negative (a ratio below 1), got {self.tail_log_ratio}"
                )
            everything = torch.cat([log_probs_table, self.tail_log_mass[None]])
            total = everything.logsumexp(0).exp().item()
            if not math.isclose(total, 1.0, abs_tol=1e-4):
                raise ValueError(f"the table and the tail must sum to 1, got {total}")

    @classmethod
    def from_lengths(
        cls,
        lengths: torch.Tensor | Sequence[int],
        alpha: float = 1.0,
        max_factor: float = 1.25,
        dtype: torch.dtype | None = None,
    ) -> LengthDistribution:
        r"""The smoothed empirical distribution of ``lengths`` (pass the *training* lengths).

        Args:
            lengths: observed lengths, positive integers.
            alpha: pseudo-count of every length ``1..L`` and of the tail; must be positive.
            max_factor: the table runs to ``L = max(M + 1, ceil(max_factor * M))``.
            dtype: of the parameters; the default dtype if ``None``. Counts are accumulated in
                float64 either way.

        Raises:
            DatasetError: no lengths, or a length below 1.
        """
        lengths = torch.as_tensor(lengths)
        if lengths.numel() == 0:
            raise DatasetError("cannot fit p(T) to an empty split: it has no lengths")
        if lengths.is_floating_point() or lengths.min() < 1:
            raise DatasetError(
                "p(T) needs positive integer lengths; got a length below 1 or a non-integer"
            )
        if not alpha > 0 or not max_factor >= 1:
            raise ValueError(
                f"need alpha > 0 and max_factor >= 1, got alpha={alpha}, max_factor={max_factor}"
            )
        dtype = dtype or torch.get_default_dtype()
        lengths = lengths.reshape(-1).long()
        longest = int(lengths.max())
        size = max(longest + 1, math.ceil(max_factor * longest))
        counts = torch.bincount(lengths - 1, minlength=size).to(torch.float64)
        total = counts.sum() + alpha * (size + 1)
        table = ((counts + alpha) / total).log()
        tail_log_mass = math.log(alpha) - total.log()
        tail_log_ratio = math.log(size / (size + 1))
        return cls(
            table.to(dtype),
            tail_log_mass.to(dtype),
            torch.tensor(tail_log_ratio, dtype=dtype, device=lengths.device),
        )

    @property
    def table_size(self) -> int:
        """``L``: lengths beyond it are in the geometric tail."""
        return self.log_probs_table.shape[-1]

    def expand(
        self, batch_shape: torch.Size | Sequence[int], _instance: LengthDistribution | None = None
    ) -> LengthDistribution:
        new = self._get_checked_instance(LengthDistribution, _instance)
        new.log_probs_table = self.log_probs_table
        new.tail_log_mass = self.tail_log_mass
        new.tail_log_ratio = self.tail_log_ratio
        super(LengthDistribution, new).__init__(
            torch.Size(batch_shape), torch.Size(), validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, device=self.log_probs_table.device)
        t = value.long()
        size = self.table_size
        in_table = self.log_probs_table[(t - 1).clamp(0, size - 1)]
        log_q = self.tail_log_ratio
        # log m + log(1 - q) + (T - L - 1) log q, with log(1 - q) = log(-expm1(log q))
        overshoot = (t - size - 1).to(log_q.dtype)
        tail = self.tail_log_mass + torch.log(-torch.expm1(log_q)) + overshoot * log_q
        lp = torch.where(t <= size, in_table, tail)
        lp = torch.where(t >= 1, lp, torch.full_like(lp, -math.inf))
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    def sample(self, sample_shape: torch.Size | Sequence[int] = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            # Pick a table entry or the tail (the last category), then an overshoot in the tail.
            logits = torch.cat([self.log_probs_table, self.tail_log_mass[None]])
            k = torch.distributions.Categorical(logits=logits).sample(shape)
            stop = -torch.expm1(self.tail_log_ratio)  # 1 - q
            overshoot = torch.distributions.Geometric(probs=stop).sample(shape).long()
            return torch.where(k < self.table_size, k + 1, self.table_size + 1 + overshoot)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters, as a checkpoint stores them (``torch.save``-able, tensors only)."""
        return {
            "log_probs_table": self.log_probs_table,
            "tail_log_mass": self.tail_log_mass,
            "tail_log_ratio": self.tail_log_ratio,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> LengthDistribution:
        """Rebuild from :meth:`state_dict` (e.g. after ``torch.load(..., weights_only=True)``)."""
        return cls(state["log_probs_table"], state["tail_log_mass"], state["tail_log_ratio"])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LengthDistribution:
        """The same distribution with its parameters on ``device`` (and in ``dtype``)."""
        moved = {k: v.to(device=device, dtype=dtype) for k, v in self.state_dict().items()}
        moved_dist = LengthDistribution(**moved, validate_args=self._validate_args)
        return moved_dist.expand(self.batch_shape)
