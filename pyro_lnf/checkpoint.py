"""Checkpoints: atomic, pickle-free, self-describing files that rebuild their model.

A checkpoint is a ``torch.save`` of plain containers (dicts, lists, strings, numbers and
tensors), so it loads with ``torch.load(..., weights_only=True)``: the loader never imports or
calls anything named in the file, and a file crafted to run code is refused, not executed.
Everything needed to continue a run lives in it:

============== =====================================================================
key            contents
============== =====================================================================
``format``     ``"pyro-lnf-checkpoint"`` and ``format_version``
``library``    the ``pyro-lnf`` version that wrote it
``model``      registry ``name``, ``class`` path, constructor ``config``, ``state_dict``
``param_store`` Pyro's parameters ``{name: unconstrained tensor}`` and their constraints
``optimizer``  the torch optimizer's ``state_dict`` (Adam moments, learning rate)
``rng``        python, numpy, torch CPU and CUDA generator states
``progress``   epoch, step, batch position, best metrics, ... (whatever training passes)
``train_config`` the training options as a dict
============== =====================================================================

Models make themselves loadable by name with :func:`register_model`::

    @register_model("lnf")
    class LatentFlowModel(nn.Module): ...

    save_checkpoint("run/last.pt", module=model, optimizer=opt, progress={"epoch": 3})
    model = load_model("run/last.pt")          # rebuilt from "lnf" + config, weights loaded
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import random
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyro
import torch
from pyro.distributions import constraints

from pyro_lnf.errors import CheckpointError
from pyro_lnf.io import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "copy_checkpoint",
    "get_rng_state",
    "load_checkpoint",
    "load_model",
    "model_registry",
    "register_model",
    "restore_param_store",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "pyro-lnf-checkpoint"
FORMAT_VERSION = 1

_M = TypeVar("_M", bound=type[torch.nn.Module])
_REGISTRY: dict[str, type[torch.nn.Module]] = {}

# Pyro's param store keeps constraint *objects*, which a weights-only file cannot hold; the
# public singletons are stored by name instead.
_CONSTRAINTS: dict[str, constraints.Constraint] = {
    name: value
    for name in dir(constraints)
    if not name.startswith("_")
    and isinstance(value := getattr(constraints, name), constraints.Constraint)
}


def register_model(name: str) -> Callable[[_M], _M]:
    """Class decorator: make a model rebuildable by :func:`load_model` from ``name`` + config.

    :param name: the registry key stored in checkpoints (e.g. ``"lnf"``, ``"baseline"``).
    """

    def decorate(cls: _M) -> _M:
        known = _REGISTRY.get(name)
        if known is not None and _class_path(known) != _class_path(cls):
            raise ValueError(f"model name {name!r} is already registered by {_class_path(known)}")
        _REGISTRY[name] = cls
        return cls

    return decorate


def model_registry() -> dict[str, type[torch.nn.Module]]:
    """A copy of the registry: model name -> class."""
    return dict(_REGISTRY)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _registered_name(module: torch.nn.Module) -> str | None:
    for name, cls in _REGISTRY.items():
        if cls is type(module):
            return name
    return None


def _library_version() -> str:
    try:
        return importlib.metadata.version("pyro-lnf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------
# random number generators


def get_rng_state() -> dict[str, Any]:
    """The states of python's, numpy's and torch's generators (CPU, and CUDA if present).

    numpy's key array is stored as a tensor so the result survives a weights-only load.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore generators saved by :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ------------------------------------------------------------------------------------------
# param store


def _param_store_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    store = pyro.get_param_store()
    params: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for name, unconstrained in store.named_parameters():
        constraint = store._constraints.get(name, constraints.real)
        key = next((k for k, c in _CONSTRAINTS.items() if c is constraint), None)
        if key is None and type(constraint) is type(constraints.real):
            key = "real"  # unpickled copies of ``real`` are equal in all but identity
        if key is None:
            raise CheckpointError(
                f"param-store parameter {name!r} has constraint {constraint!r}, which a "
                "checkpoint cannot store; make it a parameter of the model's nn.Module instead"
            )
        params[name] = unconstrained.detach().clone()
        names[name] = key
    return params, names


def restore_param_store(
    checkpoint: Mapping[str, Any], module: torch.nn.Module | None = None
) -> None:
    """Replace Pyro's param store with the checkpoint's.

    With ``module``, its parameters (already loaded from the checkpoint) are registered under
    ``module.name`` *as themselves*, so the store and the module share tensors (a stale store
    copy would silently shadow the module; pyro-notes §1.5). Other stored parameters are
    restored with their constraints.
    """
    store = pyro.get_param_store()
    store.clear()
    saved = checkpoint["param_store"]
    if module is not None:
        pyro.module(module.name, module)
    for name, value in saved["params"].items():
        if name in store:
            continue
        store.set_state(
            {
                "params": {name: value.detach().clone().requires_grad_(True)},
                "constraints": {name: _CONSTRAINTS[saved["constraints"][name]]},
            }
        )


