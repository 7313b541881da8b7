"""The model registry: registry name -> model class, so a checkpoint can rebuild its model.

Models register themselves where they are defined, a layer below the checkpoints that read
the registry (:mod:`pyro_lnf.checkpoint`)::

    @register_model("lnf", data=("lengths",))
    class LatentFlowModel(nn.Module): ...

Registering also records the constructor's arguments, defaults filled in, as the instance's
``config``: the recipe a checkpoint stores to rebuild the module before loading its weights.
Recorded, not hand-copied, it cannot miss an option a model gains later.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

__all__ = ["class_path", "model_registry", "register_model", "registered_name"]

_M = TypeVar("_M", bound=type[nn.Module])
_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str, *, data: Sequence[str] = ()) -> Callable[[_M], _M]:
    """Class decorator: make a model rebuildable by :func:`~pyro_lnf.checkpoint.load_model`
    from ``name`` + config, and record every instance's constructor arguments as ``config``.

    :param name: the registry key stored in checkpoints (e.g. ``"lnf"``, ``"lstm"``).
    :param data: constructor arguments that are data, not options (the training lengths a
        length model is fitted to): left out of ``config``, since the weights restore them.
    :raises ValueError: ``name`` is taken by another class.
    """

    def decorate(cls: _M) -> _M:
        known = _REGISTRY.get(name)
        if known is not None and class_path(known) != class_path(cls):
            raise ValueError(f"model name {name!r} is already registered by {class_path(known)}")
        _record_config(cls, frozenset(data))
        _REGISTRY[name] = cls
        return cls

    return decorate


def _record_config(cls: type[nn.Module], data: frozenset[str]) -> None:
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        self.config = {key: _plain(value) for key, value in list(bound.arguments.items())[1:]
                       if key not in data}

    cls.__init__ = recording_init


def _plain(value: Any) -> Any:
    """Tuples as lists: a config is plain data (JSON and the weights-only unpickler)."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


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
