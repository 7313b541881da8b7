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

Models make themselves loadable by name with
:func:`~pyro_lnf.models.registry.register_model`::

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.distributions import constraints
from pyro.params.param_store import ParamStoreDict

from pyro_lnf.errors import CheckpointError, LnfError
from pyro_lnf.io import atomic_write
from pyro_lnf.models.registry import class_path, model_registry, registered_name

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "copy_checkpoint",
    "get_rng_state",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "restore_param_store",
    "save_checkpoint",
    "set_rng_state",
    "check_fits_dataset",  # validation helpers, after the loaders
]

FORMAT = "pyro-lnf-checkpoint"
FORMAT_VERSION = 1

# Pyro's param store keeps constraint *objects*, which a weights-only file cannot hold; the
# public singletons are stored by name instead.
_CONSTRAINTS: dict[str, constraints.Constraint] = {
    name: value
    for name in dir(constraints)
    if not name.startswith("_")
    and isinstance(value := getattr(constraints, name), constraints.Constraint)
}


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


def param_constraint(store: ParamStoreDict, name: str) -> constraints.Constraint:
    """The constraint ``pyro.param`` was given for ``name`` (``real`` if none).

    Read from the private ``ParamStoreDict._constraints`` (this is its one use, checked by
    ``tests/test_private_api.py``): the public ``get_state()`` would also strip the
    ``unconstrained`` weak references from the live parameters, as it prepares a copy for
    pickling.
    """
    return store._constraints.get(name, constraints.real)


def _param_store_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    store = pyro.get_param_store()
    params: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for name, unconstrained in store.named_parameters():
        constraint = param_constraint(store, name)
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

    :param module: the model; its registry name (if registered with
        :func:`~pyro_lnf.models.registry.register_model`),
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
            "name": registered_name(module),
            "class": class_path(type(module)),
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
    _check_parts(payload, path)
    _rename_legacy_keys(payload)
    return payload


#: State-dict keys renamed since checkpoints were first written, old -> new: the prior across
#: time (``LatentFlowModel.prior``) moved its position and remaining-steps tables into a
#: :class:`~pyro_lnf.nn.features.LengthFeatures` called ``length_features``.
_RENAMED_KEYS = {
    "prior.position.weight": "prior.length_features.position.weight",
    "prior.remaining.weight": "prior.length_features.remaining.weight",
}


def _rename_legacy_keys(payload: dict[str, Any]) -> None:
    """Give an older checkpoint's tensors their current names, in the model's state dict and
    in the param store (named ``<module name>$$$<key>``), so that it loads and resumes."""
    state = payload["model"]["state_dict"]
    for old, new in _RENAMED_KEYS.items():
        if old in state:
            state[new] = state.pop(old)
    store = payload["param_store"]
    for name in list(store["params"]):
        owner, separator, key = name.rpartition("$$$")
        if separator and key in _RENAMED_KEYS:
            renamed = owner + separator + _RENAMED_KEYS[key]
            for part in ("params", "constraints"):
                store[part][renamed] = store[part].pop(name)


class _Damaged(Exception):
    """A part of a checkpoint that is missing or of the wrong type: ``(part, what it should
    be)``; :func:`_check_parts` turns it into one :class:`CheckpointError` naming the file."""


#: Stands for an absent key, so that "missing" and "None" read differently in messages.
_MISSING = object()


def _need(value: Any, kind: type | tuple[type, ...], part: str, what: str) -> Any:
    """``value`` if it is a ``kind``; else :class:`_Damaged` saying what ``part`` should be."""
    if value is _MISSING:
        raise _Damaged(part, "is missing")
    if not isinstance(value, kind):
        raise _Damaged(part, f"should be {what}, but is a {type(value).__name__}")
    return value


def _str_keyed(value: Any, part: str, items: type | None = None,
               item: str = "") -> Mapping[str, Any]:
    """``value`` as a mapping with string keys (and, with ``items``, values of that type,
    described by ``item``: "a tensor")."""
    _need(value, Mapping, part, "a dict" if items is None else f"a dict of {item.split()[-1]}s")
    for key, entry in value.items():
        if not isinstance(key, str):
            raise _Damaged(part, f"has a key {key!r} that is not a string")
        if items is not None and not isinstance(entry, items):
            raise _Damaged(f"{part}[{key!r}]", f"should be {item}, but is a "
                                               f"{type(entry).__name__}")
    return value