# ------------------------------------------------------------------------------------------
# save / load


def save_checkpoint(
    path: str | os.PathLike,
    *,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    progress: Mapping[str, Any] | None = None,
    train_config: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file + rename) and return its path.

    :param module: the model; its registry name (if registered with :func:`register_model`),
        class path, ``config`` and ``state_dict`` are stored.
    :param optimizer: its ``state_dict`` is stored (moments and learning rate).
    :param progress: training position and best metrics (plain values and tensors only).
    :param train_config: the training options, as a dict of plain values.
    :param rng: generator states; the current ones (:func:`get_rng_state`) by default.
    """
    path = Path(path)
    params, constraint_names = _param_store_state()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library": _library_version(),
        "model": {
            "name": _registered_name(module),
            "class": _class_path(type(module)),
            "config": dict(getattr(module, "config", {})),
            "state_dict": module.state_dict(),
        },
        "param_store": {"params": params, "constraints": constraint_names},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": dict(rng) if rng is not None else get_rng_state(),
        "progress": dict(progress or {}),
        "train_config": dict(train_config or {}),
    }
    with _write_failures_reported(path), atomic_write(path, "wb") as f:
        torch.save(payload, f)
    return path


def copy_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy a checkpoint file atomically (``best.pt`` from the ``last.pt`` just written:
    the same state, without serialising it twice)."""
    target = Path(target)
    with _write_failures_reported(target), atomic_write(target, "wb") as f, \
            open(source, "rb") as src:
        shutil.copyfileobj(src, f)
    return target


@contextlib.contextmanager
def _write_failures_reported(path: Path) -> Iterator[None]:
    """Turn any failure to write ``path`` into one :class:`CheckpointError` naming it.

    torch's zip writer reports a full disk as a ``RuntimeError`` ("unexpected pos ..."), not
    an ``OSError``; the reason is taken from the ``OSError`` behind it where there is one,
    and the free space on the disk is added.
    """
    try:
        yield
    except (OSError, RuntimeError) as err:
        # torch keeps the file's own OSError (ENOSPC, EIO, ...) as the context of its error.
        cause = err if isinstance(err, OSError) else err.__context__
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        else:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[-1].strip()[:160]
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(path.parent).free / 2**20
            reason += f"; {free:.0f} MiB free on its disk"
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from err


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, without unpickling any code.

    :raises CheckpointError: the file is missing, truncated, corrupt, not a pyro-lnf
        checkpoint, or of a newer format; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path or train first")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated, corrupt or unsafe to load ({reason[:160]})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-lnf checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this pyro-lnf reads up to "
            f"{FORMAT_VERSION}: upgrade pyro-lnf"
        )
    return payload


def _model_class(checkpoint: Mapping[str, Any], path: Path) -> type[torch.nn.Module]:
    info = checkpoint["model"]
    name, class_path = info.get("name"), info.get("class", "")
    if name is not None and name not in _REGISTRY and class_path.startswith("pyro_lnf."):
        # Registration happens at import: import the library module that defines the class
        # (only from this package, so a checkpoint cannot make us import arbitrary code).
        try:
            importlib.import_module(class_path.rsplit(".", 1)[0])
        except ImportError:
            pass
    if name is None or name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise CheckpointError(
            f"checkpoint {path} holds model {name!r} ({class_path}), which is not registered "
            f"(known: {known}); import the module that defines it, decorated with @register_model"
        )
    return _REGISTRY[name]


def load_model(
    path: str | os.PathLike,
    map_location: Any = None,
    *,
    param_store: bool = True,
) -> torch.nn.Module:
    """Rebuild a registered model from a checkpoint and load its weights.

    The class is found by the registry name, built with the stored ``config`` and given the
    stored ``state_dict``; it is returned in eval mode. With ``param_store=True`` (default)
    Pyro's param store is replaced by the checkpoint's (:func:`restore_param_store`).

    :raises CheckpointError: unreadable file, unknown model, or weights that do not fit.
    """
    path = Path(path)
    checkpoint = load_checkpoint(path, map_location=map_location)
    cls = _model_class(checkpoint, path)
    info = checkpoint["model"]
    try:
        module = cls(**info["config"])
    except TypeError as err:
        raise CheckpointError(
            f"checkpoint {path}: cannot rebuild {info['name']!r} from its config: {err}"
        ) from err
    try:
        module.load_state_dict(info["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit {info['name']!r}: {first}"
        ) from err
    if isinstance(map_location, (str, torch.device)):
        module.to(map_location)
    module.eval()
    if param_store:
        restore_param_store(checkpoint, module)
    return module
