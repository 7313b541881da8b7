"""Normalizing flows over the hidden dimension for Pyro: NLSq and affine elementwise maps, MADE,
autoregressive (AF/IAF) and split-coupling (SCF) flows around any elementwise map, and stacks.

Every flow follows Pyro's convention (``_call``: noise to sample, ``_inverse``: sample to noise)
and comes as a ``TransformModule`` plus a ``Conditional...`` twin whose ``condition(context)``
returns a fresh transform; see :mod:`pyro_lnf.transforms.elementwise` for the shared rules.
"""

from pyro_lnf.transforms.autoregressive import (
    AutoregressiveFlow,
    ConditionalAutoregressiveFlow,
    ConditionedAutoregressiveFlow,
    autoregressive_flow,
    conditional_autoregressive_flow,
)
from pyro_lnf.transforms.coupling import (
    ConditionalCouplingFlow,
    ConditionedCouplingFlow,
    CouplingFlow,
    conditional_coupling_flow,
    coupling_flow,
)
from pyro_lnf.transforms.elementwise import (
    Affine,
    AffineMap,
    ConditionalAffine,
    ConditionalElementwise,
    ConditionalNLSq,
    ConditionedElementwise,
    Elementwise,
    ElementwiseMap,
    FlowTransform,
    NLSq,
    NLSqMap,
    affine,
    conditional_affine,
    conditional_nlsq,
    elementwise_map,
    nlsq,
)
from pyro_lnf.nn.made import MADE, Conditioner, DenseNet
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
]