def _check_parts(payload: Mapping[str, Any], path: Path) -> None:
    """Check every part a loader reads, so that no later ``checkpoint[...]`` can fail.

    Format version 1 always writes all of ``model``, ``param_store``, ``optimizer`` (possibly
    ``None``), ``rng``, ``progress`` and ``train_config``: a missing one means a damaged file
    or one written by something else, and is refused here rather than as a ``KeyError`` in
    whichever command reads that part (``lnf evaluate`` reads ``progress``; a resumed run
    reads them all).

    :raises CheckpointError: one line naming the file and the first part that is wrong.
    """
    try:
        get = lambda mapping, key: mapping.get(key, _MISSING)  # noqa: E731
        model = _str_keyed(get(payload, "model"), "model")
        _need(get(model, "name"), (str, type(None)), "model.name", "a string or None")
        _need(get(model, "class"), str, "model.class", "a string")
        config = _str_keyed(get(model, "config"), "model.config")
        if "dataset" in config:  # what evaluate and sample load
            _need(config["dataset"], (str, type(None)), "model.config['dataset']",
                  "a dataset name or None")
        _str_keyed(get(model, "state_dict"), "model.state_dict", torch.Tensor, "a tensor")
        store = _str_keyed(get(payload, "param_store"), "param_store")
        params = _str_keyed(get(store, "params"), "param_store.params", torch.Tensor, "a tensor")
        names = _str_keyed(get(store, "constraints"), "param_store.constraints", str,
                           "a constraint name")
        if set(params) != set(names):
            odd = sorted(set(params) ^ set(names))[0]
            raise _Damaged("param_store", f"lists {odd!r} in only one of params and constraints")
        for name, constraint in names.items():
            if constraint not in _CONSTRAINTS:
                raise _Damaged(f"param_store.constraints[{name!r}]",
                               f"names an unknown constraint {constraint!r}")
        optimizer = _need(get(payload, "optimizer"), (Mapping, type(None)), "optimizer",
                          "an optimizer state dict or None")
        if optimizer is not None:
            _need(get(optimizer, "state"), Mapping, "optimizer.state", "a dict")
            groups = _need(get(optimizer, "param_groups"), (list, tuple),
                           "optimizer.param_groups", "a list")
            for group in groups:
                _need(group, Mapping, "optimizer.param_groups", "a list of dicts")
        _check_rng(get(payload, "rng"))
        _str_keyed(get(payload, "progress"), "progress")
        _str_keyed(get(payload, "train_config"), "train_config")
    except _Damaged as damaged:
        part, what = damaged.args
        raise CheckpointError(
            f"checkpoint {path} is damaged: its {part} {what}; use another checkpoint of the run "
            "(best.pt or last.pt) or train again"
        ) from None


def _check_rng(rng: Any) -> None:
    """The generator states :func:`set_rng_state` restores, shaped as :func:`get_rng_state`
    writes them (python's and numpy's Mersenne Twisters hold 625 and 624 words). An empty
    dict is a checkpoint of weights only (``save_checkpoint(..., rng={})``): it loads, but a
    run cannot resume from it."""
    if not _str_keyed(rng, "rng"):
        return
    python = _need(rng.get("python", _MISSING), (tuple, list), "rng.python", "a 3-tuple")
    if len(python) != 3 or not isinstance(python[0], int) or not isinstance(
        python[1], (tuple, list)) or len(python[1]) != 625 or not isinstance(
            python[2], (float, type(None))):
        raise _Damaged("rng.python", "is not a state of python's random module")
    numpy_state = _str_keyed(rng.get("numpy", _MISSING), "rng.numpy")
    keys = _need(numpy_state.get("keys", _MISSING), torch.Tensor, "rng.numpy.keys", "a tensor")
    if keys.shape != (624,) or any(
        not isinstance(numpy_state.get(k), kind)
        for k, kind in (("kind", str), ("pos", int), ("has_gauss", int),
                        ("cached_gaussian", float))
    ):
        raise _Damaged("rng.numpy", "is not a state of numpy's generator")
    state = _need(rng.get("torch", _MISSING), torch.Tensor, "rng.torch", "a tensor")
    if state.dtype != torch.uint8 or state.dim() != 1:
        raise _Damaged("rng.torch", f"should be a 1-d uint8 tensor, but is {state.dtype} "
                                    f"{tuple(state.shape)}")
    cuda = rng.get("cuda", [])
    _need(cuda, (list, tuple), "rng.cuda", "a list of tensors")
    for item in cuda:
        _need(item, torch.Tensor, "rng.cuda", "a list of tensors")


