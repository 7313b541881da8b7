"""The model registry: registry name -> model class, so a checkpoint can rebuild its model.

Models register themselves where they are defined, a layer below the checkpoints that read
the registry (:mod:`pyro_lnf.checkpoint`)::

    @register_model("lnf")
    class LatentFlowModel(nn.Module): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["class_path", "model_registry", "register_model", "registered_name"]

_M = TypeVar("_M", bound=type[nn.Module])
_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[_M], _M]:
    """Class decorator: make a model rebuildable by :func:`~pyro_lnf.checkpoint.load_model`
    from ``name`` + config.

    :param name: the registry key stored in checkpoints (e.g. ``"lnf"``, ``"lstm"``).
    :raises ValueError: ``name`` is taken by another class.
    """

    def decorate(cls: _M) -> _M:
        known = _REGISTRY.get(name)
        if known is not None and class_path(known) != class_path(cls):
            raise ValueError(f"model name {name!r} is already registered by {class_path(known)}")
        _REGISTRY[name] = cls
        return cls

    return decorate


def model_registry() -> dict[str, type[nn.Module]]:
    """A copy of the registry: model name -> class."""
    return dict(_REGISTRY)


def class_path(cls: type) -> str:
    """``"package.module.Class"``: where ``cls`` is defined, as checkpoints record it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_name(module: nn.Module) -> str | None:
    """The name ``module``'s class is registered under, or ``None``."""
    for name, cls in _REGISTRY.items():
        if cls is type(module):
            return name
    return None
