"""Normalizing flows over the hidden dimension for Pyro: NLSq and affine elementwise maps, MADE,
autoregressive (AF/IAF) and split-coupling (SCF) flows around any elementwise map, and stacks.

Every flow follows Pyro's convention (``_call``: noise to sample, ``_inverse``: sample to noise)
and comes as a ``TransformModule`` plus a ``Conditional...`` twin whose ``condition(context)``
returns a fresh transform; see :mod:`pyro_lnf.transforms.base` for the shared rules. The
elementwise maps live in :mod:`~pyro_lnf.transforms.nlsq` and :mod:`~pyro_lnf.transforms.affine`,
each with its flows; :func:`register_elementwise_map` makes another one known by name.
"""

from pyro_lnf.nn.made import MADE, Conditioner, DenseNet
from pyro_lnf.transforms.affine import (
    Affine,
    AffineMap,
    ConditionalAffine,
    affine,
    conditional_affine,
)
from pyro_lnf.transforms.autoregressive import (
    AutoregressiveFlow,
    ConditionalAutoregressiveFlow,
    ConditionedAutoregressiveFlow,
    autoregressive_flow,
    conditional_autoregressive_flow,
)
from pyro_lnf.transforms.base import (
    ConditionalElementwise,
    ConditionedElementwise,
    Elementwise,
    ElementwiseMap,
    FlowTransform,
    elementwise_map,
    register_elementwise_map,
)
from pyro_lnf.transforms.coupling import (
    ConditionalCouplingFlow,
    ConditionedCouplingFlow,
    CouplingFlow,
    conditional_coupling_flow,
    coupling_flow,
)
from pyro_lnf.transforms.nlsq import (
    ConditionalNLSq,
    NLSq,
    NLSqMap,
    conditional_nlsq,
    nlsq,
)
from pyro_lnf.transforms.stack import (
    ConditionalHiddenFlow,
    ConditionedHiddenFlow,
    HiddenFlow,
    conditional_hidden_flow,
    hidden_flow,
)

__all__ = [
    "Affine",
    "AffineMap",
    "AutoregressiveFlow",
    "ConditionalAffine",
    "ConditionalAutoregressiveFlow",
    "ConditionalCouplingFlow",
    "ConditionalElementwise",
    "ConditionalHiddenFlow",
    "ConditionalNLSq",
    "ConditionedAutoregressiveFlow",
    "ConditionedCouplingFlow",
    "ConditionedElementwise",
    "ConditionedHiddenFlow",
    "Conditioner",
    "CouplingFlow",
    "DenseNet",
    "Elementwise",
    "ElementwiseMap",
    "FlowTransform",
    "HiddenFlow",
    "MADE",
    "NLSq",
    "NLSqMap",
    "affine",
    "autoregressive_flow",
    "conditional_affine",
    "conditional_autoregressive_flow",
    "conditional_coupling_flow",
    "conditional_hidden_flow",
    "conditional_nlsq",
    "coupling_flow",
    "elementwise_map",
    "hidden_flow",
    "nlsq",
    "register_elementwise_map",
]