def check_fits_dataset(config: Mapping[str, Any], dataset: Any, path: str | os.PathLike) -> None:
    """Refuse a model whose stored ``config`` does not fit ``dataset`` as found on disk.

    A checkpoint stores the size of its output layer (``num_features``, or ``vocab_size`` for
    the VAEs), its data kind and the ids of ``<pad>``, ``<sos>`` and ``<eos>``, not the
    vocabulary itself; a data directory rebuilt with another vocabulary would otherwise be
    scored or decoded with the wrong symbols, or end in an index error deep in a forward pass.

    :param dataset: a :class:`~pyro_lnf.datasets.Dataset` (``name``, ``kind``,
        ``num_features``, ``vocab``).
    :raises CheckpointError: one line naming the file, the dataset and what differs.
    """
    def refuse(what: str) -> None:
        raise CheckpointError(
            f"checkpoint {path} does not fit dataset {dataset.name!r} as found on disk: {what}; "
            "use the data directory the model was trained with"
        )

    kind = config.get("kind")
    if kind is not None and kind != dataset.kind:
        refuse(f"the model reads {kind} data, the dataset is {dataset.kind}")
    size = config.get("num_features", config.get("vocab_size"))
    if size is not None and size != dataset.num_features:
        noun = "piano keys" if dataset.kind == "binary" else "symbols"
        refuse(f"the model has {size} {noun}, the dataset {dataset.num_features}")
    vocab = dataset.vocab
    for key, token in (("pad_index", "<pad>"), ("sos_index", "<sos>"), ("eos_index", "<eos>")):
        if key in config and (vocab is None or vocab.stoi.get(token) != config[key]):
            here = None if vocab is None else vocab.stoi.get(token)
            refuse(f"{token} has id {config[key]!r} in the model, {here!r} in the vocabulary")


def _model_class(checkpoint: Mapping[str, Any], path: Path) -> type[torch.nn.Module]:
    info = checkpoint["model"]
    name, stored_path = info.get("name"), info.get("class", "")
    if name is not None and name not in model_registry() and stored_path.startswith("pyro_lnf."):
        # Registration happens at import: import the library module that defines the class
        # (only from this package, so a checkpoint cannot make us import arbitrary code).
        try:
            importlib.import_module(stored_path.rsplit(".", 1)[0])
        except (ImportError, ValueError):  # no such module (or an empty name): see below
            pass
    if name is None or name not in model_registry():
        # The library's own models register when pyro_lnf.models is imported, which
        # `import pyro_lnf` does not do (its names load lazily); a checkpoint written before a
        # model moved (e.g. pyro_lnf.models.vae.SentenceVAE) names a module that is gone, and
        # its registry name is found here.
        importlib.import_module("pyro_lnf.models")
    registry = model_registry()
    if name is None or name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise CheckpointError(
            f"checkpoint {path} holds model {name!r} ({stored_path}), which is not registered "
            f"(known: {known}); import the module that defines it, decorated with @register_model"
        )
    return registry[name]


def _check_finite(tensors: Mapping[str, torch.Tensor], part: str, path: Path) -> None:
    """Refuse NaN or infinite weights: a diverged run's file would score NaN (evaluate) or
    fail inside ``torch.multinomial`` (sample); resuming it would only train on NaN."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"checkpoint {path}: {part}[{name!r}] holds NaN or infinite values (the run "
                "diverged before it was saved?); use an earlier checkpoint (best.pt) or train "
                "again"
            )


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
    return model_from_checkpoint(checkpoint, path, map_location, param_store=param_store)


def model_from_checkpoint(
    checkpoint: Mapping[str, Any],
    path: str | os.PathLike,
    map_location: Any = None,
    *,
    param_store: bool = True,
) -> torch.nn.Module:
    """:func:`load_model` for a checkpoint already read with :func:`load_checkpoint` (so a
    caller that also needs its other parts reads the file once); ``path`` names it in errors.
    """
    path = Path(path)
    cls = _model_class(checkpoint, path)
    info = checkpoint["model"]
    try:
        module = cls(**info["config"])
    except (TypeError, ValueError, RuntimeError, LnfError) as err:  # e.g. a size of -1
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot rebuild {info['name']!r} from its config: {first}"
        ) from err
    _check_finite(info["state_dict"], "model.state_dict", path)
    if param_store:
        _check_finite(checkpoint["param_store"]["params"], "param_store.params", path)
    try:
        module.load_state_dict(info["state_dict"])
    except (RuntimeError, ValueError, TypeError) as err:
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
