"""The one validator of every ``--device``: a name becomes a :class:`torch.device` the
library runs on (the CPU or a CUDA device that exists), or a one-line :class:`ConfigError`."""

from __future__ import annotations

import torch

from pyro_lnf.errors import ConfigError

__all__ = ["DEVICES", "resolve_device"]

#: The devices this library runs on (torch also parses mps, meta, xla, ..., which it does not).
DEVICES = "cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a :class:`torch.device`: the one validator of every ``--device``.

    Only the CPU and CUDA devices are accepted: the models and the samplers are tested there,
    and a ``meta`` device would "run" without computing anything.

    :raises ConfigError: an unparsable or unsupported name, CUDA asked for on a machine
        without it, or a CUDA index beyond the devices present.
    """
    if device is None:
        return None
    try:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"not a device name: {device!r}")
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {device!r}; use {DEVICES}") from err
    if resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index):
        raise ConfigError(f"device {str(device)!r} is not supported; use {DEVICES}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} requested but CUDA is not available; use --device cpu"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(
                f"device {str(device)!r} requested but this machine has {count} CUDA "
                f"device(s): cuda:0 .. cuda:{count - 1}"
            )
    return resolved
